"""The trial runner: trials die with it (also on SIGKILL), a rerun never runs a trial twice at
once, a damaged final_metrics.json is reported. Trials are faked by small Python scripts."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from det_helpers import REPO, TINY_CONFIG

from detection import trial_folders
from detection import trials as trials_mod
from detection.launchers import pid_alive
from detection.scheduler import TrialOptions, run_trials
from detection.trial_folders import CorruptMetricsError, trial_dir
from detection.trial_locks import TrialLock, TrialLockError

# A trial: watches its runner like train_net does, starts a "worker" that watches too (as
# detectron2's launch would), writes both pids, then sleeps. argv: output dir, mode.
# Loads detection/launchers.py by path (stdlib only), so the fake processes start in a blink.
LOAD = (
    "import importlib.util, os, sys\n"
    "spec = importlib.util.spec_from_file_location('L', "
    f"{os.path.join(REPO, 'detection', 'launchers.py')!r})\n"
    "L = importlib.util.module_from_spec(spec); spec.loader.exec_module(L)\n"
    "if sys.argv[-1] == 'nopdeath':\n"
    "    L._PRCTL[:] = [None]  # no PR_SET_PDEATHSIG: only the polling watchdog is left\n"
    # with PR_SET_PDEATHSIG, the watchdog thread effectively off: each mechanism on its own
    "POLL = 1e6 if sys.argv[-1] == 'pdeathsig' else 0.2\n"
)
FAKE_TRIAL = LOAD + """
import subprocess, time
L.watch_runner(poll_interval=POLL)
worker = LOAD_CODE + "L.watch_runner(poll_interval=POLL); print('up', flush=True); time.sleep(600)"
w = subprocess.Popen([sys.executable, "-c", "import time\\n" + worker, sys.argv[-1]],
                     stdout=subprocess.PIPE)
w.stdout.readline()
with open(os.path.join(sys.argv[1], "pids.tmp"), "w") as f:
    f.write(f"{os.getpid()} {w.pid}")
os.replace(os.path.join(sys.argv[1], "pids.tmp"), os.path.join(sys.argv[1], "pids"))
time.sleep(600)
""".replace("LOAD_CODE", repr(LOAD))

# The runner: run_trials with the real LocalLauncher and the fake trial. argv: out, mode.
RUNNER = """
import sys
import detection.launchers as L
from detection.scheduler import TrialOptions, run_trials
from detection.trial_folders import trial_dir
out, mode = sys.argv[1], sys.argv[2]
if mode == "nopdeath":
    L._PRCTL[:] = [None]
trials = [{"trial": 0, "seed": 0, "output_dir": trial_dir(out, 0, 0)}]
run_trials(trials, L.LocalLauncher(), lambda t: [sys.executable, "-c", FAKE, t["output_dir"],
           mode], TrialOptions(retries=0, log_period=1e9, poll_interval=0.1))
