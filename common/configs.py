"""Merging a YAML config file and ``KEY VALUE`` overrides into a CfgNode, with errors that name
the file (or the overrides), the key and the fix.

Shared by the pretraining and the detection configs: yacs and detectron2 report a typo as
``AssertionError: Non-existent key``, a wrong type as ``Type mismatch (<class 'int'> vs.
<class 'str'>)``, a missing file as an assertion and a missing ``_BASE_`` as a bare
``FileNotFoundError``; :func:`merge_config` turns each into one ``ValueError``.
"""

from __future__ import annotations

import difflib
import os
import re
from typing import Sequence

__all__ = ["COMPILE_MODES", "ConfigError", "merge_config"]

OVERRIDES = "the command-line overrides"
# torch.compile modes a config may ask for ("" = eager): pretraining's SOLVER.COMPILE and
# detection's TRANSFER.COMPILE_RES5
COMPILE_MODES = ("", "default", "reduce-overhead", "max-autotune")


class ConfigError(ValueError):
    """A config file or override that cannot be merged; the message names where and the fix."""


def _all_keys(node, prefix: str = "") -> list:
    """Full dotted names of every key of ``node`` (sub-nodes and leaves)."""
    keys = []
    for k, v in node.items():
        keys.append(prefix + k)
        if isinstance(v, dict):
            keys += _all_keys(v, prefix + k + ".")
    return keys


def _closest(key: str, cfg) -> list:
    depth = key.count(".")
    valid = [k for k in _all_keys(cfg) if k.count(".") == depth]
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.6)
    if not close:  # a typo in a parent (SOLVR.BASE_LR): compare the last part under any parent
        leaf = key.rsplit(".", 1)[-1]
        close = [k for k in valid if depth and k.rsplit(".", 1)[-1] == leaf][:3]
    return close


def _flag_hint(opts: Sequence[str]) -> str:
    flags = [o for o in opts if str(o).startswith("--")]
    if not flags:
        return ""
    return (
        f" Command-line flags ({' '.join(flags)}) go before the KEY VALUE overrides: move them "
        "in front of the first KEY."
    )


def _yaml_keys(path: str) -> set:
    """The dotted keys a YAML file sets (empty when it cannot be read)."""
    try:
        import yaml

        with open(path) as f:
            data = yaml.safe_load(f)
    except Exception:  # noqa: BLE001 - only used for a hint
        return set()
    return set(_all_keys(data)) if isinstance(data, dict) else set()


def _merge_file(cfg, path: str, what: str, config_dir: str, keys_doc: str, foreign: dict) -> None:
    if not os.path.isfile(path):
        where = "is a folder" if os.path.isdir(path) else "does not exist"
        raise ConfigError(
            f"--config-file {path} {where}. Pass a {what} YAML file, e.g. one of "
            f"{config_dir}/*.yaml."
        )
    try:
        cfg.merge_from_file(path)
    except FileNotFoundError as e:  # a _BASE_ that is not there
        raise ConfigError(
            f"{path}: its _BASE_ {os.path.basename(str(e.filename))!r} does not exist (looked for "
            f"{os.path.abspath(str(e.filename))}). A _BASE_ path is relative to the folder of the "
            "YAML file that names it."
        ) from e
    except (KeyError, ValueError, AssertionError) as e:
        raise _translate(e, cfg, path, what, config_dir, keys_doc, foreign, ()) from e


def _translate(e, cfg, source, what, config_dir, keys_doc, foreign, opts) -> ConfigError:
    msg = str(e.args[0]) if e.args else str(e)
    unknown = re.search(r"Non-existent (?:config )?key: (\S+)", msg)
    if unknown:
        key = unknown.group(1)
        if key.startswith("--"):
            return ConfigError(f"{key} is not a config key in {source}.{_flag_hint(opts)}")
        keys = _yaml_keys(source) if source != OVERRIDES else set()
        for marker, kind in foreign.items():
            if marker in keys:
                return ConfigError(
                    f"{source} is {kind} (it sets {marker}), not a {what} config. Pass one of "
                    f"{config_dir}/*.yaml."
                )
        close = _closest(key, cfg)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        return ConfigError(f"unknown config key {key!r} in {source}{hint} (see {keys_doc})")
    mismatch = re.search(
        r"Type mismatch \((.*?) vs\. (.*?)\) with values \((.*) vs\. (.*)\) for config key: (\S+)",
        msg,
        re.S,
    )
    if mismatch:
        want, _, default, value, key = mismatch.groups()
        kind = re.sub(r"<class '(\w+)'>", r"\1", want)
        return ConfigError(
            f"{source} set {key} to {value!r}, but it must be of type {kind} (like its default "
            f"{default}). Give a value of that type."
        )
    if "odd length" in msg:
        return ConfigError(
            f"the KEY VALUE overrides come in pairs, but {opts[-1] if opts else 'one'!r} has no "
            f"value.{_flag_hint(opts)}"
        )
    return ConfigError(f"invalid {what} config in {source}: {msg}")


def merge_config(
    cfg,
    config_file: str = "",
    opts: Sequence[str] = (),
    what: str = "",
    config_dir: str = "configs",
    keys_doc: str = "",
    foreign: dict | None = None,
):
    """Merge ``config_file`` (when given) and the ``KEY VALUE`` list ``opts`` into ``cfg``.

    Args:
        cfg: the CfgNode with the defaults (changed in place).
        config_file: a YAML file (``_BASE_`` allowed).
        opts: trailing command-line overrides.
        what: the kind of config, in messages ("pretraining", "detection").
        config_dir: where the shipped configs of this kind are (``configs/pretrain``).
        keys_doc: where the valid keys are documented (``pretrain/config.py``).
        foreign: keys that only another kind of config sets, mapped to what that config is
            (e.g. ``{"MODEL.META_ARCHITECTURE": "a detection config (moco-detect)"}``), so that
            a config given to the wrong command is named as such.

    Returns:
        ``cfg``. Raises :class:`ConfigError` (a ValueError) naming the file or "the
        command-line overrides", the key and the fix: a missing file or ``_BASE_``, an unknown
        key (with the closest valid ones), a value of the wrong type, an override without a
        value, a flag among the overrides. A YAML syntax error is left to propagate
        (``common.errors`` names its file, line and column).
    """
    foreign, keys_doc = foreign or {}, keys_doc or config_dir
    if config_file:
        _merge_file(cfg, config_file, what, config_dir, keys_doc, foreign)
    opts = list(opts)
    if opts:
        try:
            cfg.merge_from_list(opts)
        except (KeyError, ValueError, AssertionError) as e:
            raise _translate(e, cfg, OVERRIDES, what, config_dir, keys_doc, foreign, opts) from e
    return cfg
