"""A killed-and-resumed run ends with exactly the weights of an uninterrupted one (CPU).

Also: a blow-up is never checkpointed, an unusable last.pth falls back to the newest usable
checkpoint_NNNN.pth, metrics.json lists each iteration once after a resume, and a resume with
another optimizer type stops with one clear message. The resumed half changes only keys that do
not shape the run (pretrain.config.FREE_KEYS), which must leave the numbers unchanged.
"""

import json
import logging

import pytest
import torch
from moco_helpers import tiny_train_cfg

import pretrain.engine as engine
from common.runconfig import ChangedRunError
from evaluation.knn import main as knn_main
from pretrain.builder import build_moco
from pretrain.checkpoint import FORMAT, CheckpointError, load_checkpoint, restore
from pretrain.train_net import build_optimizer, train


def _cfg(root, out, pipeline: str, **extra):
    batched = pipeline != "pil"
    opts = dict(
        MODEL__MLP_HIDDEN_DIM=64,
        MODEL__K=24,  # 3 steps of 16 keys (symmetric): the pointer wraps around
        MODEL__KEY_BN_SPLITS=2,
        INPUT__LOAD_SIZE=40,
        DATA__CACHE_DECODED=pipeline == "batched",  # the cache only serves "batched"
        # both optimizers: AdamW (the tiny recipe's) and SGD with momentum (the paper's)
        SOLVER__OPTIMIZER="AdamW" if batched else "SGD",
        DATA__NUM_WORKERS=0 if batched else 1,  # the PIL path through a worker process
        SOLVER__EPOCHS=2,
        SOLVER__MAX_ITERS_PER_EPOCH=2,
        SOLVER__WARMUP_EPOCHS=0.5,
        CHECKPOINT_PERIOD=2,
    )
    opts.update(extra)
    return tiny_train_cfg(root / "train", out, pipeline, **opts)


@pytest.mark.parametrize("pipeline", ["batched", "pil", "device"])
def test_resume_matches_uninterrupted(synthetic_cls_root, tmp_path, pipeline):
    batched = pipeline != "pil"
    straight = tmp_path / "straight"
    out = train(_cfg(synthetic_cls_root, straight, pipeline), auto_resume=False)
    assert out == {"epoch": 2, "iteration": 4}

    resumed = tmp_path / "resumed"
    cfg = _cfg(synthetic_cls_root, resumed, pipeline)
    assert train(cfg, stop_after_epochs=1)["epoch"] == 1  # "killed" after epoch 1
    # resumed with other workers, prefetch, cache, logging and checkpoint periods: allowed
    free = _cfg(
        synthetic_cls_root,
        resumed,
        pipeline,
        DATA__NUM_WORKERS=1 if batched else 0,
        INPUT__PREFETCH=2 if batched else 0,
        DATA__CACHE_DECODED=False,
        LOG_PERIOD=3,
        CHECKPOINT_PERIOD=1,
        CPU_THREADS=1,
        TEST__KNN_K=5,
    )
    assert train(free)["iteration"] == 4  # auto-resumes from resumed/last.pth

    a = load_checkpoint(str(straight / "last.pth"))
    b = load_checkpoint(str(resumed / "last.pth"))
    assert a["format"] == FORMAT and (a["epoch"], a["iteration"]) == (b["epoch"], b["iteration"])
    assert a["model"].keys() == b["model"].keys()
    assert not any(k.startswith("module.") for k in a["model"])
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    state_a, state_b = a["optimizer"]["state"], b["optimizer"]["state"]
    assert state_a.keys() == state_b.keys() and len(state_a) > 0
    buffer = "exp_avg" if batched else "momentum_buffer"  # AdamW / SGD state
    for idx, st in state_a.items():
        assert buffer in st, (buffer, sorted(st))
        for name, value in st.items():
            if torch.is_tensor(value):
                assert torch.equal(value, state_b[idx][name]), (idx, name)
    # training changed the weights and the queue (so the comparison above can fail)
    torch.manual_seed(cfg.SEED)  # train() builds the model right after this seed
    init = build_moco(cfg).state_dict()
    for key in ("queue", "encoder_q.conv1.weight", "encoder_k.conv1.weight"):
        assert not torch.equal(init[key], a["model"][key]), key
    assert (straight / "checkpoint_0002.pth").exists()
    assert (straight / "metrics.json").exists()
    if pipeline == "batched":  # the kNN CLI reads the checkpoint (arch and head from its config)
        res = knn_main(
            [
                "--checkpoint",
                str(straight / "last.pth"),
                "--data",
                str(synthetic_cls_root),
                "--size",
                "32",
                "--workers",
                "0",
                "--device",
                "cpu",
            ]
        )
        assert 0.0 <= res["knn_top1"] <= 1.0


