"""Pretraining configuration: a detectron2-style CfgNode with a comment on every key.

Defaults are MoCo v2 on ImageNet (case (d) of the paper's ablation: MLP head, aug+, cosine lr,
200 epochs, batch 256 over 8 GPUs). YAML files in ``configs/pretrain/`` override them.
"""

from detectron2.config import CfgNode as CN

from common.configs import merge_config

PIPELINES = ("pil", "batched", "device")  # values of INPUT.PIPELINE
JPEG_DECODERS = ("auto", "torchcodec", "torchvision")  # values of INPUT.JPEG_DECODER

_C = CN()
# detectron2's CfgNode only merges YAML files into configs of its latest version (2); every
# YAML here states VERSION 2 so detectron2 does not try to guess and upgrade it.
_C.VERSION = 2

_C.MODEL = CN()
_C.MODEL.ARCH = "resnet50"  # any torchvision ResNet constructor name
# ResNet bottleneck width per group; 64 is ResNet-50. 16 gives a thin ResNet-50 with the same
# key names (cheap CPU runs that still convert to R50-C4). 0 = the constructor's default.
_C.MODEL.WIDTH_PER_GROUP = 64
_C.MODEL.ZERO_INIT_RESIDUAL = False  # zero-init the last BN of each block (helps short runs)
_C.MODEL.DIM = 128  # embedding dimension C of the keys and queries
_C.MODEL.MLP = True  # v2 MLP head (Linear-ReLU-Linear); False = v1 linear head
_C.MODEL.MLP_HIDDEN_DIM = 0  # hidden width of the MLP head; 0 = backbone width (2048 for R50)
_C.MODEL.HEAD_BN = False  # BatchNorm1d after the first head layer (not in the paper)
_C.MODEL.OUT_BN = False  # BatchNorm1d(DIM, affine=False) at the end of the head (not in paper)
_C.MODEL.K = 65536  # queue length; keep it well below the number of training images
_C.MODEL.M = 0.999  # key encoder momentum; lower it (0.99) for runs of a few thousand steps
_C.MODEL.T = 0.2  # softmax temperature (0.2 for v2, 0.07 for v1)
_C.MODEL.SHUFFLE_BN = True  # shuffle the key batch across processes (shuffle BN)
# Sub-batches per process over which key BN statistics are computed. In a single process
# shuffling alone changes nothing, so set this > 1 there (e.g. 8 for batch 256 on one GPU).
_C.MODEL.KEY_BN_SPLITS = 1
_C.MODEL.SYMMETRIC = False  # also use the loss with the two views swapped (2x compute)
_C.MODEL.DEVICE = ""  # "cpu", "cuda" or "" = CUDA when available

_C.INPUT = CN()
_C.INPUT.AUG = "aug+"  # "aug+" (v2: blur, jitter p=0.8) or "v1" (jitter 0.4 x4, no blur)
_C.INPUT.SIZE = 224  # crop size fed to the network
_C.INPUT.CROP_SCALE = (0.2, 1.0)  # RandomResizedCrop area range
# ColorJitter (brightness, contrast, saturation, hue); () = the preset of INPUT.AUG
# ((0.4, 0.4, 0.4, 0.1) for aug+, (0.4, 0.4, 0.4, 0.4) for v1).
_C.INPUT.COLOR_JITTER = ()
_C.INPUT.GRAY_P = 0.2  # RandomGrayscale probability
# Input pipeline (docs/input_pipelines.md):
# - "pil": loader workers decode and augment each image with PIL (the reference's recipe);
# - "batched": workers decode to a LOAD_SIZE uint8 square; crops, jitter, blur etc. run on whole
#   batches on the training device (fast for tiny CPU runs; crops come from the square, not the
#   full image);
# - "device": workers only read file bytes; JPEGs are decoded on the training device (nvJPEG on
#   CUDA) and cropped from the full image, then augmented as whole batches.
_C.INPUT.PIPELINE = "pil"
_C.register_renamed_key(
    "INPUT.BATCHED_AUG",
    "INPUT.PIPELINE",
    message='INPUT.BATCHED_AUG True is now INPUT.PIPELINE "batched" (False: "pil")',
)
# Batched JPEG decoder of the "device" pipeline: "torchcodec" (TorchCodec's decode_jpeg, the
# maintained one), "torchvision" (torchvision.io.decode_jpeg, deprecated in torchvision 0.29)
# or "auto" (TorchCodec where it is installed, else torchvision). Both give the same pictures.
_C.INPUT.JPEG_DECODER = "auto"
_C.INPUT.LOAD_SIZE = 0  # square size images are decoded to for "batched"; 0 = 1.15 x SIZE
# Batches whose views are prepared ahead of the step, in a background thread (on CUDA on its own
# stream): the copy to the device and, for "batched" / "device", the work done in the training
# process (decoding, crops, colour). 0 = in line, before each step; -1 = 2 on CUDA and 0 on the
# CPU, where the thread takes cores from the step (measured: docs/input_pipelines.md, "Views
# made ahead of the step"). The numbers do not depend on it (pretrain/prefetch.py). Needs
# DATA.NUM_WORKERS > 0 (with 0 the views are made in line).
_C.INPUT.PREFETCH = -1

