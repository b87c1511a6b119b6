"""common.slurm: job states where sacct has no accounting database, and the submission errors.

The state tests put small ``sacct`` / ``squeue`` scripts first on PATH, to produce answers a
real cluster gives only after minutes (a job purged from slurmctld) or when it is down; the
submission test uses the one-node cluster (tests/slurm_cluster.py).
"""

import argparse
import os
import stat

import pytest

from common.slurm import QueueWatcher, add_slurm_args, make_executor, submit

NO_ACCOUNTING = "echo 'Slurm accounting storage is disabled' >&2; exit 1"


def _commands(folder, **scripts):
    """Write ``name: shell body`` scripts into ``folder``; returns a PATH with it first."""
    for name, body in scripts.items():
        path = os.path.join(folder, name)
        with open(path, "w") as f:
            f.write(f"#!/bin/sh\n{body}\n")
        os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)
    return f"{folder}{os.pathsep}{os.environ['PATH']}"


def _states(watcher, ids):
    watcher.update()
    return [watcher.get_state(j, mode="cache") for j in ids], [
        watcher.is_done(j, mode="cache") for j in ids
    ]


def test_squeue_answers_where_sacct_cannot(tmp_path, monkeypatch):
    squeue = "printf '11|RUNNING|vm\\n12|SUSPENDED|vm\\n13|COMPLETED|vm\\n'"
    monkeypatch.setenv("PATH", _commands(str(tmp_path), sacct=NO_ACCOUNTING, squeue=squeue))
    watcher = QueueWatcher(delay_s=600)
    ids = ["11", "12", "13", "14"]
    for job_id in ids:
        watcher.register_job(job_id)
    states, done = _states(watcher, ids)
    # 14 is not in squeue any more (slurmctld forgets a job MinJobAge after its end): ended
    assert states == ["RUNNING", "SUSPENDED", "COMPLETED", "GONE"]
    assert done == [False, False, True, True]  # submitit alone takes SUSPENDED for finished


def test_a_controller_that_does_not_answer_changes_no_state(tmp_path, monkeypatch):
    monkeypatch.setenv(
        "PATH", _commands(str(tmp_path), sacct=NO_ACCOUNTING, squeue="printf '21|RUNNING|vm\\n'")
    )
    watcher = QueueWatcher(delay_s=600)
    watcher.register_job("21")
    assert _states(watcher, ["21"]) == (["RUNNING"], [False])
    down = "echo 'slurm_load_jobs error: Unable to contact slurm controller' >&2; exit 1"
    monkeypatch.setenv("PATH", _commands(str(tmp_path), squeue=down))
    assert _states(watcher, ["21"]) == (["RUNNING"], [False])  # not "gone": unknown
    purged = "echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1"
    monkeypatch.setenv("PATH", _commands(str(tmp_path), squeue=purged))
    assert _states(watcher, ["21"]) == (["GONE"], [True])


def _slurm_args(*argv):
    parser = argparse.ArgumentParser()
    add_slurm_args(parser, cpus_help="")
    return parser.parse_args(list(argv))


def test_slurm_without_slurm_commands_says_where_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, no srun
    with pytest.raises(SystemExit, match=r"needs the SLURM commands.*tools/start_slurm.sh"):
        make_executor(str(tmp_path), _slurm_args(), name="x", nodes=1, tasks_per_node=1,
                      gpus_per_node=0, cpus_per_task=1)  # fmt: skip


def test_a_refused_submission_ends_with_sbatchs_reason(slurm, tmp_path):
    args = _slurm_args("--slurm-partition", "no-such-partition")
    executor = make_executor(str(tmp_path), args, name="x", nodes=1, tasks_per_node=1,
                             gpus_per_node=0, cpus_per_task=1)  # fmt: skip
    with pytest.raises(SystemExit) as err:
        submit(executor, print)
    message = str(err.value)
    assert message.startswith("sbatch refused the job: ") and "invalid partition" in message
    assert message.splitlines()[-1].startswith("Check --slurm-partition")
