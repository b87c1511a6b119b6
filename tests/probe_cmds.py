"""Command lines for tests that run an entry point's ``main(argv)`` (the probes in
tests/test_probes_*.py and others): the shipped tiny configs with the few overrides that make a
pretraining or detection command run in seconds on generated data. A module, not conftest, so
that tests in any folder import the same ones."""

import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAIN_CONFIG = os.path.join(REPO, "configs", "pretrain", "tiny_synthetic.yaml")
DETECT_CONFIG = os.path.join(REPO, "configs", "detection", "tiny_synthetic.yaml")
VOC_CONFIG = os.path.join(REPO, "configs", "detection", "pascal_voc_R_50_C4_24k_moco.yaml")


def _pairs(opts: dict) -> list:
    return [x for kv in opts.items() for x in map(str, kv)]


def pretrain_argv(train, out, *flags, **opts) -> list:
    """``moco-pretrain`` arguments: one 1-iteration epoch of a ResNet-18 on 32 px crops of the
    ImageFolder ``train``, output in ``out``; ``flags`` go before the overrides, ``opts``
    override or add keys (``__`` for ``.``)."""
    base = {
        "DATA.TRAIN": train,
        "DATA.KNN_TRAIN": "",
        "DATA.KNN_VAL": "",
        "OUTPUT_DIR": out,
        "MODEL.ARCH": "resnet18",
        "MODEL.WIDTH_PER_GROUP": 0,
        "MODEL.K": 24,
        "INPUT.SIZE": 32,
        "INPUT.PIPELINE": "batched",
        "SOLVER.BATCH_SIZE": 8,
        "SOLVER.EPOCHS": 1,
        "SOLVER.MAX_ITERS_PER_EPOCH": 1,
        "DATA.NUM_WORKERS": 0,
        "CPU_THREADS": 1,
    }
    base.update({k.replace("__", "."): v for k, v in opts.items()})
    return ["--config-file", PRETRAIN_CONFIG, *flags] + _pairs(base)


def detect_argv(voc_root, out, *flags, config=DETECT_CONFIG, **opts) -> list:
    """``moco-detect`` arguments: the tiny detection config from random init on the VOC-format
    set ``voc_root``, output in ``out``; ``flags`` before the overrides, ``opts`` as above."""
    base = {"TRANSFER.VOC_LIKE_ROOT": voc_root, "TRANSFER.INIT": "random", "OUTPUT_DIR": out}
    base.update({k.replace("__", "."): v for k, v in opts.items()})
    return ["--config-file", config, *flags] + _pairs(base)
