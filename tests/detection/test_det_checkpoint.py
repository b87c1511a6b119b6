"""A converted MoCo checkpoint (convert/) loads into the tiny detector, every backbone tensor."""

import copy

import numpy as np
import pytest
import torch
import torchvision
from det_helpers import tiny_cfg
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from convert import convert_checkpoint, save_detectron2_pkl


def reference_moco_checkpoint():
    """A MoCo-release-style checkpoint of a thin ResNet-50 (torchvision width_per_group=16) with
    the v2 MLP head, BN statistics and affine parameters randomised so that any tensor left at
    its initial value would be noticed."""
    torch.manual_seed(0)
    q = torchvision.models.resnet50(width_per_group=16)
    dim = q.fc.in_features
    q.fc = torch.nn.Sequential(
        torch.nn.Linear(dim, dim), torch.nn.ReLU(), torch.nn.Linear(dim, 128)
    )
    for m in q.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            for t in (m.weight.data, m.bias.data, m.running_mean):
                t.uniform_(-1.0, 1.0)
            m.running_var.uniform_(0.5, 2.0)
    k = copy.deepcopy(q)
    sd = {f"module.encoder_q.{n}": v for n, v in q.state_dict().items()}
    sd.update({f"module.encoder_k.{n}": v + 1.0 for n, v in k.state_dict().items()})
    sd["module.queue"] = torch.randn(128, 256)
    sd["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    return {"epoch": 200, "arch": "resnet50", "state_dict": sd, "optimizer": {}}


def backbone_names(state):
    """{detector key: converted (detectron2 backbone) key} for every backbone tensor of a C4
    detector: stem..res4 live in ``backbone``, res5 in the ROI head, whose extra norm and BN
    counters are not backbone weights."""
    names = {}
    for name in state:
        if name.endswith("num_batches_tracked") or name.startswith("roi_heads.res5.norm."):
            continue
        if name.startswith("backbone."):
            names[name] = name[len("backbone.") :]
        elif name.startswith("roi_heads.res5."):
            names[name] = name[len("roi_heads.") :]
    return names


def not_loaded(model, converted):
    """Detector keys of backbone tensors that differ from (or are missing in) ``converted``."""
    state = model.state_dict()
    return [
        name
        for name, src in backbone_names(state).items()
        if src not in converted
        or state[name].shape != converted[src].shape
        or not np.array_equal(state[name].numpy(), converted[src])
    ]


@pytest.fixture(scope="module")
def converted_pkl(tmp_path_factory):
    result = convert_checkpoint(reference_moco_checkpoint())
    path = str(tmp_path_factory.mktemp("converted") / "moco_thin.pkl")
    save_detectron2_pkl(result.model, path)
    return result, path


def test_converted_moco_backbone_loads_completely(tiny_voc_root, converted_pkl):
    result, path = converted_pkl
    cfg = tiny_cfg(tiny_voc_root, "MODEL.WEIGHTS", path)
    for key, value in result.shape.detectron2_overrides().items():  # the tiny config fits it
        assert cfg.MODEL.RESNETS[key.split(".")[-1]] == value, key
    model = build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)

    names = backbone_names(model.state_dict())
    assert len(names) == len(result.model) == 265  # 53 conv weights + 53 BNs x 4 tensors
    assert set(names.values()) == set(result.model)  # every converted tensor has a place
    assert not_loaded(model, result.model) == []
    norm = model.roi_heads.res5.norm  # not part of the backbone: starts from BN's init
    assert torch.equal(norm.weight, torch.ones_like(norm.weight))
    assert torch.equal(norm.bias, torch.zeros_like(norm.bias))


def test_a_backbone_that_does_not_fit_is_reported(tiny_voc_root, converted_pkl):
    """The thin backbone into a full-width detector: detectron2 skips the tensors whose shapes
    differ (with a warning only), and the check above names them."""
    result, path = converted_pkl
    cfg = tiny_cfg(tiny_voc_root, "MODEL.RESNETS.WIDTH_PER_GROUP", "64")
    model = build_model(cfg)
    DetectionCheckpointer(model).load(path)
    missing = not_loaded(model, result.model)
    assert "backbone.res2.0.conv1.weight" in missing and "roi_heads.res5.2.conv2.weight" in missing
    assert "backbone.stem.conv1.weight" not in missing  # same shape: loaded
