"""Evaluation of pretrained encoders: the weighted kNN CLI (``knn``, on the kNN core of
:mod:`pretrain.knn`) and the linear protocol (``linear``).

It uses ``pretrain`` and ``convert``; neither imports it (docs/architecture.md, "Layers").
"""
