"""Sizes of the demo. ``default`` is what ``make demo`` runs on a CPU; ``smoke`` checks the glue
in about a minute (its numbers mean nothing); ``gpu`` is the full-width run for one GPU (chosen
automatically when CUDA is available). Stage estimates (seconds) drive the ETA shown while the
demo runs."""

import os
from dataclasses import dataclass, field

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_PRETRAIN_CFG = os.path.join(ROOT, "configs", "pretrain", "tiny_synthetic.yaml")
# the tiny detector at the demo's data and schedule (FrozenBN backbone, AdamW, 600 iterations)
DEMO_DETECT_CFG = os.path.join(ROOT, "configs", "detection", "tiny_demo.yaml")
GPU_PRETRAIN_CFG = os.path.join(ROOT, "configs", "pretrain", "moco_v2_200ep.yaml")
# The one-GPU VOC config: IMS_PER_BATCH 16 on one GPU.
GPU_DETECT_CFG = os.path.join(ROOT, "configs", "detection", "pascal_voc_R_50_C4_24k_moco_1gpu.yaml")


@dataclass(frozen=True)
class Preset:
    """One demo size: data counts, pretraining and detection configs and budgets, and ETA
    estimates."""

    name: str
    # synthetic.make_classification
    num_classes: int
    train_per_class: int
    val_per_class: int
    # synthetic.make_voc
    voc_trainval: int
    voc_test: int
    # overrides of pretrain_config
    pretrain_opts: tuple
    # overrides of detect_config
    detection_opts: tuple
    seeds: tuple
    # seconds per stage on `reference_machine`: the ETA before anything is measured, then
    # scaled by the measured speed (demo.eta)
    estimates: dict = field(default_factory=dict)
    reference_machine: str = "a quiet 2-core CPU"
    # Work of the pretraining start-up (data set decode and caching, model) and of a detection
    # trial outside its iterations (process start, precise BN, evaluation), in iterations of
    # the same process: what the ETA counts besides the iterations (demo.eta)
    pretrain_startup_iters: float = 0.0
    trial_overhead_iters: float = 0.0
    # further keyword arguments of synthetic.make_voc (difficulty, sizes, classes)
    voc_kwargs: dict = field(default_factory=dict)
    cls_image_size: int = 64
    # processes generating the classification set
    data_workers: int = 1
    pretrain_config: str = TINY_PRETRAIN_CFG
    detect_config: str = DEMO_DETECT_CFG
    # "cpu" or "cuda": where kNN runs; the configs' own device keys are set in the opts
    device: str = "cpu"
    # extra arguments of the detection trial runner (python -m detection.trials)
    trial_args: tuple = ()
    # further detection overrides of one init ("moco" or "random_init"), after detection_opts
    init_opts: dict = field(default_factory=dict)


# Generated detection set of the CPU presets (docs/tiny_recipe.md, "Detection transfer at demo
# size"): plain backgrounds, 1-2 large objects, 3 classes, 96-128 px images.
CPU_VOC = {
    "min_side": 96,
    "max_side": 128,
    "max_objects": 2,
    "clutter": 0,
    "size_range": (0.2, 0.4),
    "distractor_p": 0.0,
    "classes": ("disk", "square", "triangle"),
}

