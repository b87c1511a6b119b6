"""Pretraining checkpoints: durable atomic save, health checks, readable errors, resume.

Format (docs/architecture.md): ``{"model", "optimizer", "optimizer_type", "scaler", "epoch",
"iteration", "cfg", "rng", "format"}``; ``model`` keys never carry DDP's ``module.`` prefix.
``epoch`` is the number of finished epochs (the epoch to start from when resuming).
What survives what is listed in docs/reliability.md.
"""

import errno
import glob
import logging
import math
import os
import random
import re
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
from detectron2.utils.file_io import PathManager  # iopath, with detectron2's handlers

from common.files import not_a_weights_file
from common.io import atomic_write
from common.runconfig import diff_lines, flatten_config, refuse_changes

from .builder import build_moco
from .config import RUN_KEYS, get_pretrain_cfg

logger = logging.getLogger(__name__)
FORMAT = "moco-detectron2/pretrain/v1"
LAST = "last.pth"
# A weight with |w| above this is an explosion, not training: parameters of a healthy MoCo run
# stay below ~10 and the queue holds unit vectors, while a diverging run passes 1e6 long before
# it overflows to inf (SOLVER.BASE_LR 1e30 reaches ~1e28 in one step). BN running statistics
# are only checked for NaN/inf: their scale follows the activations, not the optimizer.
MAX_ABS_WEIGHT = 1e6


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: unreadable, not ours, unhealthy or mismatched."""


class ForeignCheckpointError(CheckpointError, ValueError):
    """A readable file that is not a pretraining checkpoint of this project (e.g. a torchvision
    or MoCo release file, which ``convert.load_backbone`` reads). A ValueError too: the user
    gave the wrong file (exit status 2, ``common.errors``)."""


class NotACheckpointError(CheckpointError, ValueError):
    """A path that plainly holds no checkpoint: a folder, a text file (a YAML config)."""


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel (or ``model`` itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def rng_state() -> dict:
    """Python, numpy, torch CPU and (if present) CUDA RNG states of this process."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore states saved by :func:`rng_state` (CUDA only if saved and available)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_name(epoch: int) -> str:
    """File name of the periodic checkpoint after ``epoch`` finished epochs."""
    return f"checkpoint_{epoch:04d}.pth"


def weights_problem(state: dict) -> Optional[str]:
    """Why a model ``state`` dict (name -> tensor) must not be saved or resumed, or None.

    A state is unhealthy when a floating-point tensor holds a NaN/inf, or a tensor other than a
    BN running statistic holds a value with |w| > :data:`MAX_ABS_WEIGHT` (an explosion).
    Returns a short description naming the first offending tensor and its largest magnitude.
    """
    for name, t in state.items():
        if not torch.is_tensor(t) or not t.is_floating_point() or t.numel() == 0:
            continue
        peak = t.detach().abs().max().item()
        if not math.isfinite(peak):
            return f"{name} holds non-finite values"
        if peak > MAX_ABS_WEIGHT and not name.endswith(("running_mean", "running_var")):
            return f"{name} has |w| = {peak:.3g} > {MAX_ABS_WEIGHT:g} (exploding)"
    return None


def resume_hint(last_good: str) -> str:
    """What to do after a divergence, given the last good checkpoint of the run ("" if none)."""
    if last_good:
        return (
            f"The last good checkpoint is {last_good}. A rerun with the same config resumes "
            f"from it (OUTPUT_DIR/last.pth automatically, or --resume {last_good}), e.g. once "
            "bad input data is fixed; a changed lr, warm-up or other recipe key is a new run: "
            "start it with --no-auto-resume (or in a new OUTPUT_DIR)."
        )
    return (
        "No checkpoint of this run was written before it diverged: fix the cause and rerun "
        "with --no-auto-resume (or --resume PATH of a good checkpoint)."
    )


def save_checkpoint(path: str, model, optimizer, scaler, epoch: int, iteration: int, cfg) -> None:
    """Write a checkpoint to ``path`` atomically and durably.

    Written with :func:`common.io.atomic_write` (temporary file, fsync, ``os.replace``, fsync of
    the folder): a kill or power loss at any moment leaves either the previous file or the new
    one, never a torn one. Raises
    :class:`CheckpointError` (and writes nothing) when the weights are non-finite or exploding
    (:func:`weights_problem`). Call on the main process only. ``model`` may be DDP-wrapped;
    ``scaler`` may be None.
    """
    state = unwrap(model).state_dict()
    problem = weights_problem(state)
    if problem:
        raise CheckpointError(
            f"not saving {path!r} at epoch {epoch}, iteration {iteration}: {problem}"
        )
    ckpt = {
        "model": state,
        "optimizer": optimizer.state_dict(),
        "optimizer_type": type(optimizer).__name__,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": epoch,
        "iteration": iteration,
        "cfg": cfg.dump(),
        "rng": rng_state(),
        "format": FORMAT,
    }
    atomic_write(path, lambda f: torch.save(ckpt, f))
    logger.info("Saved checkpoint %s (epoch %d, iteration %d)", path, epoch, iteration)


