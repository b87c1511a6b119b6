"""Ways to run one trial's command: a local subprocess, or a SLURM job through submitit.

Both expose ``start(cmd, env, log_path) -> handle``, ``poll(handle) -> None | int`` (None while
running, else an exit status, 0 for success) and ``stop(handle)``, so the trial scheduler in
``detection.trials`` does not care where trials run.
"""

import logging
import os
import signal
import subprocess

logger = logging.getLogger(__name__)


class LocalLauncher:
    """Run each trial as a subprocess of this machine, in its own session (process group), so
    stopping a trial also stops the workers detectron2's ``launch`` spawned for it."""

    def __init__(self, stop_timeout=30.0):
        """Args: stop_timeout (float): seconds between SIGTERM and SIGKILL in :meth:`stop`."""
        self.stop_timeout = stop_timeout

    def start(self, cmd, env, log_path):
        """Start ``cmd`` (list of str) with environment ``env``; stdout and stderr are appended
        to ``log_path``. Returns the ``subprocess.Popen``."""
        with open(log_path, "a") as log:
            return subprocess.Popen(
                cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
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


class SlurmLauncher:
    """Submit each trial as one SLURM job (one node, ``gpus_per_trial`` GPUs) with submitit.

    Requires the optional extra ``pip install .[slurm]``; submitit is imported only here.
    Job scripts and submitit's own logs go to ``folder``; the trial's output still goes to its
    trial folder. Stopping the runner cancels its jobs, so a rerun never races a live job.
    """

    def __init__(
        self,
        folder,
        gpus_per_trial,
        partition="",
        timeout_min=4320,
        cpus_per_task=10,
        mem_gb=0,
        constraint="",
    ):
        """Args: folder (str): submitit folder; gpus_per_trial (int); partition, constraint
        (str, empty = cluster default); timeout_min (int); cpus_per_task (int, per GPU task);
        mem_gb (int, 0 = cluster default)."""
        try:
            import submitit
        except ImportError as e:  # an optional extra: say how to get it
            raise ImportError("--slurm needs submitit: pip install '.[slurm]'") from e
        self._submitit = submitit
        self.executor = submitit.AutoExecutor(folder=folder)
        params = dict(
            name="moco-trials",
            nodes=1,
            tasks_per_node=1,  # detectron2's launch spawns one worker per GPU itself
            gpus_per_node=gpus_per_trial,
            cpus_per_task=cpus_per_task * max(1, gpus_per_trial),
            timeout_min=timeout_min,
        )
        if partition:
            params["slurm_partition"] = partition
        if constraint:
            params["slurm_constraint"] = constraint
        if mem_gb:
            params["mem_gb"] = mem_gb
        self.executor.update_parameters(**params)

    def start(self, cmd, env, log_path):
        """Submit ``cmd`` as a job (run from the current directory with ``env``). Returns the
        submitit job; its output is in the submitit folder, named after the job id, which is
        also appended to ``log_path``."""
        fn = self._submitit.helpers.CommandFunction(cmd, verbose=True, cwd=os.getcwd(), env=env)
        job = self.executor.submit(fn)
        with open(log_path, "a") as log:
            log.write(f"submitted SLURM job {job.job_id}: {' '.join(cmd)}\n")
        logger.info("Submitted SLURM job %s", job.job_id)
        return job

    def poll(self, job):
        """Return None while the job is queued or running, 0 if it succeeded, else 1."""
        if not job.done():
            return None
        return 0 if job.exception() is None else 1

    def stop(self, job):
        """Cancel the job if it is still queued or running."""
        if not job.done():
            job.cancel(check=False)