# KEY VALUE override pairs stay one pair per line.
# fmt: off
PRESETS = {
    "default": Preset(
        name="default",
        num_classes=8,
        # 3,200 training images: the queue (K=256) must stay well below the number of images
        # (docs/tiny_recipe.md); 400 val images make one image 0.25 points of kNN top-1.
        train_per_class=400,
        val_per_class=50,
        voc_trainval=150,
        voc_test=100,
        voc_kwargs=CPU_VOC,
        pretrain_opts=("CPU_THREADS", "2"),
        # configs/detection/tiny_demo.yaml as it is (FrozenBN backbone: best for MoCo init)
        detection_opts=(),
        # A random-init backbone under FrozenBN has no working normalisation; train-mode BN
        # was its better choice (AP50 34.1 vs 18.4, seed 0; MoCo init: 41.9 with BN, 57.6
        # FrozenBN), so each init is compared at its better norm (docs/tiny_recipe.md).
        init_opts={"random_init": ("MODEL.RESNETS.NORM", "BN")},
        seeds=(0, 1000, 2000),
        # outside the iterations (measured 2026-12-06, quiet 2-core machine): the data set decode
        # and the final kNN of pretraining, about 15 of its 1.15 s steps; a detection trial's
        # process start, precise BN and evaluation, about 20 s or 50 of its 0.4 s iterations
        pretrain_startup_iters=15,
        trial_overhead_iters=50,
        # one `python -m demo` run on this project's 2-core CPU machine, quiet, 2026-12-06 (25 min
        # 15 s in all; README "Demo results"): data 7 s, pretraining 8 min 18 s, kNN 21 s,
        # conversion 1 s, detection 16 min 20 s (3 trials per init one after another, both inits
        # at once), report 2 s.
        estimates={"data": 7, "pretrain": 498, "knn": 21, "convert": 1, "detect": 980},
    ),
    "smoke": Preset(
        name="smoke",
        num_classes=4,
        train_per_class=16,
        val_per_class=4,
        voc_trainval=8,
        voc_test=4,
        voc_kwargs=CPU_VOC,
        pretrain_opts=(
            "SOLVER.EPOCHS", "1",
            "SOLVER.BATCH_SIZE", "16",
            "MODEL.K", "32",
            "MODEL.KEY_BN_SPLITS", "2",
            "SOLVER.WARMUP_EPOCHS", "0.0",
        ),
        detection_opts=(
            "SOLVER.MAX_ITER", "2",
            "SOLVER.STEPS", "(1,)",
            "SOLVER.WARMUP_ITERS", "1",
            "SOLVER.CHECKPOINT_PERIOD", "2",
            "TEST.PRECISE_BN.NUM_ITER", "1",
        ),
        seeds=(0, 1000),
        estimates={"data": 2, "pretrain": 10, "knn": 5, "convert": 2, "detect": 40},
    ),
    # One GPU, full-width ResNet-50 at 224 px, sized for about 15 minutes on one H100. The
    # estimates are calculated from measured H100 rates (MoCo R50 step at batch 256: ~2,500
    # pairs/s bf16; Faster R-CNN R50-C4 at batch 16: ~0.77 s/iter with AMP; inference ~0.06
    # s/image at 800 px), not measured for this preset: see docs/tiny_recipe.md, "GPU preset".
    "gpu": Preset(
        name="gpu",
        num_classes=8,
        train_per_class=600,  # 4,800 images of 448 px (ImageNet-like size; crops at 224)
        val_per_class=50,
        cls_image_size=448,
        data_workers=12,
        voc_trainval=400,
        voc_test=100,
        voc_kwargs={**CPU_VOC, "min_side": 375, "max_side": 500},  # the same set at VOC sizes
        pretrain_config=GPU_PRETRAIN_CFG,
        pretrain_opts=(
            "MODEL.DEVICE", "cuda",
            "INPUT.PIPELINE", "device",  # workers read bytes; JPEGs decoded on the GPU
            "DATA.NUM_WORKERS", "8",
            "SOLVER.BATCH_SIZE", "256",
            "SOLVER.EPOCHS", "60",  # 18 steps each: 1,080 steps, 276,480 pairs
            "SOLVER.WARMUP_ITERS", "50",
            # the tiny recipe's measured short-run settings (docs/tiny_recipe.md)
            "SOLVER.OPTIMIZER", "AdamW",
            "SOLVER.BASE_LR", "0.001",
            "MODEL.K", "1024",  # well below the 4,800 images, a multiple of 256
            "MODEL.M", "0.99",
            "MODEL.HEAD_BN", "True",
            "MODEL.OUT_BN", "True",
            "MODEL.KEY_BN_SPLITS", "8",
            "TEST.KNN_SIZE", "224",
        ),
        detect_config=GPU_DETECT_CFG,
        detection_opts=(
            "MODEL.DEVICE", "cuda",
            "SOLVER.AMP.ENABLED", "True",
            "SOLVER.IMS_PER_BATCH", "16",
            # SGD at short CPU schedules never trained the box classifier; AdamW 1e-3 did
            # (docs/tiny_recipe.md, "Second search"). Not yet measured on a GPU.
            "TRANSFER.OPTIMIZER", "AdamW",
            "SOLVER.BASE_LR", "0.001",
            "MODEL.ROI_HEADS.NUM_CLASSES", "3",
            "TRANSFER.VOC_LIKE_CLASSES", "('disk', 'square', 'triangle')",
            "DATASETS.TRAIN", "('synth_2007_trainval', 'synth_2012_trainval')",
            "DATASETS.TEST", "('synth_2007_test',)",
            "TRANSFER.REFERENCE", "",
            "INPUT.MIN_SIZE_TRAIN", "(480, 512, 544, 576, 608)",
            "INPUT.MIN_SIZE_TEST", "544",
            # 1,920 images at batch 16; the CPU detector needed 600 AdamW steps (1,200 images at
            # batch 2) to pass AP50 50%, and 80 steps here looked too few
            "SOLVER.MAX_ITER", "120",
            "SOLVER.STEPS", "(105,)",
            "SOLVER.WARMUP_ITERS", "10",
            "SOLVER.CHECKPOINT_PERIOD", "40",
            "TEST.PRECISE_BN.NUM_ITER", "10",
            "DATALOADER.NUM_WORKERS", "4",
        ),
        trial_args=("--gpus-per-trial", "1"),
        seeds=(0, 1000, 2000),
        device="cuda",
        # Calculated, not measured (docs/tiny_recipe.md, "GPU preset"):
        # data: 5,200 images of 448 px on 12 processes + 900 VOC images on one, at ~0.04-0.05
        # s/image per core; pretrain: 276,480 pairs / 2,500 pairs/s = 111 s + ~30 s start-up and
        # first decode; detect: 6 trials x (120 x ~0.5 s + 100 x 0.06 s + ~40 s start-up and
        # precise BN), the two inits sharing the GPU (0.77 s/iter was measured at VOC's 800 px;
        # these images have about 0.45x the pixels, and the res5 head's cost per ROI does not
        # shrink with them, hence ~0.5 s rather than 0.35 s).
        estimates={"data": 80, "pretrain": 140, "knn": 20, "convert": 5, "detect": 640},
        reference_machine="one H100 (calculated, not yet measured)",
    ),
}
# fmt: on


def default_preset_name() -> str:
    """``"gpu"`` when CUDA is available, else ``"default"`` (the CPU demo)."""
    return "gpu" if torch.cuda.is_available() else "default"
