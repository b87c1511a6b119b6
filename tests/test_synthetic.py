"""The synthetic generators: determinism, coverage, VOC format, and annotation errors."""

import filecmp
import json
import os
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.pascal_voc import load_voc_instances, register_pascal_voc
from PIL import Image

import synthetic
from detection import voc_check
from synthetic.__main__ import main as synth_main


def _tree_files(root):
    return sorted(
        os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs
    )


def _same_bytes(a, b):
    files = _tree_files(a)
    assert files == _tree_files(b)
    return all(filecmp.cmp(os.path.join(a, f), os.path.join(b, f), shallow=False) for f in files)


def test_classification_is_deterministic(tmp_path):
    kw = dict(num_classes=3, train_per_class=4, val_per_class=2, image_size=48)
    synthetic.make_classification(str(tmp_path / "a"), seed=3, **kw)
    synthetic.make_classification(str(tmp_path / "b"), seed=3, **kw)
    synthetic.make_classification(str(tmp_path / "c"), seed=4, **kw)
    synthetic.make_classification(str(tmp_path / "d"), seed=3, workers=2, **kw)
    assert _same_bytes(tmp_path / "a", tmp_path / "b")
    assert _same_bytes(tmp_path / "a", tmp_path / "d")
    img = "train/disk/00000.jpg"
    assert (tmp_path / "a" / img).read_bytes() != (tmp_path / "c" / img).read_bytes()


def test_voc_is_deterministic(tmp_path):
    kw = dict(trainval_images=3, test_images=2, min_side=96, max_side=112)
    synthetic.make_voc(str(tmp_path / "a"), seed=1, **kw)
    synthetic.make_voc(str(tmp_path / "b"), seed=1, **kw)
    synthetic.make_voc(str(tmp_path / "c"), seed=2, **kw)
    assert _same_bytes(tmp_path / "a", tmp_path / "b")
    for rel in ("VOC2007/JPEGImages/000001.jpg", "VOC2007/Annotations/000001.xml"):
        assert (tmp_path / "a" / rel).read_bytes() != (tmp_path / "c" / rel).read_bytes()


def test_classification_layout_and_summary(synthetic_cls_root):
    summary = json.loads((synthetic_cls_root / "summary.json").read_text())
    assert summary["classes"] == list(synthetic.CLS_CLASSES)
    for split, n in (("train", 20), ("val", 8)):
        for cls in synthetic.CLS_CLASSES:
            files = sorted((synthetic_cls_root / split / cls).glob("*.jpg"))
            assert len(files) == n == summary["counts"][split][cls]
        with Image.open(files[0]) as im:
            assert im.size == (64, 64) and im.mode == "RGB"


def test_colour_is_not_the_class_signal(synthetic_cls_root):
    # Mean colours of two classes must overlap heavily: colour is a nuisance by design.
    means = {
        cls: np.array(
            [
                np.asarray(Image.open(f)).mean((0, 1))
                for f in (synthetic_cls_root / "train" / cls).glob("*.jpg")
            ]
        )
        for cls in ("disk", "square")
    }
    gap = np.abs(means["disk"].mean(0) - means["square"].mean(0))
    spread = (means["disk"].std(0) + means["square"].std(0)) / 2
    assert np.all(gap < spread), (gap, spread)


def test_voc_parses_with_detectron2(synthetic_voc_root):
    summary = json.loads((synthetic_voc_root / "summary.json").read_text())
    seen = set()
    n_difficult = 0
    for year, split in (("2007", "trainval"), ("2007", "test"), ("2012", "trainval")):
        dirname = str(synthetic_voc_root / f"VOC{year}")
        dicts = load_voc_instances(dirname, split, synthetic.DET_CLASSES)
        assert len(dicts) == summary["splits"][f"VOC{year}/{split}"]["images"]
        records = voc_check.check_voc_split(dirname, split, synthetic.DET_CLASSES)
        for d, rec in zip(dicts, records):
            with Image.open(d["file_name"]) as im:
                assert im.size == (d["width"], d["height"])
            assert d["annotations"], f"{d['image_id']} has no objects"
            for ann in d["annotations"]:
                x0, y0, x1, y1 = ann["bbox"]  # detectron2's 0-based continuous coordinates
                assert 0 <= x0 < x1 <= d["width"] and 0 <= y0 < y1 <= d["height"]
                seen.add(synthetic.DET_CLASSES[ann["category_id"]])
            n_difficult += sum(o["difficult"] for o in rec["objects"])
    assert seen == set(synthetic.DET_CLASSES)
    assert n_difficult > 0
    assert not (synthetic_voc_root / "VOC2012/ImageSets/Main/test.txt").exists()


