"""``detection.trials --slurm`` on a real one-node SLURM cluster (tests/slurm_cluster.py).

Two tiny trials, one CPU job each. SIGTERM to the runner cancels its jobs; after a SIGKILL of
the runner its jobs run on, and the rerun adopts them (no second job per trial), polls them to
the end and writes the summary.
"""

import json
import signal
import subprocess

import pytest
from det_helpers import REPO, processes_mentioning, runner_args, runner_env
from slurm_cluster import job_ended, job_field, wait_until

from detection.launchers import SLURM_JOB_RECORD

TIMEOUT = 600  # per wait; generous, the machine is shared


def _jobs(trials):
    """{trial folder: job id} from the trials' slurm_job.json records (missing ones left out)."""
    jobs = {}
    for t in trials:
        try:
            with open(t / SLURM_JOB_RECORD) as f:
                jobs[t] = json.load(f)["job_id"]
        except (OSError, ValueError):
            pass
    return jobs


def _running(trials, other_than=()):
    """The trials' job ids once every trial has a recorded job that is running (and is not one
    of ``other_than``), else None."""
    jobs = _jobs(trials)
    fresh = len(jobs) == len(trials) and not set(jobs.values()) & set(other_than)
    if fresh and all(job_field(j, "JobState") == "RUNNING" for j in jobs.values()):
        return jobs
    return None


@pytest.fixture
def start_runner():
    """``start(args, log_path)``: the trial runner as a subprocess writing to ``log_path``; the
    ones still running when the test ends are killed (their jobs: the ``slurm`` fixture)."""
    procs = []

    def start(args, log_path):
        with open(log_path, "w") as log:
            procs.append(
                subprocess.Popen(
                    args, env=runner_env(), cwd=REPO, stdout=log, stderr=subprocess.STDOUT
                )
            )
        return procs[-1]

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _owners(locks):
    """The owner records of the lock files ``locks`` once all are written, else None."""
    try:
        owners = [json.loads(p.read_text()) for p in locks]
    except (OSError, ValueError):
        return None
    return owners if all(isinstance(o, dict) and "pid" in o for o in owners) else None


def _alive(proc, i):
    assert proc.poll() is None, f"runner {i} exited with status {proc.returncode}"
    return True


@pytest.mark.slow
def test_slurm_trials_cancel_on_sigterm_and_rerun_adopts_after_sigkill(
    slurm, start_runner, tiny_voc_root, tmp_path
):
    out = tmp_path / "trials"
    trials = [out / "trial_0_seed_0", out / "trial_1_seed_1000"]
    args = runner_args(out, tiny_voc_root)
    args[3:3] = ["--slurm", "--slurm-partition", "debug", "--slurm-account", "moco"]
    args[3:3] = ["--slurm-cpus-per-gpu", "1", "--slurm-timeout-min", "30"]
    logs = [tmp_path / f"runner{i}.log" for i in range(3)]

    def log(i):
        return lambda: logs[i].read_text()[-3000:]

    def log_all(i):
        return logs[i].read_text()

    # 1. SIGTERM: the runner cancels its jobs and waits until SLURM has ended them
    runner = start_runner(args, logs[0])
    first = wait_until(lambda: _alive(runner, 0) and _running(trials), TIMEOUT, log(0))
    locks = [t / "run.lock" for t in trials]  # train_net has started in both jobs
    owners = wait_until(lambda: _alive(runner, 0) and _owners(locks), TIMEOUT, log(0))
    # the trial runs in its job's environment (SLURM's variables kept, not the runner's only)
    assert [o["slurm_job"] for o in owners] == [first[t] for t in trials]
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(timeout=TIMEOUT) == 130, log(0)()
    assert [job_ended(j) for j in first.values()] == ["CANCELLED", "CANCELLED"]
    # a SIGTERMed train_net leaves its run.lock, which on another node would look live for
    # --stale-lock-s: the runner removes the locks of the jobs it cancelled
    assert [p.exists() for p in locks] == [False, False]
    job = first[trials[0]]
    assert (job_field(job, "Partition"), job_field(job, "Account")) == ("debug", "moco")
    assert processes_mentioning(str(out)) == []

    # 2. SIGKILL: the runner dies at once, its new jobs run on (held, so that they are still
    # there when the rerun looks: a suspended job is not finished either)
    runner = start_runner(args, logs[1])
    second = wait_until(
        lambda: _alive(runner, 1) and _running(trials, first.values()), TIMEOUT, log(1)
    )
    runner.kill()
    runner.wait()
    for job in second.values():
        subprocess.run(["scontrol", "suspend", job], check=True)
    assert [job_field(j, "JobState") for j in second.values()] == ["SUSPENDED"] * 2

    # 3. the rerun adopts both jobs instead of submitting new ones, and summarises them
    rerun = start_runner(args, logs[2])
    adopted = [f"adopting SLURM job {j} (submitted by an earlier runner)" for j in second.values()]
    wait_until(lambda: _alive(rerun, 2) and all(a in log_all(2) for a in adopted), TIMEOUT, log(2))
    for job in second.values():
        subprocess.run(["scontrol", "resume", job], check=True)
    assert rerun.wait(timeout=TIMEOUT) == 0, log(2)()
    assert "submitted SLURM job" not in logs[2].read_text()
    assert [job_ended(j) for j in second.values()] == ["COMPLETED", "COMPLETED"]
    assert _jobs(trials) == second
    summary = json.loads((out / "summary.json").read_text())
    assert [(t["trial"], t["status"]) for t in summary["trials"]] == [
        (0, "finished"),
        (1, "finished"),
    ]
    for t, folder in zip(summary["trials"], trials):
        final = json.loads((folder / "final_metrics.json").read_text())["results"]["bbox"]
        assert all(final[m] == t[m] and 0.0 <= t[m] <= 100.0 for m in ("AP50", "AP", "AP75"))
