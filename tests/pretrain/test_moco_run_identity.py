"""A resume is the same run, and one run writes to an OUTPUT_DIR at a time.

A resume with a key that shapes the run changed (pretrain.config.RUN_KEYS) is refused, listing
every change as old -> new with the choices; MODEL.K gives that refusal, not torch's
load_state_dict error. A second pretraining on a folder in use exits naming the first; the lock
of a dead one is taken over. (Free keys resume bit for bit: tests/pretrain/test_moco_resume.py.)
"""

import pytest
import torch
from moco_helpers import tiny_train_cfg
from probe_cmds import pretrain_argv

import pretrain.train_net as train_net
from common.runconfig import ChangedRunError
from pretrain.checkpoint import CheckpointError, check_same_run, load_checkpoint
from pretrain.config import FREE_KEYS, RUN_KEYS, get_pretrain_cfg
from pretrain.train_net import main, train


def _leaf_keys(node, prefix=""):
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _leaf_keys(value, f"{prefix}{key}.")
        else:
            yield prefix + key


def test_every_config_key_is_classified():
    keys = set(_leaf_keys(get_pretrain_cfg()))
    assert not set(RUN_KEYS) & set(FREE_KEYS)
    assert set(RUN_KEYS) | set(FREE_KEYS) == keys, "decide for each new key: RUN or FREE"


def _cfg(root, out, **opts):
    base = dict(MODEL__K=24, SOLVER__EPOCHS=2, SOLVER__MAX_ITERS_PER_EPOCH=1)
    base.update(DATA__NUM_WORKERS=0, CPU_THREADS=1)
    return tiny_train_cfg(root / "train", out, "batched", **{**base, **opts})


def test_a_changed_recipe_is_refused_listing_old_and_new(synthetic_cls_root, tmp_path):
    out = tmp_path / "run"
    assert train(_cfg(synthetic_cls_root, out), stop_after_epochs=1)["epoch"] == 1
    before = (out / "last.pth").read_bytes()
    changed = _cfg(synthetic_cls_root, out, SOLVER__BATCH_SIZE=16, SOLVER__EPOCHS=3, MODEL__T=0.1)
    for resume in ("", str(out / "last.pth")):  # auto-resume and --resume PATH alike
        with pytest.raises(ChangedRunError) as err:
            train(changed, resume=resume)
        msg = str(err.value)
        for line in ("SOLVER.BATCH_SIZE: 8 -> 16", "SOLVER.EPOCHS: 2 -> 3", "MODEL.T: 0.2 -> 0.1"):
            assert line in msg, msg
        assert str(out / "last.pth") in msg.splitlines()[0]
        assert "new OUTPUT_DIR" in msg.splitlines()[-1] and "--no-auto-resume" in msg
    # MODEL.K changes the queue's shape: the same refusal, not torch's load_state_dict error
    with pytest.raises(ChangedRunError, match=r"MODEL.K: 24 -> 32") as err:
        train(_cfg(synthetic_cls_root, out, MODEL__K=32))
    assert "size mismatch" not in str(err.value)
    assert (out / "last.pth").read_bytes() == before  # nothing was written
    # a file without a saved config cannot be compared; restore() still says it in one line
    ckpt = load_checkpoint(str(out / "last.pth"))
    del ckpt["cfg"]
    torch.save(ckpt, tmp_path / "no_cfg.pth")
    with pytest.raises(
        CheckpointError, match=r"does not fit this config \(size mismatch for queue"
    ):
        train(_cfg(synthetic_cls_root, out, MODEL__K=32), resume=str(tmp_path / "no_cfg.pth"))
    # starting afresh in the folder (--no-auto-resume) is the other way out
    fresh = train(
        _cfg(synthetic_cls_root, out, MODEL__K=32), auto_resume=False, stop_after_epochs=1
    )
    assert fresh == {"epoch": 1, "iteration": 1}


def test_another_number_of_iterations_per_epoch_is_refused():
    """The data set (or the number of processes) changed size: every later lr step would move."""
    cfg = get_pretrain_cfg()
    ckpt = {"cfg": cfg.dump(), "epoch": 2, "iteration": 10}
    check_same_run(ckpt, cfg, "last.pth", iters_per_epoch=5)  # the same: no error
    with pytest.raises(ChangedRunError, match=r"iterations per epoch .*: 5 -> 4"):
        check_same_run(ckpt, cfg, "last.pth", iters_per_epoch=4)


def test_a_second_run_on_one_output_dir_is_refused(synthetic_cls_root, tmp_path, one_writer_check):
    out = tmp_path / "run"
    one_writer_check(main, pretrain_argv(synthetic_cls_root / "train", out), str(out), train_net)