_C.DATA = CN()
_C.DATA.TRAIN = ""  # ImageFolder root (class sub-folders) or a text file with one path a line
# Keep decoded images in memory (INPUT.PIPELINE "batched" only): for small sets such as the
# synthetic one, where decoding JPEGs would otherwise cost as much as the network step on a CPU.
_C.DATA.CACHE_DECODED = False
_C.DATA.NUM_WORKERS = 8  # loader processes per training process; raise until data time ~0
# Labelled ImageFolder roots for the kNN monitor (both needed; empty = no monitor).
_C.DATA.KNN_TRAIN = ""
_C.DATA.KNN_VAL = ""

_C.SOLVER = CN()
_C.SOLVER.BATCH_SIZE = 256  # global batch over all processes
_C.SOLVER.EPOCHS = 200
# lr; 0.0 means auto: REFERENCE_LR * BATCH_SIZE / REFERENCE_BATCH (linear scaling rule)
_C.SOLVER.BASE_LR = 0.0
_C.SOLVER.REFERENCE_LR = 0.03  # lr at REFERENCE_BATCH for the linear scaling rule
_C.SOLVER.REFERENCE_BATCH = 256
_C.SOLVER.OPTIMIZER = "SGD"  # "SGD" (the paper) or "AdamW" (tiny CPU runs; see docs/tiny_recipe.md)
_C.SOLVER.MOMENTUM = 0.9  # SGD momentum
_C.SOLVER.WEIGHT_DECAY = 1e-4
_C.SOLVER.SCHEDULE = "cosine"  # "cosine" (v2), "step" (v1) or "constant"
_C.SOLVER.STEPS = (120, 160)  # epochs at which "step" multiplies the lr by GAMMA
_C.SOLVER.GAMMA = 0.1
_C.SOLVER.WARMUP_EPOCHS = 0.0  # linear warm-up length in epochs (fractions allowed)
_C.SOLVER.WARMUP_ITERS = 0  # linear warm-up length in iterations (added to WARMUP_EPOCHS)
# Mixed precision on CUDA: "bf16", "fp16" (with a grad scaler) or "" (fp32). Ignored on CPU.
_C.SOLVER.AMP = "bf16"
_C.SOLVER.CHANNELS_LAST = True  # channels_last memory format on CUDA (faster convs)
# torch.compile of the query and key encoders: "" (eager), "default", "reduce-overhead" (also
# CUDA graphs: removes per-kernel launch overhead, for small per-GPU batches such as 32) or
# "max-autotune" (longest start-up). The first steps compile (minutes; logged). CUDA only in
# practice: on CPU, inductor needs a C++ compiler and rarely pays off for short runs.
_C.SOLVER.COMPILE = ""
# Stop after this many iterations per epoch (0 = full epoch); for smoke runs and benchmarks.
_C.SOLVER.MAX_ITERS_PER_EPOCH = 0

_C.TEST = CN()
_C.TEST.KNN_PERIOD = 0  # run the kNN monitor every N epochs (0 = never; also at the end)
_C.TEST.KNN_K = 20  # neighbours for weighted kNN
_C.TEST.KNN_T = 0.07  # temperature of the kNN neighbour weights exp(sim / T)
_C.TEST.KNN_SIZE = 0  # kNN image size (resize 1.14x then center crop); 0 = INPUT.SIZE

_C.CHECKPOINT_PERIOD = 10  # save checkpoint_<epoch:04d>.pth every N epochs (last.pth every epoch)
_C.LOG_PERIOD = 20  # iterations between metric writes (progress line, metrics.json, TB)
_C.OUTPUT_DIR = "./output/pretrain"
_C.SEED = 0  # data order and augmentation are a function of (SEED, epoch, rank)
# torch CPU threads per process (0 = torch's default). On a small CPU shared with other jobs,
# 1 avoids OpenMP threads spin-waiting on each other (tiny ops get ~10x slower otherwise).
_C.CPU_THREADS = 0
_C.CUDNN_BENCHMARK = True  # let cuDNN pick conv algorithms (fixed input sizes)


