"""Seeded synthetic data: an ImageFolder classification set and a PASCAL-VOC detection set.

Class identity is carried by shape and texture; colours are random nuisances (see
``synthetic.render``). Entry points: :func:`make_classification`, :func:`make_voc`, and
:func:`check_annotation` / :func:`load_checked_voc_instances` (from ``detection.voc_check``).
"""

from .classification import CLS_CLASSES, make_classification
from .voc import DET_CLASSES, make_voc

_CHECKER_NAMES = (
    "VOCAnnotationError",
    "check_annotation",
    "check_voc_split",
    "load_checked_voc_instances",
)


def __getattr__(name):
    # The checker is detection.voc_check; loaded on first use (it imports detectron2).
    if name in _CHECKER_NAMES:
        from detection import voc_check

        return getattr(voc_check, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
