"""A converted checkpoint loaded into detectron2's R50-C4 computes what torchvision computes."""

import pytest
import torch
from detectron2 import model_zoo
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from convert import convert_checkpoint, save_detectron2_pkl


class _RecordingCheckpointer(DetectionCheckpointer):
    """Keeps the incompatible keys that fvcore would otherwise only log."""

    def _log_incompatible_keys(self, incompatible):
        self.incompatible = incompatible
        super()._log_incompatible_keys(incompatible)


def _c4_cfg(width_per_group, norm):
    """R50-C4 Faster R-CNN with the project's MoCo detection input settings, on CPU."""
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file("Base-RCNN-C4.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.INPUT.FORMAT = "RGB"
    cfg.MODEL.PIXEL_MEAN = [123.675, 116.280, 103.530]
    cfg.MODEL.PIXEL_STD = [58.395, 57.120, 57.375]
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.RESNETS.NORM = norm
    cfg.MODEL.RESNETS.WIDTH_PER_GROUP = width_per_group
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    return cfg


def _torchvision_features(net, x):
    y = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    res4 = net.layer3(net.layer2(net.layer1(y)))
    return res4, net.layer4(res4)


@pytest.mark.parametrize("width,norm", [(16, "BN"), (64, "FrozenBN")])
def test_res4_res5_match_torchvision(tmp_path, resnet50_factory, layouts, width, norm):
    net = resnet50_factory(width_per_group=width, seed=width)
    result = convert_checkpoint(layouts["pretrain"][0](net.state_dict()), where="ckpt")
    overrides = result.shape.detectron2_overrides()
    assert overrides == ({} if width == 64 else {"MODEL.RESNETS.WIDTH_PER_GROUP": width})
    path = str(tmp_path / "r50.pkl")
    save_detectron2_pkl(result.model, path)

    model = build_model(_c4_cfg(width, norm)).eval()
    ckpt = _RecordingCheckpointer(model)
    ckpt.load(path)
    missing, unexpected = ckpt.incompatible.missing_keys, ckpt.incompatible.unexpected_keys
    assert not unexpected, unexpected
    backbone_missing = [k for k in missing if k.startswith(("backbone.", "roi_heads.res5."))]
    assert not backbone_missing, backbone_missing
    # Only the detection heads, which pretraining never sees, stay at their initialisation.
    assert missing and all(
        k.startswith(("proposal_generator.", "roi_heads.box_predictor.")) for k in missing
    ), missing
    # res5 lives in the ROI head in C4; the suffix heuristics must have put it there.
    assert torch.equal(
        model.roi_heads.res5[0].conv1.norm.running_var, net.layer4[0].bn1.running_var
    )

    x = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want4, want5 = _torchvision_features(net, x)
        got4 = model.backbone(x)["res4"]
        got5 = model.roi_heads.res5(got4)
    assert got4.shape == want4.shape and got5.shape == want5.shape
    # Scale-aware tolerance: activations grow through 16 random blocks.
    for got, want in ((got4, want4), (got5, want5)):
        scale = want.abs().max().item()
        assert scale > 1e-3, "features vanished: the test would compare zeros"
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * scale)
    # The comparison can fail: a converter that dropped BN running stats would be caught here.
    with torch.no_grad():
        model.backbone.res4[0].conv1.norm.running_mean.add_(0.5)
        assert not torch.allclose(model.backbone(x)["res4"], want4, rtol=1e-3, atol=1e-3 * scale)
