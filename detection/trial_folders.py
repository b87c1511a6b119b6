"""What a trial folder holds, for the trial runner: where it is, the config it was started
with, whether it finished and how far it got.

- ``<out>/trial_<i>_seed_<s>/`` (:func:`trial_dir`) is one trial's ``OUTPUT_DIR``;
- ``trial_config.json`` (:data:`TRIAL_CONFIG`) records the config the folder was first launched
  with, without the keys set per trial (:func:`comparable_config`); a rerun with another
  config is refused (:func:`check_trial_configs`) instead of mixing two settings in one summary;
- ``final_metrics.json`` marks a finished trial (:func:`read_final_metrics`; a damaged one is
  reported, never silently redone);
- ``last_checkpoint`` and ``metrics.json`` say where a trial would resume and how far it got
  (:func:`last_checkpoint`, :func:`read_progress`, :func:`trial_files` for the status lines).
"""

import json
import os

from common.io import atomic_write_json
from common.runconfig import ChangedRunError, diff_lines, flatten_config

from .progress import TrialFiles
from .summary import FINAL_METRICS, METRICS

RESERVED_KEYS = ("OUTPUT_DIR", "SEED", "TRANSFER.TRIAL")  # set per trial by the runner


def trial_dir(out_dir, index, seed):
    """Return the output folder of one trial: ``<out_dir>/trial_<index>_seed_<seed>``."""
    return os.path.join(out_dir, f"trial_{index}_seed_{seed}")


class CorruptMetricsError(ValueError):
    """``final_metrics.json`` exists but cannot be read; the message names it and the fix."""


class ChangedConfigError(ChangedRunError):
    """A trial folder was started with another config than this run's; the message names the
    folder, the keys that differ and the fix."""


TRIAL_CONFIG = "trial_config.json"  # the config a trial folder was started with


def comparable_config(cfg):
    """``{"KEY.SUB": value}`` of a config without the keys set per trial (RESERVED_KEYS), as
    written to :data:`TRIAL_CONFIG` (tuples become lists)."""
    flat = flatten_config(cfg)
    for key in RESERVED_KEYS:
        flat.pop(key, None)
    return flat


def check_trial_configs(trials, config):
    """Refuse to continue trials that were started with another config.

    A rerun skips finished trials and resumes started ones, so a rerun with a changed config or
    override would silently mix results of two settings in one summary. Every trial folder that
    holds a :data:`TRIAL_CONFIG` must match ``config`` (from :func:`comparable_config`).

    Raises:
        ChangedConfigError: naming each differing folder and up to 5 keys (old -> new).
    """
    problems = []
    for t in trials:
        path = os.path.join(t["output_dir"], TRIAL_CONFIG)
        if not os.path.exists(path):
            continue
        try:
            with open(path) as f:
                old = json.load(f)
        except (OSError, ValueError) as e:
            problems.append(f"{path}: unreadable ({e})")
            continue
        lines = diff_lines(old, config)
        if lines:
            shown = ", ".join(lines[:5])
            more = f" (+{len(lines) - 5} more)" if len(lines) > 5 else ""
            problems.append(f"{t['output_dir']}: {shown}{more}")
    if problems:
        raise ChangedConfigError(
            "not starting anything: these trials were started with another config, and "
            "continuing them would mix two settings in one summary:\n  "
            + "\n  ".join(problems)
            + "\nUse a new --output-dir for the new setting (or delete those trial folders)."
        )


def write_trial_config(trial, config):
    """Record ``config`` in the trial folder (once, before its first launch)."""
    path = os.path.join(trial["output_dir"], TRIAL_CONFIG)
    if not os.path.exists(path):
        atomic_write_json(path, config, indent=1, sort_keys=True)


def read_final_metrics(output_dir):
    """Return {"AP50", "AP", "AP75"} (box AP) from ``<output_dir>/final_metrics.json``, plus
    {"mask_AP50", "mask_AP", "mask_AP75"} when the results hold ``segm`` (Mask R-CNN), or None
    when the file is missing (an unfinished trial).

    Raises :class:`CorruptMetricsError` when the file exists but is not valid JSON, lacks
    ``results.bbox.{AP50,AP,AP75}`` or has a ``results.segm`` without those three numbers:
    train_net writes it atomically, so such a file was damaged or edited later, and silently
    re-running the trial would hide that.
    """
    path = os.path.join(output_dir, FINAL_METRICS)
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise CorruptMetricsError(f"{path}: cannot be read ({e})") from None
    fix = (
        "Restore it, or delete it to have the runner redo this trial's final evaluation "
        "(it resumes from last_checkpoint, so a finished trial only re-evaluates)."
    )
    try:
        record = json.loads(text)
    except ValueError as e:
        raise CorruptMetricsError(f"{path}: not valid JSON ({e}). {fix}") from None
    try:
        bbox = record["results"]["bbox"]
        metrics = {m: float(bbox[m]) for m in METRICS}
    except (KeyError, TypeError, ValueError) as e:
        raise CorruptMetricsError(
            f"{path}: no numeric results.bbox.{{AP50,AP,AP75}} ({type(e).__name__}: {e}); was "
            f"the trial run without DATASETS.TEST? {fix}"
        ) from None
    if "segm" in record["results"]:
        try:
            segm = record["results"]["segm"]
            metrics.update({f"mask_{m}": float(segm[m]) for m in METRICS})
        except (KeyError, TypeError, ValueError) as e:
            raise CorruptMetricsError(
                f"{path}: results.segm lacks numeric AP50/AP/AP75 ({type(e).__name__}: {e}). {fix}"
            ) from None
    return metrics


def last_checkpoint(output_dir):
    """Return the checkpoint file name recorded in ``<output_dir>/last_checkpoint`` (what
    ``--resume`` will load), or None."""
    try:
        with open(os.path.join(output_dir, "last_checkpoint")) as f:
            return f.read().strip() or None
    except OSError:
        return None


def read_progress(output_dir):
    """Return (iteration, eta_seconds or None) from the last line of ``metrics.json``, or None
    before the first line is written."""
    try:
        with open(os.path.join(output_dir, "metrics.json"), "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            record = json.loads(f.read().decode().strip().splitlines()[-1])
        return int(record["iteration"]), record.get("eta_seconds")
    except (OSError, ValueError, KeyError, IndexError):
        return None


def trial_files(output_dir):
    """What a trial's files say, for the status display (:class:`detection.progress.TrialFiles`):
    iterations done and detectron2's ETA (last ``metrics.json`` line), ``last_checkpoint``, and
    the final evaluation's duration, from ``last_checkpoint`` (written with the final
    checkpoint, right before the evaluation) to ``final_metrics.json``."""
    progress = read_progress(output_dir)
    try:
        eval_s = os.path.getmtime(os.path.join(output_dir, FINAL_METRICS)) - os.path.getmtime(
            os.path.join(output_dir, "last_checkpoint")
        )
    except OSError:
        eval_s = None
    return TrialFiles(
        iteration=progress[0] + 1 if progress else None,
        eta_s=progress[1] if progress else None,
        checkpoint=last_checkpoint(output_dir),
        eval_s=eval_s if eval_s is None or eval_s >= 0 else None,
        log=os.path.join(output_dir, "train_net.out"),
    )
