"""Learning test: a few minutes of CPU MoCo with configs/pretrain/tiny_synthetic.yaml must beat
the random-init encoder on weighted kNN (k=20) of the synthetic classification set.

The config is used as shipped (recipe and step budget); only data and output paths are set
here. The random-init baseline is the very encoder training starts from (same seed).
"""

import logging
import os
import time

import pytest
import torch

import synthetic
from evaluation.knn import knn_accuracy
from pretrain.builder import build_moco
from pretrain.config import load_cfg
from pretrain.train_net import train

logger = logging.getLogger(__name__)
CONFIG = os.path.join(
    os.path.dirname(__file__), "..", "..", "configs", "pretrain", "tiny_synthetic.yaml"
)
MARGIN = 0.05  # kNN top-1 gain over random init required (chance is 1/8 = 0.125)


@pytest.mark.slow
def test_tiny_moco_beats_random_init_knn(tmp_path):
    # The shared fixture (160 images) is smaller than the queue; MoCo needs K << images.
    root = tmp_path / "data"
    synthetic.make_classification(
        str(root), seed=0, num_classes=8, train_per_class=100, val_per_class=25, image_size=64
    )
    opts = ["DATA.TRAIN", str(root / "train"), "OUTPUT_DIR", str(tmp_path / "out")]
    opts += ["DATA.KNN_TRAIN", str(root / "train"), "DATA.KNN_VAL", str(root / "val")]
    cfg = load_cfg(CONFIG, opts)
    size = cfg.TEST.KNN_SIZE or cfg.INPUT.SIZE

    torch.manual_seed(cfg.SEED)  # train() seeds the same way before building the model
    init = build_moco(cfg).encoder_q
    knn0 = knn_accuracy(init, str(root / "train"), str(root / "val"), size=size, workers=0)
    start = time.perf_counter()
    result = train(cfg, auto_resume=False)
    minutes = (time.perf_counter() - start) / 60
    knn1 = result["knn_top1"]
    report = (
        f"kNN top-1 random init {knn0:.3f} -> MoCo {knn1:.3f} after {result['iteration']} "
        f"iterations ({minutes:.1f} min)"
    )
    logger.warning(report)
    assert knn1 >= knn0 + MARGIN, report
