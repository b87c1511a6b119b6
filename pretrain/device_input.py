"""The "device" input pipeline: JPEG bytes -> two augmented views, decoded on the training device.

Loader workers only read file bytes (:class:`pretrain.data.TwoViewDataset` with
``read_bytes=True``). Here, in the training process, a batch's JPEGs are decoded in one call of
``torchvision.io.decode_jpeg`` on the training device (batched nvJPEG on CUDA; the CPU decoder on
CPU). Each view is a RandomResizedCrop of the full-resolution image (torchvision's box
distribution, :func:`pretrain.augment.sample_crop_boxes`), resized per image to SxS, then the
batched colour stage of :class:`pretrain.augment.BatchedMocoAug`.

Files the batched decoder cannot handle (PNGs named .JPEG, CMYK JPEGs, corrupt data) are decoded
on the CPU instead (``torchvision.io.decode_image``, then PIL); a file no decoder can read is
replaced by another image of the batch. Both are counted and each file is named in the log once.
"""

import io
import logging
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.io import ImageReadMode, decode_image, decode_jpeg

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
    Call :meth:`views` with an :class:`pretrain.data.EncodedBatch` and a torch.Generator on
    ``device``. Counters: ``fallback_files`` (decoded on the CPU) and ``unreadable_files``
    (replaced by another image), both sets of paths, so each file counts and is logged once.
    """

    def __init__(self, aug: BatchedMocoAug, device, antialias: bool = True):
        self.aug = aug
        self.device = torch.device(device)
        self.antialias = antialias
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
    def crop(self, images: Sequence[torch.Tensor], generator=None) -> torch.Tensor:
        """One RandomResizedCrop per image, from its full resolution -> Bx3xSxS in [0, 1]."""
        s = self.aug.size
        hs = torch.tensor([im.shape[1] for im in images], device=self.device)
        ws = torch.tensor([im.shape[2] for im in images], device=self.device)
        boxes = torch.stack(sample_crop_boxes(hs, ws, self.aug.scale, generator=generator), 1)
        crops = []
        for im, (top, left, h, w) in zip(images, boxes.tolist()):
            patch = im[:, top : top + h, left : left + w].unsqueeze(0).float()
            crops.append(
                F.interpolate(
                    patch,
                    size=(s, s),
                    mode="bilinear",
                    align_corners=False,
                    antialias=self.antialias,
                )
            )
        return (torch.cat(crops) / 255.0).clamp_(0, 1)

    def views(self, batch, generator=None) -> List[torch.Tensor]:
        """An :class:`pretrain.data.EncodedBatch` -> [query views, key views], Bx3xSxS each."""
        images = self.decode(batch.files(), batch.paths, batch.components)
        return [self.aug.colour(self.crop(images, generator), generator) for _ in range(2)]