# What a resume may change (pretrain.checkpoint.check_same_run, docs/reliability.md). Every key
# of the config is in exactly one of the two lists (tests/pretrain/test_moco_run_identity.py).
# RUN_KEYS make the run what it is: the model, the loss, the data augmentation, the optimizer
# and its schedule, the seed. A resume with any of them changed is refused: the lr schedule,
# the queue or the augmentation would become neither the old run's nor the new one's.
# INPUT.PIPELINE is one of them: each pipeline draws its crops and colours from its own random
# streams ("batched" crops from a decoded square, not from the full image), so a switch changes
# the augmentation of the rest of the run and the bit-identical resume no longer holds.
RUN_KEYS = (
    "MODEL.ARCH",
    "MODEL.WIDTH_PER_GROUP",
    "MODEL.ZERO_INIT_RESIDUAL",
    "MODEL.DIM",
    "MODEL.MLP",
    "MODEL.MLP_HIDDEN_DIM",
    "MODEL.HEAD_BN",
    "MODEL.OUT_BN",
    "MODEL.K",
    "MODEL.M",
    "MODEL.T",
    "MODEL.SHUFFLE_BN",
    "MODEL.KEY_BN_SPLITS",
    "MODEL.SYMMETRIC",
    "INPUT.AUG",
    "INPUT.SIZE",
    "INPUT.CROP_SCALE",
    "INPUT.COLOR_JITTER",
    "INPUT.GRAY_P",
    "INPUT.PIPELINE",
    "INPUT.LOAD_SIZE",
    "SOLVER.BATCH_SIZE",
    "SOLVER.EPOCHS",
    "SOLVER.BASE_LR",
    "SOLVER.REFERENCE_LR",
    "SOLVER.REFERENCE_BATCH",
    "SOLVER.OPTIMIZER",
    "SOLVER.MOMENTUM",
    "SOLVER.WEIGHT_DECAY",
    "SOLVER.SCHEDULE",
    "SOLVER.STEPS",
    "SOLVER.GAMMA",
    "SOLVER.WARMUP_EPOCHS",
    "SOLVER.WARMUP_ITERS",
    "SOLVER.AMP",  # the arithmetic's precision (and fp16's grad-scaler state)
    "SOLVER.MAX_ITERS_PER_EPOCH",  # the length of an epoch, hence of the schedule
    "SEED",
)
# FREE_KEYS change where and how fast the same computation runs, or what is logged and
# monitored. SOLVER.COMPILE is one of them: the compiled encoders compute the same functions
# with the same state-dict keys (docs/pretrain_speed.md), as CHANNELS_LAST does in another
# memory layout. DATA.TRAIN is a path, and a data set moved to another disk is the same data;
# a data set of another size changes the iterations per epoch, which the resume checks itself.
FREE_KEYS = (
    "VERSION",
    "MODEL.DEVICE",
    "INPUT.PREFETCH",  # same numbers ahead of the step or in line (pretrain/prefetch.py)
    # the same JPEG, the same random streams; the decoders differ by rounding only, and a node
    # without TorchCodec must be able to continue a run started on one that has it
    "INPUT.JPEG_DECODER",
    "DATA.TRAIN",
    "DATA.CACHE_DECODED",  # the same decoded squares, kept in memory
    "DATA.NUM_WORKERS",  # augmentation is seeded per sample, not per worker
    "DATA.KNN_TRAIN",
    "DATA.KNN_VAL",
    "SOLVER.CHANNELS_LAST",
    "SOLVER.COMPILE",
    "TEST.KNN_PERIOD",
    "TEST.KNN_K",
    "TEST.KNN_T",
    "TEST.KNN_SIZE",
    "CHECKPOINT_PERIOD",
    "LOG_PERIOD",
    "OUTPUT_DIR",
    "CPU_THREADS",
    "CUDNN_BENCHMARK",
)


def get_pretrain_cfg() -> CN:
    """Return a fresh copy of the default pretraining config (MoCo v2, case (d))."""
    return _C.clone()


def effective_lr(cfg: CN) -> float:
    """The base lr used for training: SOLVER.BASE_LR, or the linear scaling rule if it is 0."""
    if cfg.SOLVER.BASE_LR > 0:
        return float(cfg.SOLVER.BASE_LR)
    return cfg.SOLVER.REFERENCE_LR * cfg.SOLVER.BATCH_SIZE / cfg.SOLVER.REFERENCE_BATCH


