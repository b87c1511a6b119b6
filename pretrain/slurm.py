r"""Pretraining as a SLURM job, the way of MAE's and DINO's ``submitit_pretrain.py``::

    moco-pretrain --slurm --num-machines 2 --num-gpus 8 --slurm-partition <partition> \
        --config-file configs/pretrain/moco_v2_200ep.yaml \
        DATA.TRAIN datasets/imagenet/train OUTPUT_DIR output/moco_v2_200ep

One job of ``--num-machines`` nodes with ``--num-gpus`` tasks (one per GPU) on each, submitted
through submitit; the command returns once the job is queued. Every task forms the process
group from SLURM's variables (``submitit.helpers.TorchDistributedEnvironment``: rank, world
size, the first node as master) and runs :func:`pretrain.train_net.run`. With
``MODEL.DEVICE cpu`` no GPU is requested and the tasks use GLOO.

A job that reaches its time limit or is preempted requeues itself (submitit calls
:meth:`Trainer.checkpoint` on the USR2 warning); a job requeued from outside (``scontrol
requeue``, a node failure) starts again too. Either way the restarted job is a new process
that resumes from ``OUTPUT_DIR/last.pth``: at most the epoch in progress is lost.
"""

import os
import time

import submitit

from common.launch import run_then_close
from common.locks import hold_output_dir
from common.slurm import add_slurm_args, make_executor, submit

from .checkpoint import LAST
from .config import load_cfg
from .distributed import maybe_init_from_env

__all__ = ["Trainer", "add_args", "submit_pretraining"]


def add_args(parser):
    """Add ``--slurm`` and its options (common.slurm.add_slurm_args) to the pretraining parser.
    Nodes and GPUs per node are ``--num-machines`` and ``--num-gpus``."""
    add_slurm_args(parser, cpus_help="CPUs per task (one task per GPU): loader workers + 1")


def restarted() -> bool:
    """Whether this process belongs to a job SLURM has started again (requeued, preempted)."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0


class Trainer:
    """The callable a pretraining job runs, once in every task (pickled by submitit).

    Args:
        args (argparse.Namespace): the ``moco-pretrain`` options.
        output_dir (str): absolute ``OUTPUT_DIR`` of the run.
        submitted (float): submission time (``time.time()``); a ``last.pth`` older than this
            belongs to an earlier run.
    """

    def __init__(self, args, output_dir, submitted):
        self.args, self.output_dir, self.submitted = args, output_dir, submitted

    def run_args(self):
        """The options of this start. A restarted job continues its own ``last.pth``: in place
        of ``--resume PATH`` (where the run began) or ``--no-auto-resume`` (which ignored an
        older run's file), once this job has written one."""
        last = os.path.join(self.output_dir, LAST)
        own_last = os.path.isfile(last) and os.path.getmtime(last) >= self.submitted
        if not (restarted() and own_last):
            return self.args
        if self.args.resume or self.args.no_auto_resume:
            print(f"Restarted job: continuing from {last}", flush=True)
        args = type(self.args)(**vars(self.args))
        args.resume, args.no_auto_resume = "", False
        return args

    def __call__(self):
        """Run this task's share of the job; returns :func:`pretrain.train_net.run`'s dict."""
        from .train_net import run  # train_net imports this module for its parser

        env = submitit.helpers.TorchDistributedEnvironment()
        # CUDA_VISIBLE_DEVICES stays as SLURM set it; the process picks GPU LOCAL_RANK itself.
        env.export(set_cuda_visible_devices=False, overwrite=True)
        print(  # the task's log (logging is set up later, by run)
            f"SLURM task: rank {env.rank} of {env.world_size}, master "
            f"{env.master_addr}:{env.master_port}, restart "
            f"{os.environ.get('SLURM_RESTART_COUNT', '0')}",
            flush=True,
        )
        maybe_init_from_env()
        # rank 0 holds OUTPUT_DIR/run.lock; a restart on another node takes over the lock its
        # own earlier attempt left there (same SLURM job id)
        with hold_output_dir(self.output_dir, enabled=env.rank == 0):
            return run_then_close(run, self.run_args())

    def checkpoint(self):
        """submitit's hook for the time-limit or preemption signal (rank 0): requeue the same
        job. Returns the submission the restarted job runs; it resumes from ``last.pth``."""
        return submitit.helpers.DelayedSubmission(self)


def submit_pretraining(args):
    """Submit the pretraining run of ``args`` (``moco-pretrain`` options) as one SLURM job.

    The config is loaded here first, so a bad key or value stops before anything is queued.
    Job scripts and logs go to ``OUTPUT_DIR/slurm``. Returns the submitit job.
    """
    cfg = load_cfg(args.config_file, args.opts)
    output_dir = os.path.abspath(cfg.OUTPUT_DIR)
    folder = os.path.join(output_dir, "slurm")
    executor = make_executor(
        folder,
        args,
        name="moco-pretrain",
        nodes=args.num_machines,
        tasks_per_node=args.num_gpus,
        gpus_per_node=0 if cfg.MODEL.DEVICE == "cpu" else args.num_gpus,
        cpus_per_task=args.slurm_cpus_per_gpu,
    )
    job = submit(executor, Trainer(args, output_dir, time.time()))
    print(
        f"Submitted SLURM job {job.job_id} ({args.num_machines} node(s) x {args.num_gpus} "
        f"task(s)); output in {output_dir}, task logs {folder}/{job.job_id}_<task>_log.out/err",
        flush=True,
    )
    return job