_CHOICES = (
    "resume from another file with --resume PATH (e.g. an older checkpoint_NNNN.pth in the same "
    "folder), or start afresh with --no-auto-resume (or a new OUTPUT_DIR)"
)


# Errors of reading that say the disk or the system failed, not the file: reported as such
# (common.errors) instead of calling a healthy checkpoint corrupt.
_READ_FAILURES = {errno.EIO, errno.ESTALE, errno.EACCES, errno.EPERM, errno.ENOMEM, errno.EMFILE}


def _unreadable(path: str, e: Exception, choices: str) -> CheckpointError:
    """The error for a checkpoint ``path`` that torch could not read (``e``)."""
    size = os.path.getsize(path) if os.path.isfile(path) else -1
    what = "is empty (0 bytes)" if size == 0 else "is truncated or corrupt"
    return CheckpointError(
        f"checkpoint {path!r} {what} and cannot be read ({type(e).__name__}: "
        f"{str(e).splitlines()[0] if str(e) else ''}); {choices}"
    )


def load_checkpoint(path: str, choices: str = _CHOICES) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` onto the CPU.

    Raises FileNotFoundError for a missing file and :class:`CheckpointError` naming ``path``
    and ``choices`` (what the user can do instead; default: the resume options) for a folder, a
    text file, an empty, truncated or corrupt file, or :class:`ForeignCheckpointError` for one
    of another format.
    """
    if not PathManager.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist; check --resume / OUTPUT_DIR")
    plainly = not_a_weights_file(path)
    if plainly and not plainly.startswith("is empty"):
        raise NotACheckpointError(f"checkpoint {path!r} {plainly}; {choices}")
    try:
        with PathManager.open(path, "rb") as f:
            # weights_only=False: the file holds numpy RNG state and a YAML string, from our runs
            ckpt = torch.load(f, map_location="cpu", weights_only=False)
    except OSError as e:
        if e.errno not in _READ_FAILURES:  # torch reports a truncated zip as EINVAL, etc.
            raise _unreadable(path, e, choices) from e
        raise OSError(e.errno, e.strerror, path) from e  # the disk failed, not the file
    except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError, ...
        raise _unreadable(path, e, choices) from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        fmt = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ForeignCheckpointError(
            f"{path!r} is not a checkpoint of this project's pretraining (format tag {fmt!r}, "
            f"not {FORMAT!r}): --resume continues a run from its OUTPUT_DIR/last.pth or "
            "checkpoint_NNNN.pth. Other files (a MoCo release, a torchvision or detectron2 "
            "file) start no run here: pass the pretraining checkpoint, or drop --resume"
        )
    return ckpt


def load_moco(path: str, choices: str = _CHOICES) -> Tuple[nn.Module, dict]:
    """The MoCo model of a pretraining checkpoint, built from the config stored in it.

    Input: a file written by :func:`save_checkpoint`. Output: ``(model, ckpt)`` with the model
    on the CPU, weights loaded strictly, and the checkpoint dict (``epoch``, ``cfg``...).
    Raises as :func:`load_checkpoint` (``choices`` as there).
    """
    ckpt = load_checkpoint(path, choices)
    cfg = get_pretrain_cfg()
    cfg.merge_from_other_cfg(cfg.load_cfg(ckpt["cfg"]))
    model = build_moco(cfg)
    model.load_state_dict(ckpt["model"])
    return model, ckpt


def _periodic(output_dir: str) -> list:
    """``checkpoint_NNNN.pth`` files in ``output_dir``, newest (highest epoch) first."""
    paths = glob.glob(os.path.join(output_dir, "checkpoint_*.pth"))
    paths = [p for p in paths if re.fullmatch(r"checkpoint_\d+\.pth", os.path.basename(p))]
    return sorted(paths, key=lambda p: int(re.findall(r"\d+", os.path.basename(p))[0]))[::-1]


def _usable(path: str) -> dict:
    """Load ``path`` and check its weights; raise CheckpointError when it cannot be resumed."""
    ckpt = load_checkpoint(path)
    problem = weights_problem(ckpt.get("model", {}))
    if problem:
        raise CheckpointError(f"checkpoint {path!r} holds a diverged model ({problem}); {_CHOICES}")
    return ckpt


def load_resume_checkpoint(output_dir: str, resume: str = "") -> Tuple[Optional[str], dict]:
    """The checkpoint a run continues from, as ``(path, ckpt)``, or ``(None, {})``.

    With ``resume``, that file must be readable and healthy (else CheckpointError). Otherwise
    ``output_dir/last.pth`` is used when it exists; if it is unreadable or diverged, the newest
    usable ``checkpoint_NNNN.pth`` in ``output_dir`` is used instead (with a warning), and
    CheckpointError names every file tried when none is usable.
    """
    if resume:
        return resume, _usable(resume)
    last = os.path.join(output_dir, LAST)
    if not PathManager.exists(last):
        return None, {}
    tried = []
    for path in [last] + _periodic(output_dir):
        try:
            ckpt = _usable(path)
        except CheckpointError as e:
            logger.warning("Cannot resume from %s: %s", path, e)
            tried.append(path)
            continue
        if tried:
            logger.warning("Auto-resume falls back to %s (unusable: %s)", path, ", ".join(tried))
        return path, ckpt
    raise CheckpointError(
        f"no usable checkpoint in {output_dir!r} (tried {', '.join(tried)}); {_CHOICES}"
    )


def check_same_run(ckpt: dict, cfg, path: str, iters_per_epoch: int) -> None:
    """Refuse to resume ``ckpt`` (read from ``path``) with a config that changes its run.

    Compares the config saved in the checkpoint (missing keys: today's defaults) with ``cfg``
    on :data:`pretrain.config.RUN_KEYS`, and the iterations per epoch the checkpoint's run had
    (``iteration / epoch``) with ``iters_per_epoch``: another data set size, batch or number of
    processes moves every later step of the lr schedule. Keys of ``FREE_KEYS`` (workers, log
    period, output folder, compile, ...) may change. Returns None; raises
    :class:`common.runconfig.ChangedRunError` listing each change as ``KEY: old -> new`` and
    the choices. A checkpoint without a saved config is not checked.
    """
    if not ckpt.get("cfg"):
        logger.warning("%s holds no config: cannot check that the resume is the same run", path)
        return
    old = flatten_config(get_pretrain_cfg())
    old.update(flatten_config(get_pretrain_cfg().load_cfg(ckpt["cfg"])))
    lines = diff_lines(old, flatten_config(cfg), RUN_KEYS)
    epoch, iteration = ckpt.get("epoch", 0), ckpt.get("iteration", 0)
    if epoch and iteration != epoch * iters_per_epoch:
        lines.append(
            f"iterations per epoch (DATA.TRAIN images / SOLVER.BATCH_SIZE, per process): "
            f"{iteration / epoch:g} -> {iters_per_epoch}"
        )
    refuse_changes(
        f"checkpoint {path}",
        lines,
        "Set these back to continue that run (its config is the checkpoint's 'cfg'), or start "
        "a new run in a new OUTPUT_DIR (or with --no-auto-resume, which overwrites this "
        "folder's last.pth after its first epoch).",
    )


def _optimizer_type(ckpt: dict) -> str:
    """Optimizer class name saved in ``ckpt`` (inferred from its param groups for old files)."""
    if ckpt.get("optimizer_type"):
        return ckpt["optimizer_type"]
    groups = (ckpt.get("optimizer") or {}).get("param_groups") or [{}]
    if "betas" in groups[0]:  # torch's AdamW is Adam with decoupled weight decay
        return "AdamW" if groups[0].get("decoupled_weight_decay", True) else "Adam"
    return "SGD" if "nesterov" in groups[0] else "unknown"


def restore(ckpt: dict, model, optimizer=None, scaler=None, path: str = "") -> None:
    """Load model (strictly), optimizer, scaler and RNG states from ``ckpt`` in place.

    Raises :class:`CheckpointError` in one line when ``optimizer`` is of another type than the
    optimizer state in ``ckpt`` (e.g. an SGD run resumed with SOLVER.OPTIMIZER AdamW): its
    state cannot be carried over, and silently starting a fresh optimizer would make the
    "resumed" run a different run. ``path`` is only used in messages.
    """
    if optimizer is not None:
        saved, now = _optimizer_type(ckpt), type(optimizer).__name__
        if saved != now:
            raise CheckpointError(
                f"checkpoint {path or '<given>'} holds {saved} optimizer state but "
                f"SOLVER.OPTIMIZER builds {now}: set SOLVER.OPTIMIZER {saved} to continue "
                "that run, or start a new run with --no-auto-resume (or a new OUTPUT_DIR)"
            )
    try:
        unwrap(model).load_state_dict(ckpt["model"])
    except RuntimeError as e:  # shapes or names differ: a model of another config
        raise CheckpointError(
            f"checkpoint {path or '<given>'} holds a model that does not fit this config "
            f"({str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else e}); resume "
            "it with the config it was saved with, or start a new run with --no-auto-resume "
            "(or a new OUTPUT_DIR)"
        ) from None
    if optimizer is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    if "rng" in ckpt:
        set_rng_state(ckpt["rng"])
