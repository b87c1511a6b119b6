"""Labelled ImageFolder sets of the kNN monitor and the linear evaluation, read by the one rule.

:class:`LabelledImages` lists ``root/<class>/**/<image>`` with
:func:`common.images.scan_image_folder` and reads each file with :func:`common.images.read_rgb`,
like the pretraining loaders. An unreadable file does not stop a run: it is named in the log of
the loader process that meets it and left out of its batch; :func:`collate_readable` hands its
path on, so the caller counts and names the distinct files left out (:class:`SkipCounter`).
"""

import logging
from typing import List, Optional, Sequence, Tuple

import torch
from torch.utils.data import Dataset, default_collate

from common.images import UnreadableImage, read_rgb, scan_image_folder

logger = logging.getLogger(__name__)


class LabelledImages(Dataset):
    """An ImageFolder set: item i -> ``(transform(picture), label, "")``, or
    ``(None, label, path)`` when the file is unreadable (see :func:`collate_readable`).

    Attributes as torchvision's ``ImageFolder``: ``root``, ``classes``, ``samples`` ((path,
    label) pairs), ``targets``, ``transform``. ``key`` names the set in messages (a config key
    or a CLI argument). Raises FileNotFoundError / ValueError naming ``key`` when ``root`` is
    missing or holds no images.
    """

    def __init__(self, root: str, transform, key: str):
        self.root, self.transform, self.key = root, transform, key
        paths, self.targets, self.classes = scan_image_folder(root, key)
        self.samples = list(zip(paths, self.targets))
        self._warned = set()  # files this process has named (epochs of one loader worker)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        try:
            image = read_rgb(path)
        except UnreadableImage as e:
            if path not in self._warned:
                self._warned.add(path)
                logger.warning("%s: skipping unreadable image %s", self.key, e)
            return None, label, path
        return self.transform(image), label, ""


def collate_readable(samples) -> Tuple[Optional[torch.Tensor], torch.Tensor, List[str]]:
    """DataLoader collate of :class:`LabelledImages` items -> (images, labels, skipped paths).

    Unreadable items are left out of ``images`` and ``labels``; ``images`` is None when the
    whole batch was unreadable.
    """
    good = [(x, y) for x, y, _ in samples if x is not None]
    skipped = [p for x, _, p in samples if x is None]
    if not good:
        return None, torch.zeros(0, dtype=torch.long), skipped
    images, labels = default_collate(good)
    return images, labels, skipped


def check_same_classes(a: LabelledImages, b: LabelledImages) -> None:
    """Raise ValueError naming both sets when their class folders differ."""
    if a.classes != b.classes:
        only_a = sorted(set(a.classes) - set(b.classes))[:5]
        only_b = sorted(set(b.classes) - set(a.classes))[:5]
        raise ValueError(
            f"the class folders of {a.key}={a.root!r} ({len(a.classes)}) and {b.key}={b.root!r} "
            f"({len(b.classes)}) differ (only in the first: {only_a}, only in the second: "
            f"{only_b}, or another order); give both sets the same class sub-folders"
        )


class SkipCounter:
    """Distinct unreadable files of one pass over a :class:`LabelledImages` loader."""

    def __init__(self, key: str):
        self.key, self.paths = key, set()

    def add(self, paths: Sequence[str]) -> None:
        """Count the skipped ``paths`` of one batch."""
        self.paths.update(paths)

    def report(self) -> None:
        """Log how many files were left out, naming the first few."""
        if self.paths:
            names = sorted(self.paths)
            logger.warning(
                "%s: %d unreadable image(s) left out: %s%s",
                self.key,
                len(names),
                ", ".join(names[:5]),
                " ..." if len(names) > 5 else "",
            )
