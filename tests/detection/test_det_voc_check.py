"""The VOC checker: same dicts as detectron2 for good data, every bad input named, run from
train_net's setup before training (also for the test split and --eval-only)."""

import os
import re
import shutil
import xml.etree.ElementTree as ET

import pytest
from det_helpers import TINY_CONFIG, tiny_cfg
from detectron2.data import DatasetCatalog
from detectron2.data.datasets.pascal_voc import load_voc_instances, register_pascal_voc
from detectron2.engine import default_argument_parser
from PIL import Image

import synthetic
from detection import train_net, voc_check
from detection.datasets import check_datasets, register_voc_like
from detection.voc_check import (
    MAX_REPORTED,
    VOCAnnotationError,
    load_checked_voc_instances,
    scan_voc_split,
)

CLASSES = synthetic.DET_CLASSES


@pytest.fixture(scope="module")
def voc12(tmp_path_factory):
    """VOC2007 with 12 trainval and 2 test images, small."""
    root = tmp_path_factory.mktemp("voc12")
    synthetic.make_voc(
        str(root), seed=3, years=("2007",), trainval_images=12, test_images=2, min_side=64,
        max_side=80, max_objects=2,
    )  # fmt: skip
    return root / "VOC2007"


def _copy(src, tmp_path):
    dst = tmp_path / "VOC2007"
    shutil.copytree(src, dst)
    return dst


def _edit(dirname, fileid, fn):
    path = dirname / "Annotations" / f"{fileid}.xml"
    tree = ET.parse(path)
    fn(tree.getroot())
    tree.write(path)
    return str(path)


def _set(path, value):
    def fn(root):
        root.find(path).text = str(value)

    return fn


def test_same_dicts_as_detectron2(tiny_voc_root):
    for year, split in (("2007", "trainval"), ("2012", "trainval"), ("2007", "test")):
        dirname = str(tiny_voc_root / f"VOC{year}")
        scan = scan_voc_split(dirname, split, CLASSES, for_evaluation=split == "test")
        assert scan.problems == [] and scan.clipped == []
        assert scan.dicts == load_voc_instances(dirname, split, CLASSES)
        assert scan_voc_split(dirname, split, CLASSES, workers=1).dicts == scan.dicts


def test_every_bad_input_is_named(voc12, tmp_path):
    d = _copy(voc12, tmp_path)
    ann, img = d / "Annotations", d / "JPEGImages"
    w = int(ET.parse(ann / "000001.xml").getroot().find("size/width").text)
    expected = {
        _edit(d, "000001", lambda r: r.find("object").remove(r.find("object/bndbox"))): (
            "object 0 .* has no <bndbox>"
        ),
        _edit(d, "000002", _set("object/name", "unicorn")): "unknown class 'unicorn'",
        _edit(d, "000003", _set("object/bndbox/ymin", "abc")): r"<ymin> not a number: 'abc'",
        _edit(d, "000004", _set("object/bndbox/xmin", w)): "inverted",  # xmax < xmin
        _edit(d, "000005", _set("object/bndbox/xmax", w + 10)): "outside the image",
        _edit(d, "000006", _set("object/bndbox/ymin", -3)): "outside the image",
        _edit(d, "000007", _set("size/height", "tall")): r"<height> not a positive integer",
        str(img / "000009.jpg"): "image missing",
        str(img / "000010.jpg"): "not a readable image",
        str(img / "000011.jpg"): r"image is 7x5 but its annotation says",
        str(ann / "000012.xml"): "annotation file missing",
    }
    (ann / "000008.xml").write_text((ann / "000008.xml").read_text().replace("</size>", ""))
    expected[str(ann / "000008.xml")] = "not well-formed XML"
    os.remove(img / "000009.jpg")
    (img / "000010.jpg").write_bytes(b"not a jpeg")
    Image.new("RGB", (7, 5)).save(img / "000011.jpg")
    os.remove(ann / "000012.xml")

    scan = scan_voc_split(str(d), "trainval", CLASSES)
    assert len(scan.dicts) == 0 and len(scan.problems) == len(expected)
    for path, message in expected.items():
        found = [p for p in scan.problems if p.startswith(path + ":") and re.search(message, p)]
        assert found, (path, message, scan.problems)
    with pytest.raises(VOCAnnotationError, match=r"^12 problem\(s\) in .*trainval\.txt"):
        load_checked_voc_instances(str(d), "trainval", CLASSES)
    # one file alone: the same problem
    with pytest.raises(VOCAnnotationError, match="unicorn"):
        voc_check.check_annotation(str(ann / "000002.xml"), CLASSES)


