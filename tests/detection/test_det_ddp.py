"""Detection with two CPU processes (gloo through detectron2's ``launch``).

One two-process training run of the tiny config (precise BN on, final evaluation) is shared by
the tests of this module: both ranks end with the same weights and the same, defined, BN
statistics, the checkpoint holds them, and the two-process evaluation equals a one-process
evaluation of the checkpoint. The precise-BN pooling is also tested on its own against the
population statistics it should give.
"""

import json
import pickle
import socket

import pytest
import torch
import torch.nn as nn
from det_helpers import TINY_CONFIG
from detectron2.engine import default_argument_parser, launch
from detectron2.layers import NaiveSyncBatchNorm
from detectron2.utils import comm
from fvcore.nn.precise_bn import update_bn_stats

from common.launch import run_then_close
from detection import train_net
from detection.precise_bn import PooledPreciseBN

TRAIN_OPTS = [
    "SOLVER.MAX_ITER", "3", "SOLVER.STEPS", "(2,)", "SOLVER.WARMUP_ITERS", "1",
    "SOLVER.CHECKPOINT_PERIOD", "100", "TEST.PRECISE_BN.NUM_ITER", "2", "TRANSFER.INIT", "random",
]  # fmt: skip


def free_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


class TwoNorms(nn.Module):
    """A plain BN and detectron2's all-reduce BN on the input; ``idle`` is never called."""

    def __init__(self):
        super().__init__()
        self.bn, self.sync, self.idle = nn.BatchNorm2d(3), NaiveSyncBatchNorm(3), nn.BatchNorm2d(3)

    def forward(self, x):
        return self.bn(x) + self.sync(x)


def rank_batches(rank):
    """Three batches per rank whose image sizes vary, in another order on each rank, as with
    multi-scale training: fvcore weights each batch by the sample count of its own rank."""
    g = torch.Generator().manual_seed(rank)
    sides = (4, 5, 6) if rank == 0 else (7, 5, 4)
    return [torch.randn(1 + rank, 3, s, s, generator=g) * (1 + rank) + rank for s in sides]


def stats(model):
    return {
        name: (m.running_mean.clone(), m.running_var.clone()) for name, m in model.named_children()
    }


def _precise_bn_worker(out_dir):
    torch.set_num_threads(1)
    batches = rank_batches(comm.get_rank())
    fvcore_only, pooled = TwoNorms(), TwoNorms()
    update_bn_stats(fvcore_only, iter(batches), len(batches))
    PooledPreciseBN(0, pooled, batches, len(batches)).update_stats()
    with open(f"{out_dir}/rank{comm.get_rank()}.pkl", "wb") as f:
        pickle.dump({"fvcore": stats(fvcore_only), "pooled": stats(pooled)}, f)


