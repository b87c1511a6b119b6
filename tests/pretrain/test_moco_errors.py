"""Clear failures and warnings: non-finite or exploding loss, queue too large, bad inputs,
corrupt checkpoints in training, durable checkpoint writes."""

import logging
import math
import os

import pytest
import torch
from detectron2.config import CfgNode

from pretrain.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_resume_checkpoint,
    save_checkpoint,
    weights_problem,
)
from pretrain.config import get_pretrain_cfg, load_cfg
from pretrain.engine import check_loss, loss_limit
from pretrain.train_net import _warn_queue_size, train


def test_non_finite_loss_names_step_lr_and_hint():
    with pytest.raises(FloatingPointError, match=r"epoch 3, iteration 37 \(lr 0\.5\).*BASE_LR"):
        check_loss(float("nan"), math.inf, 3, 37, 0.5)
    check_loss(1.0, math.inf, 3, 37, 0.5)  # finite: no error


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


def test_loss_above_the_possible_maximum_is_an_explosion():
    limit = loss_limit(K=24, T=0.2)
    assert limit == pytest.approx(math.log(25) + 10 + 1)
    assert loss_limit(K=24, T=0.2, symmetric=True) == pytest.approx(2 * (math.log(25) + 10) + 1)
    check_loss(limit - 0.5, limit, 0, 5, 0.1)  # a bad but possible loss: no error
    # (the run adds the last good checkpoint: tests/pretrain/test_moco_resume.py::test_blowup_*)
    with pytest.raises(FloatingPointError, match=r"exploding.*iteration 5 \(lr 0\.1\)"):
        check_loss(limit * 10, limit, 0, 5, 0.1)
    with pytest.raises(FloatingPointError, match=r"non-finite.*Lower SOLVER.BASE_LR"):
        check_loss(float("inf"), limit, 0, 5, 0.1)


def test_weights_problem_finds_nan_and_explosions():
    state = {"a": torch.ones(3), "n": torch.tensor(7), "b": torch.zeros(0)}
    assert weights_problem(state) is None
    assert "non-finite" in weights_problem({**state, "w": torch.tensor([1.0, float("nan")])})
    assert "exploding" in weights_problem({**state, "w": torch.tensor([2e6])})
    # BN running statistics follow the activations' scale: only NaN/inf is a problem there
    assert weights_problem({**state, "bn.running_var": torch.tensor([2e6])}) is None
    assert "non-finite" in weights_problem({"bn.running_var": torch.tensor([float("inf")])})


def _tiny_ckpt(path):
    model = torch.nn.Linear(2, 2)
    save_checkpoint(str(path), model, torch.optim.SGD(model.parameters()), None, 1, 3, CfgNode())
    return model


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_corrupt_checkpoint_names_path_and_choices(tmp_path, damage):
    path = tmp_path / "last.pth"
    _tiny_ckpt(path)
    data = path.read_bytes()
    path.write_bytes(
        {"truncated": data[: len(data) // 2], "empty": b"", "garbage": b"x" * 99}[damage]
    )
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(str(path))
    msg = str(err.value)
    assert str(path) in msg and "--resume" in msg and "--no-auto-resume" in msg, msg
    assert ("empty" if damage == "empty" else "truncated or corrupt") in msg
    # an explicit --resume of the same file stops with the same message
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_resume_checkpoint(str(tmp_path / "elsewhere"), str(path))


def test_blown_up_checkpoint_is_refused(tmp_path):
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.fill_(7e28)
    with pytest.raises(CheckpointError, match=r"not saving .*weight has \|w\| = 7e\+28"):
        save_checkpoint(
            str(tmp_path / "x.pth"),
            model,
            torch.optim.SGD(model.parameters()),
            None,
            1,
            1,
            CfgNode(),
        )
    assert not list(tmp_path.iterdir())


def test_checkpoint_is_fsynced_before_and_after_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.path.isdir(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(a, b):
        events.append(("replace", os.path.basename(b)))
        real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    _tiny_ckpt(tmp_path / "last.pth")
    # the file's data reaches the disk before the rename, the directory entry after it
    assert events == [("fsync", False), ("replace", "last.pth"), ("fsync", True)]
    assert not (tmp_path / "last.pth.tmp").exists()
    assert load_checkpoint(str(tmp_path / "last.pth"))["iteration"] == 3
    # a kill -9 during a later write leaves a torn last.pth.tmp beside the intact last.pth
    (tmp_path / "last.pth.tmp").write_bytes(b"PK\x03\x04torn")
    path, ckpt = load_resume_checkpoint(str(tmp_path))
    assert path == str(tmp_path / "last.pth") and ckpt["iteration"] == 3
