"""Learning test: a few minutes of CPU MoCo with configs/pretrain/tiny_synthetic.yaml must beat
the random-init encoder on weighted kNN (k=20) of the synthetic classification set.

The run is the shared ``tiny_moco_run`` fixture (tests/conftest.py): the config as shipped
except for the paths and half its step budget. The random-init baseline is the very encoder
training starts from (same seed). docs/tiny_recipe.md records the gains measured with it.
"""

import logging

import pytest
import torch

from pretrain.builder import build_moco
from pretrain.knn import knn_accuracy

logger = logging.getLogger(__name__)
MARGIN = 0.04  # kNN top-1 gain over random init required (chance is 1/8 = 0.125)


@pytest.mark.slow
def test_tiny_moco_beats_random_init_knn(tiny_moco_run):
    run = tiny_moco_run
    data, cfg = run["data"], run["cfg"]
    size = cfg.TEST.KNN_SIZE or cfg.INPUT.SIZE
    init = build_moco(cfg)
    init.load_state_dict(torch.load(run["init_path"], map_location="cpu")["model"])
    knn0 = knn_accuracy(
        init.encoder_q, str(data / "train"), str(data / "val"), size=size, workers=0
    )
    knn1 = run["result"]["knn_top1"]
    report = (
        f"kNN top-1 random init {knn0:.3f} -> MoCo {knn1:.3f} after "
        f"{run['result']['iteration']} iterations ({run['minutes']:.1f} min)"
    )
    logger.warning(report)
    assert knn1 >= knn0 + MARGIN, report
