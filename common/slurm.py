"""SLURM submission shared by pretraining (``moco-pretrain --slurm``) and the trial runner
(``moco-trials --slurm``): a submitit executor with this project's parameters, and job states
that also work on clusters without an accounting database.

submitit reads job states with ``sacct``, which needs Slurm's accounting database (slurmdbd).
Where ``sacct`` fails ("accounting storage is disabled"), :class:`QueueWatcher` asks ``squeue``
instead: slurmctld keeps a finished job's state for ``MinJobAge`` (300 s by default); a job
``squeue`` no longer knows has ended (state ``GONE``), so nothing waits forever on it.
"""

import argparse
import logging
import shutil
import subprocess
import time

import submitit
from submitit.core.utils import FailedJobError
from submitit.slurm.slurm import SlurmInfoWatcher

logger = logging.getLogger(__name__)


# States of a job that has not ended: submitit's list (READY ... PREEMPTED) and the other states
# SLURM holds a job in before it ends, which submitit would take for "finished".
ACTIVE_STATES = ("READY", "PENDING", "RUNNING", "UNKNOWN", "REQUEUED", "COMPLETING", "PREEMPTED")
ACTIVE_STATES += ("CONFIGURING", "SUSPENDED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING")
ACTIVE_STATES += ("SIGNALING", "STAGE_OUT", "STOPPED")


class QueueWatcher(SlurmInfoWatcher):
    """submitit's job-state reader (``sacct``), falling back to ``squeue`` where ``sacct``
    fails. Returns the same ``{job id: {"JobID", "State", "NodeList"}}`` records; a job is done
    once its state is none of :data:`ACTIVE_STATES`."""

    def is_done(self, job_id: str, mode: str = "standard") -> bool:
        """Whether job ``job_id`` has ended (``mode``: "force", "standard" or "cache", as in
        submitit: when to ask the cluster again)."""
        state = self.get_state(job_id, mode=mode).upper()
        return state.split()[0] not in ACTIVE_STATES  # sacct writes e.g. "CANCELLED by 0"

    def update(self) -> None:
        """Refresh the states of every registered unfinished job (one sacct or squeue call)."""
        command = self._make_command()
        if command is None:
            return
        self._num_calls += 1
        pending = self._registered - self._finished
        try:
            output = subprocess.run(command, check=True, capture_output=True, timeout=60).stdout
            self._info_dict.update(self.read_info(output))
        except (OSError, subprocess.SubprocessError):
            output = _squeue_as_sacct(pending)
            if output is not None:
                info = self.read_info(output)
                # a job squeue no longer knows has ended (submitit's UNKNOWN would mean "wait")
                info.update({j: {"JobID": j, "State": "GONE"} for j in pending - set(info)})
                self._info_dict.update(info)
        self._last_status_check = time.time()
        self._finished |= {j for j in pending if self.is_done(j, mode="cache")}


