"""Evaluation of pretrained encoders: weighted kNN (``knn``) and the linear protocol."""

from .knn import extract_features, knn_accuracy, knn_classify

__all__ = ["extract_features", "knn_accuracy", "knn_classify"]
