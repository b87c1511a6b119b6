"""LocalLauncher: stopping a trial stops its whole process group. (SlurmLauncher runs against a
real SLURM cluster in tests/detection/test_det_trials_slurm.py.)"""

import os
import sys
import time

from detection.launchers import LocalLauncher


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
