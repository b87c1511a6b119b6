"""Config additions for detection transfer (``add_moco_detection_config``).

Everything the MoCo recipe needs that detectron2's defaults do not already have lives under
``cfg.TRANSFER``. Switches that detectron2 already provides are reused, not duplicated:
mixed precision is ``SOLVER.AMP.ENABLED``, the seed is ``SEED``, precise BN is
``TEST.PRECISE_BN``, cuDNN's autotuner is ``CUDNN_BENCHMARK`` (applied by detectron2's
``default_setup`` for training). The speed options (``TRANSFER.CHANNELS_LAST`` ...) are checked
here when the config is loaded and applied by :func:`detection.speed.apply_speed_options`;
docs/detection_speed.md says what each one changes.
"""

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

from common.configs import COMPILE_MODES, merge_config

OPTIMIZERS = ("SGD", "AdamW")
SGD_IMPLS = ("foreach", "fused", "for-loop")
TF32_MODES = ("", "on", "off")
INIT_MODES = ("weights", "random")
AMP_DTYPES = ("float16", "bfloat16")
# Class names of the generated synthetic VOC-format set, in label order (equal to
# synthetic.DET_CLASSES, tests/detection/test_det_configs.py; detection does not import
# synthetic, which sits above it).
SYNTHETIC_DET_CLASSES = ("disk", "square", "triangle", "star", "cross", "ring")

# Keys only a pretraining config sets: such a file given to detection is named as one.
_PRETRAIN_KEYS = {
    key: "a pretraining config (run it with moco-pretrain)"
    for key in ("MODEL.ARCH", "MODEL.K", "DATA.TRAIN", "DATA")
}

# Norms that synchronise statistics across processes; they only mean something with a
# process group, so one process uses plain BN instead (see `resolve_single_process`).
SYNC_NORMS = ("SyncBN", "naiveSyncBN", "naiveSyncBN_N", "nnSyncBN")


# Keys a `detection.train_net --resume` may change (docs/reliability.md): where and how fast
# the same training runs, where the data and outputs are, and labels. Every other key, of
# detectron2 and of TRANSFER, shapes the run (model, data sets, solver, input, test settings,
# SEED, MODEL.WEIGHTS, TF32, AMP dtype, padding), and a resume with one of them changed is
# refused. The compile and SGD-implementation switches compute the same functions (see the
# speed options below); TF32, the AMP dtype and the padding change the arithmetic or the BN
# statistics, so they count as the run's.
RESUME_FREE_KEYS = (
    "OUTPUT_DIR",
    "MODEL.DEVICE",
    "DATALOADER.NUM_WORKERS",
    "SOLVER.CHECKPOINT_PERIOD",
    "VIS_PERIOD",
    "CUDNN_BENCHMARK",
    "TRANSFER.TRIAL",
    "TRANSFER.REFERENCE",
    "TRANSFER.VOC_ROOT",
    "TRANSFER.VOC_LIKE_ROOT",
    "TRANSFER.CPU_THREADS",
    "TRANSFER.CHANNELS_LAST",
    "TRANSFER.SGD_IMPL",
    "TRANSFER.COMPILE_RES5",
    "TRANSFER.COMPILE_DYNAMIC",
    "TRANSFER.COMPILE_BACKEND",
)


