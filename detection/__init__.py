"""Detectron2 plugin for MoCo detection transfer.

Importing the package registers ``Res5ROIHeadsExtraNorm`` in detectron2's ROI heads registry;
``add_moco_detection_config`` adds this project's config keys; ``detection.datasets`` registers
VOC-format data sets; ``python -m detection.train_net`` trains one detector and
``python -m detection.trials`` runs and summarises several seeded fine-tunes.
"""

from common.known_warnings import filter_known_warnings

filter_known_warnings()  # `python -m detection.<entry point>` runs this first

from . import roi_heads as _  # noqa: F401  (registration)
from .config import add_moco_detection_config
from .datasets import register_voc, register_voc_like
from .roi_heads import Res5ROIHeadsExtraNorm

__all__ = [
    "add_moco_detection_config",
    "register_voc",
    "register_voc_like",
    "Res5ROIHeadsExtraNorm",
]