def _squeue_as_sacct(job_ids):
    """``squeue`` output for ``job_ids`` (array tasks ``<id>_<i>`` are asked by ``<id>``) in
    sacct's ``--parsable2`` format, header line first; jobs slurmctld no longer holds are left
    out. None when squeue itself fails (e.g. the controller does not answer)."""
    header = "JobID|State|NodeList\n"
    ids = sorted({j.split("_")[0] for j in job_ids})
    if not ids:
        return header
    cmd = ["squeue", "--noheader", "--states=all", "--format=%i|%T|%N", "--jobs", ",".join(ids)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        logger.warning("Neither sacct nor squeue answered (%s); job states not updated", e)
        return None
    if proc.returncode == 0:
        return header + proc.stdout
    if "Invalid job id" in proc.stderr:  # none of them is known any more: all ended
        return header
    logger.warning("squeue failed (%s); job states not updated", proc.stderr.strip())
    return None


class SlurmJob(submitit.SlurmJob):
    """submitit's SLURM job, with states from :class:`QueueWatcher`."""

    watcher = QueueWatcher(delay_s=600)


class SlurmExecutor(submitit.SlurmExecutor):
    """submitit's SLURM executor whose jobs are :class:`SlurmJob`."""

    job_class = SlurmJob


def job_state(job_id, folder):
    """Return the current state (str, e.g. ``RUNNING``, ``COMPLETED``, ``GONE``) of SLURM job
    ``job_id`` whose submitit files are in ``folder``, asking the cluster now."""
    return SlurmJob(folder=folder, job_id=str(job_id)).watcher.get_state(str(job_id), "force")


def add_slurm_args(parser: argparse.ArgumentParser, cpus_help: str):
    """Add the SLURM options both CLIs share to ``parser`` (an argument group is made):
    ``--slurm``, ``--slurm-partition``, ``--slurm-account``, ``--slurm-constraint``,
    ``--slurm-timeout-min``, ``--slurm-mem-gb`` and ``--slurm-cpus-per-gpu`` (help:
    ``cpus_help``). Returns the group, for CLI-specific options."""
    s = parser.add_argument_group("SLURM (through submitit)")
    s.add_argument("--slurm", action="store_true", help="submit to SLURM instead of running here")
    s.add_argument("--slurm-partition", default="", help="partition (default: the cluster's)")
    s.add_argument("--slurm-account", default="", help="account to charge (sbatch --account)")
    s.add_argument("--slurm-constraint", default="", help="node features (sbatch --constraint)")
    s.add_argument(
        "--slurm-timeout-min",
        type=int,
        default=4320,
        help="time limit per job in minutes; a job that reaches it is requeued if it can resume",
    )
    s.add_argument("--slurm-mem-gb", type=int, default=0, help="memory per node (0: default)")
    s.add_argument("--slurm-cpus-per-gpu", type=int, default=10, help=cpus_help)
    return s


def make_executor(folder, args, *, name, nodes, tasks_per_node, gpus_per_node, cpus_per_task):
    """A :class:`SlurmExecutor` writing its job scripts and logs to ``folder``.

    Args:
        folder (str): submitit's folder; it must be on a file system the nodes share.
        args: parsed options of :func:`add_slurm_args` (partition, account, constraint, time
            limit, memory; empty or 0 = the cluster's default).
        name (str): job name; nodes, tasks_per_node, gpus_per_node (0: no GPU request),
            cpus_per_task (int): the allocation.

    Returns:
        SlurmExecutor: call ``submit(fn, *args)`` on it.
    """
    if shutil.which("sbatch") is None or shutil.which("srun") is None:
        raise SystemExit(
            "--slurm needs the SLURM commands (sbatch, srun, squeue) on PATH: run this on the "
            "cluster's login node (on one machine, `sudo tools/start_slurm.sh` starts a one-node "
            "cluster and prints the SLURM_CONF to export)"
        )
    executor = SlurmExecutor(folder=folder)
    params = dict(
        job_name=name,
        nodes=nodes,
        ntasks_per_node=tasks_per_node,
        cpus_per_task=cpus_per_task,
        time=args.slurm_timeout_min,
        signal_delay_s=120,  # the time-limit warning (USR2) comes 2 min before the kill
    )
    if gpus_per_node:
        params["gpus_per_node"] = gpus_per_node
    optional = dict(
        partition=args.slurm_partition,
        account=args.slurm_account,
        constraint=args.slurm_constraint,
        mem=f"{args.slurm_mem_gb}GB" if args.slurm_mem_gb else "",
    )
    params.update({k: v for k, v in optional.items() if v})
    executor.update_parameters(**params)
    return executor


def submit(executor, fn):
    """``executor.submit(fn)`` with sbatch's refusal as the last line: returns the job, or
    raises SystemExit naming sbatch's message and the options that set the request."""
    try:
        return executor.submit(fn)
    except FailedJobError as e:
        raise SystemExit(
            f"sbatch refused the job: {str(e).strip()}\nCheck --slurm-partition, "
            "--slurm-account, --slurm-constraint, --slurm-timeout-min, --slurm-mem-gb and the "
            "GPU and CPU counts against the cluster (sinfo, sacctmgr show assoc)."
        ) from None