def test_report_is_capped_and_counted(voc12, tmp_path):
    d = _copy(voc12, tmp_path)
    good = (d / "Annotations" / "000001.xml").read_text()
    ids = [f"x{i:03d}" for i in range(MAX_REPORTED + 5)]
    for i in ids:
        (d / "Annotations" / f"{i}.xml").write_text(good.replace("<name>", "<name>bad_"))
        shutil.copy(d / "JPEGImages" / "000001.jpg", d / "JPEGImages" / f"{i}.jpg")
    (d / "ImageSets" / "Main" / "many.txt").write_text("\n".join(ids) + "\n")
    n_objects = good.count("<object>")
    with pytest.raises(VOCAnnotationError) as err:
        load_checked_voc_instances(str(d), "many", CLASSES)
    total = len(ids) * n_objects
    msg = str(err.value)
    assert msg.startswith(f"{total} problem(s)") and f"... and {total - MAX_REPORTED} more" in msg
    assert msg.count("\n  - ") == MAX_REPORTED


def _size(dirname, fileid):
    root = ET.parse(dirname / "Annotations" / f"{fileid}.xml").getroot()
    return int(root.find("size/width").text), int(root.find("size/height").text)


def _set_many(**values):
    def fn(root):
        for key, value in values.items():
            root.find(f"object/bndbox/{key}").text = str(value)

    return fn


def test_border_rules_and_evaluation_needs(voc12, tmp_path):
    d = _copy(voc12, tmp_path)
    w, _ = _size(d, "000001")
    # xmax == width and ymin == 1 are legal VOC (the whole image edge): kept as they are.
    _edit(d, "000001", _set_many(xmax=w, ymin=1))
    # One pixel over (0-based coordinates written into a VOC file): clipped, and reported.
    _, h = _size(d, "000002")
    _edit(d, "000002", _set_many(xmin=0, ymax=h + 1))
    _edit(d, "000003", _set_many(xmin="3.5"))  # fine for training, not for the evaluator
    _edit(d, "000004", lambda r: r.find("object").remove(r.find("object/pose")))
    scan = scan_voc_split(str(d), "trainval", CLASSES)
    assert scan.problems == [] and len(scan.clipped) == 1 and "000002.xml" in scan.clipped[0]
    by_id = {x["image_id"]: x for x in scan.dicts}
    x0, y0, x1, y1 = by_id["000001"]["annotations"][0]["bbox"]
    assert (y0, x1) == (0.0, w)  # detectron2's continuous coordinates: [xmin - 1, xmax]
    x0, y0, x1, y1 = by_id["000002"]["annotations"][0]["bbox"]
    assert (x0, y1) == (0.0, h)  # clipped to the image
    strict = scan_voc_split(str(d), "trainval", CLASSES, for_evaluation=True)
    assert sorted(p.split(":")[0].rsplit("/", 1)[1] for p in strict.problems) == [
        "000003.xml",
        "000004.xml",
    ]
    assert any("'3.5' is not an integer" in p for p in strict.problems)
    assert any("has no <pose>" in p for p in strict.problems)


