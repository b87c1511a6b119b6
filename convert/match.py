"""How much of a model a weights file filled, and what the file is when it did not fit.

Every place that loads a backbone (detection training and evaluation, the kNN and linear
evaluation, the demo) reports ``loaded N/M backbone tensors from <file>`` with a
:class:`LoadReport` and refuses a partial load with :class:`WeightsMismatchError`. The refusal
says what the file looks like (:func:`identify`, which asks :func:`convert.formats.extract_backbone`
and :func:`convert.structure.check_resnet50`), so that its message can give the fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import torch
import torchvision

from .converter import rename_to_torchvision
from .formats import (
    DETECTOR_ROOTS,
    PRETRAIN_FORMAT_TAG,
    CheckpointFormatError,
    Extracted,
    extract_backbone,
    is_backbone_key,
    load_backbone,
)
from .structure import ResNetShape, ResNetStructureError, check_resnet50

__all__ = [
    "Identity",
    "LoadReport",
    "WeightsMismatchError",
    "detectron2_backbone_names",
    "identify",
    "load_resnet50",
    "torchvision_backbone_names",
]

# A ResNet backbone tensor in detectron2 names, bare (a converted .pkl) or inside a detector:
# the C4 backbone (stem, res2-4) under "backbone." (FPN: "backbone.bottom_up."), res5 under
# "roi_heads.". The extra norm after res5 (res5.norm.*) starts from its init: not a backbone part.
_D2_BACKBONE = re.compile(
    r"^(?:backbone\.(?:bottom_up\.)?|roi_heads\.)?((?:stem|res\d)\.(?!norm\.).+)$"
)
_BN_COUNTER = "num_batches_tracked"  # BN's step counter: no weight, never converted


class WeightsMismatchError(ValueError):
    """A weights file does not fill the model; the message names the file, what it looks like
    and the fix."""


def detectron2_backbone_names(names: Iterable[str]) -> dict[str, str]:
    """``{name: bare detectron2 name}`` of the ResNet backbone tensors among ``names``
    (``backbone.res2.0.conv1.weight`` -> ``res2.0.conv1.weight``; BN counters left out)."""
    out = {}
    for name in names:
        m = _D2_BACKBONE.match(name)
        if m and not name.endswith(_BN_COUNTER):
            out[name] = m.group(1)
    return out


def torchvision_backbone_names(names: Iterable[str]) -> list[str]:
    """The ResNet backbone tensors among torchvision ``names`` (no fc head, no BN counters)."""
    return [n for n in names if is_backbone_key(n) and not n.endswith(_BN_COUNTER)]


def _shape_of(t) -> tuple:
    return tuple(t.shape)


@dataclass
class LoadReport:
    """What one load put into a model: ``total`` tensors were expected (``what``: "backbone"
    or "detector"); ``missing`` were not in the file (or skipped by the loader),
    ``wrong_shape`` were there with another shape (name, file shape, model shape),
    ``unexpected`` are file tensors the model has no place for."""

    what: str
    total: int
    missing: list[str] = field(default_factory=list)
    wrong_shape: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    @property
    def loaded(self) -> int:
        """Number of expected tensors that loaded."""
        return self.total - len(self.missing) - len(self.wrong_shape)

    @property
    def complete(self) -> bool:
        """True when every expected tensor loaded and the file held nothing without a place."""
        return not (self.missing or self.wrong_shape or self.unexpected)

    def line(self, path: str | None = None) -> str:
        """``loaded N/M <what> tensors from <path>`` (without "from" when ``path`` is None)."""
        return f"loaded {self.loaded}/{self.total} {self.what} tensors" + (
            f" from {path}" if path else ""
        )

    def problems(self, examples: int = 2) -> str:
        """What did not load, with a few example names; "" when complete."""
        parts = []
        if self.missing:
            shown = ", ".join(self.missing[:examples])
            parts.append(f"{len(self.missing)} not loaded ({shown}, ...)")
        if self.wrong_shape:
            name, got, want = self.wrong_shape[0]
            parts.append(
                f"{len(self.wrong_shape)} of another shape ({name}: {got} in the file, {want} "
                "in the model, ...)"
            )
        if self.unexpected:
            shown = ", ".join(self.unexpected[:examples])
            parts.append(f"{len(self.unexpected)} in the file without a place ({shown}, ...)")
        return "; ".join(parts)

    @classmethod
    def compare(cls, model_state, file_state, names, what: str = "backbone") -> LoadReport:
        """The report of loading ``file_state`` into ``model_state`` by equal names, for the
        model tensors ``names``; file tensors outside the model count as unexpected only when
        they look like ResNet backbone tensors."""
        report = cls(what=what, total=len(names))
        for name in names:
            if name not in file_state:
                report.missing.append(name)
            elif _shape_of(file_state[name]) != _shape_of(model_state[name]):
                report.wrong_shape.append(
                    (name, _shape_of(file_state[name]), _shape_of(model_state[name]))
                )
        extra = [k for k in file_state if k not in model_state]
        report.unexpected = torchvision_backbone_names(extra)
        return report


@dataclass(frozen=True)
class Identity:
    """What a weights file looks like. ``kind``: "pretrain" (this project's pretraining
    checkpoint), "moco" (the reference MoCo release), "torchvision", "converted" (a detectron2
    ``.pkl`` from ``python -m convert``), "detector" (a whole detectron2 detector checkpoint)
    or "unrecognised"; ``text``: the same for a message; ``shape``: the ResNet-50 widths found
    in it, or None with the reason in ``problem``."""

    kind: str
    text: str
    shape: ResNetShape | None = None
    problem: str = ""


_TEXTS = {
    "pretrain": f"this project's pretraining checkpoint (format '{PRETRAIN_FORMAT_TAG}', "
    "last.pth / checkpoint_NNNN.pth), not converted",
    "moco": "an unconverted MoCo release/reference checkpoint (module.encoder_q.*)",
    "torchvision": "an unconverted torchvision ResNet checkpoint",
    "converted": "a converted detectron2 backbone (a python -m convert .pkl)",
    "detector": "a whole detectron2 detector checkpoint (model_*.pth)",
}


def _resnet50_shape(tv_state: Mapping[str, Any]) -> tuple[ResNetShape | None, str]:
    try:
        return check_resnet50(tv_state), ""
    except ResNetStructureError as e:
        return None, str(e)


def identify(obj: Any) -> Identity:
    """Say what a loaded weights file is: ``obj`` as ``torch.load`` / detectron2's ``.pkl``
    reader returned it. Returns an :class:`Identity`; never raises."""
    if not isinstance(obj, Mapping):
        return Identity("unrecognised", f"no layout this project knows (a {type(obj).__name__})")
    model = obj.get("model")
    d2_kind = None
    if isinstance(model, Mapping) and "__author__" in obj:
        d2_kind = "converted"
    elif isinstance(model, Mapping) and any(str(k).startswith(DETECTOR_ROOTS) for k in model):
        d2_kind = "detector"
    if d2_kind:
        names = detectron2_backbone_names(model)
        tv = {rename_to_torchvision(bare): model[name] for name, bare in names.items()}
        return Identity(d2_kind, _TEXTS[d2_kind], *_resnet50_shape(tv))
    try:
        ext = extract_backbone(obj, where="the file")
    except CheckpointFormatError:
        state = model if isinstance(model, Mapping) else obj
        keys = ", ".join(sorted(map(str, state))[:4])
        return Identity("unrecognised", f"no layout this project knows (keys such as {keys})")
    kind = ext.fmt if ext.fmt in ("moco", "torchvision") else "pretrain"
    return Identity(kind, _TEXTS[kind], *_resnet50_shape(ext.backbone))


def load_resnet50(
    path: str, fmt: str = "auto", prefix: str | None = None
) -> tuple[torch.nn.Module, Extracted, LoadReport]:
    """A torchvision ResNet-50 at the widths of the backbone in ``path``, every backbone tensor
    loaded from it (``fc`` keeps its init).

    Input: any file :func:`convert.load_backbone` reads (pretraining, MoCo release,
    torchvision; ``fmt`` / ``prefix`` as there). Output: ``(net, extracted, report)``, the
    network on the CPU in train mode. Raises what ``load_backbone`` raises, and
    :class:`WeightsMismatchError` when a backbone tensor would not load.
    """
    sd, ext = load_backbone(path, fmt=fmt, prefix=prefix)
    shape = check_resnet50(sd)
    if (shape.stem_out_channels, shape.res2_out_channels) != (64, 256):
        raise ResNetStructureError(
            f"{path}: {shape.describe()}; torchvision's resnet50 cannot build these widths"
        )
    net = torchvision.models.resnet50(
        width_per_group=shape.width_per_group, groups=shape.num_groups
    )
    state = net.state_dict()
    report = LoadReport.compare(state, sd, torchvision_backbone_names(state))
    if not report.complete:
        raise WeightsMismatchError(
            f"{path}: {report.line()}; {report.problems()}. Not a plain torchvision "
            "ResNet-50 backbone; check the file and --prefix."
        )
    net.load_state_dict(sd, strict=False)
    return net, ext, report
