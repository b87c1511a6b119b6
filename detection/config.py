"""Config additions for detection transfer (``add_moco_detection_config``).

Everything the MoCo recipe needs that detectron2's defaults do not already have lives under
``cfg.TRANSFER``. Switches that detectron2 already provides are reused, not duplicated:
mixed precision is ``SOLVER.AMP.ENABLED``, the seed is ``SEED``, precise BN is
``TEST.PRECISE_BN``.
"""

from detectron2.config import CfgNode as CN

# Norms that synchronise statistics across processes; they only mean something with a
# process group, so one process uses plain BN instead (see `resolve_single_process`).
SYNC_NORMS = ("SyncBN", "naiveSyncBN", "naiveSyncBN_N", "nnSyncBN")


def add_moco_detection_config(cfg):
    """Add the ``TRANSFER`` node to a detectron2 config, in place.

    Args:
        cfg (CfgNode): a config from ``detectron2.config.get_cfg()``.

    Returns:
        None. ``cfg`` gains ``cfg.TRANSFER`` with the keys documented below.
    """
    _C = cfg
    _C.TRANSFER = CN()
    # Index of this fine-tune among the trials of one experiment (-1: not run as a trial).
    # Written by `moco-trials` together with SEED so every output folder records both.
    _C.TRANSFER.TRIAL = -1
    # Name of the published result this run is compared against (a key of
    # detection.summary.REFERENCES, e.g. "mocov2_200ep"); informative only.
    _C.TRANSFER.REFERENCE = ""
    # Root of a VOC-format data set with its own class names (e.g. the generated synthetic
    # set). When set, `train_net` registers <VOC_LIKE_PREFIX>_2007_trainval,
    # <VOC_LIKE_PREFIX>_2012_trainval and <VOC_LIKE_PREFIX>_2007_test from it, so a
    # subprocess can find the data without code. Empty: nothing is registered.
    _C.TRANSFER.VOC_LIKE_ROOT = ""
    # Prefix of the data set names registered from VOC_LIKE_ROOT.
    _C.TRANSFER.VOC_LIKE_PREFIX = "synth"
    # Class names of the VOC_LIKE_ROOT set, in label order. Empty: synthetic.DET_CLASSES.
    _C.TRANSFER.VOC_LIKE_CLASSES = []
    # Root of the real PASCAL VOC (holding VOC2007/ and VOC2012/). Empty: detectron2's own
    # registration under $DETECTRON2_DATASETS (default "datasets") is used as it is.
    _C.TRANSFER.VOC_ROOT = ""
    # With one process, replace the synchronised norms of SYNC_NORMS by plain "BN" (same
    # statistics, no process group needed). Multi-process runs always keep the configured norm.
    _C.TRANSFER.SYNC_NORM_TO_BN_IN_ONE_PROCESS = True
    # torch CPU threads per process when MODEL.DEVICE is "cpu" (0: torch's default). On a small
    # CPU shared with other jobs, 1 avoids OpenMP threads spin-waiting on each other.
    _C.TRANSFER.CPU_THREADS = 0
    # "SGD" (detectron2's optimizer, the recipe's) or "AdamW" (same parameter groups, lr and
    # weight decay; momentum unused). For experiments on small runs: at the demo's size AdamW
    # was measured no better than SGD (docs/tiny_recipe.md), so every shipped config uses SGD.
    _C.TRANSFER.OPTIMIZER = "SGD"


def resolve_single_process(cfg, world_size):
    """Make the norm and AMP settings explicit for the processes actually running, in place.

    With one process a synchronised BN has nothing to synchronise with: torch's SyncBatchNorm
    falls back to plain BN only while no process group exists and raises on CPU tensors once
    one does, so the config is switched to "BN" (``TRANSFER.SYNC_NORM_TO_BN_IN_ONE_PROCESS``).
    detectron2's AMPTrainer requires CUDA, so AMP is switched off on CPU.

    Args:
        cfg (CfgNode): an unfrozen config with the ``TRANSFER`` node.
        world_size (int): number of training processes.

    Returns:
        list[str]: human-readable notes about what was changed (empty if nothing).
    """
    notes = []
    norm = cfg.MODEL.RESNETS.NORM
    if world_size == 1 and norm in SYNC_NORMS and cfg.TRANSFER.SYNC_NORM_TO_BN_IN_ONE_PROCESS:
        cfg.MODEL.RESNETS.NORM = "BN"
        notes.append(f"MODEL.RESNETS.NORM {norm} -> BN (one process: nothing to synchronise)")
    if cfg.SOLVER.AMP.ENABLED and cfg.MODEL.DEVICE == "cpu":
        cfg.SOLVER.AMP.ENABLED = False
        notes.append("SOLVER.AMP.ENABLED True -> False (detectron2's AMPTrainer needs CUDA)")
    return notes