def test_setup_checks_train_and_test_before_training(tiny_voc_root, tmp_path):
    """A broken test file stops train_net at setup (training and --eval-only alike)."""
    root = tmp_path / "voc"
    shutil.copytree(tiny_voc_root, root)
    test_ids = (root / "VOC2007/ImageSets/Main/test.txt").read_text().split()
    bad = root / "VOC2007/Annotations" / f"{test_ids[-1]}.xml"
    bad.write_text(bad.read_text().replace("</annotation>", ""))
    os.remove(
        root
        / "VOC2012/JPEGImages"
        / (root / "VOC2012/ImageSets/Main/trainval.txt").read_text().split()[0].__add__(".jpg")
    )  # noqa: E501
    for extra in ([], ["--eval-only"]):
        args = default_argument_parser().parse_args(
            ["--config-file", TINY_CONFIG, *extra, "TRANSFER.VOC_LIKE_ROOT", str(root),
             "OUTPUT_DIR", str(tmp_path / "out")]
        )  # fmt: skip
        with pytest.raises(VOCAnnotationError) as err:
            train_net.setup(args)
        msg = str(err.value)
        assert msg.startswith("2 problem(s)") and f"{bad}: not well-formed XML" in msg
        assert "VOC2012/JPEGImages" in msg and "image missing" in msg


def test_check_datasets_parses_once_and_names_unregistered_sets(tiny_voc_root, monkeypatch):
    cfg = tiny_cfg(tiny_voc_root, "TRANSFER.VOC_LIKE_PREFIX", "once")
    names = register_voc_like("once", str(tiny_voc_root), CLASSES)
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = tuple(names[:2]), (names[2],)
    assert check_datasets(cfg) == {names[0]: 4, names[1]: 4, names[2]: 3}

    def no_second_parse(*a, **k):
        raise AssertionError("parsed twice")

    monkeypatch.setattr(voc_check, "_check_ids", no_second_parse)
    assert len(DatasetCatalog.get(names[2])) == 3  # the scan's dicts, no new parse
    monkeypatch.undo()
    # A VOC set registered with detectron2's own loader is checked too.
    if "plain_voc_test" not in DatasetCatalog.list():
        register_pascal_voc("plain_voc_test", str(tiny_voc_root / "VOC2007"), "test", 2007, CLASSES)
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = ("plain_voc_test",), ("nowhere_test",)
    with pytest.raises(
        VOCAnnotationError, match="'nowhere_test' in DATASETS.TEST is not registered"
    ):
        check_datasets(cfg)


def test_test_image_cut_short_after_its_header_stops_setup(tiny_voc_root, tmp_path):
    """A test-split JPEG whose header is whole (its size reads) but whose data is cut short is
    found by train_net's setup, before the model is built, not by the final evaluation."""
    root = tmp_path / "voc"
    shutil.copytree(tiny_voc_root, root)
    test_id = (root / "VOC2007/ImageSets/Main/test.txt").read_text().split()[-1]
    jpg = root / "VOC2007/JPEGImages" / f"{test_id}.jpg"
    data = jpg.read_bytes()
    jpg.write_bytes(data[: data.index(b"\xff\xda") + 60])  # the header and 60 bytes of scan
    with Image.open(jpg) as im:
        assert min(im.size) > 0  # a header-only check would pass it
    args = default_argument_parser().parse_args(
        ["--config-file", TINY_CONFIG, "TRANSFER.VOC_LIKE_ROOT", str(root),
         "OUTPUT_DIR", str(tmp_path / "out")]
    )  # fmt: skip
    with pytest.raises(VOCAnnotationError) as err:
        train_net.setup(args)
    msg = str(err.value)
    assert msg.startswith("1 problem(s)")
    assert f"{jpg}: not a readable image (JPEG image data cut short or corrupt" in msg


def test_processes_share_the_decoding(voc12, tmp_path):
    """shard (i, n): each of n processes decodes every n-th image; together they find all."""
    d = _copy(voc12, tmp_path)
    ids = (d / "ImageSets/Main/trainval.txt").read_text().split()
    for fileid in ids[:2]:  # two neighbours: one in each shard
        jpg = d / "JPEGImages" / f"{fileid}.jpg"
        jpg.write_bytes(jpg.read_bytes()[:200])
    shares = [scan_voc_split(str(d), "trainval", CLASSES, shard=(i, 2)) for i in range(2)]
    found = [[p.split(":")[0].rsplit("/", 1)[1] for p in s.problems] for s in shares]
    assert found == [[f"{ids[0]}.jpg"], [f"{ids[1]}.jpg"]]
    assert all(len(s.dicts) == len(ids) - 1 for s in shares)  # XML checked in both
