"""Helpers shared by the detection tests (a module, not conftest, so tests can import it)."""

import os

from detection.config import load_cfg as load_detection_cfg
from detection.config import resolve_single_process

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_DIR = os.path.join(REPO, "configs", "detection")
TINY_CONFIG = os.path.join(CONFIG_DIR, "tiny_synthetic.yaml")


def load_cfg(path, *opts):
    """Config file ``path`` merged with KEY VALUE ``opts``, with this project's keys."""
    return load_detection_cfg(path, opts)


def tiny_cfg(voc_root, *opts):
    """The tiny config on ``voc_root`` with KEY VALUE ``opts``, adjusted for one process
    (SyncBN -> BN), not frozen."""
    cfg = load_cfg(TINY_CONFIG, "TRANSFER.VOC_LIKE_ROOT", str(voc_root), *opts)
    resolve_single_process(cfg, world_size=1)
    return cfg


def flatten(cfg, prefix=""):
    """``{"KEY.SUB": value}`` of a config's leaves."""
    out = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out