def add_moco_detection_config(cfg):
    """Add the ``TRANSFER`` node to a detectron2 config, in place.

    Args:
        cfg (CfgNode): a config from ``detectron2.config.get_cfg()``.

    Returns:
        None. ``cfg`` gains ``cfg.TRANSFER`` with the keys documented below.
    """
    _C = cfg
    _C.TRANSFER = CN()
    # Where the backbone of a new training run comes from: "weights" (MODEL.WEIGHTS, a
    # converted backbone .pkl or a detector checkpoint; every backbone tensor must load, else
    # the run stops before iteration 0) or "random" (the random-init baseline; MODEL.WEIGHTS
    # must then be empty). Resuming and --eval-only load whole detector checkpoints instead.
    _C.TRANSFER.INIT = "weights"
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
    # Class names of the VOC_LIKE_ROOT set, in label order; the default is the generated
    # synthetic set's.
    _C.TRANSFER.VOC_LIKE_CLASSES = list(SYNTHETIC_DET_CLASSES)
    # Root of a COCO-format instance set: annotations/instances_train.json and
    # annotations/instances_val.json with the images in train/ and val/ (what `moco-synth coco`
    # writes). When set, `train_net` registers <COCO_LIKE_PREFIX>_train and
    # <COCO_LIKE_PREFIX>_val from it (detectron2's register_coco_instances, evaluated by
    # COCOEvaluator). Empty: nothing is registered.
    _C.TRANSFER.COCO_LIKE_ROOT = ""
    # Prefix of the data set names registered from COCO_LIKE_ROOT.
    _C.TRANSFER.COCO_LIKE_PREFIX = "synth_coco"
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
    # weight decay; SOLVER.MOMENTUM unused; fused: one kernel for the whole update, measured in
    # docs/tiny_recipe.md).
    _C.TRANSFER.OPTIMIZER = "SGD"
    # Norm of the extra layer after res5 in the ROI head (Res5ROIHeadsExtraNorm); "" uses
    # MODEL.RESNETS.NORM, as the recipe does. Its statistics are taken over the sampled ROIs
    # (ROI_HEADS.BATCH_SIZE_PER_IMAGE x images), so "BN" stays well estimated at small image
    # batches where the backbone uses FrozenBN; there a FrozenBN extra norm (an identity) left
    # the res5 output unnormalised and cost the demo's detector AP50 (measured: docs/tiny_recipe.md,
    # run d2).
    _C.TRANSFER.EXTRA_NORM = ""

    # --- Speed options. Off (or detectron2's behaviour) by default unless numerically neutral;
    # the published-number comparison assumes the defaults (fp32 as in the reference).
    # channels_last (NHWC) memory format for the backbone and the res5 ROI head: tensor-core
    # convolutions without layout transposes. Same math, different summation order.
    _C.TRANSFER.CHANNELS_LAST = False
    # SGD implementation: "foreach" (detectron2's choice: one multi-tensor kernel per op),
    # "fused" (one kernel for the whole update; CUDA, and CPU on recent torch) or "for-loop"
    # (one kernel per parameter). The same update up to float rounding.
    _C.TRANSFER.SGD_IMPL = "foreach"
    # torch.compile mode for the res5 ROI head (roi_heads.res5, which runs on every sampled ROI):
    # "" (eager), "default", "reduce-overhead" (CUDA graphs) or "max-autotune". Compiled in place
    # (nn.Module.compile), so checkpoints keep their key names.
    _C.TRANSFER.COMPILE_RES5 = ""
    # Compile with dynamic shapes: the number of ROIs is fixed in training (ROI_HEADS.
    # BATCH_SIZE_PER_IMAGE x images once enough proposals exist) but varies at test time; True
    # compiles one graph for any ROI count instead of recompiling per count.
    _C.TRANSFER.COMPILE_DYNAMIC = True
    # torch.compile backend: "inductor" (generated kernels, the speed-up) or "eager" /
    # "aot_eager" (no code generation: cheap checks that the head traces). On CPU "inductor" is
    # skipped with a log line (this option is for GPU speed).
    _C.TRANSFER.COMPILE_BACKEND = "inductor"
    # TF32 on Ampere and newer GPUs: "" keeps torch's defaults (cuDNN convolutions in TF32,
    # matmuls in fp32), "on" allows TF32 for both, "off" for neither (strict fp32, as on the
    # V100s of the reference). No-op on CPU (logged).
    _C.TRANSFER.TF32 = ""
    # Autocast dtype when SOLVER.AMP.ENABLED: "float16" (detectron2's AMPTrainer, with its grad
    # scaler) or "bfloat16" (no overflow, the scaler then never skips a step).
    _C.TRANSFER.AMP_DTYPE = "float16"
    # Pad each batch to a multiple of this many pixels (0: to the largest image only, the
    # recipe). Multi-scale training (11 MIN_SIZE_TRAIN values x any aspect ratio) makes many
    # distinct batch shapes; padding to e.g. 128 leaves few, so CUDNN_BENCHMARK tunes each shape
    # once. More padding changes the BN statistics slightly (zeros after normalisation).
    _C.TRANSFER.PAD_SIZE_DIVISIBILITY = 0


def load_cfg(config_file: str = "", opts=()):
    """detectron2's defaults plus the ``TRANSFER`` node, merged with ``config_file`` (if any)
    and the ``KEY VALUE`` list ``opts``. Returns the CfgNode, not frozen
    (:func:`resolve_single_process` may still adjust it). Raises ``common.configs.ConfigError``
    (a ValueError) naming the file or override, the key and the fix, or ValueError naming a
    ``TRANSFER`` optimizer or speed option that cannot work (:func:`check_speed_options`)."""
    cfg = get_cfg()
    add_moco_detection_config(cfg)
    merge_config(
        cfg,
        config_file,
        opts,
        what="detection",
        config_dir="configs/detection",
        keys_doc="detection/config.py and detectron2's config/defaults.py",
        foreign=_PRETRAIN_KEYS,
    )
    check_speed_options(cfg)
    return cfg


