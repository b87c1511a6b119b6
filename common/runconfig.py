"""A resumed run is the same run: compare the config a run was started with and the current one.

Configs are compared flat, ``{"KEY.SUB": value}`` (:func:`flatten_config`), with values in
their JSON form (tuples become lists), so a config read back from a YAML dump or a JSON record
compares equal to the live one. Each command decides which keys shape its run; this module
only flattens, diffs and words the refusal.
"""

from __future__ import annotations

import json
from typing import Iterable, Mapping, Optional

__all__ = ["ChangedRunError", "diff_lines", "flatten_config", "refuse_changes"]


class ChangedRunError(ValueError):
    """Continuing a run with settings other than those it was started with; the message lists
    each changed key (old -> new) and the choices."""


def flatten_config(node: Mapping, prefix: str = "") -> dict:
    """``{"KEY.SUB": value}`` of a nested mapping (a CfgNode, or a dict read back from YAML or
    JSON); values in JSON form (tuples -> lists), keys sorted."""
    flat = {}

    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, Mapping):
                walk(value, f"{prefix}{key}.")
            else:
                flat[prefix + str(key)] = value

    walk(node, prefix)
    return json.loads(json.dumps(flat, sort_keys=True, default=str))


def diff_lines(old: Mapping, new: Mapping, keys: Optional[Iterable[str]] = None) -> list:
    """``"KEY: old -> new"`` (values as ``repr``) for each key of ``keys`` (default: every key
    of either) whose value differs between the flat configs ``old`` and ``new``; a key missing
    on one side shows as ``<absent>``. Sorted by key."""
    keys = sorted(set(old) | set(new) if keys is None else set(keys))

    def show(flat, key):
        return repr(flat[key]) if key in flat else "<absent>"

    return [
        f"{k}: {show(old, k)} -> {show(new, k)}"
        for k in keys
        if (k in old) != (k in new) or old.get(k) != new.get(k)
    ]


def refuse_changes(source: str, lines: list, choices: str) -> None:
    """Raise :class:`ChangedRunError` when ``lines`` (from :func:`diff_lines`) is not empty.

    Args:
        source: what holds the run's own settings (a checkpoint or record path), named first.
        lines: the changed keys, one ``"KEY: old -> new"`` each; all are listed.
        choices: the last line of the message: how to continue or start afresh.
    """
    if lines:
        raise ChangedRunError(
            f"not resuming: {source} belongs to a run started with other settings, and "
            "continuing it with these would make a run that is neither the old one nor the "
            "new one:\n  " + "\n  ".join(lines) + "\n" + choices
        )
