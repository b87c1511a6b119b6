"""The "device" input pipeline: JPEG bytes -> two augmented views, decoded on the training device.

Loader workers only read file bytes (:class:`pretrain.data.TwoViewDataset` with
``read_bytes=True``). Here, in the training process, a batch's JPEGs are decoded in one call of
``torchvision.io.decode_jpeg`` on the training device (batched nvJPEG on CUDA; the CPU decoder on
CPU). Each view is a RandomResizedCrop of the full-resolution image (torchvision's box
distribution, :func:`pretrain.augment.sample_crop_boxes`, drawn on the CPU), resized to SxS
with ``roi_align`` per group of equally sized images, then the batched colour stage of
:class:`pretrain.augment.BatchedMocoAug`. Nothing waits for the device, so the whole stage can
run ahead of the training step (:mod:`pretrain.prefetch`).

Files the batched decoder cannot handle (PNGs named .JPEG, CMYK JPEGs, corrupt data) are decoded
on the CPU instead (``torchvision.io.decode_image``, then PIL); a file no decoder can read is
replaced by another image of the batch. Both are counted and each file is named in the log once.
"""

import io
import logging
from typing import List, Optional, Sequence

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image, decode_jpeg
from torchvision.ops import roi_align

from .augment import BatchedMocoAug, sample_crop_boxes
from .data import jpeg_components

logger = logging.getLogger(__name__)


def _cpu_decode(data: torch.Tensor) -> torch.Tensor:
    """Any image file's bytes -> 3xHxW uint8 RGB on the CPU (torchvision, then PIL); raises."""
    try:
        return decode_image(data, mode=ImageReadMode.RGB)
    except Exception:  # formats torchvision lacks (e.g. BMP, TIFF): PIL
        with Image.open(io.BytesIO(data.numpy().tobytes())) as img:
            rgb = img.convert("RGB")
        pixels = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
        return pixels.view(rgb.height, rgb.width, 3).permute(2, 0, 1).contiguous()


def _is_rgb_image(x) -> bool:
    return torch.is_tensor(x) and x.dim() == 3 and x.shape[0] == 3 and min(x.shape[1:]) > 0


def _warn_once(seen: set, path: str, message: str, *args) -> None:
    """Log ``message % (path, *args, len(seen))`` the first time ``path`` joins ``seen``."""
    if path not in seen:
        seen.add(path)
        logger.warning(message, path, *args, len(seen))


