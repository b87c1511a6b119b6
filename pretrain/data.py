"""Pretraining data: image lists (ImageFolder roots or text files), two-view datasets, loaders.

Images are listed by :func:`common.images.scan_image_folder` and read by the project's one
reading rule, :func:`common.images.read_rgb` (docs/input_pipelines.md, "Reading rule"). A
corrupt or unreadable image never stops a run: it is logged with its path, counted, and
replaced by the next readable image in the list (deterministically, so resumed runs see the same
data). Which files were passed over travels with each sample, so the training loop can count
distinct unreadable files across loader workers and epochs. For the "device" pipeline the
dataset returns file bytes, collated into one :class:`pretrain.device_input.EncodedBatch` per
batch, and decoding happens on the training device (:mod:`pretrain.device_input`).
"""

import logging
import os
from typing import List, Sequence

import numpy as np
import torch
from detectron2.utils.file_io import PathManager  # iopath, with detectron2's handlers
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from common.images import UnreadableImage, read_image_bytes, read_rgb, scan_image_folder

from .augment import TwoCropsTransform, augmentation_args, moco_transform
from .device_input import EncodedImage, collate_encoded

logger = logging.getLogger(__name__)


def read_file_list(list_file: str, key: str = "DATA.TRAIN") -> List[str]:
    """Read a text file of image paths (one per line; extra columns such as labels ignored).

    Relative paths are taken relative to the list file's folder. Blank lines and lines starting
    with '#' are skipped. Raises ValueError naming ``key`` if the list is empty.
    """
    base = os.path.dirname(os.path.abspath(list_file))
    paths = []
    with PathManager.open(list_file, "r") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            p = line.split()[0]
            paths.append(p if os.path.isabs(p) else os.path.join(base, p))
    if not paths:
        raise ValueError(f"{key}={list_file!r} lists no images; write one image path per line")
    return paths


def list_images(source: str, key: str = "DATA.TRAIN") -> List[str]:
    """Image paths of ``source``: an ImageFolder root, or a text file listing images."""
    if not source:
        raise ValueError(f"{key} is empty; set it to an ImageFolder root or an image list file")
    if os.path.isfile(source):
        return read_file_list(source, key)
    return scan_image_folder(source, key)[0]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of sample ``index`` in ``epoch``: a fixed function of the three."""
    return ((seed * 1_000_003 + epoch) * 100_000_007 + index) % (2**63 - 1)


class EpochSampler(DistributedSampler):
    """A DistributedSampler that yields ``(epoch, index)`` so datasets can seed per sample.

    Passing the epoch with each index (rather than through the dataset object) also reaches
    persistent loader workers, which hold their own copy of the dataset.
    """

    def __iter__(self):
        return ((self.epoch, i) for i in super().__iter__())


class TwoViewDataset(Dataset):
    """Images at ``paths`` -> ``(views, skip)``; ``views`` is ``transform(image)``.

    ``transform`` takes an RGB PIL image (e.g. :class:`TwoCropsTransform`). ``skip`` is a long
    tensor ``(first, count)``: ``count`` unreadable files were passed over to produce this
    sample, the files ``(first + k) % len(paths)`` for k < count (``first`` is the sample's own
    index). The training loop uses it to count distinct unreadable files; each loader process
    names an unreadable file in the log once. Indexed by ``(epoch, i)``
    (see :class:`EpochSampler`), the transform's torch randomness is seeded from
    (``seed``, epoch, i), so augmentation does not depend on worker count or on earlier epochs.
    ``cache=True`` keeps each result in memory after its first load (in each loader process);
    only for a deterministic ``transform`` such as :class:`LoadAsUint8` on a small dataset.
    ``read_bytes=True`` (the "device" pipeline) does not decode: a sample is
    ``(EncodedImage(bytes as a 1-D uint8 tensor, path), skip)``; only unreadable files (I/O
    errors, empty files, FIFOs) are skipped here, decoding failures are handled on the device.
    """

    def __init__(
        self,
        paths: Sequence[str],
        transform=None,
        seed: int = 0,
        cache: bool = False,
        read_bytes: bool = False,
    ):
        self.paths = list(paths)
        self.transform = transform
        self.seed = seed
        self.cache = {} if cache else None
        self.read_bytes = read_bytes
        self._warned = set()  # files this process has already named in the log

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index):
        epoch, index = index if isinstance(index, tuple) else (None, index)
        if epoch is None:
            return self._load(index)
        # fork_rng keeps the caller's RNG untouched when there are no loader workers
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, epoch, index))
            return self._load(index)

    def _load(self, index: int):
        if self.cache is not None:
            if index not in self.cache:
                self.cache[index] = self._read(index)
            return self.cache[index]
        return self._read(index)

    def _read(self, index: int):
        for skipped in range(len(self.paths)):
            path = self.paths[(index + skipped) % len(self.paths)]
            try:
                if self.read_bytes:
                    data = read_image_bytes(path)
                    out = EncodedImage(torch.frombuffer(bytearray(data), dtype=torch.uint8), path)
                else:
                    out = self.transform(read_rgb(path))
            except UnreadableImage as e:  # skip, never crash a long run
                if path not in self._warned:
                    self._warned.add(path)
                    logger.warning("Skipping unreadable image %s", e)
                continue
            return out, torch.tensor([index, skipped])
        raise RuntimeError(f"no readable image among the {len(self.paths)} files of the data set")


def skipped_indices(skip: torch.Tensor, n_images: int) -> List[int]:
    """Indices of the files a batch passed over: ``skip`` is the Bx2 ``(first, count)`` of
    :class:`TwoViewDataset` samples, ``n_images`` the dataset length."""
    return [
        (first + k) % n_images for first, count in skip.view(-1, 2).tolist() for k in range(count)
    ]


class LoadAsUint8:
    """PIL image -> uint8 tensor 3 x size x size (shorter side resized, center crop).

    The decode step of the batched augmentation path: crops and colour ops happen later on the
    whole batch (see :class:`pretrain.augment.BatchedMocoAug`).
    """

    def __init__(self, size: int):
        self.size = size

    def __call__(self, img: Image.Image) -> torch.Tensor:
        w, h = img.size
        s = self.size / min(w, h)
        img = img.resize(
            (max(self.size, round(w * s)), max(self.size, round(h * s))), Image.BILINEAR
        )
        w, h = img.size
        left, top = (w - self.size) // 2, (h - self.size) // 2
        img = img.crop((left, top, left + self.size, top + self.size))
        return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)


def load_size(cfg) -> int:
    """Square decode size of the batched path: INPUT.LOAD_SIZE, or 1.15 x INPUT.SIZE."""
    return cfg.INPUT.LOAD_SIZE or int(round(cfg.INPUT.SIZE * 1.15))


def build_train_dataset(cfg) -> TwoViewDataset:
    """The pretraining dataset of ``cfg.DATA.TRAIN`` for ``cfg.INPUT.PIPELINE``: two PIL views
    ("pil"), one uint8 square ("batched") or the file's bytes ("device")."""
    paths = list_images(cfg.DATA.TRAIN, "DATA.TRAIN")
    pipeline = cfg.INPUT.PIPELINE
    if pipeline == "device":
        return TwoViewDataset(paths, seed=cfg.SEED, read_bytes=True)
    if pipeline == "batched":
        transform = LoadAsUint8(load_size(cfg))
    else:
        transform = TwoCropsTransform(moco_transform(**augmentation_args(cfg)))
    # validate_cfg allows CACHE_DECODED only for "batched" (a deterministic transform)
    return TwoViewDataset(paths, transform, seed=cfg.SEED, cache=cfg.DATA.CACHE_DECODED)


