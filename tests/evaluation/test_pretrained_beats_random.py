"""A briefly pretrained encoder beats its own random initialisation in kNN and linear top-1.

Pretraining uses configs/pretrain/tiny_synthetic.yaml as shipped (the tiny CPU recipe, see
docs/tiny_recipe.md), on the same data design as tests/pretrain/test_moco_learning.py: 800
training images, because MoCo needs a queue well below the number of images and the shared
160-image fixture is smaller than the queue. The baseline is the same network at step 0 (same
seed, same config), saved in the same checkpoint format, so the only difference between the two
rows is the pretraining itself.

Linear top-1 uses the cached-feature path with a small lr grid taken for both encoders alike:
random-init features have norms in the hundreds, where the protocol's lr 30 (chosen for MoCo
features) diverges, which would hand the pretrained encoder a win it did not earn.
"""

import logging
import os

import pytest
import torch

from evaluation.linear import build_parser, run

logger = logging.getLogger(__name__)
CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "pretrain")
LR_GRID = ("0.1", "1", "30")
# Absolute top-1 margins (chance is 1/8). PROVISIONAL until docs/tiny_recipe.md lands: set them
# below the gains seen to hold with the shipped recipe (see the report this test prints).
KNN_MARGIN = 0.05
LINEAR_MARGIN = 0.05


def _scores(ckpt, data, out):
    """(kNN top-1, best linear top-1 over LR_GRID) of ``ckpt`` on cached features."""
    best, knn = 0.0, None
    for lr in LR_GRID:
        args = build_parser().parse_args(
            ["--checkpoint", ckpt, "--data", str(data), "--output-dir", str(out)]
            + ["--cached-features", "--crop-size", "64", "--workers", "0", "--lr", lr]
            + ["--batch-size", "64", "--epochs", "100", "--schedule", "60", "80"]
        )
        res = run(args)
        best, knn = max(best, res["top1"]), res["knn_top1"]
    return knn, best


@pytest.mark.slow
def test_pretrained_beats_random_init(tmp_path):
    import synthetic
    from pretrain.builder import build_moco
    from pretrain.config import load_cfg
    from pretrain.train_net import train

    data = tmp_path / "data"
    synthetic.make_classification(
        str(data), seed=0, num_classes=8, train_per_class=100, val_per_class=25, image_size=64
    )
    opts = [
        "DATA.TRAIN",
        str(data / "train"),
        "DATA.KNN_TRAIN",
        "",
        "DATA.KNN_VAL",
        "",
        "OUTPUT_DIR",
        str(tmp_path / "pretrain"),
    ]
    cfg = load_cfg(os.path.join(CONFIG, "tiny_synthetic.yaml"), opts)
    torch.manual_seed(cfg.SEED)  # train() seeds the same way before building the model
    init = build_moco(cfg)
    init_path = str(tmp_path / "init.pth")
    torch.save({"model": init.state_dict(), "format": "moco-detectron2/pretrain/v1"}, init_path)
    train(cfg, auto_resume=False)
    trained_path = str(tmp_path / "pretrain" / "last.pth")

    knn0, lin0 = _scores(init_path, data, tmp_path / "lin_init")
    knn1, lin1 = _scores(trained_path, data, tmp_path / "lin_trained")
    report = f"kNN top-1 {knn0:.3f} -> {knn1:.3f}; linear top-1 {lin0:.3f} -> {lin1:.3f}"
    print(report)  # the measured numbers, visible with pytest -s
    logger.info(report)
    assert knn1 >= knn0 + KNN_MARGIN, report
    assert lin1 >= lin0 + LINEAR_MARGIN, report