def resolve_single_process(cfg, world_size):
    """Make the norm and AMP settings explicit for the processes actually running, in place.

    With one process a synchronised BN has nothing to synchronise with: torch's SyncBatchNorm
    falls back to plain BN only while no process group exists and raises on CPU tensors once
    one does, so the config is switched to "BN" (``TRANSFER.SYNC_NORM_TO_BN_IN_ONE_PROCESS``).
    With several CPU processes torch's SyncBatchNorm ("SyncBN", "nnSyncBN") is replaced by
    detectron2's all-reduce BN ("naiveSyncBN_N"), which works over gloo.
    detectron2's AMPTrainer requires CUDA, so AMP is switched off on CPU.

    Args:
        cfg (CfgNode): an unfrozen config with the ``TRANSFER`` node.
        world_size (int): number of training processes.

    Returns:
        list[str]: human-readable notes about what was changed (empty if nothing).
    """
    notes = []
    if world_size == 1 and cfg.TRANSFER.SYNC_NORM_TO_BN_IN_ONE_PROCESS:
        for node, key, name in (
            (cfg.MODEL.RESNETS, "NORM", "MODEL.RESNETS.NORM"),
            (cfg.TRANSFER, "EXTRA_NORM", "TRANSFER.EXTRA_NORM"),
        ):
            norm = node[key]
            if norm in SYNC_NORMS:
                node[key] = "BN"
                notes.append(f"{name} {norm} -> BN (one process: nothing to synchronise)")
    if world_size > 1 and cfg.MODEL.DEVICE == "cpu":
        # torch's SyncBatchNorm ("SyncBN", "nnSyncBN") raises on CPU tensors; detectron2's
        # all-reduce BN runs over gloo. Its "N" mode weights each process by its image count
        # (torch's by its pixel count: the same for equal image sizes) and allows empty inputs.
        for node, key, name in (
            (cfg.MODEL.RESNETS, "NORM", "MODEL.RESNETS.NORM"),
            (cfg.TRANSFER, "EXTRA_NORM", "TRANSFER.EXTRA_NORM"),
        ):
            if node[key] in ("SyncBN", "nnSyncBN"):
                notes.append(
                    f"{name} {node[key]} -> naiveSyncBN_N (torch's SyncBatchNorm needs CUDA "
                    "tensors; detectron2's all-reduce BN runs on CPU)"
                )
                node[key] = "naiveSyncBN_N"
    if cfg.SOLVER.AMP.ENABLED and cfg.MODEL.DEVICE == "cpu":
        cfg.SOLVER.AMP.ENABLED = False
        notes.append("SOLVER.AMP.ENABLED True -> False (detectron2's AMPTrainer needs CUDA)")
    return notes


def validate_schedule(cfg):
    """Refuse a step schedule fvcore's MultiStepParamScheduler would reject at iteration 0 with
    "Total num_updates must be greater than length of param schedule" or "Milestone must be
    smaller than total number of updates": ``SOLVER.STEPS`` (those up to ``SOLVER.MAX_ITER``;
    detectron2 drops larger ones with a warning) must rise strictly within 1..MAX_ITER-1.
    Raises ValueError naming both keys and a schedule that works; returns None."""
    if cfg.SOLVER.LR_SCHEDULER_NAME != "WarmupMultiStepLR":
        return
    max_iter, steps = cfg.SOLVER.MAX_ITER, list(cfg.SOLVER.STEPS)
    kept = [s for s in steps if s <= max_iter]
    rising = all(a < b for a, b in zip(kept, kept[1:]))
    if max_iter >= 1 and rising and all(1 <= s < max_iter for s in kept):
        return
    if max_iter < 1:
        raise ValueError(f"SOLVER.MAX_ITER must be >= 1 (the iterations to train), got {max_iter}")
    if max_iter < 2:
        raise ValueError(
            f"SOLVER.STEPS {tuple(steps)} does not fit SOLVER.MAX_ITER {max_iter}: no iteration "
            'is left for an lr step. Set SOLVER.STEPS "()", or raise SOLVER.MAX_ITER.'
        )
    raise ValueError(
        f"SOLVER.STEPS {tuple(steps)} does not fit SOLVER.MAX_ITER {max_iter}: the lr steps must "
        f"rise strictly and lie in 1..{max_iter - 1}. Set e.g. SOLVER.STEPS "
        f'"({max(int(max_iter * 0.75), 1)},)", or raise SOLVER.MAX_ITER.'
    )


def check_speed_options(cfg):
    """Refuse a ``TRANSFER`` optimizer or speed option that cannot work; called by
    :func:`load_cfg`, so every command (and the trial runner, before any trial starts) stops on
    it. Returns None; raises ValueError naming the key and its allowed values."""
    t = cfg.TRANSFER
    for key, value, allowed in (
        ("TRANSFER.OPTIMIZER", t.OPTIMIZER, OPTIMIZERS),
        ("TRANSFER.COMPILE_RES5", t.COMPILE_RES5, COMPILE_MODES),
        ("TRANSFER.SGD_IMPL", t.SGD_IMPL, SGD_IMPLS),
        ("TRANSFER.TF32", t.TF32, TF32_MODES),
        ("TRANSFER.AMP_DTYPE", t.AMP_DTYPE, AMP_DTYPES),
    ):
        if value not in allowed:
            raise ValueError(f"{key} must be one of {allowed}, got {value!r}")
    if t.PAD_SIZE_DIVISIBILITY < 0:
        raise ValueError(
            "TRANSFER.PAD_SIZE_DIVISIBILITY must be >= 0 (0 = recipe), "
            f"got {t.PAD_SIZE_DIVISIBILITY}"
        )
    if not t.COMPILE_BACKEND:
        raise ValueError("TRANSFER.COMPILE_BACKEND must name a torch.compile backend (inductor)")