def build_train_loader(dataset, cfg, world_size: int, rank: int, pin_memory: bool):
    """A drop_last loader over ``dataset`` (:func:`build_train_dataset` of the same ``cfg``)
    with a DistributedSampler (seeded by SEED); "device" batches are collated into
    :class:`pretrain.device_input.EncodedBatch`.

    Returns (loader, sampler); call ``sampler.set_epoch(epoch)`` before each epoch. The
    per-process batch is SOLVER.BATCH_SIZE / world_size.
    """
    if cfg.SOLVER.BATCH_SIZE % world_size:
        raise ValueError(
            f"SOLVER.BATCH_SIZE={cfg.SOLVER.BATCH_SIZE} is not divisible by the world size "
            f"{world_size}; use a multiple of the number of processes"
        )
    per_proc = cfg.SOLVER.BATCH_SIZE // world_size
    if len(dataset) < cfg.SOLVER.BATCH_SIZE:
        raise ValueError(
            f"DATA.TRAIN has {len(dataset)} images, fewer than one batch "
            f"(SOLVER.BATCH_SIZE={cfg.SOLVER.BATCH_SIZE}); lower the batch or add images"
        )
    sampler = EpochSampler(
        dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=cfg.SEED, drop_last=True
    )
    workers = cfg.DATA.NUM_WORKERS
    encoded = cfg.INPUT.PIPELINE == "device"  # the dataset yields file bytes
    loader = DataLoader(
        dataset,
        batch_size=per_proc,
        sampler=sampler,
        num_workers=workers,
        # file bytes go to the decoder from pageable memory (nvJPEG copies them itself)
        pin_memory=pin_memory and not encoded,
        collate_fn=collate_encoded if encoded else None,
        drop_last=True,
        persistent_workers=workers > 0,
        # Its own generator: creating an iterator must not consume the global RNG, which
        # drives shuffle-BN permutations (persistent workers create one only in epoch 1).
        generator=torch.Generator().manual_seed(cfg.SEED),
    )
    return loader, sampler
