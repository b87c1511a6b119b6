"""ImageFolder-style classification set: ``root/{train,val}/<class>/<nnnnn>.jpg``."""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from .render import (
    SHAPE_TEXTURE,
    SHAPES,
    add_clutter,
    background,
    encode_jpeg,
    paint_object,
    shape_mask,
)

CLS_CLASSES = SHAPES  # class folder names, in index order (ImageFolder re-sorts them by name)
_SPLIT_IDS = {"train": 0, "val": 1}


def render_classification_image(
    class_index: int, image_size: int, rng: np.random.Generator, clutter: int = 4
) -> np.ndarray:
    """One RGB float32 image (image_size x image_size x 3) showing one object of the class.

    The object is large (radius 30-45% of the image) at a jittered position, over a cluttered
    background, and sometimes partly covered by a distractor drawn on top.
    """
    shape = CLS_CLASSES[class_index]
    hw = (image_size, image_size)
    img = background(hw, rng, clutter=clutter)
    radius = image_size * rng.uniform(0.30, 0.45)
    center = tuple(image_size / 2 + rng.uniform(-0.15, 0.15, size=2) * image_size)
    mask = shape_mask(shape, hw, center, radius, rng)
    paint_object(img, mask, SHAPE_TEXTURE[shape], center, radius, rng)
    if rng.random() < 0.3:  # partial occlusion by one distractor
        add_clutter(img, rng)
    return img


def _write_class(out_dir, split, ci, per_class, seed, image_size, clutter, jpeg_quality) -> None:
    """Render and write the ``per_class`` images of class index ``ci`` of ``split``."""
    for i in range(per_class):
        rng = np.random.default_rng([seed, _SPLIT_IDS[split], ci, i])
        img = render_classification_image(ci, image_size, rng, clutter=clutter)
        with open(os.path.join(out_dir, f"{i:05d}.jpg"), "wb") as f:
            f.write(encode_jpeg(img, jpeg_quality))


def make_classification(
    root: str,
    seed: int = 0,
    num_classes: int = len(CLS_CLASSES),
    train_per_class: int = 100,
    val_per_class: int = 25,
    image_size: int = 64,
    clutter: int = 4,
    jpeg_quality: int = 90,
    workers: int = 1,
) -> dict:
    """Write a seeded ImageFolder classification set under ``root`` and return its summary.

    Args:
        root: output directory; ``train/<class>/`` and ``val/<class>/`` are created in it.
        seed: images depend only on (seed, split, class, index), so growing a split keeps the
            images that were already there.
        num_classes: how many of ``CLS_CLASSES`` to use (1-8), in order.
        train_per_class, val_per_class: images per class in each split.
        image_size: side of the square images in pixels.
        clutter: number of background distractors per image.
        jpeg_quality: fixed JPEG quality (part of what makes the bytes reproducible).
        workers: processes rendering (split, class) folders in parallel; the bytes do not
            depend on it.

    Returns:
        ``{"classes": [...], "counts": {split: {class: n}}, "image_size", "seed"}``, also written
        to ``root/summary.json``.
    """
    if not 1 <= num_classes <= len(CLS_CLASSES):
        raise ValueError(f"num_classes must be in 1..{len(CLS_CLASSES)}, got {num_classes}")
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16 px, got {image_size}")
    classes = list(CLS_CLASSES[:num_classes])
    counts, jobs = {}, []
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        counts[split] = {}
        for ci, name in enumerate(classes):
            out_dir = os.path.join(root, split, name)
            os.makedirs(out_dir, exist_ok=True)
            jobs.append((out_dir, split, ci, per_class, seed, image_size, clutter, jpeg_quality))
            counts[split][name] = per_class
    if workers > 1:
        # every image depends only on its own (seed, split, class, index): same bytes in parallel
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_write_class, *zip(*jobs)))
    else:
        for job in jobs:
            _write_class(*job)
    summary = {"classes": classes, "counts": counts, "image_size": image_size, "seed": seed}
    with open(os.path.join(root, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
    return summary
