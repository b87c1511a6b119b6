"""The multi-process launch shared by the training entry points (pretraining, detection,
linear evaluation): detectron2's ``launch`` driven by the four arguments of
``detectron2.engine.default_argument_parser``."""

import argparse
import os
from typing import Callable

import torch
import torch.distributed as dist
from detectron2.engine import launch
from detectron2.utils import comm

from .errors import report_to_parent

__all__ = [
    "add_launch_args",
    "check_device",
    "check_launch_args",
    "close_process_group",
    "launch_from_args",
    "run_then_close",
]


def add_launch_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--num-gpus``, ``--num-machines``, ``--machine-rank`` and ``--dist-url`` (the names
    and defaults of detectron2's ``default_argument_parser``) to ``parser``; returns it."""
    parser.add_argument("--num-gpus", type=int, default=1, help="processes per machine (GPUs)")
    parser.add_argument("--num-machines", type=int, default=1, help="total number of machines")
    parser.add_argument("--machine-rank", type=int, default=0, help="rank of this machine")
    parser.add_argument(
        "--dist-url",
        default="auto",
        help="init URL (tcp://host:port) reachable by all machines; 'auto' for one machine",
    )
    return parser


def check_launch_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse, through ``parser.error`` (usage, exit status 2), launch arguments that start no
    process: ``--num-gpus`` or ``--num-machines`` below 1, ``--machine-rank`` outside
    0..num-machines-1. Works with detectron2's ``default_argument_parser`` too."""
    for flag, value in (("--num-gpus", args.num_gpus), ("--num-machines", args.num_machines)):
        if value < 1:
            parser.error(f"argument {flag}: must be >= 1, got {value}")
    if not 0 <= args.machine_rank < args.num_machines:
        parser.error(
            f"argument --machine-rank: must be in 0..{args.num_machines - 1} "
            f"(--num-machines {args.num_machines}), got {args.machine_rank}"
        )


def check_device(device: str, num_gpus: int = 1, key: str = "MODEL.DEVICE") -> None:
    """Refuse, before any process starts, CUDA asked for (``device`` "cuda" or "cuda:N"; ""
    means CUDA when present) where torch sees no GPU, and more processes per machine
    (``num_gpus``) than visible GPUs. Raises ValueError naming ``key``, ``--num-gpus`` and the
    fix; returns None."""
    if device and not device.startswith("cuda"):
        return
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        if device:
            raise ValueError(
                f"{key} is {device!r}, but torch {torch.__version__} sees no CUDA device "
                f"(CUDA build: {torch.version.cuda or 'none'}; CUDA_VISIBLE_DEVICES="
                f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}). Set {key} cpu, or run on "
                "a machine with a GPU."
            )
        return
    if num_gpus > count:
        raise ValueError(
            f"--num-gpus {num_gpus} starts one process per GPU, but {count} GPU(s) are visible "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}). Pass "
            f"--num-gpus {count} (with a config made for {count} GPU(s)), or run where "
            f"{num_gpus} are visible."
        )


def launch_from_args(main_func: Callable, args: argparse.Namespace) -> None:
    """Run ``main_func(args)`` on ``args.num_gpus`` processes per machine, ``args.num_machines``
    machines (detectron2's ``launch``; a single process runs it directly). Returns None."""
    launch(
        run_then_close,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(main_func, args),
    )


def close_process_group() -> None:
    """Once every rank gets here, shut the default process group down (no-op without one).

    A process that exits with the group still alive can be killed by SIGABRT on its way out
    ("terminate called without an active exception": GLOO's threads outlive the interpreter),
    which turns a finished run into a failed exit code.
    """
    if dist.is_available() and dist.is_initialized():
        comm.synchronize()
        dist.destroy_process_group()


def run_then_close(main_func: Callable, *args):
    """``main_func(*args)``, then :func:`close_process_group`; returns what ``main_func`` did.
    An exception skips the close (the other ranks may still be waiting in a collective); in a
    worker process of detectron2's ``launch`` it reaches the parent as the worker's final
    error line (:func:`common.errors.report_to_parent`)."""
    try:
        result = main_func(*args)
    except BaseException as e:
        report_to_parent(e)
        raise
    close_process_group()
    return result
