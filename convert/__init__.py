"""Pretraining checkpoints -> Detectron2 R50-C4 backbone (``.pkl``) and torchvision backbones.

``load_backbone(path)`` reads the backbone out of every supported checkpoint format (the
converter and the linear evaluation use it); whole MoCo models of this project's own
checkpoints (resume, kNN, demo) are read by ``pretrain.checkpoint.load_checkpoint`` /
``load_moco``, whose format tag ``PRETRAIN_FORMAT_TAG`` is. ``convert_checkpoint`` is the pure
conversion. ``convert.match`` counts what a load filled (``LoadReport``) and says what a file
that did not fit looks like (``identify``), for every place that loads a backbone.
"""

from .converter import (
    AUTHOR,
    ConversionResult,
    convert_checkpoint,
    rename_to_detectron2,
    rename_to_torchvision,
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
from .match import (
    Identity,
    LoadReport,
    WeightsMismatchError,
    detectron2_backbone_names,
    identify,
    load_resnet50,
    torchvision_backbone_names,
)
from .structure import RESNET50_BLOCKS, ResNetShape, ResNetStructureError, check_resnet50

__all__ = [
    "AUTHOR",
    "FORMATS",
    "PRETRAIN_FORMAT_TAG",
    "RESNET50_BLOCKS",
    "CheckpointFormatError",
    "ConversionResult",
    "Identity",
    "LoadReport",
    "Extracted",
    "ResNetShape",
    "ResNetStructureError",
    "WeightsMismatchError",
    "check_resnet50",
    "convert_checkpoint",
    "detectron2_backbone_names",
    "extract_backbone",
    "identify",
    "load_backbone",
    "load_checkpoint_file",
    "load_resnet50",
    "rename_to_detectron2",
    "rename_to_torchvision",
    "save_detectron2_pkl",
    "save_torchvision_pth",
    "to_detectron2",
    "torchvision_backbone_names",
]
