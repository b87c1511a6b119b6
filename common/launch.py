"""The multi-process launch shared by the training entry points (pretraining, detection,
linear evaluation): detectron2's ``launch`` driven by the four arguments of
``detectron2.engine.default_argument_parser``."""

import argparse
from typing import Callable

from detectron2.engine import launch

__all__ = ["add_launch_args", "launch_from_args"]


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


def launch_from_args(main_func: Callable, args: argparse.Namespace) -> None:
    """Run ``main_func(args)`` on ``args.num_gpus`` processes per machine, ``args.num_machines``
    machines (detectron2's ``launch``; a single process runs it directly). Returns None."""
    launch(
        main_func,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
