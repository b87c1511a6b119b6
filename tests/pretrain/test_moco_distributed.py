"""Two GLOO processes through detectron2's ``launch``: gather, shuffle BN, queue agreement.

detectron2's launch spawns workers and picks GLOO when CUDA is absent, so it runs on CPU.
"""

import pickle
import socket

import torch
import torch.nn as nn
from detectron2.engine import launch
from detectron2.utils import comm

from common.launch import run_then_close
from pretrain.builder import MoCo
from pretrain.distributed import concat_all_gather

N = 4  # per-process batch


class TinyEncoder(nn.Module):
    def __init__(self, num_classes=8):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def _worker(out_dir):
    torch.set_num_threads(1)
    rank = comm.get_rank()
    res = {"world": comm.get_world_size()}
    x = torch.full((N, 2), float(rank)) + torch.arange(N).view(N, 1)  # rank-specific rows
    res["gathered"] = concat_all_gather(x)

    torch.manual_seed(0)  # same init on both ranks, as DDP would broadcast
    model = MoCo(TinyEncoder, dim=8, K=10, m=0.9, T=0.2)
    torch.manual_seed(100 + rank)  # different permutation draws: rank 0's must win
    images = torch.randn(N, 3, 6, 6) + rank
    shuffled, idx_unshuffle = model._batch_shuffle_ddp(images)
    res["shuffled"] = shuffled
    res["roundtrip_equal"] = torch.equal(
        model._batch_unshuffle_ddp(shuffled, idx_unshuffle), images
    )
    model = nn.parallel.DistributedDataParallel(model)
    out = model(images, images.flip(3))
    out["loss"].backward()
    res["queue"] = model.module.queue.clone()
    res["queue_ptr"] = int(model.module.queue_ptr)
    res["images"] = images
    with open(f"{out_dir}/rank{rank}.pkl", "wb") as f:
        pickle.dump(res, f)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo(tmp_path):
    url = f"tcp://127.0.0.1:{_free_port()}"
    # run_then_close: the product's launch also shuts the group down (without that, a worker
    # was seen to abort on exit under load: "terminate called without an active exception")
    launch(run_then_close, 2, dist_url=url, args=(_worker, str(tmp_path)))
    r = [pickle.load(open(tmp_path / f"rank{i}.pkl", "rb")) for i in range(2)]
    assert r[0]["world"] == r[1]["world"] == 2
    # gather doubles the batch, rank 0's rows first, identical on both ranks
    assert r[0]["gathered"].shape == (2 * N, 2)
    assert torch.equal(r[0]["gathered"], r[1]["gathered"])
    assert torch.equal(r[0]["gathered"][N:, 0] - torch.arange(N), torch.ones(N))
    # shuffle then unshuffle is the identity; the shuffle is one global permutation
    assert r[0]["roundtrip_equal"] and r[1]["roundtrip_equal"]
    all_images = torch.cat([r[0]["images"], r[1]["images"]])
    all_shuffled = torch.cat([r[0]["shuffled"], r[1]["shuffled"]])
    key = lambda t: sorted(t.flatten(1).sum(1).tolist())  # noqa: E731
    assert key(all_images) == key(all_shuffled)  # a permutation of the global batch
    assert not torch.equal(all_images, all_shuffled)
    # both ranks enqueue the keys of the whole global batch and agree on the queue
    assert r[0]["queue_ptr"] == r[1]["queue_ptr"] == 2 * N
    assert torch.equal(r[0]["queue"], r[1]["queue"])
