"""Helpers shared by the pretraining tests (a module, not conftest, so tests can import it)."""

import os

import torch
import torch.nn as nn

from pretrain.config import load_cfg


class ToyEncoder(nn.Module):
    """conv-BN-ReLU-pool-fc: the smallest module with the ResNet ``fc`` interface and BN."""

    def __init__(self, num_classes=128, width=8):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(x.mean((2, 3)))


TINY_CONFIG = os.path.join(
    os.path.dirname(__file__), "..", "..", "configs", "pretrain", "tiny_synthetic.yaml"
)


# A smaller model and two epochs in one process, for tests that only need training to run.
TWO_SHORT_EPOCHS = dict(
    DATA__NUM_WORKERS=0,
    MODEL__MLP_HIDDEN_DIM=32,
    MODEL__K=16,
    MODEL__KEY_BN_SPLITS=2,
    SOLVER__EPOCHS=2,
)


def tiny_train_cfg(train_root, out, pipeline: str, **opts):
    """configs/pretrain/tiny_synthetic.yaml for a seconds-long CPU run on ``train_root``.

    A ResNet-18, 32 px crops, batch 8, one log line per iteration, no kNN monitor, output in
    ``out``; ``opts`` override or add keys, written with ``__`` for ``.`` (MODEL__K=24)."""
    base = {
        "DATA.TRAIN": str(train_root),
        "DATA.KNN_TRAIN": "",
        "DATA.KNN_VAL": "",
        "OUTPUT_DIR": str(out),
        "MODEL.ARCH": "resnet18",
        "MODEL.WIDTH_PER_GROUP": 0,
        "INPUT.SIZE": 32,
        "INPUT.PIPELINE": pipeline,
        "SOLVER.BATCH_SIZE": 8,
        "LOG_PERIOD": 1,
    }
    base.update({k.replace("__", "."): v for k, v in opts.items()})
    return load_cfg(TINY_CONFIG, [x for kv in base.items() for x in map(str, kv)])


def two_process_opts(data, out, epochs, iters, **opts):
    """KEY VALUE overrides (list of str) of configs/pretrain/tiny_synthetic.yaml for a run of two
    CPU processes of one thread (torchrun, SLURM): a ResNet-18, 32 px crops, global batch 8 (4
    per process), key BN shuffled across the processes, K=24 (the queue pointer wraps around),
    ``epochs`` epochs of ``iters`` steps, a log line per step, no kNN monitor, data from
    ``data``, output in ``out``; ``opts`` override or add keys, ``__`` for ``.``."""
    base = {
        "DATA.TRAIN": data,
        "DATA.KNN_TRAIN": "",
        "DATA.KNN_VAL": "",
        "OUTPUT_DIR": out,
        "MODEL.ARCH": "resnet18",
        "MODEL.WIDTH_PER_GROUP": 0,
        "MODEL.MLP_HIDDEN_DIM": 64,
        "MODEL.K": 24,
        "MODEL.KEY_BN_SPLITS": 1,
        "INPUT.SIZE": 32,
        "INPUT.LOAD_SIZE": 40,
        "SOLVER.BATCH_SIZE": 8,
        "SOLVER.EPOCHS": epochs,
        "SOLVER.MAX_ITERS_PER_EPOCH": iters,
        "LOG_PERIOD": 1,
        "CPU_THREADS": 1,
    }
    base.update({k.replace("__", "."): v for k, v in opts.items()})
    return [x for kv in base.items() for x in map(str, kv)]
