"""Two torchrun agents on this host as two nodes (GLOO on CPU): agreement, then a killed node.

``torchrun --nnodes 2 --nproc-per-node 1 --rdzv-backend c10d`` twice, as on two machines, each
running ``pretrain.train_net.main`` (through tests/pretrain/torchrun_worker.py, which also saves
every rank's state after each epoch). The first run pauses rank 1 at the start of epoch 1 and
the test SIGKILLs that node (agent and worker), as when a machine dies; the surviving agent
must exit with an error instead of hanging. Restarting both agents resumes from last.pth and
finishes, with both ranks holding the same weights and queue.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from moco_helpers import two_process_opts

from pretrain.checkpoint import load_checkpoint

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
WORKER = os.path.join(ROOT, "tests", "pretrain", "torchrun_worker.py")
CONFIG = os.path.join(ROOT, "configs", "pretrain", "tiny_synthetic.yaml")
EPOCHS, ITERS = 3, 2  # per epoch: 2 steps of 8 images (4 per node)
# BN running statistics are per process (DDP re-broadcasts rank 0's at each forward); all else
# (parameters of both encoders, the queue and its pointer) must be identical across nodes.
PER_RANK = ("running_mean", "running_var", "num_batches_tracked")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_agents(data, out, dump, tag, env_extra):
    port = _free_port()
    opts = two_process_opts(data, out, EPOCHS, ITERS, CHECKPOINT_PERIOD=1)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2"]
    cmd += ["--nproc-per-node", "1", "--rdzv-backend", "c10d"]
    cmd += ["--rdzv-endpoint", f"localhost:{port}", "--rdzv-id", "moco-test"]
    cmd += [WORKER, "--config-file", CONFIG] + opts
    env = {k: v for k, v in os.environ.items() if k != "MOCO_PAUSE_EPOCH"}
    env.update(PYTHONPATH=ROOT, MOCO_DUMP_DIR=dump, OMP_NUM_THREADS="1", **env_extra)
    agents = []
    for node in range(2):
        with open(os.path.join(dump, f"agent{node}_{tag}.log"), "w") as log:  # Popen dups it
            agents.append(subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=log))
    return agents


def _wait(proc, timeout):
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def _stop(agents):
    for a in agents:
        if a.poll() is None:
            a.send_signal(signal.SIGTERM)  # the agent stops its worker
    for a in agents:
        if _wait(a, 20) is None:
            a.kill()


def _assert_ranks_agree(dump, epoch):
    a = torch.load(os.path.join(dump, f"rank0_epoch{epoch}.pt"))
    b = torch.load(os.path.join(dump, f"rank1_epoch{epoch}.pt"))
    shared = [k for k in a if not k.endswith(PER_RANK)]
    assert "queue" in shared and "encoder_k.conv1.weight" in shared and len(shared) > 100
    for key in shared:
        assert torch.equal(a[key], b[key]), (epoch, key)
    return a


@pytest.mark.slow
def test_two_node_torchrun_agrees_and_survives_a_killed_node(synthetic_cls_root, tmp_path):
    data, out, dump = str(synthetic_cls_root / "train"), str(tmp_path / "out"), str(tmp_path)
    agents = _start_agents(data, out, dump, "first", {"MOCO_PAUSE_EPOCH": "1"})
    try:
        paused = tmp_path / "paused"
        deadline = time.time() + 120
        while not paused.exists():
            assert time.time() < deadline, "rank 1 never reached epoch 1"
            assert all(a.poll() is None for a in agents), "an agent exited before epoch 1"
            time.sleep(0.2)
        first = load_checkpoint(os.path.join(out, "last.pth"))
        assert (first["epoch"], first["iteration"]) == (1, ITERS)
        # both nodes agree after the first epoch, and the checkpoint is rank 0's state
        state = _assert_ranks_agree(dump, 1)
        assert all(torch.equal(v, first["model"][k]) for k, v in state.items())
        # node 1 dies: its agent and its worker (torchrun starts workers in their own session)
        os.kill(int(paused.read_text()), signal.SIGKILL)
        agents[1].kill()
        assert _wait(agents[0], 60) not in (None, 0), "surviving agent hung or claimed success"
    finally:
        _stop(agents)

    agents = _start_agents(data, out, dump, "restart", {})
    try:
        assert [_wait(a, 150) for a in agents] == [0, 0], "restarted run failed; see agent logs"
    finally:
        _stop(agents)
    logs = [open(os.path.join(out, name)).read() for name in ("log.txt", "log.txt.rank1")]
    for log in logs:
        assert f"Resumed from {os.path.join(out, 'last.pth')} at epoch 1, iteration {ITERS}" in log
    last = load_checkpoint(os.path.join(out, "last.pth"))
    assert (last["epoch"], last["iteration"]) == (EPOCHS, EPOCHS * ITERS)
    final = _assert_ranks_agree(dump, EPOCHS)
    for key, value in final.items():
        assert torch.equal(value, last["model"][key]), key
    assert not torch.equal(final["queue"], first["model"]["queue"])  # it trained after resuming
    with open(os.path.join(out, "metrics.json")) as f:
        iters = [json.loads(line)["iteration"] for line in f if "loss" in line]
    assert iters == list(range(EPOCHS * ITERS))  # each iteration once across the two runs
