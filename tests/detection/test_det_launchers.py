"""SLURM launcher through submitit, with a stand-in module (submitit is an optional extra)."""

import os
import sys
import time
import types

import pytest

from detection.launchers import LocalLauncher, SlurmLauncher


class FakeJob:
    def __init__(self, fn, fail=False):
        self.fn, self.job_id, self.finished, self.fail, self.cancelled = (
            fn,
            "42",
            False,
            fail,
            False,
        )

    def done(self):
        return self.finished

    def exception(self):
        return RuntimeError("boom") if self.fail else None

    def cancel(self, check=True):
        self.cancelled = True


def fake_submitit():
    mod = types.ModuleType("submitit")

    class AutoExecutor:
        def __init__(self, folder):
            self.folder, self.params, self.jobs = folder, {}, []

        def update_parameters(self, **kwargs):
            self.params.update(kwargs)

        def submit(self, fn):
            self.jobs.append(FakeJob(fn))
            return self.jobs[-1]

    class CommandFunction:
        def __init__(self, command, verbose=True, cwd=None, env=None):
            self.command, self.cwd, self.env = command, cwd, env

    mod.AutoExecutor = AutoExecutor
    mod.helpers = types.SimpleNamespace(CommandFunction=CommandFunction)
    return mod


def test_slurm_launcher_submits_one_job_per_trial(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", fake_submitit())
    launcher = SlurmLauncher(str(tmp_path / "slurm"), gpus_per_trial=8, partition="learn")
    params = launcher.executor.params
    assert (params["gpus_per_node"], params["tasks_per_node"], params["nodes"]) == (8, 1, 1)
    assert params["slurm_partition"] == "learn" and "mem_gb" not in params
    job = launcher.start(["python", "-m", "detection.train_net"], {"A": "1"}, tmp_path / "t.out")
    assert job.fn.command == ["python", "-m", "detection.train_net"] and job.fn.env == {"A": "1"}
    assert "submitted SLURM job 42" in (tmp_path / "t.out").read_text()
    assert launcher.poll(job) is None
    job.finished = True
    assert launcher.poll(job) == 0
    job.fail = True
    assert launcher.poll(job) == 1
    running = launcher.start(["x"], {}, tmp_path / "t.out")
    launcher.stop(running)
    assert running.cancelled


def test_slurm_without_submitit_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r"pip install '\.\[slurm\]'"):
        SlurmLauncher(str(tmp_path), gpus_per_trial=1)


def test_local_launcher_stops_the_whole_process_group(tmp_path):
    launcher = LocalLauncher(stop_timeout=5)
    # A parent that starts a sleeping child and waits for it, like detectron2's launch.
    child = "import time; print('child', flush=True); time.sleep(60)"
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])"
    proc = launcher.start([sys.executable, "-c", parent], None, tmp_path / "out.txt")
    deadline = time.time() + 60
    while "child" not in (tmp_path / "out.txt").read_text():
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    launcher.stop(proc)
    assert proc.poll() is not None
    deadline = time.time() + 10  # signals are delivered asynchronously
    while live_group_members(proc.pid) and time.time() < deadline:
        time.sleep(0.05)
    assert live_group_members(proc.pid) == []  # the child went with its parent


def live_group_members(pgid):
    """PIDs of processes in group ``pgid`` that are not zombies (Linux /proc). Zombies are
    left out: here they wait for PID 1 to reap them, which may never happen in a container."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # fields: state, ppid, pgrp, ...
            pids.append(int(pid))
    return pids
