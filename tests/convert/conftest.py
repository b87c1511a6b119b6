"""Fixtures for the converter tests: seeded ResNet-50s and the checkpoint layouts that wrap them."""

import pytest
import torch
import torchvision

from convert import PRETRAIN_FORMAT_TAG


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


@pytest.fixture(scope="session")
def thin_resnet():
    """Thin (width_per_group=16) ResNet-50 with randomised BN, eval mode."""
    return make_resnet50(width_per_group=16, seed=0)


@pytest.fixture(scope="session")
def thin_sd(thin_resnet):
    """Its state dict (with fc and num_batches_tracked, as torchvision saves it)."""
    return {k: v.clone() for k, v in thin_resnet.state_dict().items()}


@pytest.fixture(scope="session")
def layouts():
    """Name -> (function wrapping a torchvision state dict, extra CLI arguments to read it).

    Every layout the converter must accept; all must convert to the same tensors.
    """

    def prefixed(p, container=None):
        def wrap(sd):
            inner = {p + k: v for k, v in sd.items()}
            return {container: inner} if container else inner

        return wrap

    return {
        "pretrain": (as_pretrain_checkpoint, []),
        "pretrain-v1-head": (lambda sd: as_pretrain_checkpoint(sd, v2_head=False), []),
        "reference-moco": (as_reference_moco, []),
        "torchvision": (prefixed(""), []),
        "torchvision-module": (prefixed("module."), []),
        "torchvision-state_dict": (prefixed("", "state_dict"), []),
        "torchvision-model-module": (prefixed("module.", "model"), []),
        "prefix-module.encoder": (prefixed("module.encoder."), ["--prefix", "module.encoder."]),
        # without the trailing dot: the converter adds it
        "prefix-backbone": (prefixed("backbone.", "state_dict"), ["--prefix", "backbone"]),
        "forced-format": (as_reference_moco, ["--format", "moco"]),
    }


@pytest.fixture(scope="session")
def resnet50_factory():
    """``make_resnet50(width_per_group, seed)`` for tests that need their own network."""
    return make_resnet50