"""


def _env():
    return dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")


def _wait_for(path, proc, timeout=120):
    deadline = time.time() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, "runner exited early"
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _all_dead(pids, timeout=5.0):
    deadline = time.time() + timeout
    while any(pid_alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.05)
    return [p for p in pids if pid_alive(p)]


class OneShotLauncher:
    """In-process launcher whose trials finish at once with fixed metrics."""

    inherits_fds = False

    def __init__(self):
        self.started = []

    def start(self, cmd, env, log_path):
        out = cmd[-1]
        self.started.append(out)
        with open(os.path.join(out, "final_metrics.json"), "w") as f:
            json.dump({"results": {"bbox": {"AP": 1.0, "AP50": 2.0, "AP75": 3.0}}}, f)
        return out

    def poll(self, handle):
        return 0

    def stop(self, handle):
        pass


def _one_trial(out):
    return [{"trial": 0, "seed": 0, "output_dir": trial_dir(str(out), 0, 0)}]


@pytest.mark.parametrize("mode", ["pdeathsig", "nopdeath"])
def test_trials_die_with_a_killed_runner_and_a_rerun_waits_for_them(tmp_path, mode):
    out = tmp_path / "trials"
    script = f"FAKE = {FAKE_TRIAL!r}\n" + RUNNER
    runner = subprocess.Popen([sys.executable, "-c", script, str(out), mode], env=_env(), cwd=REPO)
    pids_file = os.path.join(trial_dir(str(out), 0, 0), "pids")
    try:
        _wait_for(pids_file, runner)
        trial_pid, worker_pid = map(int, open(pids_file).read().split())
        # A second runner while the first one runs: refused, naming the lock and the owner.
        with pytest.raises(
            TrialLockError, match=rf"trial_0_seed_0\.lock is held: runner pid {runner.pid}"
        ):
            run_trials(_one_trial(out), OneShotLauncher(), lambda t: [t["output_dir"]])
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=30)
        survivors = _all_dead([trial_pid, worker_pid])
        for pid in survivors:  # leave nothing behind when the test fails
            os.kill(pid, signal.SIGKILL)
        assert survivors == []
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    # The rerun takes over the dead runner's lock and runs the trial.
    # (waiting a little: the kernel may release a dead process's lock a moment after it died)
    launcher = OneShotLauncher()
    trials = run_trials(
        _one_trial(out), launcher, lambda t: [t["output_dir"]], TrialOptions(lock_wait_s=10)
    )
    assert trials[0]["status"] == "finished" and len(launcher.started) == 1
    assert not os.path.exists(trials[0]["output_dir"] + ".lock")


def test_lock_rules(tmp_path):
    folder = str(tmp_path / "t")
    lock = TrialLock(folder)
    assert lock.acquire() is None
    with pytest.raises(TrialLockError, match=f"held: runner pid {os.getpid()} on"):
        TrialLock(folder).acquire()  # a second holder, even in the same process
    lock.release()
    assert not os.path.exists(lock.path)

    def write_owner(pid, host, age=0.0):
        with open(lock.path, "w") as f:
            json.dump({"pid": pid, "host": host, "started": "2026-01-01T00:00:00"}, f)
        os.utime(lock.path, (time.time() - age, time.time() - age))

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_owner(dead.pid, socket.gethostname())  # this host, dead pid: stale
    assert lock.acquire()["pid"] == dead.pid
    lock.release()
    write_owner(4242, "elsewhere")  # another host, fresh heartbeat: refused unless forced
    with pytest.raises(TrialLockError, match="pid 4242 on host elsewhere.*--force-unlock"):
        lock.acquire(stale_after=60)
    assert lock.acquire(force=True)["host"] == "elsewhere"
    lock.release()
    write_owner(4242, "elsewhere", age=120)  # another host, no heartbeat for too long: stale
    assert lock.acquire(stale_after=60)["host"] == "elsewhere"
    assert json.load(open(lock.path))["pid"] == os.getpid()
    lock.release()


@pytest.mark.parametrize("content", ["{", '{"results": {}}', '{"results": {"bbox": {"AP": 1}}}'])
def test_damaged_final_metrics_is_reported_not_rerun(tmp_path, content):
    trials = _one_trial(tmp_path)
    os.makedirs(trials[0]["output_dir"])
    path = os.path.join(trials[0]["output_dir"], "final_metrics.json")
    with open(path, "w") as f:
        f.write(content)
    launcher = OneShotLauncher()
    with pytest.raises(CorruptMetricsError, match=rf"{path}: .*delete it") as err:
        run_trials(trials, launcher, lambda t: [t["output_dir"]])
    assert launcher.started == [] and open(path).read() == content
    assert "not starting anything" in str(err.value)
    # The command line says so and exits with 2, before any trial starts.
    out = str(tmp_path)
    argv = ["--config-file", TINY_CONFIG, "--output-dir", out, "--num-trials", "1"]
    assert trials_mod.main(argv + ["--reference", "none"]) == 2
    assert open(path).read() == content


def test_a_rerun_with_another_config_is_refused(tmp_path, monkeypatch):
    from detection.config import load_cfg

    out = str(tmp_path)
    argv = ["--config-file", TINY_CONFIG, "--output-dir", out, "--seeds", "0", "7"]
    argv += ["--reference", "none"]
    config = trial_folders.comparable_config(load_cfg(TINY_CONFIG, ["SOLVER.BASE_LR", "0.01"]))
    assert "SOLVER.BASE_LR" in config and "OUTPUT_DIR" not in config and "SEED" not in config
    # trial 1 was started earlier with lr 0.01 (it holds the config it was launched with)
    trials = [
        {"trial": i, "seed": s, "output_dir": trial_dir(out, i, s)} for i, s in [(0, 0), (1, 7)]
    ]
    trial_folders.write_trial_config(trials[1], config)
    launched = []

    def fake_run_trials(trials, *args, **kwargs):  # records the call; every trial "failed"
        launched.append(trials)
        for t in trials:
            t.update(status="failed", attempts=1, resumed_from=[])

    monkeypatch.setattr(trials_mod, "run_trials", fake_run_trials)
    # the same setting continues ...
    trials_mod.main(argv + ["SOLVER.BASE_LR", "0.01"])
    assert len(launched) == 1
    # ... another one is refused before anything starts, naming the folder and the change
    with pytest.raises(
        trial_folders.ChangedConfigError, match=r"trial_1_seed_7: SOLVER.BASE_LR: 0.01 -> 0.02"
    ):
        new = trial_folders.comparable_config(load_cfg(TINY_CONFIG, ["SOLVER.BASE_LR", "0.02"]))
        trial_folders.check_trial_configs(trials, new)
    assert trials_mod.main(argv + ["SOLVER.BASE_LR", "0.02"]) == 2
    assert len(launched) == 1
    log = open(os.path.join(out, "trials.log")).read()
    assert "SOLVER.BASE_LR: 0.01 -> 0.02" in log and "new --output-dir" in log
    # the record is written once, when a trial is first launched, and never rewritten
    trial_folders.write_trial_config(trials[1], {"other": 1})
    assert json.load(open(os.path.join(trials[1]["output_dir"], "trial_config.json"))) == config
