"""Pretraining checkpoints: atomic save from the unwrapped model, RNG states, resume.

Format (docs/architecture.md): ``{"model", "optimizer", "scaler", "epoch", "iteration", "cfg",
"rng", "format"}``; ``model`` keys never carry DDP's ``module.`` prefix. ``epoch`` is the number
of finished epochs (the epoch to start from when resuming).
"""

import logging
import os
import random
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
from detectron2.utils.file_io import PathManager  # iopath, with detectron2's handlers

logger = logging.getLogger(__name__)
FORMAT = "moco-detectron2/pretrain/v1"
LAST = "last.pth"


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


def save_checkpoint(path: str, model, optimizer, scaler, epoch: int, iteration: int, cfg) -> None:
    """Write a checkpoint to ``path`` atomically (tmp file then ``os.replace``).

    Call on the main process only. ``model`` may be DDP-wrapped; ``scaler`` may be None.
    """
    ckpt = {
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": epoch,
        "iteration": iteration,
        "cfg": cfg.dump(),
        "rng": rng_state(),
        "format": FORMAT,
    }
    PathManager.mkdirs(os.path.dirname(path) or ".")
    tmp = path + ".tmp"
    with PathManager.open(tmp, "wb") as f:
        torch.save(ckpt, f)
    # A kill during the write leaves the previous file intact; os.replace is atomic on POSIX.
    os.replace(PathManager.get_local_path(tmp), PathManager.get_local_path(path))
    logger.info("Saved checkpoint %s (epoch %d, iteration %d)", path, epoch, iteration)


def load_checkpoint(path: str) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` onto the CPU; checks the format tag."""
    if not PathManager.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist; check --resume / OUTPUT_DIR")
    with PathManager.open(path, "rb") as f:
        # weights_only=False: the file holds numpy RNG state and a YAML string, from our own runs
        ckpt = torch.load(f, map_location="cpu", weights_only=False)
    if ckpt.get("format") != FORMAT:
        raise ValueError(
            f"{path!r} is not a {FORMAT} checkpoint (format={ckpt.get('format')!r}); "
            "reference-release files must be converted or loaded with strict key mapping"
        )
    return ckpt


def find_resume_file(output_dir: str, resume: str = "") -> Optional[str]:
    """The checkpoint to resume from: ``resume`` if given, else ``output_dir/last.pth`` if any."""
    if resume:
        return resume
    last = os.path.join(output_dir, LAST)
    return last if PathManager.exists(last) else None


def restore(ckpt: dict, model, optimizer=None, scaler=None) -> None:
    """Load model (strictly), optimizer, scaler and RNG states from ``ckpt`` in place."""
    unwrap(model).load_state_dict(ckpt["model"])
    if optimizer is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    if "rng" in ckpt:
        set_rng_state(ckpt["rng"])
