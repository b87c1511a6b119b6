"""Evaluation of pretrained encoders: weighted kNN (``knn``) and the linear protocol.

The top of the package graph: it uses ``pretrain`` and ``convert``; neither imports it.
"""

from .knn import extract_features, knn_accuracy, knn_classify

__all__ = ["extract_features", "knn_accuracy", "knn_classify"]
