"""Res5ROIHeadsExtraNorm: registered on import, builds, trains on the synthetic set."""

import math

import torch
from det_helpers import tiny_cfg
from detectron2.modeling import build_model
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads
from detectron2.utils.events import EventStorage

import synthetic
from detection import Res5ROIHeadsExtraNorm
from detection.datasets import register_from_config
from detection.train_net import Trainer


def test_registered_by_importing_the_package():
    assert ROI_HEADS_REGISTRY.get("Res5ROIHeadsExtraNorm") is Res5ROIHeadsExtraNorm
    assert issubclass(Res5ROIHeadsExtraNorm, Res5ROIHeads)


def test_extra_norm_closes_res5(tiny_voc_root):
    cfg = tiny_cfg(tiny_voc_root)
    heads = build_model(cfg).roi_heads
    assert isinstance(heads, Res5ROIHeadsExtraNorm)
    names = [name for name, _ in heads.res5.named_children()]
    assert names == ["0", "1", "2", "norm"]  # after the last bottleneck block
    norm = heads.res5.norm
    assert isinstance(norm, torch.nn.BatchNorm2d)  # SyncBN in the config, one process -> BN
    assert norm.num_features == heads.res5[2].out_channels == 2048


def test_extra_norm_can_differ_from_the_backbone_norm(tiny_voc_root):
    from detectron2.layers import FrozenBatchNorm2d

    # FrozenBN backbone (small image batches), BN over the sampled ROIs after res5
    cfg = tiny_cfg(tiny_voc_root, "MODEL.RESNETS.NORM", "FrozenBN", "TRANSFER.EXTRA_NORM", "BN")
    model = build_model(cfg)
    assert isinstance(model.roi_heads.res5.norm, torch.nn.BatchNorm2d)
    assert isinstance(model.roi_heads.res5[0].conv1.norm, FrozenBatchNorm2d)
    assert isinstance(model.backbone.stem.conv1.norm, FrozenBatchNorm2d)
    # empty: the backbone's norm, as in the recipe
    cfg = tiny_cfg(tiny_voc_root, "MODEL.RESNETS.NORM", "FrozenBN")
    assert isinstance(build_model(cfg).roi_heads.res5.norm, FrozenBatchNorm2d)


def test_trains_two_iterations_with_finite_losses(synthetic_voc_root, one_thread):
    cfg = tiny_cfg(synthetic_voc_root, "SOLVER.BASE_LR", "0.01")
    register_from_config(cfg)
    model = build_model(cfg)
    model.train()
    optimizer = Trainer.build_optimizer(cfg, model)
    loader = iter(Trainer.build_train_loader(cfg))
    norm = model.roi_heads.res5.norm
    before = norm.weight.detach().clone(), norm.running_mean.clone()
    with EventStorage(0):
        for _ in range(2):
            losses = model(next(loader))
            assert set(losses) == {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"}
            assert all(math.isfinite(v.item()) for v in losses.values()), losses
            optimizer.zero_grad()
            sum(losses.values()).backward()
            # The extra norm is on the loss path: its affine parameters get gradients.
            assert norm.weight.grad is not None and norm.weight.grad.abs().sum() > 0
            assert norm.bias.grad is not None and norm.bias.grad.abs().sum() > 0
            optimizer.step()
    assert not torch.equal(norm.weight, before[0])
    assert not torch.equal(norm.running_mean, before[1])  # BN statistics of res5 outputs
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == len(synthetic.DET_CLASSES)
