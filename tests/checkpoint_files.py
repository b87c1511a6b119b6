"""Tiny checkpoint files in every layout the project meets: torchvision ResNet-50 state dicts,
this project's pretraining checkpoints, the reference MoCo release and converted detectron2
backbones. Shared by the converter, detection and evaluation tests (a module, not a conftest,
so that tests in any folder can import it)."""

import random

import numpy as np
import torch
import torchvision

from convert import PRETRAIN_FORMAT_TAG, convert_checkpoint, save_detectron2_pkl


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BN non-trivial affine parameters and running statistics.

    Fresh BNs are the identity in eval mode (mean 0, var 1, weight 1, bias 0), which would hide
    a BN whose weight and bias, or mean and var, were swapped or dropped by the converter.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.num_batches_tracked.fill_(7)
    return model


def make_resnet50(width_per_group: int = 16, seed: int = 0) -> torchvision.models.ResNet:
    """A seeded torchvision ResNet-50 (thin by default) with randomised BN, in eval mode."""
    torch.manual_seed(seed)
    model = torchvision.models.resnet50(width_per_group=width_per_group)
    return randomize_bn(model, seed).eval()


def as_pretrain_checkpoint(sd: dict, v2_head: bool = True) -> dict:
    """Wrap a torchvision state dict as this project's pretraining checkpoint (docs contract)."""
    body = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    if v2_head:
        head = {"fc.0.weight": torch.randn(8, 2048), "fc.0.bias": torch.zeros(8)}
        head.update({"fc.2.weight": torch.randn(4, 8), "fc.2.bias": torch.zeros(4)})
    else:
        head = {"fc.weight": torch.randn(4, 2048), "fc.bias": torch.zeros(4)}
    enc = {**body, **head}
    model = {f"encoder_q.{k}": v for k, v in enc.items()}
    model.update({f"encoder_k.{k}": v.clone() + 1 for k, v in enc.items()})
    model["queue"] = torch.randn(4, 16)
    model["queue_ptr"] = torch.zeros(1, dtype=torch.long)
    return {
        "model": model,
        "optimizer": {"state": {}, "param_groups": []},
        "epoch": 3,
        "iteration": 30,
        "cfg": "MOCO:\n  DIM: 4\n",
        "format": PRETRAIN_FORMAT_TAG,
    }


def as_reference_moco(sd: dict) -> dict:
    """Wrap a torchvision state dict as the reference MoCo release saves it (DDP prefix)."""
    inner = as_pretrain_checkpoint(sd, v2_head=False)["model"]
    return {
        "epoch": 200,
        "arch": "resnet50",
        "state_dict": {f"module.{k}": v for k, v in inner.items()},
        "optimizer": {"state": {}, "param_groups": []},
    }


def write_weight_files(root, width_per_group: int = 16) -> dict:
    """Write one seeded thin ResNet-50 as every kind of file a user may pass as weights.

    Returns ``{kind: path}`` under ``root`` (a ``pathlib.Path``): "converted" (the ``.pkl``
    that fits a detector of ``width_per_group``), "other-width" (a converted ``.pkl`` of half
    that width), "torchvision" (``resnet50.pth``), "moco" (a MoCo release
    ``moco_v2_200ep_pretrain.pth.tar``), "pretrain" (this project's ``last.pth``, with the
    numpy RNG state real ones hold) and "unrecognised" (unrelated tensors).
    """
    sd = make_resnet50(width_per_group=width_per_group).state_dict()
    files = {
        "torchvision": ("resnet50.pth", sd),
        "moco": ("moco_v2_200ep_pretrain.pth.tar", as_reference_moco(sd)),
        "pretrain": (
            "last.pth",
            {
                **as_pretrain_checkpoint(sd),
                "rng": {"python": random.getstate(), "numpy": np.random.get_state()},
            },
        ),
        "unrecognised": ("other.pth", {"encoder.block0.weight": torch.zeros(4, 3, 3, 3)}),
    }
    paths = {}
    for kind, (name, obj) in files.items():
        paths[kind] = str(root / name)
        torch.save(obj, paths[kind])
    thinner = make_resnet50(width_per_group=width_per_group // 2).state_dict()
    for kind, state in (("converted", sd), ("other-width", thinner)):
        paths[kind] = str(root / f"{kind}.pkl")
        save_detectron2_pkl(convert_checkpoint(state).model, paths[kind])
    return paths
