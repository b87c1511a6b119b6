"""Fixtures for the linear-evaluation tests: a seeded thin ResNet-50 saved in each format."""

import pytest
import torch
import torchvision

from convert import PRETRAIN_FORMAT_TAG


def _thin_resnet_sd(seed: int = 0) -> dict:
    """State dict of a thin ResNet-50 with non-default BN statistics (as after pretraining)."""
    torch.manual_seed(seed)
    net = torchvision.models.resnet50(width_per_group=16)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.0)
    return net.state_dict()


def save_formats(sd: dict, root) -> dict:
    """Save ``sd`` as a pretraining checkpoint, a reference MoCo file and a torchvision file.

    Returns {format name: path}. The MoCo layouts get a head, a key encoder and a queue that
    must all be ignored.
    """
    enc = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    enc.update({"fc.0.weight": torch.randn(32, 2048), "fc.0.bias": torch.zeros(32)})
    enc.update({"fc.2.weight": torch.randn(8, 32), "fc.2.bias": torch.zeros(8)})
    moco = {f"encoder_q.{k}": v for k, v in enc.items()}
    moco.update({f"encoder_k.{k}": v + 1 for k, v in enc.items()})
    moco.update({"queue": torch.randn(8, 16), "queue_ptr": torch.zeros(1, dtype=torch.long)})
    files = {
        "pretrain": {"model": moco, "epoch": 1, "cfg": "", "format": PRETRAIN_FORMAT_TAG},
        "reference-moco": {
            "epoch": 200,
            "arch": "resnet50",
            "state_dict": {f"module.{k}": v for k, v in moco.items()},
            "optimizer": {},
        },
        "torchvision": dict(sd),
    }
    paths = {}
    for name, obj in files.items():
        paths[name] = str(root / f"{name}.pth")
        torch.save(obj, paths[name])
    return paths


@pytest.fixture(scope="session")
def thin_checkpoints(tmp_path_factory):
    """{format: path} of one thin ResNet-50 (seed 0) saved in every supported format."""
    return save_formats(_thin_resnet_sd(0), tmp_path_factory.mktemp("ckpts"))
