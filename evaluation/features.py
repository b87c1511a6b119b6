"""Frozen features cached on disk, and a linear head trained on them (the fast sweep path).

The full linear protocol (:mod:`evaluation.linear`) pushes every image through the frozen
backbone every epoch because each epoch sees new RandomResizedCrop/flip views. For sweeps over
checkpoints or head hyper-parameters, this module runs the backbone once per split on the
evaluation view (Resize + CenterCrop), caches ``{features, labels}`` to a ``.pt`` file keyed by a
hash of the backbone tensors and of the image list, and trains the same linear head (same
init, SGD, lr schedule) on the cached tensors in seconds. The only difference from the full
protocol is the absence of train-time augmentation, which usually costs a little accuracy
(and makes the head overfit sooner on small sets).

Measured speed and accuracy of the two paths: docs/benchmarks.md ("Linear evaluation").
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F
from detectron2.utils.file_io import PathManager
from torch.utils.data import DataLoader

from common.io import atomic_write
from pretrain.augment import eval_transform
from pretrain.knn import backbone_features, knn_classify, readable_batches
from pretrain.labelled import LabelledImages, SkipCounter, check_same_classes, collate_readable

__all__ = [
    "backbone_hash",
    "cached_features",
    "dataset_hash",
    "extract_frozen_features",
    "lr_at_epoch",
    "make_linear_head",
    "topk_accuracy",
    "evaluate_cached",
    "train_head_on_features",
]

logger = logging.getLogger(__name__)
CACHE_FORMAT = "moco-detectron2/features/v1"


def lr_at_epoch(epoch: int, base_lr: float, milestones=(60, 80), gamma: float = 0.1) -> float:
    """Step schedule of the linear protocol: ``base_lr * gamma ** (milestones passed)``.

    ``epoch`` counts from 0; with milestones (60, 80), epochs 0-59 use lr, 60-79 lr/10, 80+ lr/100.
    """
    return base_lr * gamma ** sum(epoch >= m for m in milestones)


def make_linear_head(in_dim: int, num_classes: int) -> nn.Linear:
    """Fresh fc of the protocol: weight ~ N(0, 0.01), bias 0."""
    fc = nn.Linear(in_dim, num_classes)
    nn.init.normal_(fc.weight, std=0.01)
    nn.init.zeros_(fc.bias)
    return fc


def topk_accuracy(logits: torch.Tensor, target: torch.Tensor, ks=(1, 5)) -> list[float]:
    """Top-k accuracies (0..1) for each k (capped at the number of classes); logits NxC."""
    maxk = min(max(ks), logits.shape[1])
    pred = logits.topk(maxk, dim=1).indices  # N x maxk
    hit = pred.eq(target.view(-1, 1))
    return [hit[:, : min(k, maxk)].any(dim=1).float().mean().item() for k in ks]


def backbone_hash(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-1 over the backbone tensors (names, shapes, bytes): same weights -> same hash.

    Hashing tensors rather than the file makes the key independent of the checkpoint format.
    """
    h = hashlib.sha1()
    for name in sorted(state_dict):
        t = state_dict[name].detach().to("cpu", torch.float32).contiguous()
        h.update(f"{name}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def dataset_hash(samples, extra: str = "") -> str:
    """SHA-1 of an ImageFolder's ``samples`` ((path, label) pairs) with file sizes, plus
    ``extra`` (e.g. the transform), so a changed image list or view invalidates the cache."""
    h = hashlib.sha1(extra.encode())
    for path, label in samples:
        h.update(f"{path}|{label}|{os.path.getsize(path)}\n".encode())
    return h.hexdigest()


@torch.no_grad()
def extract_frozen_features(
    backbone: nn.Module, dataset, batch_size: int = 256, workers: int = 4, device=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Average-pooled, un-normalised backbone features of every sample of ``dataset``.

    Input: a torchvision ResNet (its ``fc`` is skipped) and a
    :class:`pretrain.labelled.LabelledImages` (or any dataset of (image tensor, label)).
    Output: (features N x D float32 on CPU, labels N int64) of the readable images, in dataset
    order; unreadable ones are left out and named in the log. BN in eval mode.
    """
    device = device or next(backbone.parameters()).device
    was_training = backbone.training
    backbone.eval()
    collate = collate_readable if isinstance(dataset, LabelledImages) else None
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=workers, shuffle=False, collate_fn=collate
    )
    skipped = SkipCounter(getattr(dataset, "key", "data set"))
    feats, labels = [], []
    for images, target in readable_batches(loader, skipped):
        feats.append(backbone_features(backbone, images.to(device)).float().cpu())
        labels.append(torch.as_tensor(target))
    backbone.train(was_training)
    skipped.report()
    if not feats:
        raise ValueError(f"{skipped.key}: none of its images could be read")
    return torch.cat(feats), torch.cat(labels).long()


def cached_features(
    backbone: nn.Module,
    backbone_key: str,
    dataset,
    cache_dir: str,
    batch_size: int = 256,
    workers: int = 4,
    device=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of an ImageFolder-like ``dataset`` (``samples``, ``classes``, ``transform``;
    e.g. :class:`pretrain.labelled.LabelledImages`), read from or written to ``cache_dir``.

    ``backbone_key`` is :func:`backbone_hash` of the weights; the file name combines it with
    :func:`dataset_hash` of ``dataset.samples`` and its transform. Output as
    :func:`extract_frozen_features`. The file is ``{"features", "labels", "classes", "key",
    "format"}``.
    """
    key = f"{backbone_key[:16]}-{dataset_hash(dataset.samples, repr(dataset.transform))[:16]}"
    path = os.path.join(cache_dir, f"features-{key}.pt")
    if PathManager.exists(path):
        with PathManager.open(path, "rb") as f:
            data = torch.load(f, map_location="cpu", weights_only=True)
        if data.get("format") == CACHE_FORMAT and data.get("key") == key:
            logger.info("Read cached features %s (%s)", path, tuple(data["features"].shape))
            return data["features"], data["labels"]
        logger.warning("Ignoring cache file %s with a different key or format", path)
    feats, labels = extract_frozen_features(backbone, dataset, batch_size, workers, device)
    data = {"features": feats, "labels": labels, "classes": list(dataset.classes)}
    atomic_write(path, lambda f: torch.save({**data, "key": key, "format": CACHE_FORMAT}, f))
    logger.info("Cached features %s (%s)", path, tuple(feats.shape))
    return feats, labels


def train_head_on_features(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    val_feats: torch.Tensor,
    val_labels: torch.Tensor,
    num_classes: int,
    epochs: int = 100,
    lr: float = 30.0,
    milestones=(60, 80),
    batch_size: int = 256,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> dict:
    """Train the protocol's linear head on cached features; evaluate on cached val features.

    Same head init, optimiser and step schedule as the full protocol, without augmentation.
    Output: ``{"top1", "top5"}`` (0..1) after the last epoch plus ``"train_loss"`` of that
    epoch and ``"history"`` (one dict per epoch).
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    fc = make_linear_head(train_feats.shape[1], num_classes)
    opt = torch.optim.SGD(fc.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    n = train_feats.shape[0]
    history = []
    for epoch in range(epochs):
        for group in opt.param_groups:
            group["lr"] = lr_at_epoch(epoch, lr, milestones)
        perm = torch.randperm(n, generator=g)
        total = 0.0
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            loss = F.cross_entropy(fc(train_feats[idx]), train_labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * idx.numel()
        with torch.no_grad():
            top1, top5 = topk_accuracy(fc(val_feats), val_labels)
        history.append({"epoch": epoch + 1, "train_loss": total / n, "top1": top1, "top5": top5})
    return {**{k: history[-1][k] for k in ("top1", "top5", "train_loss")}, "history": history}


def evaluate_cached(
    backbone: nn.Module,
    backbone_key: str,
    data_root: str,
    cache_dir: str,
    crop_size: int = 224,
    batch_size: int = 256,
    workers: int = 4,
    device=None,
    knn_k: int = 20,
    knn_t: float = 0.07,
    **head_kwargs,
) -> dict:
    """Linear head and weighted kNN on cached eval-view features of ``data_root``/{train,val}.

    Inputs: a frozen torchvision ResNet and :func:`backbone_hash` of its weights; ImageFolder
    root; ``head_kwargs`` go to :func:`train_head_on_features` (epochs, lr, milestones, ...).
    Output: ``{"top1", "top5", "train_loss", "knn_top1", "history"}``; kNN uses
    :func:`pretrain.knn.knn_classify` on the L2-normalised cached features.
    """
    tf = eval_transform(crop_size)
    splits = {
        s: LabelledImages(os.path.join(data_root, s), tf, f"--data {s}/") for s in ("train", "val")
    }
    check_same_classes(splits["train"], splits["val"])
    feats = {
        s: cached_features(backbone, backbone_key, ds, cache_dir, batch_size, workers, device)
        for s, ds in splits.items()
    }
    (tr_f, tr_l), (va_f, va_l) = feats["train"], feats["val"]
    num_classes = len(splits["train"].classes)
    result = train_head_on_features(
        tr_f, tr_l, va_f, va_l, num_classes, batch_size=batch_size, **head_kwargs
    )
    pred = knn_classify(
        F.normalize(tr_f, dim=1), tr_l, F.normalize(va_f, dim=1), knn_k, knn_t, num_classes
    )
    result["knn_top1"] = (pred == va_l).float().mean().item()
    return result
