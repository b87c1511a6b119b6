"""Evaluation of pretrained encoders: weighted kNN (``knn``) and the linear protocol.

The top of the package graph: it uses ``pretrain`` and ``convert``; neither imports it.
"""

# From pretrain.knn, where the kNN core lives, not from .knn: importing the CLI module here made
# `python -m evaluation.knn` warn that the module was already imported (runpy).
from pretrain.knn import extract_features, knn_accuracy, knn_classify

__all__ = ["extract_features", "knn_accuracy", "knn_classify"]