def test_register_pascal_voc_with_synthetic_classes(synthetic_voc_root):
    name = "synthetic_test_voc_2012_trainval"
    if name not in DatasetCatalog.list():
        register_pascal_voc(
            name, str(synthetic_voc_root / "VOC2012"), "trainval", 2012, synthetic.DET_CLASSES
        )
    summary = json.loads((synthetic_voc_root / "summary.json").read_text())
    dicts = DatasetCatalog.get(name)
    assert len(dicts) == summary["splits"]["VOC2012/trainval"]["images"] > 0
    assert MetadataCatalog.get(name).thing_classes == list(synthetic.DET_CLASSES)


def _break(xml_path, how):
    tree = ET.parse(xml_path)
    obj = tree.getroot().find("object")
    if how == "missing bndbox":
        obj.remove(obj.find("bndbox"))
    elif how == "box outside":
        obj.find("bndbox/xmax").text = str(int(tree.getroot().find("size/width").text) + 5)
    elif how == "unknown class":
        obj.find("name").text = "unicorn"
    tree.write(xml_path)


@pytest.mark.parametrize(
    "how,message",
    [("missing bndbox", "no <bndbox>"), ("box outside", "outside"), ("unknown class", "unicorn")],
)
def test_malformed_annotation_names_the_file(synthetic_voc_root, tmp_path, how, message):
    dirname = tmp_path / "VOC2007"
    shutil.copytree(synthetic_voc_root / "VOC2007", dirname)
    bad = dirname / "Annotations" / "000002.xml"
    _break(str(bad), how)
    # The good file passes, the broken one fails, both directly and through the split loader.
    voc_check.check_annotation(str(dirname / "Annotations" / "000001.xml"), synthetic.DET_CLASSES)
    with pytest.raises(voc_check.VOCAnnotationError, match=message) as err:
        voc_check.check_annotation(str(bad), synthetic.DET_CLASSES)
    assert str(bad) in str(err.value)
    with pytest.raises(voc_check.VOCAnnotationError) as err:
        voc_check.load_checked_voc_instances(str(dirname), "trainval", synthetic.DET_CLASSES)
    assert str(bad) in str(err.value)


def test_cli_writes_summary(tmp_path, capsys):
    summary = synth_main(
        [
            "cls",
            str(tmp_path),
            "--num-classes",
            "2",
            "--train-per-class",
            "2",
            "--val-per-class",
            "1",
            "--image-size",
            "32",
        ]
    )
    assert summary["counts"]["train"] == {"disk": 2, "square": 2}
    assert len(list(tmp_path.glob("val/*/*.jpg"))) == 2
    assert "wrote" in capsys.readouterr().out


def test_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="num_classes"):
        synthetic.make_classification(str(tmp_path), num_classes=99)
    with pytest.raises(ValueError, match="unknown classes"):
        synthetic.make_voc(str(tmp_path), classes=("disk", "unicorn"))


def test_voc_difficulty_options_bound_object_sizes(tmp_path):
    # the demo's easy detection set: large objects only, no distractors, 3 classes
    classes = ("disk", "square", "triangle")
    synthetic.make_voc(
        str(tmp_path),
        trainval_images=6,
        test_images=2,
        min_side=96,
        max_side=128,
        max_objects=2,
        clutter=0,
        size_range=(0.2, 0.4),
        distractor_p=0.0,
        classes=classes,
    )
    recs = voc_check.check_voc_split(str(tmp_path / "VOC2007"), "trainval", classes)
    sizes = []
    for rec in recs:
        assert 1 <= len(rec["objects"]) <= 2
        for obj in rec["objects"]:
            x0, y0, x1, y1 = obj["bbox"]
            if not obj["truncated"]:
                sizes.append(max(x1 - x0, y1 - y0) + 1)
    # an untruncated object spans at least its radius, 0.2 x the short side (>= 96 px)
    assert sizes and min(sizes) >= 0.2 * 96
