"""The "device" input pipeline: JPEG bytes -> two augmented views, decoded on the training device.

Loader workers only read file bytes and JPEG headers (:class:`pretrain.data.TwoViewDataset`
with ``read_bytes=True``, :func:`jpeg_header`) and hand them over as one :class:`EncodedBatch`
per batch (:func:`collate_encoded`). Here, in the training process, a
batch's JPEGs are decoded in one call of TorchCodec's ``decode_jpeg`` where it is installed,
else torchvision's (batched nvJPEG on CUDA; libjpeg-turbo on the CPU), EXIF orientation
applied (:func:`jpeg_decoder`, ``INPUT.JPEG_DECODER``). Each view is a RandomResizedCrop of
the full-resolution image (torchvision's box distribution,
:func:`pretrain.augment.sample_crop_boxes`, drawn on the CPU), resized to SxS with
``roi_align`` per group of equally sized images, then the batched colour stage of
:class:`pretrain.augment.BatchedMocoAug`. Nothing waits for the device, so the whole stage can
run ahead of the training step (:mod:`pretrain.prefetch`).

Files the batched decoder cannot handle (PNGs named .JPEG, CMYK JPEGs, truncated or corrupt
data) are read on the CPU instead, by the project's reading rule (:func:`common.images.read_rgb`,
the same as the other pipelines); a file it refuses is replaced by another image of the batch.
Both are counted and each file is named in the log once.
"""

import io
import logging
import warnings
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torchvision.ops import roi_align

from common.images import read_rgb

from .augment import BatchedMocoAug, sample_crop_boxes
from .config import JPEG_DECODERS

logger = logging.getLogger(__name__)


# --- What the loader workers hand over: undecoded files, their headers, whole batches.


class EncodedImage(NamedTuple):
    """A file's undecoded bytes (1-D uint8 tensor) and its path (for log messages)."""

    data: torch.Tensor
    path: str


class JpegHeader(NamedTuple):
    """What the "device" pipeline needs to know of a file before decoding it (see
    :func:`jpeg_header`): ``components`` (1 grey, 3 colour; 0 when the batched JPEG decoders
    must not take the file) and the EXIF ``orientation`` (1-8, 1 = upright)."""

    components: int
    orientation: int


def jpeg_header(data: torch.Tensor) -> JpegHeader:
    """Read a file's JPEG header with PIL (no decoding); ``data`` is its bytes (1-D uint8 CPU).

    ``components`` is 0 for anything but a complete 1- or 3-component JPEG: other formats, CMYK
    and YCCK JPEGs (4 components), and JPEGs without the end-of-image marker near their end (a
    file cut short, which a GPU decoder may turn into a half-grey picture instead of failing).
    Such files are decoded on the CPU by the reading rule, which refuses truncated data.
    """
    raw = data.numpy().tobytes()
    try:
        with Image.open(io.BytesIO(raw)) as img:
            if img.format != "JPEG":
                return JpegHeader(0, 1)
            components = len(img.getbands())
            orientation = int(img.getexif().get(0x0112, 1) or 1)
    except Exception:  # not an image PIL recognises, or a broken header
        return JpegHeader(0, 1)
    complete = b"\xff\xd9" in raw[-32:]  # EOI; a few bytes of padding after it are common
    if components not in (1, 3) or not complete:
        components = 0
    return JpegHeader(components, orientation if 1 <= orientation <= 8 else 1)


class EncodedBatch(NamedTuple):
    """Undecoded files of a batch: all bytes in one flat uint8 tensor (one shared-memory
    transfer from a loader worker instead of one per file), per-file ``sizes``, ``paths`` and
    ``headers`` (:func:`jpeg_header`, read in the worker so the training process does not
    scan headers)."""

    flat: torch.Tensor
    sizes: List[int]
    paths: List[str]
    headers: List[JpegHeader]

    def files(self) -> List[torch.Tensor]:
        """The per-file 1-D uint8 byte tensors (views into ``flat``)."""
        return list(torch.split(self.flat, self.sizes))


def collate_encoded(samples) -> Tuple[EncodedBatch, torch.Tensor]:
    """DataLoader collate of ``(EncodedImage, skip)`` samples -> ``(EncodedBatch, Bx2 skip)``."""
    images = [s[0] for s in samples]
    flat = torch.cat([im.data for im in images])
    batch = EncodedBatch(
        flat,
        [int(im.data.numel()) for im in images],
        [im.path for im in images],
        [jpeg_header(im.data) for im in images],
    )
    return batch, torch.stack([s[1] for s in samples])