@pytest.mark.slow
def test_precise_bn_is_pooled_over_processes(two_process_run):
    r = [pickle.load(open(two_process_run / f"rank{i}.pkl", "rb")) for i in range(2)]
    # fvcore alone: each rank weights the batches by its own sample counts -> ranks disagree
    # (detectron2 issue 5398). If this starts failing, fvcore exchanges the counts itself.
    for layer in ("bn", "sync"):
        assert not torch.allclose(r[0]["fvcore"][layer][0], r[1]["fvcore"][layer][0])
    # pooled: every rank holds the same statistics ...
    for layer in ("bn", "sync", "idle"):
        for a, b in zip(r[0]["pooled"][layer], r[1]["pooled"][layer]):
            assert torch.equal(a, b)
    # ... for plain BN: the population mean and (biased) variance of every pixel of every batch
    # of both ranks, as one process seeing all of them would estimate
    pixels = torch.cat(
        [x.transpose(0, 1).reshape(3, -1) for i in (0, 1) for x in rank_batches(i)], 1
    )
    mean, var = r[0]["pooled"]["bn"]
    torch.testing.assert_close(mean, pixels.mean(1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(var, pixels.var(1, unbiased=False), rtol=1e-5, atol=1e-5)
    # a layer no batch reached keeps its statistics (fvcore alone sets the variance to 0)
    assert torch.equal(r[0]["fvcore"]["idle"][1], torch.zeros(3))
    assert torch.equal(r[0]["pooled"]["idle"][0], torch.zeros(3))
    assert torch.equal(r[0]["pooled"]["idle"][1], torch.ones(3))


def test_precise_bn_in_one_process_is_fvcores_own():
    batches = rank_batches(0)
    fvcore_only, pooled = TwoNorms(), TwoNorms()
    update_bn_stats(fvcore_only, iter(batches), len(batches))
    PooledPreciseBN(0, pooled, batches, len(batches)).update_stats()
    a, b = stats(fvcore_only), stats(pooled)
    for layer in ("bn", "sync"):
        assert all(torch.equal(x, y) for x, y in zip(a[layer], b[layer]))
    assert torch.equal(b["idle"][1], torch.ones(3)) and torch.equal(a["idle"][1], torch.zeros(3))


def _worker(argv, out_dir):
    """One spawned rank: the precise-BN check on toy layers (``rank<r>.pkl``), then
    ``detection.train_net.run``, saving this rank's final model (what it evaluated) to
    ``<out_dir>/rank<r>.pth``; the patch lives in this worker process only."""
    _precise_bn_worker(out_dir)
    train = train_net.Trainer.train

    def train_and_save(self):
        results = train(self)
        model = getattr(self.model, "module", self.model)  # unwrap DDP
        torch.save(model.state_dict(), f"{out_dir}/rank{comm.get_rank()}.pth")
        return results

    train_net.Trainer.train = train_and_save
    return train_net.run(default_argument_parser().parse_args(argv))


@pytest.fixture(scope="module")
def two_process_run(tiny_voc_root, tmp_path_factory):
    """Two CPU processes: the toy precise-BN check, then the tiny config trained for 3
    iterations (sharing the process start-up, the slow part: 30-50 s on 2 shared cores, so
    the tests using it are marked slow); returns the output folder."""
    out = tmp_path_factory.mktemp("ddp")
    argv = ["--config-file", TINY_CONFIG, "--num-gpus", "2", "OUTPUT_DIR", str(out),
            "TRANSFER.VOC_LIKE_ROOT", str(tiny_voc_root), *TRAIN_OPTS]  # fmt: skip
    launch(run_then_close, 2, dist_url=free_url(), args=(_worker, argv, str(out)))
    return out


@pytest.mark.slow
def test_ranks_end_with_equal_weights(two_process_run):
    r0, r1 = (torch.load(two_process_run / f"rank{i}.pth") for i in range(2))
    assert r0.keys() == r1.keys()
    weights = [
        k for k in r0 if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    ]
    assert len(weights) > 100
    for k in weights:
        assert torch.equal(r0[k], r1[k]), k
    lines = (two_process_run / "metrics.json").read_text().splitlines()
    last = json.loads([line for line in lines if "total_loss" in line][-1])
    assert last["iteration"] == 2 and last["lr"] > 0  # three SGD steps were taken


@pytest.mark.slow
def test_bn_statistics_are_defined_equal_on_ranks_and_checkpointed(two_process_run):
    r0, r1 = (torch.load(two_process_run / f"rank{i}.pth") for i in range(2))
    saved = torch.load(two_process_run / "model_final.pth")["model"]
    buffers = [k for k in r0 if k.endswith(("running_mean", "running_var"))]
    assert any(k.startswith("roi_heads.res5.norm.") for k in buffers)  # the extra norm
    assert len(buffers) == 2 * 54  # every BN layer: backbone, res5, the extra norm
    for k in buffers:
        assert torch.isfinite(r0[k]).all(), k
        if k.endswith("running_var"):
            assert (r0[k] > 0).all(), k
        assert torch.equal(r0[k], r1[k]), k  # what each rank evaluated with
        assert torch.equal(r0[k], saved[k]), k  # what the checkpoint holds
    log = (two_process_run / "log.txt").read_text()
    assert "Precise BN statistics pooled over 2 processes" in log


@pytest.mark.slow
def test_two_process_evaluation_equals_one_process(two_process_run, tiny_voc_root, one_thread):
    final = json.loads((two_process_run / "final_metrics.json").read_text())["results"]
    args = default_argument_parser().parse_args(
        ["--config-file", TINY_CONFIG, "--eval-only", "TRANSFER.VOC_LIKE_ROOT", str(tiny_voc_root),
         "MODEL.WEIGHTS", str(two_process_run / "model_final.pth"),
         "OUTPUT_DIR", str(two_process_run / "eval_one_process")]
    )  # fmt: skip
    one = train_net.run(args)
    assert set(final["bbox"]) >= {"AP50", "AP", "AP75"}
    assert {m: one["bbox"][m] for m in final["bbox"]} == final["bbox"]
