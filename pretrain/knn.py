"""Weighted kNN classification on frozen avgpool features (the InstDisc / MoCo monitor).

The core that the pretraining loop's kNN monitor needs: feature extraction (sharded over ranks)
and the weighted vote. The standalone CLI lives in :mod:`evaluation.knn`, which re-exports these.
"""

from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from detectron2.utils import comm
from torch.utils.data import DataLoader, Subset

from .augment import eval_transform
from .labelled import LabelledImages, SkipCounter, check_same_classes, collate_readable


def backbone_features(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Global-average-pooled features of a torchvision ResNet, skipping its ``fc`` head.

    x: BxCxHxW -> BxD (D = 2048 for ResNet-50). Other modules are simply called.
    """
    if not hasattr(encoder, "layer4"):
        return encoder(x)
    e = encoder
    x = e.maxpool(e.relu(e.bn1(e.conv1(x))))
    x = e.layer4(e.layer3(e.layer2(e.layer1(x))))
    return torch.flatten(e.avgpool(x), 1)


def readable_batches(loader, skipped=None):
    """(images, labels) of each batch of ``loader``, which yields (images, labels) or, with
    :func:`pretrain.labelled.collate_readable`, (images, labels, skipped paths); the skipped
    paths go to ``skipped`` (a :class:`pretrain.labelled.SkipCounter`) and empty batches are
    passed over."""
    for batch in loader:
        images, target = batch[0], batch[1]
        if len(batch) > 2 and skipped is not None:
            skipped.add(batch[2])
        if images is not None and len(target):
            yield images, target


@torch.no_grad()
def extract_features(
    model: nn.Module, loader, device=None, skipped=None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` (eval mode) over the batches of ``loader`` (see :func:`readable_batches`).

    Returns (features NxD, L2-normalised, float32 on CPU; labels N, int64) of the readable
    images. The model's train/eval mode is restored afterwards.
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    feats, labels = [], []
    for images, target in readable_batches(loader, skipped):
        f = backbone_features(model, images.to(device, non_blocking=True))
        feats.append(F.normalize(f.float(), dim=1).cpu())
        labels.append(torch.as_tensor(target))
    model.train(was_training)
    if not feats:  # every image unreadable (or an empty shard)
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
    return torch.cat(feats), torch.cat(labels).long()


@torch.no_grad()
def knn_classify(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    k: int = 20,
    T: float = 0.07,
    num_classes: int = 0,
    chunk: int = 1024,
) -> torch.Tensor:
    """Weighted kNN: each of the ``k`` nearest training features votes exp(cos / T) for its label.

    Features are NxD and MxD, L2-normalised (cosine similarity = dot product). Returns the
    predicted labels (M,). ``num_classes`` defaults to max label + 1.
    """
    num_classes = num_classes or int(train_labels.max()) + 1
    k = min(k, train_feats.shape[0])
    preds = []
    for start in range(0, test_feats.shape[0], chunk):
        sim = test_feats[start : start + chunk] @ train_feats.T  # BxN
        top_sim, top_idx = sim.topk(k, dim=1)  # Bxk
        weights = (top_sim / T).exp()
        votes = torch.zeros(sim.shape[0], num_classes, dtype=weights.dtype)
        votes.scatter_add_(1, train_labels[top_idx], weights)  # BxClasses
        preds.append(votes.argmax(dim=1))
    return torch.cat(preds)


def _sharded_features(model, dataset: LabelledImages, batch_size: int, workers: int, device):
    """Features of ``dataset``, each rank extracting every world-th sample, gathered to all;
    unreadable files are left out and named (:class:`pretrain.labelled.SkipCounter`)."""
    world, rank = comm.get_world_size(), comm.get_rank()
    part = Subset(dataset, range(rank, len(dataset), world))
    loader = DataLoader(
        part, batch_size=batch_size, num_workers=workers, collate_fn=collate_readable
    )
    skipped = SkipCounter(dataset.key)
    feats, labels = extract_features(model, loader, device, skipped)
    if world > 1:
        parts = comm.all_gather((feats, labels, skipped.paths))
        feats = torch.cat([p[0] for p in parts if len(p[1])])
        labels = torch.cat([p[1] for p in parts])
        skipped.paths = set().union(*(p[2] for p in parts))
    if comm.is_main_process():
        skipped.report()
    if not len(labels):
        raise ValueError(f"{dataset.key}={dataset.root!r}: none of its images could be read")
    return feats, labels


def knn_sets(train_root: str, val_root: str, size: int, keys=("kNN train", "kNN val")):
    """The kNN monitor's two :class:`pretrain.labelled.LabelledImages` (eval view at ``size``).

    Listing only (no image is read): raises FileNotFoundError / ValueError naming ``keys``
    when a root is missing, holds no images, or the two have different class folders. The
    pretraining run calls it before training starts.
    """
    tf = eval_transform(size)
    train_set = LabelledImages(train_root, tf, keys[0])
    val_set = LabelledImages(val_root, tf, keys[1])
    check_same_classes(train_set, val_set)
    return train_set, val_set


def knn_accuracy(
    model,
    train_root,
    val_root,
    size=224,
    batch_size=256,
    workers=4,
    k=20,
    T=0.07,
    device=None,
    keys=("kNN train", "kNN val"),
) -> float:
    """Weighted kNN top-1 (0..1) of ``model``: ImageFolder ``train_root`` -> ``val_root``.

    Works in any process group: feature extraction is split across ranks and gathered.
    Unreadable images are left out of both sets and named in the log. ``keys`` name the two
    sets in messages (e.g. the config keys).
    """
    train_set, val_set = knn_sets(train_root, val_root, size, keys)
    return knn_top1(model, train_set, val_set, batch_size, workers, k, T, device)


def knn_top1(model, train_set, val_set, batch_size=256, workers=4, k=20, T=0.07, device=None):
    """Weighted kNN top-1 (0..1) of ``model`` on the two sets of :func:`knn_sets`."""
    tr_f, tr_l = _sharded_features(model, train_set, batch_size, workers, device)
    va_f, va_l = _sharded_features(model, val_set, batch_size, workers, device)
    pred = knn_classify(tr_f, tr_l, va_f, k=k, T=T, num_classes=len(train_set.classes))
    return (pred == va_l).float().mean().item()
