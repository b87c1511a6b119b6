"""Structural check of a torchvision-named ResNet-50 backbone state dict.

The check looks at structure rather than at fixed channel counts, so thin or wide ResNet-50s
(torchvision ``width_per_group``, ResNeXt ``groups``) pass and report the detectron2
``MODEL.RESNETS`` values that build the matching backbone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

import torch

__all__ = ["RESNET50_BLOCKS", "ResNetShape", "ResNetStructureError", "check_resnet50"]

# Bottleneck blocks per stage (layer1..layer4) of a ResNet-50.
RESNET50_BLOCKS = (3, 4, 6, 3)
# Block counts of the other bottleneck ResNets, only to name what was found in error messages.
_KNOWN_DEPTHS = {(3, 4, 23, 3): "ResNet-101", (3, 8, 36, 3): "ResNet-152"}
_BN_SUFFIXES = ("weight", "bias", "running_mean", "running_var")
_LAYER_RE = re.compile(r"^layer(\d+)\.(\d+)\.")


class ResNetStructureError(ValueError):
    """The state dict is not a (torchvision-named) ResNet-50 backbone."""


@dataclass(frozen=True)
class ResNetShape:
    """Widths of a ResNet-50, in detectron2's ``MODEL.RESNETS`` terms.

    ``stem_out_channels``: channels of the 7x7 stem conv (64 for the standard network);
    ``width_per_group`` and ``num_groups``: res2 bottleneck width is their product (64 x 1
    standard, 16 x 1 for torchvision ``width_per_group=16``, 4 x 32 for ResNeXt-50 32x4d);
    ``res2_out_channels``: output channels of res2 (256 standard); later stages double both.
    """

    stem_out_channels: int
    width_per_group: int
    num_groups: int
    res2_out_channels: int

    @property
    def is_standard(self) -> bool:
        """True for the standard ResNet-50 (detectron2's defaults need no override)."""
        return self.detectron2_overrides() == {}

    def detectron2_config(self) -> dict[str, int]:
        """The ``MODEL.RESNETS`` keys (full names) and values that build this backbone."""
        return {
            "MODEL.RESNETS.DEPTH": 50,
            "MODEL.RESNETS.STEM_OUT_CHANNELS": self.stem_out_channels,
            "MODEL.RESNETS.WIDTH_PER_GROUP": self.width_per_group,
            "MODEL.RESNETS.NUM_GROUPS": self.num_groups,
            "MODEL.RESNETS.RES2_OUT_CHANNELS": self.res2_out_channels,
        }

    def detectron2_overrides(self) -> dict[str, int]:
        """Detectron2 config keys (and values) that differ from the R50 defaults."""
        defaults = ResNetShape(64, 64, 1, 256).detectron2_config()
        return {k: v for k, v in self.detectron2_config().items() if defaults[k] != v}

    def describe(self) -> str:
        """One line: the detected widths and the detectron2 overrides they need."""
        head = (
            f"ResNet-50 (stem {self.stem_out_channels}, res2 bottleneck "
            f"{self.num_groups}x{self.width_per_group}, res2 out {self.res2_out_channels})"
        )
        overrides = self.detectron2_overrides()
        if not overrides:
            return head + "; detectron2 R50 defaults apply"
        opts = " ".join(f"{k} {v}" for k, v in overrides.items())
        return head + f"; build the detectron2 model with: {opts}"


def _shape(sd: Mapping[str, torch.Tensor], key: str, where: str) -> tuple[int, ...]:
    if key not in sd:
        raise ResNetStructureError(f"{where}: missing tensor '{key}'")
    return tuple(sd[key].shape)


def _expect(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise ResNetStructureError(f"{where}: {msg}")


def _check_bn(sd: Mapping[str, torch.Tensor], prefix: str, channels: int, where: str) -> None:
    for suffix in _BN_SUFFIXES:
        shape = _shape(sd, prefix + suffix, where)
        _expect(
            shape == (channels,),
            where,
            f"'{prefix}{suffix}' has shape {shape}, expected ({channels},) to match its conv",
        )


def _block_counts(sd: Mapping[str, torch.Tensor]) -> list[int]:
    blocks: dict[int, set[int]] = {}
    for key in sd:
        m = _LAYER_RE.match(key)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    counts = []
    for stage in range(1, 5):
        idx = blocks.get(stage, set())
        if not idx:
            raise ResNetStructureError(
                f"stage 'layer{stage}' (detectron2 res{stage + 1}) is missing"
            )
        _expect(
            idx == set(range(len(idx))),
            f"layer{stage}",
            f"block indices {sorted(idx)} are not contiguous from 0",
        )
        counts.append(len(idx))
    extra = sorted(s for s in blocks if s > 4)
    _expect(not extra, "backbone", f"unexpected stages {['layer%d' % s for s in extra]}")
    return counts


def check_resnet50(sd: Mapping[str, torch.Tensor]) -> ResNetShape:
    """Check that ``sd`` is a torchvision-named bottleneck ResNet-50 backbone.

    Input: a state dict with torchvision names (``conv1.weight``, ``bn1.*``,
    ``layerN.B.convK.weight``, ``layerN.B.bnK.*``, ``layerN.0.downsample.{0,1}.*``), without the
    fc head. Checked: the stem exists, the four stages have 3/4/6/3 bottleneck blocks, every conv
    chains to the next (in/out channels), every stage doubles the bottleneck width and the output
    channels of the one before, each BN matches its conv, and the first block of each stage
    has a projection shortcut. Output: the detected :class:`ResNetShape`.
    Raises :class:`ResNetStructureError` naming the first inconsistency.
    """
    stem = _shape(sd, "conv1.weight", "stem")
    _expect(
        len(stem) == 4 and stem[1] == 3 and stem[2:] == (7, 7),
        "stem",
        f"'conv1.weight' has shape {stem}, expected (C, 3, 7, 7) (the ImageNet 7x7 stem; "
        "a 3x3 CIFAR-style stem cannot be used by detectron2's ResNet stem)",
    )
    stem_channels = stem[0]
    _check_bn(sd, "bn1.", stem_channels, "stem")

    counts = _block_counts(sd)
    if tuple(counts) != RESNET50_BLOCKS:
        name = _KNOWN_DEPTHS.get(tuple(counts), "not a ResNet-50")
        raise ResNetStructureError(
            f"stages have {counts} blocks ({name}); a ResNet-50 has {list(RESNET50_BLOCKS)}"
        )

    in_channels = stem_channels
    res2_width = res2_out = groups = None
    for stage, num_blocks in enumerate(counts, start=1):
        for block in range(num_blocks):
            p = f"layer{stage}.{block}."
            where = f"layer{stage}.{block} (detectron2 res{stage + 1}.{block})"
            c1 = _shape(sd, p + "conv1.weight", where)
            c2 = _shape(sd, p + "conv2.weight", where)
            c3 = _shape(sd, p + "conv3.weight", where)
            _expect(
                len(c1) == 4 and c1[2:] == (1, 1) and c1[1] == in_channels,
                where,
                f"conv1 has shape {c1}, expected (width, {in_channels}, 1, 1)",
            )
            width = c1[0]
            _expect(
                len(c2) == 4 and c2[0] == width and c2[2:] == (3, 3) and width % c2[1] == 0,
                where,
                f"conv2 has shape {c2}, expected ({width}, {width} / groups, 3, 3)",
            )
            _expect(
                len(c3) == 4 and c3[1] == width and c3[2:] == (1, 1),
                where,
                f"conv3 has shape {c3}, expected (out, {width}, 1, 1)",
            )
            out = c3[0]
            if stage == 1 and block == 0:
                res2_width, res2_out, groups = width, out, width // c2[1]
            scale = 2 ** (stage - 1)
            _expect(
                width == res2_width * scale
                and out == res2_out * scale
                and width // c2[1] == groups,
                where,
                f"widths ({width} bottleneck, {width // c2[1]} groups, {out} out) do not follow "
                f"res2 ({res2_width}, {groups}, {res2_out}) doubled per stage",
            )
            for k, ch in ((1, width), (2, width), (3, out)):
                _check_bn(sd, f"{p}bn{k}.", ch, where)
            has_shortcut = p + "downsample.0.weight" in sd
            # Every ResNet-50 stage changes channels (and strides from res3 on) in block 0,
            # which therefore has a 1x1 projection; no other block has one.
            _expect(
                has_shortcut == (block == 0),
                where,
                "projection shortcut (downsample) "
                + ("missing" if block == 0 else "present where none belongs"),
            )
            if has_shortcut:
                sc = _shape(sd, p + "downsample.0.weight", where)
                _expect(
                    sc == (out, in_channels, 1, 1),
                    where,
                    f"downsample.0 has shape {sc}, expected ({out}, {in_channels}, 1, 1)",
                )
                _check_bn(sd, p + "downsample.1.", out, where)
            in_channels = out
    return ResNetShape(
        stem_out_channels=stem_channels,
        width_per_group=res2_width // groups,
        num_groups=groups,
        res2_out_channels=res2_out,
    )