class DeviceInput:
    """Encoded batches -> two augmented views on ``device``: the "device" INPUT.PIPELINE.

    ``aug``: the :class:`BatchedMocoAug` whose crop scale, size and colour stage are used.
    Call :meth:`views` with an :class:`pretrain.data.EncodedBatch`, a torch.Generator on
    ``device`` and one on the CPU (for the crop boxes). Counters: ``fallback_files`` (decoded
    on the CPU) and ``unreadable_files`` (replaced by another image), both sets of paths, so
    each file counts and is logged once.
    """

    def __init__(self, aug: BatchedMocoAug, device):
        self.aug = aug
        self.device = torch.device(device)
        self.fallback_files = set()
        self.unreadable_files = set()

    def decode(
        self, files: Sequence[torch.Tensor], paths: Sequence[str], components=None
    ) -> List[torch.Tensor]:
        """Decode byte tensors into 3xHxW uint8 RGB images on the device, one per file.

        ``components``: each file's :func:`pretrain.data.jpeg_components` when known (the
        loader workers compute them, see :class:`pretrain.data.EncodedBatch`), else read here.

        JPEGs with 1 or 3 components are decoded in one batched call; if that call fails (one
        bad file can fail the whole batch) they are decoded one by one. Anything left goes
        through the CPU decoders; a file none can read is replaced by the next decoded image
        of the batch. Raises RuntimeError only when no file of the batch can be decoded.
        """
        out: List[Optional[torch.Tensor]] = [None] * len(files)
        if components is None:
            components = [jpeg_components(d) for d in files]
        batched = [i for i, c in enumerate(components) if c in (1, 3)]
        rest = sorted(set(range(len(files))) - set(batched))
        if batched:
            try:
                decoded = decode_jpeg(
                    [files[i] for i in batched], mode=ImageReadMode.RGB, device=self.device
                )
                for i, img in zip(batched, decoded):
                    out[i] = img
            except RuntimeError:  # find the bad file(s): decode one at a time
                for i in batched:
                    try:
                        out[i] = decode_jpeg(files[i], mode=ImageReadMode.RGB, device=self.device)
                    except RuntimeError:
                        rest.append(i)
        for i in batched:
            if out[i] is not None and not _is_rgb_image(out[i]):
                out[i] = None
                rest.append(i)
        for i in sorted(rest):
            try:
                out[i] = _cpu_decode(files[i]).to(self.device)
            except Exception as e:  # no decoder reads it: replaced below
                _warn_once(
                    self.unreadable_files,
                    paths[i],
                    "Cannot decode %s (%s: %s); replaced by another image of its batch "
                    "(%d such file(s) so far)",
                    type(e).__name__,
                    e,
                )
                continue
            _warn_once(
                self.fallback_files,
                paths[i],
                "%s is not a JPEG the batched decoder reads (e.g. PNG, CMYK); decoded on the CPU "
                "(%d such file(s) so far)",
            )
        good = [i for i, x in enumerate(out) if x is not None]
        if not good:
            raise RuntimeError(f"no image of the batch could be decoded: {list(paths)}")
        for i, x in enumerate(out):
            if x is None:  # the next decodable image of the batch (deterministic)
                out[i] = out[min(good, key=lambda j: (j - i) % len(out))]
        return out

    @torch.no_grad()
    def crop(self, images: Sequence[torch.Tensor], generator=None, views: int = 1) -> torch.Tensor:
        """``views`` RandomResizedCrops per image, from its full resolution -> (views*B)x3xSxS.

        Rows ``v*B .. v*B+B-1`` are view ``v``. The boxes are drawn on the CPU (``generator``
        must be a CPU generator) from the image sizes, which the host knows without waiting
        for the device, so nothing here waits for earlier GPU work. Images of equal size are
        stacked and all their boxes resized in one ``roi_align`` call (bilinear, averaging
        ceil(box/S) x ceil(box/S) samples per output pixel when shrinking, plain bilinear when
        enlarging; docs/input_pipelines.md compares it with PIL's resize), so a batch costs a
        few launches per distinct image size instead of a few per image.
        """
        s, n = self.aug.size, len(images)
        hs = torch.tensor([im.shape[1] for im in images])
        ws = torch.tensor([im.shape[2] for im in images])
        top, left, h, w = (
            torch.cat(t)
            for t in zip(
                *(
                    sample_crop_boxes(hs, ws, self.aug.scale, generator=generator)
                    for _ in range(views)
                )
            )
        )
        boxes = torch.stack([left, top, left + w, top + h], 1).double()
        out = torch.empty(views * n, 3, s, s, device=self.device)
        groups = {}
        for i, im in enumerate(images):
            groups.setdefault(tuple(im.shape), []).append(i)
        for members in groups.values():
            stack = torch.stack([images[i] for i in members]).float()
            rows = torch.tensor([v * n + i for v in range(views) for i in members])
            index = torch.arange(len(members), dtype=torch.float64).repeat(views)
            rois = torch.cat([index[:, None], boxes[rows]], 1).float()
            crops = roi_align(stack, rois.to(self.device, non_blocking=True), s, 1.0, -1, True)
            out[rows.to(self.device, non_blocking=True)] = crops
        return out.div_(255.0).clamp_(0, 1)

    def views(self, batch, generator=None, crop_generator=None) -> List[torch.Tensor]:
        """An :class:`pretrain.data.EncodedBatch` -> [query views, key views], Bx3xSxS each.

        ``generator`` (on the device) drives the colour stage, ``crop_generator`` (on the CPU;
        ``generator`` itself when that is a CPU generator) the crop boxes.
        """
        if crop_generator is None:
            if generator is not None and generator.device.type != "cpu":
                raise ValueError("DeviceInput.views needs a CPU crop_generator for the boxes")
            crop_generator = generator
        images = self.decode(batch.files(), batch.paths, batch.components)
        crops = self.crop(images, crop_generator, views=2)
        return [self.aug.colour(c, generator) for c in crops.chunk(2)]
