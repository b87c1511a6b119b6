"""Data set registration: VOC names reuse detectron2's, VOC-like sets get their own classes."""

import os

import pytest
from det_helpers import tiny_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.pascal_voc import CLASS_NAMES

import synthetic
from detection.datasets import (
    CheckedVOCLoader,
    default_voc_root,
    register_from_config,
    register_voc,
    register_voc_like,
)

VOC_NAMES = ["voc_2007_trainval", "voc_2012_trainval", "voc_2007_test"]


def test_voc_keeps_detectron2s_metadata_with_the_checked_loader():
    assert register_voc() == VOC_NAMES
    loaders = {n: DatasetCatalog[n] for n in VOC_NAMES}
    assert all(isinstance(loader, CheckedVOCLoader) for loader in loaders.values())
    assert register_voc() == VOC_NAMES
    assert {n: DatasetCatalog[n] for n in VOC_NAMES} == loaders  # not replaced again
    meta = MetadataCatalog.get("voc_2007_test")
    assert (loaders["voc_2007_test"].dirname, loaders["voc_2007_test"].split) == (
        meta.dirname,
        "test",
    )
    assert meta.dirname == os.path.join(default_voc_root(), "VOC2007")
    assert (meta.year, meta.split, meta.evaluator_type) == (2007, "test", "pascal_voc")
    assert meta.thing_classes == list(CLASS_NAMES)


def test_voc_under_another_root_replaces_and_restores(tmp_path):
    try:
        register_voc(str(tmp_path))
        assert MetadataCatalog.get("voc_2012_trainval").dirname == str(tmp_path / "VOC2012")
        assert MetadataCatalog.get("voc_2012_trainval").evaluator_type == "pascal_voc"
    finally:
        register_voc()
    assert MetadataCatalog.get("voc_2012_trainval").dirname.endswith(os.path.join("", "VOC2012"))
    assert MetadataCatalog.get("voc_2012_trainval").dirname != str(tmp_path / "VOC2012")


def test_voc_like_set_with_custom_classes(tiny_voc_root):
    names = register_voc_like("dettest", str(tiny_voc_root), synthetic.DET_CLASSES)
    assert names == ["dettest_2007_trainval", "dettest_2012_trainval", "dettest_2007_test"]
    assert register_voc_like("dettest", str(tiny_voc_root), synthetic.DET_CLASSES) == names
    meta = MetadataCatalog.get("dettest_2012_trainval")
    assert meta.thing_classes == list(synthetic.DET_CLASSES)
    assert (meta.dirname, meta.year, meta.split) == (
        str(tiny_voc_root / "VOC2012"),
        2012,
        "trainval",
    )
    assert meta.evaluator_type == "pascal_voc"
    dicts = DatasetCatalog.get("dettest_2007_test")
    assert len(dicts) == 3
    labels = {a["category_id"] for d in dicts for a in d["annotations"]}
    assert labels == set(range(len(synthetic.DET_CLASSES)))  # seed 6: every class in test
    with pytest.raises(ValueError):
        register_voc_like("dettest", str(tiny_voc_root), [])


def test_registered_from_the_config(tiny_voc_root):
    cfg = tiny_cfg(tiny_voc_root, "TRANSFER.VOC_LIKE_PREFIX", "cfgtest")
    names = register_from_config(cfg)
    assert names == ["cfgtest_2007_trainval", "cfgtest_2012_trainval", "cfgtest_2007_test"]
    assert MetadataCatalog.get("cfgtest_2007_test").thing_classes == list(synthetic.DET_CLASSES)
    assert len(DatasetCatalog.get("cfgtest_2007_trainval")) == 4


def test_voc_root_from_the_config(tiny_voc_root, tmp_path):
    cfg = tiny_cfg(tiny_voc_root, "TRANSFER.VOC_ROOT", str(tmp_path), "TRANSFER.VOC_LIKE_ROOT", "")
    try:
        assert register_from_config(cfg) == VOC_NAMES
        assert MetadataCatalog.get("voc_2007_test").dirname == str(tmp_path / "VOC2007")
    finally:
        register_voc()


def _evaluate(name, predict):
    """AP of ``predict(dataset_dict) -> (boxes XYXY, classes)`` on data set ``name``."""
    import torch
    from detectron2.evaluation import PascalVOCDetectionEvaluator
    from detectron2.structures import Boxes, Instances

    evaluator = PascalVOCDetectionEvaluator(name)
    evaluator.reset()
    for d in DatasetCatalog.get(name):
        boxes, classes = predict(d)
        inst = Instances((d["height"], d["width"]))
        inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        inst.scores = torch.linspace(0.9, 0.5, len(classes))
        inst.pred_classes = torch.tensor(classes, dtype=torch.int64)
        evaluator.process([{"image_id": d["image_id"]}], [{"instances": inst}])
    return evaluator.evaluate()["bbox"]


def test_oracle_scores_100_and_wrong_classes_score_0(tiny_voc_root):
    """The evaluator reads the generated annotations the way the loader writes them: the
    ground truth as predictions scores AP 100, the same boxes with shifted classes 0. (So a
    near-zero AP of a briefly trained detector is the detector, not the data or the scoring.)"""
    name = register_voc_like("oracle", str(tiny_voc_root), synthetic.DET_CLASSES)[-1]
    n = len(synthetic.DET_CLASSES)

    def oracle(d):
        anns = d["annotations"]
        return [a["bbox"] for a in anns], [a["category_id"] for a in anns]

    def wrong_class(d):
        boxes, classes = oracle(d)
        return boxes, [(c + 1) % n for c in classes]

    assert _evaluate(name, oracle) == pytest.approx({"AP": 100.0, "AP50": 100.0, "AP75": 100.0})
    assert _evaluate(name, wrong_class) == pytest.approx({"AP": 0.0, "AP50": 0.0, "AP75": 0.0})
