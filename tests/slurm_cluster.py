"""The one-node SLURM cluster of the Slurm tests (a module, so tests can import its helpers).

The ``slurm_cluster`` fixture (tests/conftest.py) uses the cluster of ``tools/start_slurm.sh``
in ``$MOCO_SLURM_DIR`` (default /tmp/moco-slurm): one that already answers (``.ci/run`` starts
it), else one it starts (root, Slurm and munge installed) and stops at the end of the session.
Without either the Slurm tests skip and say how to get one, or fail when
``MOCO_REQUIRE_SLURM=1`` (set by ``.ci/run``).
"""

import os
import pwd
import shutil
import subprocess
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START = os.path.join(REPO, "tools", "start_slurm.sh")
REQUIRE = "MOCO_REQUIRE_SLURM"
DAEMONS = ("slurmctld", "slurmd", "sbatch", "munged")


def _answers(conf):
    env = dict(os.environ, SLURM_CONF=conf)
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    states = out.stdout.decode().split()
    return out.returncode == 0 and bool(states) and states[0] in ("idle", "mixed", "allocated")


def cluster_session(folder):
    """Generator behind the fixture: yields the path of the cluster's slurm.conf, with
    ``SLURM_CONF`` set in this process's environment (the clients and submitit read it)."""
    conf = os.path.join(folder, "slurm.conf")
    started = False
    if not (os.path.exists(conf) and _answers(conf)):
        missing = [d for d in DAEMONS if shutil.which(d) is None]
        why = None
        if missing:
            why = f"{', '.join(missing)} not installed"
        elif os.geteuid() != 0:
            why = "starting a cluster needs root"
        if why:
            why = (
                f"no SLURM cluster in {folder} and {why}: `sudo tools/start_slurm.sh {folder}` "
                "installs Debian's Slurm and munge and starts a one-node cluster there"
            )
            if os.environ.get(REQUIRE) == "1":
                pytest.fail(f"{REQUIRE}=1 but {why}")
            pytest.skip(why)
        run = subprocess.run([START, folder], capture_output=True, text=True, timeout=300)
        if run.returncode != 0:
            pytest.fail(f"tools/start_slurm.sh {folder} failed:\n{run.stdout}{run.stderr}")
        started = True
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf
    try:
        yield conf
    finally:
        if before is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = before
        if started:
            subprocess.run([START, "--stop", folder], capture_output=True, timeout=60)


def job_field(job_id, field):
    """A field of ``scontrol show job`` (e.g. ``JobState``, ``Restarts``), or None when the
    controller no longer knows the job."""
    out = subprocess.run(
        ["scontrol", "show", "job", str(job_id)], capture_output=True, text=True, timeout=30
    )
    for token in out.stdout.split():
        key, _, value = token.partition("=")
        if key == field:
            return value
    return None


def wait_until(condition, timeout, what, poll=0.2):
    """Call ``condition()`` until it returns something true (returned) or ``timeout`` seconds
    pass (the test fails, saying ``what`` did not happen; ``what`` may be a callable giving the
    text, e.g. the end of a log)."""
    deadline = time.time() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.time() > deadline:
            pytest.fail(f"after {timeout} s: {what() if callable(what) else what}")
        time.sleep(poll)


def job_ended(job_id):
    """The final state (COMPLETED, FAILED, CANCELLED, ..., GONE when the controller no longer
    knows it) of a job, or None while it is queued, running or being requeued."""
    state = job_field(job_id, "JobState") or "GONE"
    active = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD")
    return None if state in active else state


def cancel_all_jobs(timeout=60):
    """Cancel every job of this user on the cluster and wait (up to ``timeout`` s) until none is
    left running or completing."""
    user = pwd.getpwuid(os.getuid()).pw_name
    subprocess.run(["scancel", "--user", user], capture_output=True, timeout=30)
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = subprocess.run(["squeue", "--noheader", "--user", user], capture_output=True)
        if out.returncode == 0 and not out.stdout.strip():
            return
        time.sleep(0.5)
