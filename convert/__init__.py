"""Pretraining checkpoints -> Detectron2 R50-C4 backbone (``.pkl``) and torchvision backbones.

``load_backbone(path)`` reads the backbone out of every supported checkpoint format (the
converter and the linear evaluation use it); whole MoCo models of this project's own
checkpoints (resume, kNN, demo) are read by ``pretrain.checkpoint.load_checkpoint`` /
``load_moco``, whose format tag ``PRETRAIN_FORMAT_TAG`` is. ``convert_checkpoint`` is the pure
conversion.
"""

from .converter import (
    AUTHOR,
    ConversionResult,
    OutputExistsError,
    atomic_write,
    convert_checkpoint,
    rename_to_detectron2,
    save_detectron2_pkl,
    save_torchvision_pth,
    to_detectron2,
)
from .formats import (
    FORMATS,
    PRETRAIN_FORMAT_TAG,
    CheckpointFormatError,
    Extracted,
    extract_backbone,
    load_backbone,
    load_checkpoint_file,
)
from .structure import RESNET50_BLOCKS, ResNetShape, ResNetStructureError, check_resnet50

__all__ = [
    "AUTHOR",
    "FORMATS",
    "PRETRAIN_FORMAT_TAG",
    "RESNET50_BLOCKS",
    "CheckpointFormatError",
    "ConversionResult",
    "OutputExistsError",
    "Extracted",
    "ResNetShape",
    "ResNetStructureError",
    "atomic_write",
    "check_resnet50",
    "convert_checkpoint",
    "extract_backbone",
    "load_backbone",
    "load_checkpoint_file",
    "rename_to_detectron2",
    "save_detectron2_pkl",
    "save_torchvision_pth",
    "to_detectron2",
]
