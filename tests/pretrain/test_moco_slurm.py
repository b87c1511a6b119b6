"""``moco-pretrain --slurm`` on a real one-node SLURM cluster (tests/slurm_cluster.py).

Two jobs of 2 CPU tasks (GLOO, one task per "GPU"), submitted by ``pretrain.train_net.main``:
one runs straight through; the other is interrupted twice mid-epoch (tests/pretrain/
slurm_pause.py holds its tasks after the first iteration of an epoch): first requeued from
outside (``scontrol requeue``, as an administrator or a node failure would), then sent USR2,
SLURM's time-limit warning, on which submitit calls ``Trainer.checkpoint`` and the job requeues
itself. Each restart is a new process that resumes from ``last.pth``, and the job must end with
the weights, queue and optimizer state of the uninterrupted one, bit for bit.
"""

import json
import os
import re
import subprocess
import time

import pytest
import torch
from moco_helpers import two_process_opts
from slurm_cluster import job_ended, job_field, wait_until
from slurm_pause import PausingTrainer

import pretrain.slurm
from pretrain.checkpoint import load_checkpoint
from pretrain.slurm import Trainer
from pretrain.train_net import build_parser, main

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CONFIG = os.path.join(REPO, "configs", "pretrain", "tiny_synthetic.yaml")
EPOCHS, ITERS = 3, 2  # per epoch: 2 steps of 8 images (4 per task)
TIMEOUT = 300  # per wait; generous, the machine is shared


def _submit(data, out, capsys):
    main(
        ["--slurm", "--num-gpus", "2", "--slurm-cpus-per-gpu", "1", "--slurm-timeout-min", "10"]
        + ["--config-file", CONFIG]
        + two_process_opts(data, out, EPOCHS, ITERS)
    )
    printed = capsys.readouterr().out
    match = re.search(r"Submitted SLURM job (\d+) \(1 node\(s\) x 2 task\(s\)\)", printed)
    assert match, printed
    return match.group(1)


def _log(folder, job, task=0):
    """Task ``task``'s submitit log of ``job`` (stdout then stderr, all starts of the job)."""
    paths = [os.path.join(folder, f"{job}_{task}_log.{ext}") for ext in ("out", "err")]
    return "\n".join(open(p).read() for p in paths if os.path.exists(p))


def _tail(folder, job):
    return lambda: f"job {job} ({job_field(job, 'JobState')}):\n{_log(folder, job)[-4000:]}"


def _paused(dump, start):
    return lambda: all(os.path.exists(os.path.join(dump, f"paused_{start}_{r}")) for r in (0, 1))


def _iterations(out):
    with open(os.path.join(out, "metrics.json")) as f:
        return [json.loads(line)["iteration"] for line in f if "loss" in line]


@pytest.mark.slow
def test_requeued_job_resumes_to_the_uninterrupted_weights(
    slurm, synthetic_cls_root, tmp_path, monkeypatch, capsys
):
    data = str(synthetic_cls_root / "train")
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    logs = os.path.join(resumed, "slurm")
    # sbatch passes this environment to the job: the pause helper importable, one thread each
    path = [HERE, REPO, os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in path if p))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(pretrain.slurm, "Trainer", PausingTrainer)
    # submitit counts a signal after min(80%, limit - 10 min) of the limit as a time-out; with
    # 10 min that is always, so the USR2 below takes the time-limit path (needs checkpoint()).
    monkeypatch.setenv("MOCO_PAUSE", "0:1,1:2")
    monkeypatch.setenv("MOCO_PAUSE_DIR", str(tmp_path))
    job = _submit(data, resumed, capsys)
    monkeypatch.delenv("MOCO_PAUSE")
    straight_job = _submit(data, straight, capsys)  # runs through, while the other is requeued

    # 1st start: both tasks hold after the first iteration of epoch 1; requeue from outside
    wait_until(_paused(tmp_path, 0), TIMEOUT, _tail(logs, job))
    last = os.path.join(resumed, "last.pth")
    assert (load_checkpoint(last)["epoch"], _iterations(resumed)) == (1, [0, 1, 2])
    subprocess.run(["scontrol", "requeue", job], check=True)

    # 2nd start: resumes from epoch 1, holds in epoch 2; USR2 (the time-limit warning)
    wait_until(_paused(tmp_path, 1), TIMEOUT, _tail(logs, job))
    assert load_checkpoint(last)["epoch"] == 2
    subprocess.run(["scancel", "--signal=USR2", job], check=True)

    # submitit calls Trainer.checkpoint on task 0 and requeues; the 3rd start finishes
    assert wait_until(lambda: job_ended(job), TIMEOUT, _tail(logs, job)) == "COMPLETED"
    straight_logs = os.path.join(straight, "slurm")
    state = wait_until(lambda: job_ended(straight_job), TIMEOUT, _tail(straight_logs, straight_job))
    assert state == "COMPLETED", _tail(straight_logs, straight_job)()
    assert job_field(job, "Restarts") == "2"
    task0 = _log(logs, job)
    assert "this job is timed-out" in task0  # a time-limit requeue needs Trainer.checkpoint
    assert "Calling checkpoint method" in task0 and f"Requeued job {job}" in task0, task0
    log = open(os.path.join(resumed, "log.txt")).read()
    assert f"Resumed from {last} at epoch 1, iteration {ITERS}" in log
    assert f"Resumed from {last} at epoch 2, iteration {2 * ITERS}" in log
    assert _iterations(resumed) == list(range(EPOCHS * ITERS))  # each iteration once

    a = load_checkpoint(os.path.join(straight, "last.pth"))
    b = load_checkpoint(last)
    assert (a["epoch"], a["iteration"]) == (b["epoch"], b["iteration"]) == (EPOCHS, EPOCHS * ITERS)
    assert a["model"].keys() == b["model"].keys() and "queue" in a["model"]
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    state_a, state_b = a["optimizer"]["state"], b["optimizer"]["state"]
    assert state_a.keys() == state_b.keys() and len(state_a) > 0
    for idx, st in state_a.items():
        for name, value in st.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(state_b[idx][name]))


def test_a_restarted_job_continues_its_own_last_checkpoint(tmp_path, monkeypatch):
    args = build_parser().parse_args(["--slurm", "--resume", "start.pth", "--no-auto-resume"])
    trainer = Trainer(args, str(tmp_path), submitted=time.time())
    last = tmp_path / "last.pth"
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    last.write_bytes(b"")
    assert trainer.run_args() is args  # first start: as given
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    os.utime(last, (trainer.submitted - 60, trainer.submitted - 60))
    assert trainer.run_args() is args  # an earlier run's last.pth: as given
    os.utime(last, (trainer.submitted + 60, trainer.submitted + 60))
    again = trainer.run_args()  # this job's own last.pth
    assert (again.resume, again.no_auto_resume) == ("", False)
    assert (args.resume, args.no_auto_resume, again.opts) == ("start.pth", True, args.opts)
    # the time-limit / preemption hook requeues the same trainer
    assert trainer.checkpoint().function is trainer