# Keys only a detection config sets: such a file given to pretraining is named as one.
_DETECTION_KEYS = {
    "MODEL.META_ARCHITECTURE": "a detection config (run it with moco-detect or moco-trials)",
    "DATASETS": "a detection config (run it with moco-detect or moco-trials)",
}


def load_cfg(config_file: str = "", opts=()) -> CN:
    """Defaults, merged with ``config_file`` (if any) and trailing ``KEY VALUE`` ``opts``.

    Returns a frozen, validated CfgNode. Raises ValueError naming the YAML file (or the
    command-line overrides) and the bad key, with the closest valid keys for a typo, or
    naming the key and the fix for a value that cannot work (:func:`validate_cfg`).
    """
    cfg = get_pretrain_cfg()
    merge_config(
        cfg,
        config_file,
        opts,
        what="pretraining",
        config_dir="configs/pretrain",
        keys_doc="pretrain/config.py",
        foreign=_DETECTION_KEYS,
    )
    validate_cfg(cfg)
    cfg.freeze()
    return cfg


def validate_cfg(cfg: CN) -> None:
    """Raise ValueError naming the key and the fix for values that cannot work."""
    checks = [
        (cfg.MODEL.K > 0, "MODEL.K must be a positive queue length (e.g. 65536, or 1024 tiny)"),
        (0.0 <= cfg.MODEL.M < 1.0, "MODEL.M must be in [0, 1) (0.999 for ImageNet)"),
        (cfg.MODEL.T > 0, "MODEL.T must be > 0 (0.2 for v2, 0.07 for v1)"),
        (cfg.MODEL.KEY_BN_SPLITS >= 1, "MODEL.KEY_BN_SPLITS must be >= 1"),
        (cfg.SOLVER.BATCH_SIZE > 0, "SOLVER.BATCH_SIZE must be > 0"),
        (cfg.SOLVER.EPOCHS > 0, "SOLVER.EPOCHS must be > 0"),
        (
            cfg.SOLVER.BASE_LR >= 0,
            "SOLVER.BASE_LR must be >= 0 (0.0 = linear scaling rule from SOLVER.REFERENCE_LR)",
        ),
        (
            cfg.SOLVER.MAX_ITERS_PER_EPOCH >= 0,
            "SOLVER.MAX_ITERS_PER_EPOCH must be >= 0 (0 = full epochs)",
        ),
        (cfg.CHECKPOINT_PERIOD >= 1, "CHECKPOINT_PERIOD must be >= 1 epoch (e.g. 10)"),
        (cfg.LOG_PERIOD >= 1, "LOG_PERIOD must be >= 1 iteration (e.g. 20)"),
        (cfg.INPUT.AUG in ("aug+", "v1"), "INPUT.AUG must be 'aug+' or 'v1'"),
        (len(cfg.INPUT.COLOR_JITTER) in (0, 4), "INPUT.COLOR_JITTER must be () or 4 numbers"),
        (
            cfg.SOLVER.SCHEDULE in ("cosine", "step", "constant"),
            "SOLVER.SCHEDULE must be 'cosine', 'step' or 'constant'",
        ),
        (cfg.SOLVER.AMP in ("", "bf16", "fp16"), "SOLVER.AMP must be '', 'bf16' or 'fp16'"),
        (cfg.SOLVER.OPTIMIZER in ("SGD", "AdamW"), "SOLVER.OPTIMIZER must be 'SGD' or 'AdamW'"),
        (
            cfg.INPUT.PIPELINE in PIPELINES,
            f"INPUT.PIPELINE={cfg.INPUT.PIPELINE!r}: use one of {', '.join(PIPELINES)}",
        ),
        (
            cfg.INPUT.JPEG_DECODER in JPEG_DECODERS,
            f"INPUT.JPEG_DECODER={cfg.INPUT.JPEG_DECODER!r}: use one of {', '.join(JPEG_DECODERS)}",
        ),
        (
            cfg.INPUT.PREFETCH >= -1,
            f"INPUT.PREFETCH={cfg.INPUT.PREFETCH}: use -1 (auto), 0 (in line) or a number of "
            "batches",
        ),
        (
            cfg.INPUT.PIPELINE == "batched" or not cfg.DATA.CACHE_DECODED,
            "DATA.CACHE_DECODED needs INPUT.PIPELINE batched (only decoded squares are cached; "
            "per-image augmentation is random)",
        ),
        (
            bool(cfg.DATA.KNN_TRAIN) == bool(cfg.DATA.KNN_VAL),
            "DATA.KNN_TRAIN and DATA.KNN_VAL must be set together (or both left empty)",
        ),
    ]
    for ok, msg in checks:
        if not ok:
            raise ValueError(f"invalid pretraining config: {msg}")