def test_blowup_is_never_checkpointed(synthetic_cls_root, tmp_path, monkeypatch):
    out = tmp_path / "run"
    sane = dict(SOLVER__EPOCHS=3, SOLVER__MAX_ITERS_PER_EPOCH=1, SOLVER__WARMUP_EPOCHS=0.0)
    cfg = _cfg(synthetic_cls_root, out, "pil", **sane)
    assert train(cfg, stop_after_epochs=1)["epoch"] == 1
    last = out / "last.pth"
    # the same run blows up in epoch 2: lr 1e30 makes the weights huge but finite (~1e28) in
    # one step, refused at the epoch's end (a changed SOLVER.BASE_LR would be another run,
    # which the resume refuses, so the blow-up comes through the schedule)
    monkeypatch.setattr(engine, "learning_rate", lambda *args: 1e30)
    with pytest.raises(FloatingPointError) as err:
        train(cfg)
    msg = str(err.value)
    assert "exploding" in msg or "non-finite" in msg, msg
    assert str(last) in msg and "--resume" in msg and "--no-auto-resume" in msg, msg
    ckpt = load_checkpoint(str(last))
    assert (ckpt["epoch"], ckpt["iteration"]) == (1, 1)  # still the good epoch-1 file
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert not (out / "checkpoint_0002.pth").exists()
    # the rerun, with the cause gone, resumes from the good file and finishes
    monkeypatch.undo()
    assert train(cfg) == {"epoch": 3, "iteration": 3}


def test_blowup_in_first_epoch_says_no_checkpoint_yet(synthetic_cls_root, tmp_path):
    out = tmp_path / "run"
    opts = dict(SOLVER__BASE_LR=1e30, SOLVER__MAX_ITERS_PER_EPOCH=1, SOLVER__WARMUP_EPOCHS=0.0)
    with pytest.raises(FloatingPointError, match="No checkpoint of this run.*--no-auto-resume"):
        train(_cfg(synthetic_cls_root, out, "pil", **opts))
    assert not (out / "last.pth").exists()


def test_optimizer_type_change_is_one_clear_error(synthetic_cls_root, tmp_path):
    out = tmp_path / "run"
    one = dict(SOLVER__EPOCHS=2, SOLVER__MAX_ITERS_PER_EPOCH=1)
    train(_cfg(synthetic_cls_root, out, "pil", **one), stop_after_epochs=1)  # SGD
    adamw = _cfg(synthetic_cls_root, out, "pil", SOLVER__OPTIMIZER="AdamW", **one)
    with pytest.raises(ChangedRunError, match=r"SOLVER.OPTIMIZER: 'SGD' -> 'AdamW'"):
        train(adamw)
    # restore() itself, on a file written before the type was recorded: the type is inferred
    # from the param groups
    ckpt = load_checkpoint(str(out / "last.pth"))
    del ckpt["optimizer_type"]
    model = build_moco(adamw)
    optimizer = build_optimizer(adamw, model.parameters())
    with pytest.raises(CheckpointError, match=r"holds SGD optimizer state.*SOLVER.OPTIMIZER SGD"):
        restore(ckpt, model, optimizer, path="old.pth")


def _iterations(metrics):
    return [json.loads(line)["iteration"] for line in open(metrics) if "loss" in line]


def test_unusable_last_falls_back_and_metrics_keep_each_iteration_once(
    synthetic_cls_root, tmp_path, caplog
):
    out = tmp_path / "run"
    opts = dict(SOLVER__EPOCHS=4, SOLVER__MAX_ITERS_PER_EPOCH=1, CHECKPOINT_PERIOD=1)
    cfg = _cfg(synthetic_cls_root, out, "batched", **opts)
    assert train(cfg, stop_after_epochs=3)["iteration"] == 3
    assert _iterations(out / "metrics.json") == [0, 1, 2]
    (out / "last.pth").write_bytes((out / "last.pth").read_bytes()[:1000])  # truncated
    (out / "checkpoint_0003.pth").write_bytes(b"")  # empty
    with caplog.at_level(logging.WARNING, logger="pretrain.checkpoint"):
        assert train(cfg) == {"epoch": 4, "iteration": 4}
    assert f"falls back to {out / 'checkpoint_0002.pth'}" in caplog.text
    assert str(out / "last.pth") in caplog.text and "truncated or corrupt" in caplog.text
    # iteration 2 was rolled back and redone: it appears once
    assert _iterations(out / "metrics.json") == [0, 1, 2, 3]
    # no usable file at all: one error naming the files tried and the choices
    assert sorted(p.name for p in out.glob("checkpoint_*.pth")) == [
        f"checkpoint_000{e}.pth" for e in (1, 2, 3, 4)
    ]
    for path in [out / "last.pth", *out.glob("checkpoint_*.pth")]:
        path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"no usable checkpoint.*--no-auto-resume"):
        train(cfg)
    fresh = train(cfg, auto_resume=False, stop_after_epochs=1)  # --no-auto-resume
    assert fresh == {"epoch": 1, "iteration": 1}
