"""MoCo v1/v2 pretraining: model, augmentations, data, config, loop, checkpoints, launch."""

from .builder import MoCo, build_encoder_factory, build_moco
from .config import get_pretrain_cfg, load_cfg

__all__ = ["MoCo", "build_encoder_factory", "build_moco", "get_pretrain_cfg", "load_cfg"]
