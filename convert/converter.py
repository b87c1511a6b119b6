"""Torchvision-named ResNet-50 -> Detectron2 R50-C4 names, and the ``.pkl`` it loads."""

from __future__ import annotations

import logging
import pickle
import re
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from common.io import atomic_write

from .formats import Extracted, extract_backbone
from .structure import ResNetShape, ResNetStructureError, check_resnet50

__all__ = [
    "AUTHOR",
    "ConversionResult",
    "convert_checkpoint",
    "rename_to_detectron2",
    "rename_to_torchvision",
    "save_detectron2_pkl",
    "save_torchvision_pth",
    "to_detectron2",
]

logger = logging.getLogger(__name__)

AUTHOR = "moco-detectron2"
# Order matters: "downsample.1" must become "shortcut.norm" before "downsample" -> "shortcut".
_RULES = (
    (re.compile(r"^layer(\d)\."), lambda m: f"res{int(m.group(1)) + 1}."),
    (re.compile(r"\.bn(\d)\."), lambda m: f".conv{m.group(1)}.norm."),
    (re.compile(r"\.downsample\.0\."), lambda m: ".shortcut."),
    (re.compile(r"\.downsample\.1\."), lambda m: ".shortcut.norm."),
)


def rename_to_detectron2(name: str) -> str:
    """Map one torchvision ResNet name to its detectron2 name.

    ``conv1.weight`` -> ``stem.conv1.weight``, ``bn1.bias`` -> ``stem.conv1.norm.bias``,
    ``layer3.0.bn2.weight`` -> ``res4.0.conv2.norm.weight``,
    ``layer1.0.downsample.1.running_mean`` -> ``res2.0.shortcut.norm.running_mean``.
    """
    if not name.startswith("layer"):
        name = "stem." + name
    for pattern, repl in _RULES:
        name = pattern.sub(repl, name)
    # The stem's BN is "bn1" directly under "stem.", which the dotted rule above cannot see.
    return re.sub(r"^stem\.bn1\.", "stem.conv1.norm.", name)


# The inverse of _RULES, applied in order: detectron2 names of a converted backbone back to
# torchvision names, so that convert.structure can tell the widths of a converted file.
_INVERSE_RULES = (
    (re.compile(r"^stem\.conv1\.norm\."), lambda m: "bn1."),
    (re.compile(r"^stem\."), lambda m: ""),
    (re.compile(r"^res(\d)\."), lambda m: f"layer{int(m.group(1)) - 1}."),
    (re.compile(r"\.shortcut\.norm\."), lambda m: ".downsample.1."),
    (re.compile(r"\.shortcut\."), lambda m: ".downsample.0."),
    (re.compile(r"\.conv(\d)\.norm\."), lambda m: f".bn{m.group(1)}."),
)


def rename_to_torchvision(name: str) -> str:
    """Map one detectron2 ResNet name back to its torchvision name (inverse of
    :func:`rename_to_detectron2`): ``res4.0.conv2.norm.weight`` -> ``layer3.0.bn2.weight``."""
    for pattern, repl in _INVERSE_RULES:
        name = pattern.sub(repl, name)
    return name


def to_detectron2(backbone: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Rename a torchvision-named backbone to detectron2 names, as float32 numpy arrays.

    Input: the output of :func:`convert.formats.extract_backbone` (``.backbone``); no head,
    no ``num_batches_tracked``. Output: ``{detectron2 name: np.ndarray}``. Pure: no I/O.
    """
    out = {}
    for name, tensor in backbone.items():
        new = rename_to_detectron2(name)
        if new in out:
            raise ValueError(f"two tensors map to '{new}' (second: '{name}')")
        # float32 because detectron2 builds float32 models; bf16 has no numpy dtype at all.
        out[new] = tensor.detach().to("cpu", torch.float32).numpy()
    return out


@dataclass
class ConversionResult:
    """What a conversion produced: detectron2 tensors, the source backbone and the report."""

    model: dict[str, np.ndarray]
    extracted: Extracted
    shape: ResNetShape

    def report(self) -> str:
        """Short human-readable report: converted, dropped, unexpected, detectron2 overrides."""
        ext = self.extracted
        lines = [
            f"format '{ext.fmt}', encoder prefix '{ext.prefix}'",
            f"converted {len(self.model)} tensors "
            f"({sum(v.size for v in self.model.values()):,} values)",
        ]
        for why, keys in sorted(ext.dropped.items()):
            example = keys[0] if len(keys) == 1 else f"{keys[0]}, ..."
            lines.append(f"dropped {len(keys)} ({why}): {example}")
        if ext.unexpected:
            lines.append(f"UNEXPECTED, not converted ({len(ext.unexpected)}): {ext.unexpected}")
        lines.append(self.shape.describe())
        return "\n".join(lines)


def convert_checkpoint(
    obj: Any, fmt: str = "auto", prefix: str | None = None, where: str = "checkpoint"
) -> ConversionResult:
    """Convert a loaded checkpoint object (any supported format) to detectron2 tensors.

    Inputs as :func:`convert.formats.extract_backbone`. Output: :class:`ConversionResult`.
    Raises ``CheckpointFormatError`` / ``ResNetStructureError`` (with ``where`` in the message)
    instead of returning an empty or partial model.
    """
    ext = extract_backbone(obj, fmt=fmt, prefix=prefix, where=where)
    try:
        shape = check_resnet50(ext.backbone)
    except ResNetStructureError as e:
        raise ResNetStructureError(
            f"{where} (format '{ext.fmt}', prefix '{ext.prefix}'): {e}. Only ResNet-50 "
            "backbones convert to R50-C4; check the file and --prefix."
        ) from None
    return ConversionResult(model=to_detectron2(ext.backbone), extracted=ext, shape=shape)


def save_detectron2_pkl(model: Mapping[str, np.ndarray], path: str, overwrite: bool = True) -> None:
    """Write ``{"model", "__author__", "matching_heuristics": True}`` for DetectionCheckpointer.

    ``matching_heuristics`` lets the checkpointer match ``res5.*`` to ``roi_heads.res5.*``
    (C4 keeps res5 in the ROI head) and ``stem.*`` / ``res2-4.*`` to ``backbone.*``.
    Written atomically (:func:`common.io.atomic_write`); ``overwrite=False`` refuses an existing
    file (:class:`common.io.OutputExistsError`).
    """
    if not model:
        raise ValueError(f"refusing to write an empty model to {path}")
    obj = {"model": dict(model), "__author__": AUTHOR, "matching_heuristics": True}
    atomic_write(path, lambda f: pickle.dump(obj, f), overwrite)


def save_torchvision_pth(
    backbone: Mapping[str, torch.Tensor], path: str, overwrite: bool = True
) -> None:
    """Write the torchvision-named query backbone (no fc) with ``torch.save``.

    Loads with ``torchvision.models.resnet50().load_state_dict(sd, strict=False)`` (only
    ``fc.*`` missing), for frameworks other than detectron2. Written atomically
    (:func:`common.io.atomic_write`); ``overwrite=False`` refuses an existing file
    (:class:`common.io.OutputExistsError`).
    """
    if not backbone:
        raise ValueError(f"refusing to write an empty model to {path}")
    sd = {k: v.detach().cpu().clone() for k, v in backbone.items()}
    atomic_write(path, lambda f: torch.save(sd, f), overwrite)
