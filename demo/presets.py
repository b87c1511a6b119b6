"""Sizes of the demo. ``default`` is what ``make demo`` runs; ``smoke`` checks the glue in
about a minute (its numbers mean nothing). Stage estimates (seconds, 2-core CPU) drive the
ETA shown while the demo runs."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Preset:
    """One demo size: data counts, pretraining and detection budgets, and ETA estimates."""

    name: str
    # synthetic.make_classification
    num_classes: int
    train_per_class: int
    val_per_class: int
    # synthetic.make_voc
    voc_trainval: int
    voc_test: int
    # configs/pretrain/tiny_synthetic.yaml overrides
    pretrain_opts: tuple
    # configs/detection/tiny_synthetic.yaml overrides
    detection_opts: tuple
    seeds: tuple
    # rough seconds per stage on a 2-core CPU, for the ETA line
    estimates: dict = field(default_factory=dict)


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
        voc_test=60,
        pretrain_opts=("CPU_THREADS", "2"),
        # 120 iterations at lr 0.01 (4x the recipe's lr per image, for a run this short):
        # about 3.6 minutes per trial (training, precise BN, evaluation) with the two inits
        # running side by side on 2 cores (measured 2026-11-23, README "Demo results").
        detection_opts=(
            "SOLVER.MAX_ITER", "120",
            "SOLVER.STEPS", "(100,)",
            "SOLVER.BASE_LR", "0.01",
            "SOLVER.WARMUP_ITERS", "20",
            "SOLVER.CHECKPOINT_PERIOD", "60",
        ),
        seeds=(0, 1000, 2000),
        estimates={"data": 15, "pretrain": 580, "knn": 30, "convert": 5, "detect": 660},
    ),
    "smoke": Preset(
        name="smoke",
        num_classes=4,
        train_per_class=16,
        val_per_class=4,
        voc_trainval=8,
        voc_test=4,
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
}
# fmt: on
