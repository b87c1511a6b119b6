"""Ways to run one trial's command: a local subprocess, or a SLURM job through submitit.

Both expose ``start(cmd, env, log_path) -> handle``, ``poll(handle) -> None | int`` (None while
running, else an exit status, 0 for success) and ``stop(handle)``, so the trial scheduler in
``detection.trials`` does not care where trials run.
"""

import ctypes
import ctypes.util
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time

from submitit.helpers import CommandFunction

from common.io import atomic_write_json
from common.locks import RUN_LOCK, pid_alive
from common.slurm import SlurmJob, make_executor, submit

logger = logging.getLogger(__name__)

# Set by LocalLauncher in a trial's environment: the pid of the runner the trial must die with.
RUNNER_PID_ENV = "MOCO_TRIALS_RUNNER_PID"
SLURM_JOB_RECORD = "slurm_job.json"  # in a trial folder: {"job_id", "folder"} of its SLURM job
_PR_SET_PDEATHSIG = 1


def set_parent_death_signal(sig=signal.SIGKILL):
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux
    ``prctl(PR_SET_PDEATHSIG)``). Returns True where supported, False elsewhere (no-op).

    The signal fires when the parent *thread* that started this process ends, so the parent
    must start children from a thread that lives as long as it does (the runner's main thread).
    Safe to call in a ``preexec_fn`` (no allocation beyond ctypes' cached library).
    """
    prctl = _prctl()
    return prctl is not None and prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0


_PRCTL = []


def _prctl():
    """libc's ``prctl`` (Linux) or None; loaded once, in the parent, so a ``preexec_fn`` never
    has to ``dlopen`` between fork and exec."""
    if not _PRCTL:
        fn = None
        if sys.platform.startswith("linux"):
            try:
                fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").prctl
            except (OSError, AttributeError):
                fn = None
        _PRCTL.append(fn)
    return _PRCTL[0]


def _end_trial(reason):
    logger.error("%s: stopping this trial", reason)
    # The trial runs in its own session (LocalLauncher); its process group is then exactly the
    # trial's processes (detectron2's workers included), so take them all down together.
    if os.getpgrp() == os.getsid(0):
        os.killpg(os.getpgrp(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def _watch(runner, parent, poll_interval):
    while True:
        time.sleep(poll_interval)
        if os.getppid() != parent:
            _end_trial(f"parent process {parent} is gone")
        if not pid_alive(runner):
            _end_trial(f"trial runner (pid {runner}) is gone")


def watch_runner(poll_interval=1.0):
    """Make this process die with the trial runner that started it (no-op outside a runner).

    Called early in every process of a trial (``detection.train_net``'s setup). When
    ``$MOCO_TRIALS_RUNNER_PID`` is set: on Linux the kernel kills this process when its parent
    dies (``PR_SET_PDEATHSIG``); everywhere, a daemon thread checks every ``poll_interval``
    seconds that the parent and the runner are still alive and otherwise kills the trial's
    process group. Returns True when watching, False when not started by a runner.
    """
    value = os.environ.get(RUNNER_PID_ENV)
    if not value:
        return False
    runner, parent = int(value), os.getppid()
    set_parent_death_signal(signal.SIGKILL)
    if not pid_alive(runner):  # the runner died before the kernel could be told
        _end_trial(f"trial runner (pid {runner}) is gone")
    thread = threading.Thread(
        target=_watch, args=(runner, parent, poll_interval), name="runner-watchdog", daemon=True
    )
    thread.start()
    return True


def _die_with_parent(parent):
    """``preexec_fn`` of a trial: SIGKILL when the runner dies, also if it already did."""
    _prctl()  # resolve now, in the parent

    def preexec():
        set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != parent:  # the runner died between fork and prctl
            os._exit(1)

    return preexec


class LocalLauncher:
    """Run each trial as a subprocess of this machine, in its own session (process group), so
    stopping a trial also stops the workers detectron2's ``launch`` spawned for it.

    A trial dies with the runner, also when the runner is killed with SIGKILL: its main process
    gets ``PR_SET_PDEATHSIG`` (Linux) and ``$MOCO_TRIALS_RUNNER_PID``, from which
    :func:`watch_runner` (called by every trial process) arms the same for detectron2's workers
    and a polling fallback for platforms without PDEATHSIG.
    """

    inherits_fds = True  # start() accepts pass_fds (the trial's lock stays held by the trial)

    def __init__(self, stop_timeout=30.0):
        """Args: stop_timeout (float): seconds between SIGTERM and SIGKILL in :meth:`stop`."""
        self.stop_timeout = stop_timeout

    def start(self, cmd, env, log_path, pass_fds=()):
        """Start ``cmd`` (list of str) with environment ``env`` (None: this one); stdout and
        stderr are appended to ``log_path``; ``pass_fds`` stay open in the child. Returns the
        ``subprocess.Popen``."""
        env = dict(os.environ if env is None else env, **{RUNNER_PID_ENV: str(os.getpid())})
        with open(log_path, "a") as log:
            return subprocess.Popen(
                cmd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=tuple(pass_fds),
                preexec_fn=_die_with_parent(os.getpid()),
            )

    def poll(self, proc):
        """Return None while ``proc`` runs, else its exit status."""
        return proc.poll()

    def stop(self, proc):
        """Terminate the process group of ``proc``: SIGTERM, wait up to the timeout for
        ``proc``, then SIGKILL whatever is left of the group (workers that outlived it)."""
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


class JobCommand(CommandFunction):
    """submitit's CommandFunction whose ``env`` is *added to* the job's environment rather than
    replacing it, so the trial keeps what SLURM set for the job (``SLURM_JOB_ID``, the
    allocated ``CUDA_VISIBLE_DEVICES``, ...)."""

    def __init__(self, command, extra_env, cwd):
        """Args: command (list of str); extra_env (dict): variables to set on top of the job's
        environment; cwd (str): the folder to run in."""
        super().__init__(command, verbose=True, cwd=cwd)
        self.extra_env = dict(extra_env)

    def __call__(self, *args, **kwargs):
        """Run the command in the job (see CommandFunction); returns its stdout."""
        self.env = dict(os.environ, **self.extra_env)
        return super().__call__(*args, **kwargs)


class SlurmLauncher:
    """Submit each trial as one SLURM job (one node, one task; detectron2's ``launch`` starts a
    worker per GPU in it) through submitit (:mod:`common.slurm`).

    Job scripts and logs go to ``folder``; ``<trial folder>/slurm_job.json`` records the trial's
    job. Stopping the runner (Ctrl-C, SIGTERM) cancels its jobs. A runner that could not (killed
    with SIGKILL, a lost login session) leaves them running, and the next runner *adopts* a
    trial's job that is still queued or running instead of submitting a second one.
    """

    inherits_fds = False  # a job runs elsewhere: the runner's lock descriptors cannot follow

    def __init__(self, folder, args, gpus_per_trial, stop_timeout=120.0):
        """Args: folder (str): submitit folder (on a file system the nodes share); args: the
        options of :func:`common.slurm.add_slurm_args`; gpus_per_trial (int, 0: request no
        GPU, for CPU trials); stop_timeout (float): how long :meth:`stop` waits for a cancelled
        job to leave the queue."""
        self.folder, self.stop_timeout = folder, stop_timeout
        self._trial_dirs = {}  # job id -> trial folder
        self.executor = make_executor(
            folder,
            args,
            name="moco-trials",
            nodes=1,
            tasks_per_node=1,  # detectron2's launch spawns one worker per GPU itself
            gpus_per_node=gpus_per_trial,
            cpus_per_task=args.slurm_cpus_per_gpu * max(1, gpus_per_trial),
        )

    def start(self, cmd, env, log_path):
        """Submit ``cmd`` as a job run from the current directory with the job's environment
        plus what ``env`` (None: this environment) sets differently from this process's, or
        adopt the job recorded next to ``log_path`` (in the trial folder) while it is queued or
        running.
        Returns the submitit job. The job id and the path of its output are appended to
        ``log_path``."""
        record = os.path.join(os.path.dirname(log_path), SLURM_JOB_RECORD)
        job = self._live_job(record)
        if job is not None:
            message = f"adopting SLURM job {job.job_id} (submitted by an earlier runner)"
        else:
            # sbatch passes this environment to the job: send only what the trial adds to it
            env = {} if env is None else env
            extra = {k: v for k, v in env.items() if os.environ.get(k) != v}
            fn = JobCommand(cmd, extra, cwd=os.getcwd())
            job = submit(self.executor, fn)
            atomic_write_json(record, {"job_id": job.job_id, "folder": self.folder})
            message = f"submitted SLURM job {job.job_id}: {' '.join(cmd)}"
        self._trial_dirs[job.job_id] = os.path.dirname(log_path)
        with open(log_path, "a") as log:
            log.write(f"{message}\nits output: {job.paths.stdout}\n")
        logger.info("%s; output in %s", message, job.paths.stdout)
        return job

    def _live_job(self, record):
        try:
            with open(record) as f:
                recorded = json.load(f)
            job = SlurmJob(folder=recorded["folder"], job_id=str(recorded["job_id"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return None if job.done(force_check=True) else job

    def poll(self, job):
        """Return None while the job is queued or running, 0 if it succeeded, else 1."""
        if not job.done():
            return None
        return 0 if job.exception() is None else 1

    def stop(self, job):
        """Cancel the job if it is still queued or running, and wait (up to the timeout) until
        SLURM has ended it, so that a rerun starts it afresh rather than adopting it."""
        if _ended(job):
            return
        job.cancel(check=False)
        deadline = time.time() + self.stop_timeout
        while not _ended(job) and time.time() < deadline:
            time.sleep(1.0)
        if _ended(job):
            self._drop_run_lock(job)

    def _drop_run_lock(self, job):
        # A cancelled train_net dies on SIGTERM without releasing the trial's run.lock; seen from
        # another node, a lock that fresh stays "live" for STALE_LOCK_S, so the job a rerun
        # submits there would be refused. The job has ended: its lock can go.
        path = os.path.join(self._trial_dirs.get(job.job_id, ""), RUN_LOCK)
        try:
            with open(path) as f:
                if json.load(f).get("slurm_job") == job.job_id:
                    os.unlink(path)
        except (OSError, ValueError, AttributeError):
            pass


def _ended(job):
    """Whether SLURM has ended ``job`` (asked now). Not ``job.done()``, which is already true
    once the job's function returned or failed, while its processes may still be running."""
    return job.watcher.is_done(job.job_id, mode="force")
