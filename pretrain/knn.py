"""Weighted kNN classification on frozen avgpool features (the InstDisc / MoCo monitor).

The core that the pretraining loop's kNN monitor needs: feature extraction (sharded over ranks)
and the weighted vote. The standalone CLI lives in :mod:`evaluation.knn`, which re-exports these.
"""

import os
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from detectron2.utils import comm
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.datasets import ImageFolder

from .augment import eval_transform


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


@torch.no_grad()
def extract_features(model: nn.Module, loader, device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` (eval mode) over ``loader`` of (image, label) batches.

    Returns (features NxD, L2-normalised, float32 on CPU; labels N, int64). The model's
    train/eval mode is restored afterwards.
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    feats, labels = [], []
    for images, target in loader:
        f = backbone_features(model, images.to(device, non_blocking=True))
        feats.append(F.normalize(f.float(), dim=1).cpu())
        labels.append(torch.as_tensor(target))
    model.train(was_training)
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


def _sharded_features(model, dataset: Dataset, batch_size: int, workers: int, device):
    """Features of ``dataset``, each rank extracting every world-th sample, gathered to all."""
    world, rank = comm.get_world_size(), comm.get_rank()
    part = Subset(dataset, range(rank, len(dataset), world))
    loader = DataLoader(part, batch_size=batch_size, num_workers=workers, shuffle=False)
    feats, labels = extract_features(model, loader, device)
    if world > 1:
        parts = comm.all_gather((feats, labels))
        feats = torch.cat([p[0] for p in parts])
        labels = torch.cat([p[1] for p in parts])
    return feats, labels


def knn_accuracy(
    model, train_root, val_root, size=224, batch_size=256, workers=4, k=20, T=0.07, device=None
) -> float:
    """Weighted kNN top-1 (0..1) of ``model``: ImageFolder ``train_root`` -> ``val_root``.

    Works in any process group: feature extraction is split across ranks and gathered.
    """
    for key, root in (("train", train_root), ("val", val_root)):
        if not os.path.isdir(root):
            raise FileNotFoundError(f"kNN {key} folder {root!r} does not exist (ImageFolder root)")
    tf = eval_transform(size)
    train_set, val_set = ImageFolder(train_root, tf), ImageFolder(val_root, tf)
    if train_set.classes != val_set.classes:
        raise ValueError(f"kNN train/val class folders differ: {train_root!r} vs {val_root!r}")
    tr_f, tr_l = _sharded_features(model, train_set, batch_size, workers, device)
    va_f, va_l = _sharded_features(model, val_set, batch_size, workers, device)
    pred = knn_classify(tr_f, tr_l, va_f, k=k, T=T, num_classes=len(train_set.classes))
    return (pred == va_l).float().mean().item()
