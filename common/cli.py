"""Command-line checks shared by the entry points: counts and sizes that cannot mean "nothing".

``type=at_least(1)`` makes argparse refuse ``--num-trials 0`` with ``argument --num-trials: must
be >= 1, got 0`` (usage and exit status 2) before anything runs or is written.
"""

from __future__ import annotations

import argparse
from typing import Callable

__all__ = ["above", "at_least"]


def _parser(kind: type, ok: Callable, bound: str, why: str) -> Callable:
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {bound}{why}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in some messages
    return parse


def at_least(minimum, kind: type = int, why: str = "") -> Callable:
    """An argparse ``type``: ``kind(text)``, refused below ``minimum``; ``why`` (e.g. ``" (0 =
    no retries)"``) is added to the message. Returns the parsing function."""
    return _parser(kind, lambda v: v >= minimum, f">= {minimum}", why)


def above(minimum, kind: type = float, why: str = "") -> Callable:
    """An argparse ``type``: ``kind(text)``, refused at or below ``minimum`` (e.g. periods and
    learning rates that must be positive). Returns the parsing function."""
    return _parser(kind, lambda v: v > minimum, f"> {minimum}", why)
