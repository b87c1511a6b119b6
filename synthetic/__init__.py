"""Seeded synthetic data: an ImageFolder classification set, a PASCAL-VOC detection set and a
COCO-format instance-segmentation set.

Class identity is carried by shape and texture; colours are random nuisances (see
``synthetic.render``). Entry points: :func:`make_classification`, :func:`make_voc`,
:func:`make_coco`, and :func:`check_annotation` / :func:`load_checked_voc_instances` (from
``detection.voc_check``).
"""

from . import voc as _voc
from .classification import CLS_CLASSES, make_classification
from .coco import make_coco
from .voc import DET_CLASSES, make_voc


def __getattr__(name):
    # The annotation checker's names, re-exported from synthetic.voc (loaded on first use there,
    # so that generating data does not import detectron2).
    if name in _voc._CHECKER_NAMES:
        return getattr(_voc, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CLS_CLASSES",
    "DET_CLASSES",
    "VOCAnnotationError",
    "check_annotation",
    "check_voc_split",
    "load_checked_voc_instances",
    "make_classification",
    "make_coco",
    "make_voc",
]
