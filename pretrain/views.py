"""View makers: a loader batch -> the query and key views on the training device.

``INPUT.PIPELINE`` is decided once, at set-up: :func:`build_view_maker` returns one object per
pipeline, and the training loop only ever calls its ``views(batch, generators)``, which
returns ``(views, unreadable)``: ``[im_q, im_k]`` (NxCxSxS each, on the device, channels_last
when asked) and the paths of the files the maker itself found unreadable so far.

- ``"pil"`` (:class:`PilViews`): the loader workers already augmented each image with PIL;
  the views are only moved to the device.
- ``"batched"`` (:class:`BatchedViews`): the workers decoded each image to a uint8 square;
  crops and colour run here on the whole batch (:class:`pretrain.augment.BatchedMocoAug`).
- ``"device"`` (:class:`pretrain.device_input.DeviceInput`): the workers read file bytes;
  decoding, crops of the full image and colour run here.

The makers run in the training process, in line or ahead of the step in the prefetch thread
(:mod:`pretrain.prefetch`); either way they are called in the same order with the same
generators, so a run's numbers do not depend on where.
"""

import logging
from typing import List, NamedTuple, Optional, Tuple

import torch

from .augment import BatchedMocoAug, augmentation_args
from .device_input import DeviceInput

logger = logging.getLogger(__name__)
Views = Tuple[List[torch.Tensor], List[str]]


class ViewGenerators(NamedTuple):
    """The random streams of one epoch's batched augmentation (unused by ``"pil"``, whose
    workers seed each sample themselves): ``colour`` on the training device (the colour stage,
    and the crops of ``"batched"``), ``crop`` on the CPU (the crop boxes of ``"device"``)."""

    colour: Optional[torch.Generator]
    crop: Optional[torch.Generator]

    @classmethod
    def seeded(cls, seed: int, device) -> "ViewGenerators":
        """Both streams from ``seed`` (colour) and ``seed + 1`` (crop boxes)."""
        return cls(
            torch.Generator(device=device).manual_seed(seed),
            torch.Generator().manual_seed(seed + 1),
        )


def _in_memory_format(views: List[torch.Tensor], channels_last: bool) -> List[torch.Tensor]:
    if channels_last:
        return [v.contiguous(memory_format=torch.channels_last) for v in views]
    return views


class PilViews:
    """``"pil"``: a batch of two augmented views -> the same views on ``device``."""

    def __init__(self, device, channels_last: bool = False):
        self.device, self.channels_last = torch.device(device), channels_last

    def views(self, batch: List[torch.Tensor], generators: ViewGenerators) -> Views:
        """``[im_q, im_k]`` from the loader (NxCxSxS, float) -> on the device; none unreadable
        here (the workers skip and count unreadable files)."""
        views = [v.to(self.device, non_blocking=True) for v in batch]
        return _in_memory_format(views, self.channels_last), []


class BatchedViews:
    """``"batched"``: a uint8 batch Nx3xLxL -> two independently augmented views on
    ``device``, drawn from ``generators.colour`` (crop, then colour, per view)."""

    def __init__(self, aug: BatchedMocoAug, device, channels_last: bool = False):
        self.aug, self.device, self.channels_last = aug, torch.device(device), channels_last

    def views(self, batch: torch.Tensor, generators: ViewGenerators) -> Views:
        """The loader's uint8 squares -> ``[im_q, im_k]`` (NxCxSxS float on the device)."""
        images = batch.to(self.device, non_blocking=True)
        views = [self.aug(images, generators.colour) for _ in range(2)]
        return _in_memory_format(views, self.channels_last), []


def build_view_maker(cfg, device):
    """The view maker of ``cfg.INPUT.PIPELINE`` on ``device``: :class:`PilViews`,
    :class:`BatchedViews` or :class:`pretrain.device_input.DeviceInput` (with
    ``INPUT.JPEG_DECODER``). Views are channels_last on CUDA with ``SOLVER.CHANNELS_LAST``."""
    device = torch.device(device)
    channels_last = device.type == "cuda" and cfg.SOLVER.CHANNELS_LAST
    if cfg.INPUT.PIPELINE == "pil":
        return PilViews(device, channels_last)
    aug = BatchedMocoAug(**augmentation_args(cfg))
    if cfg.INPUT.PIPELINE == "batched":
        return BatchedViews(aug, device, channels_last)
    maker = DeviceInput(aug, device, cfg.INPUT.JPEG_DECODER, channels_last)
    logger.info("INPUT.PIPELINE device: JPEGs decoded by %s", maker.decoder_name)
    return maker
