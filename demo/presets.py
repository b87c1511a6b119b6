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


PRESETS = {
    "default": Preset(
        name="default",
        num_classes=8,
        train_per_class=100,
        val_per_class=25,
        voc_trainval=150,
        voc_test=60,
        pretrain_opts=(),
        detection_opts=(),
        seeds=(0, 1000, 2000),
        estimates={"data": 10, "pretrain": 420, "knn": 60, "convert": 5, "detect": 600},
    ),
    "smoke": Preset(
        name="smoke",
        num_classes=4,
        train_per_class=16,
        val_per_class=4,
        voc_trainval=8,
        voc_test=4,
        pretrain_opts=(
            "SOLVER.EPOCHS", "1", "SOLVER.BATCH_SIZE", "16", "MODEL.K", "32",
            "MODEL.KEY_BN_SPLITS", "2", "SOLVER.WARMUP_EPOCHS", "0.0",
        ),
        detection_opts=(
            "SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "(1,)", "SOLVER.WARMUP_ITERS", "1",
            "SOLVER.CHECKPOINT_PERIOD", "2", "TEST.PRECISE_BN.NUM_ITER", "1",
        ),
        seeds=(0, 1000),
        estimates={"data": 2, "pretrain": 10, "knn": 5, "convert": 2, "detect": 40},
    ),
}
