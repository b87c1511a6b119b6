"""Helpers shared by the detection tests (a module, not conftest, so tests can import it)."""

import os
import sys

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


def runner_args(out, voc_root):
    """argv of ``python -m detection.trials``: 2 trials of the tiny config on ``voc_root`` from
    random init, 4 iterations each (checkpoint at iteration 1), no reference, progress every
    5 s."""
    return [
        sys.executable, "-m", "detection.trials", "--config-file", TINY_CONFIG,
        "--output-dir", str(out), "--num-trials", "2", "--log-period", "5",
        "--reference", "none",
        "TRANSFER.VOC_LIKE_ROOT", str(voc_root), "TRANSFER.INIT", "random", "SOLVER.MAX_ITER", "4",
        "SOLVER.CHECKPOINT_PERIOD", "2", "SOLVER.STEPS", "(3,)", "SOLVER.WARMUP_ITERS", "1",
        "TEST.PRECISE_BN.NUM_ITER", "1",
    ]  # fmt: skip


def runner_env():
    """The trial runner's environment: this project importable, one OpenMP thread per process
    (two threads spinning on a shared 2-core machine are slower)."""
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)


def processes_mentioning(text):
    """PIDs whose command line contains ``text`` (Linux /proc)."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    pids.append(int(pid))
        except OSError:
            continue
    return pids
