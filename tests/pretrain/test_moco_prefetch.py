"""INPUT.PREFETCH: views made in a background thread, ahead of the step (pretrain/prefetch.py).

The thread must hand over items in order, pass errors on, stop when the consumer stops early,
stay at most ``depth`` items ahead, and leave a run's numbers bit for bit unchanged.
"""

import itertools
import threading
import time

import pytest
import torch
from moco_helpers import tiny_train_cfg

from pretrain.builder import build_moco
from pretrain.checkpoint import load_checkpoint
from pretrain.prefetch import Prefetcher
from pretrain.train_net import train


def _double(batch):
    return [batch * 2], {"made_in": threading.current_thread().name}


def test_items_in_order_made_in_the_background():
    loader = [(torch.tensor([i]), f"extra{i}") for i in range(5)]
    with Prefetcher(loader, _double, depth=2, device="cpu") as pf:
        items = list(pf)
    assert [int(v[0]) for v, _, _ in items] == [0, 2, 4, 6, 8]
    assert [e for _, _, e in items] == [f"extra{i}" for i in range(5)]
    assert {info["made_in"] for _, info, _ in items} == {"view-prefetch"}
    assert not torch.is_grad_enabled() or all(not v[0].requires_grad for v, _, _ in items)


def test_errors_reach_the_consumer_in_place():
    def make(batch):
        if int(batch) == 3:
            raise OSError("disk gone at batch 3")
        return [batch], None

    loader = [(torch.tensor(i), None) for i in range(6)]
    got = []
    with pytest.raises(OSError, match="disk gone at batch 3"):
        with Prefetcher(loader, make, depth=2, device="cpu") as pf:
            for views, _, _ in pf:
                got.append(int(views[0]))
    assert got == [0, 1, 2]  # every item before the failing one, then the error


def test_stays_at_most_depth_ahead_and_stops_on_early_exit():
    made = []

    def make(batch):
        made.append(int(batch))
        return [batch], None

    endless = ((torch.tensor(i), None) for i in itertools.count())
    pf = Prefetcher(endless, make, depth=3, device="cpu")
    first = next(pf)
    time.sleep(0.5)  # let the thread run as far ahead as it may
    # the queue holds `depth` items and the thread holds one more, waiting to put it
    assert int(first[0][0]) == 0 and len(made) <= 1 + 3 + 1, made
    pf.close()
    assert not pf._thread.is_alive()
    n = len(made)
    time.sleep(0.2)
    assert len(made) == n  # nothing is made after close()


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth"):
        Prefetcher([], _double, depth=0, device="cpu")


def _cfg(root, out, pipeline, prefetch):
    return tiny_train_cfg(
        root / "train",
        out,
        pipeline,
        MODEL__MLP_HIDDEN_DIM=64,
        MODEL__K=32,
        INPUT__LOAD_SIZE=40,
        INPUT__PREFETCH=prefetch,
        DATA__CACHE_DECODED=pipeline == "batched",
        DATA__NUM_WORKERS=1,
        SOLVER__EPOCHS=2,
        SOLVER__MAX_ITERS_PER_EPOCH=3,
    )


@pytest.mark.parametrize("pipeline", ["batched", "device", "pil"])
def test_prefetch_leaves_the_numbers_unchanged(synthetic_cls_root, tmp_path, pipeline):
    """Same weights and queue with views made in line and 2 batches ahead in the thread.

    3 of the epoch's batches are used, so the thread also prepares batches that are thrown
    away at the epoch's end; they must not shift the next epoch's randomness.
    """
    runs = {}
    for prefetch in (0, 2):
        out = tmp_path / f"prefetch{prefetch}"
        assert train(_cfg(synthetic_cls_root, out, pipeline, prefetch), auto_resume=False) == {
            "epoch": 2,
            "iteration": 6,
        }
        runs[prefetch] = load_checkpoint(str(out / "last.pth"))["model"]
    a, b = runs[0], runs[2]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # training moved the weights and the queue away from the start (the check above can fail)
    cfg = _cfg(synthetic_cls_root, tmp_path / "init", pipeline, 0)
    torch.manual_seed(cfg.SEED)  # train() builds the model right after this seed
    init = build_moco(cfg).state_dict()
    for key in ("queue", "encoder_q.conv1.weight"):
        assert not torch.equal(init[key], a[key]), key


def test_auto_prefetch_is_off_on_the_cpu_and_bad_values_are_refused(
    synthetic_cls_root, tmp_path, monkeypatch
):
    """-1 (the default) makes views in line on the CPU; 2 uses the thread; -2 is refused."""
    import pretrain.engine as engine

    made = []

    class Recording(Prefetcher):
        def __init__(self, *args, **kwargs):
            made.append(kwargs.get("depth", args[2] if len(args) > 2 else None))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(engine, "Prefetcher", Recording)
    for prefetch in (-1, 2):
        cfg = _cfg(synthetic_cls_root, tmp_path / f"p{prefetch}", "batched", prefetch)
        cfg.defrost()
        cfg.SOLVER.EPOCHS = 1
        train(cfg, auto_resume=False)
    assert made == [2]  # one epoch with the thread, none for the CPU default
    with pytest.raises(ValueError, match="INPUT.PREFETCH=-2"):
        _cfg(synthetic_cls_root, tmp_path / "bad", "batched", -2)
