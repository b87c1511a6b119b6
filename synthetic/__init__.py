"""Seeded synthetic data: an ImageFolder classification set, a PASCAL-VOC detection set and a
COCO-format instance-segmentation set.

Class identity is carried by shape and texture; colours are random nuisances (see
``synthetic.render``). Entry points: :func:`make_classification`, :func:`make_voc`,
:func:`make_coco`. The VOC-format output is checked by ``detection.voc_check``.
"""

from .classification import CLS_CLASSES, make_classification
from .coco import make_coco
from .voc import DET_CLASSES, make_voc

__all__ = [
    "CLS_CLASSES",
    "DET_CLASSES",
    "make_classification",
    "make_coco",
    "make_voc",
]