# --- Decoding, cropping and the colour stage, in the training process.


def orient(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """Apply EXIF ``orientation`` (1-8) to a CxHxW image, as PIL's ``ImageOps.exif_transpose``."""
    flips = {2: (-1,), 3: (-1, -2), 4: (-2,)}
    if orientation in flips:
        return image.flip(flips[orientation])
    if orientation == 5:  # transpose
        return image.transpose(-1, -2)
    if orientation == 6:  # 90 degrees clockwise
        return image.rot90(-1, (-2, -1))
    if orientation == 7:  # transverse
        return image.transpose(-1, -2).flip((-1, -2))
    if orientation == 8:  # 90 degrees counter-clockwise
        return image.rot90(1, (-2, -1))
    return image


def _torchcodec_decoder():
    from torchcodec.decoders import decode_jpeg  # optional: imported only when chosen

    def decode(files, headers, device):  # EXIF orientation is always applied by TorchCodec
        return decode_jpeg(list(files), mode="RGB", device=device)

    return decode


def _torchvision_decoder():
    from torchvision.io import ImageReadMode, decode_jpeg

    def decode(files, headers, device):
        # torchvision's CUDA decoder ignores apply_exif_orientation: orient here, everywhere
        with warnings.catch_warnings():  # deprecated in 0.29 in favour of TorchCodec
            warnings.simplefilter("ignore")
            out = decode_jpeg(list(files), mode=ImageReadMode.RGB, device=device)
        return [orient(x, h.orientation) for x, h in zip(out, headers)]

    return decode


def jpeg_decoder(name: str = "auto") -> tuple:
    """The batched JPEG decoder ``name`` -> (name, decode).

    ``decode(files, headers, device)`` takes 1-D uint8 CPU byte tensors and their
    :class:`pretrain.data.JpegHeader`, and returns 3xHxW uint8 RGB images on ``device``, EXIF
    orientation applied. "auto" is TorchCodec where it imports, else torchvision.
    """
    if name not in JPEG_DECODERS:
        raise ValueError(f"INPUT.JPEG_DECODER={name!r}: use one of {', '.join(JPEG_DECODERS)}")
    if name in ("auto", "torchcodec"):
        try:
            return "torchcodec", _torchcodec_decoder()
        except Exception as e:  # not installed, or built for another torch / CUDA (OSError)
            if name == "torchcodec":
                raise ImportError(
                    f"INPUT.JPEG_DECODER torchcodec: TorchCodec does not import ({e}); "
                    "install the build for this torch (docs/install.md), or set "
                    "INPUT.JPEG_DECODER auto"
                ) from e
            logger.info("TorchCodec does not import (%s); JPEGs decoded by torchvision", e)
    return "torchvision", _torchvision_decoder()


def _pil_decode(data: torch.Tensor, path: str) -> torch.Tensor:
    """Any image file's bytes -> 3xHxW uint8 RGB on the CPU by the reading rule; raises
    :class:`common.images.UnreadableImage`."""
    rgb = read_rgb(path, data.numpy().tobytes())
    return torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1)


def _is_rgb_image(x) -> bool:
    return torch.is_tensor(x) and x.dim() == 3 and x.shape[0] == 3 and min(x.shape[1:]) > 0


def _warn_once(seen: set, path: str, message: str, *args) -> None:
    """Log ``message % (path, *args, len(seen))`` the first time ``path`` joins ``seen``."""
    if path not in seen:
        seen.add(path)
        logger.warning(message, path, *args, len(seen))


