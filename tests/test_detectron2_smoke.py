"""Detectron2 runs on this platform: the VOC R50-C4 Faster R-CNN trains and evaluates on CPU.

Uses the model zoo's own ``PascalVOC-Detection/faster_rcnn_R_50_C4.yaml`` shrunk for speed
(thin ResNet-50, 128-160 px images, few proposals), on the ``synthetic_voc_root`` fixture.
"""

import math

import torch
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.data import (
    DatasetCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.data.datasets.pascal_voc import register_pascal_voc
from detectron2.engine import HookBase, SimpleTrainer
from detectron2.evaluation import PascalVOCDetectionEvaluator, inference_on_dataset
from detectron2.modeling import build_model
from detectron2.solver import build_optimizer

import synthetic


def _register(root):
    names = {}
    for year, split in (("2007", "trainval"), ("2012", "trainval"), ("2007", "test")):
        name = f"synthetic_smoke_voc_{year}_{split}"
        if name not in DatasetCatalog.list():
            register_pascal_voc(
                name, str(root / f"VOC{year}"), split, int(year), synthetic.DET_CLASSES
            )
        names[(year, split)] = name
    return names


def _tiny_cfg(names, output_dir):
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file("PascalVOC-Detection/faster_rcnn_R_50_C4.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""  # random init: no download
    cfg.MODEL.RESNETS.WIDTH_PER_GROUP = 16  # thin R50: same key names, several times cheaper
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = len(synthetic.DET_CLASSES)
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 32
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 64
    cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = 200
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 50
    cfg.INPUT.MIN_SIZE_TRAIN = (128,)
    cfg.INPUT.MAX_SIZE_TRAIN = 200
    cfg.INPUT.MIN_SIZE_TEST = 128
    cfg.INPUT.MAX_SIZE_TEST = 200
    cfg.DATASETS.TRAIN = (names[("2007", "trainval")], names[("2012", "trainval")])  # 07+12
    cfg.DATASETS.TEST = (names[("2007", "test")],)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SOLVER.BASE_LR = 0.001
    cfg.SOLVER.WARMUP_ITERS = 0
    cfg.OUTPUT_DIR = str(output_dir)
    return cfg


class _RecordLosses(HookBase):
    def __init__(self):
        self.losses = []

    def after_step(self):
        self.losses.append(self.trainer.storage.latest()["total_loss"][0])


def test_faster_rcnn_c4_trains_and_evaluates_on_voc_format(synthetic_voc_root, tmp_path):
    torch.manual_seed(0)
    names = _register(synthetic_voc_root)
    cfg = _tiny_cfg(names, tmp_path)
    model = build_model(cfg)
    assert model.roi_heads.box_predictor.cls_score.out_features == len(synthetic.DET_CLASSES) + 1

    trainer = SimpleTrainer(model, build_detection_train_loader(cfg), build_optimizer(cfg, model))
    record = _RecordLosses()
    trainer.register_hooks([record])
    trainer.train(0, 2)
    assert len(record.losses) == 2
    assert all(math.isfinite(loss) and loss > 0 for loss in record.losses), record.losses

    test_name = names[("2007", "test")]
    evaluator = PascalVOCDetectionEvaluator(test_name)
    result = inference_on_dataset(model, build_detection_test_loader(cfg, test_name), evaluator)
    assert set(result["bbox"]) == {"AP", "AP50", "AP75"}
    for value in result["bbox"].values():
        assert math.isfinite(value) and 0.0 <= value <= 100.0
