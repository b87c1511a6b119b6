"""Seeded synthetic data: an ImageFolder classification set and a PASCAL-VOC detection set.

Class identity is carried by shape and texture; colours are random nuisances (see
``synthetic.render``). Entry points: :func:`make_classification`, :func:`make_voc`, and
:func:`check_annotation` / :func:`load_checked_voc_instances` for dataset registration.
"""

from .classification import CLS_CLASSES, make_classification
from .voc import (
    DET_CLASSES,
    VOCAnnotationError,
    check_annotation,
    check_voc_split,
    load_checked_voc_instances,
    make_voc,
)

__all__ = [
    "CLS_CLASSES",
    "DET_CLASSES",
    "VOCAnnotationError",
    "check_annotation",
    "check_voc_split",
    "load_checked_voc_instances",
    "make_classification",
    "make_voc",
]