class DeviceInput:
    """Encoded batches -> two augmented views on ``device``: the "device" INPUT.PIPELINE's view
    maker (see :func:`pretrain.views.build_view_maker`).

    ``aug``: the :class:`BatchedMocoAug` whose crop scale, size and colour stage are used;
    ``decoder``: INPUT.JPEG_DECODER; ``channels_last``: return the views in that memory format.
    Call :meth:`views` with an :class:`EncodedBatch` and the epoch's
    :class:`pretrain.views.ViewGenerators`. Counters: ``fallback_files`` (decoded on the CPU)
    and ``unreadable_files`` (replaced by another image), both sets of paths, so each file
    counts and is logged once.
    """

    def __init__(
        self, aug: BatchedMocoAug, device, decoder: str = "auto", channels_last: bool = False
    ):
        self.aug = aug
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.decoder_name, self._decode_jpegs = jpeg_decoder(decoder)
        self.fallback_files = set()
        self.unreadable_files = set()

    def decode(
        self,
        files: Sequence[torch.Tensor],
        paths: Sequence[str],
        headers: Optional[Sequence[JpegHeader]] = None,
    ) -> List[torch.Tensor]:
        """Decode byte tensors into 3xHxW uint8 RGB images on the device, one per file.

        ``headers``: each file's :func:`pretrain.data.jpeg_header` when known (the loader
        workers read them, see :class:`EncodedBatch`), else read here.

        Complete 1- and 3-component JPEGs are decoded in one batched call of the JPEG decoder
        (:func:`jpeg_decoder`); if that call fails (one bad file can fail the whole batch) they
        are decoded one by one. Everything else (other formats, CMYK/YCCK, truncated files, and
        what the batched decoder refused) is read on the CPU by the reading rule
        (:func:`common.images.read_rgb`), so every pipeline gives the same picture; a file it
        refuses is named and replaced by the next decoded image of the batch. Raises
        RuntimeError only when no file of the batch can be decoded.
        """
        out: List[Optional[torch.Tensor]] = [None] * len(files)
        if headers is None:
            headers = [jpeg_header(d) for d in files]
        batched = [i for i, h in enumerate(headers) if h.components in (1, 3)]
        rest = sorted(set(range(len(files))) - set(batched))
        self._decode_batched(files, headers, batched, out, rest)
        for i in sorted(rest):
            try:
                out[i] = _pil_decode(files[i], paths[i]).to(self.device)
            except ValueError as e:  # the reading rule refuses it: replaced below
                _warn_once(
                    self.unreadable_files,
                    paths[i],
                    "Cannot decode %s (%s); replaced by another image of its batch "
                    "(%d such file(s) so far)",
                    getattr(e, "reason", e),
                )
                continue
            _warn_once(
                self.fallback_files,
                paths[i],
                "%s is not a JPEG the batched decoder reads (e.g. PNG, CMYK, cut short); decoded "
                "on the CPU (%d such file(s) so far)",
            )
        good = [i for i, x in enumerate(out) if x is not None]
        if not good:
            raise RuntimeError(f"no image of the batch could be decoded: {list(paths)}")
        for i, x in enumerate(out):
            if x is None:  # the next decodable image of the batch (deterministic)
                out[i] = out[min(good, key=lambda j: (j - i) % len(out))]
        return out

    def _decode_batched(self, files, headers, batched, out, rest) -> None:
        """Decode ``files[i]`` for i in ``batched`` into ``out``; failures join ``rest``."""
        if not batched:
            return
        try:
            decoded = self._decode_jpegs(
                [files[i] for i in batched], [headers[i] for i in batched], self.device
            )
            for i, img in zip(batched, decoded):
                out[i] = img
        except RuntimeError:  # find the bad file(s): decode one at a time
            for i in batched:
                try:
                    out[i] = self._decode_jpegs([files[i]], [headers[i]], self.device)[0]
                except RuntimeError:
                    rest.append(i)
        for i in batched:
            if out[i] is not None and not _is_rgb_image(out[i]):
                out[i] = None
                rest.append(i)

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

    def views(self, batch: EncodedBatch, generators) -> Tuple[List[torch.Tensor], List[str]]:
        """An :class:`EncodedBatch` -> ([query views, key views], Bx3xSxS each; the paths of the
        files found unreadable so far).

        ``generators`` (:class:`pretrain.views.ViewGenerators`): ``colour`` (on the device)
        drives the colour stage, ``crop`` (on the CPU) the crop boxes.
        """
        if generators.crop is not None and generators.crop.device.type != "cpu":
            raise ValueError("DeviceInput.views needs a CPU generator for the crop boxes")
        images = self.decode(batch.files(), batch.paths, batch.headers)
        crops = self.crop(images, generators.crop, views=2)
        views = [self.aug.colour(c, generators.colour) for c in crops.chunk(2)]
        if self.channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        return views, list(self.unreadable_files)  # a copy: the prefetch thread adds to the set
