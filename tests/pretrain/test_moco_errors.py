"""Clear failures and warnings: non-finite loss, queue too large, bad inputs."""

import logging

import pytest
import torch

from pretrain.config import get_pretrain_cfg, load_cfg
from pretrain.engine import LoopContext, _check_finite
from pretrain.train_net import _warn_queue_size, train


def test_non_finite_loss_names_step_lr_and_hint():
    ctx = LoopContext(device=torch.device("cpu"), iters_per_epoch=10, iteration=37)
    with pytest.raises(FloatingPointError, match=r"epoch 3, iteration 37 \(lr 0\.5\).*BASE_LR"):
        _check_finite(torch.tensor(float("nan")), 3, ctx, 0.5)
    _check_finite(torch.tensor(1.0), 3, ctx, 0.5)  # finite: no error


def test_queue_larger_than_dataset_warns_with_fix(caplog):
    cfg = get_pretrain_cfg()
    cfg.MODEL.K = 4096
    with caplog.at_level(logging.WARNING, logger="pretrain.train_net"):
        _warn_queue_size(cfg, 600)
    assert "MODEL.K=4096" in caplog.text and "MODEL.K 128" in caplog.text
    caplog.clear()
    cfg.MODEL.K = 65536
    with caplog.at_level(logging.WARNING, logger="pretrain.train_net"):
        _warn_queue_size(cfg, 1_281_167)
    assert caplog.text == ""


def test_missing_inputs_fail_before_training(tmp_path, synthetic_cls_root):
    cfg = load_cfg("", ["DATA.TRAIN", str(tmp_path / "nope"), "OUTPUT_DIR", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="DATA.TRAIN"):
        train(cfg)
    opts = ["DATA.TRAIN", str(synthetic_cls_root / "train"), "OUTPUT_DIR", str(tmp_path)]
    bad_knn = opts + ["DATA.KNN_TRAIN", str(tmp_path / "x"), "DATA.KNN_VAL", str(tmp_path / "y")]
    with pytest.raises(FileNotFoundError, match="DATA.KNN_TRAIN"):
        train(load_cfg("", bad_knn))
    splits = opts + ["SOLVER.BATCH_SIZE", "30", "MODEL.KEY_BN_SPLITS", "4"]
    with pytest.raises(ValueError, match="KEY_BN_SPLITS"):
        train(load_cfg("", splits))
    big = opts + ["SOLVER.BATCH_SIZE", "512"]
    with pytest.raises(ValueError, match="fewer than one batch"):
        train(load_cfg("", big))
