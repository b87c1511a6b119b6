"""COCO-format instance-segmentation set: boxes and polygon masks, drawn like the VOC set.

Layout written by :func:`make_coco` (as detectron2's ``register_coco_instances`` reads it)::

    root/annotations/instances_train.json
    root/annotations/instances_val.json
    root/train/<id>.jpg
    root/val/<id>.jpg

Images are rendered by :func:`synthetic.voc.render_detection_image` (same shapes, textures
and clutter). Each object's mask is its visible pixels, written as COCO polygons (the outer
outline of each visible part, see :func:`mask_polygons`): like COCO's own polygons they cannot
hold holes, so a ring's mask includes its hole. Boxes are COCO ``[x, y, width, height]`` of
the visible pixels; ``area`` is the area of the polygons' mask (as COCO's); no crowd regions.
"""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
from pycocotools import mask as mask_util

from .render import SHAPES, encode_jpeg
from .voc import DET_CLASSES, render_detection_image

SPLITS = ("train", "val")
_SPLIT_IDS = {"train": 0, "val": 1}


def annotation_path(root: str, split: str) -> str:
    """Return ``<root>/annotations/instances_<split>.json``."""
    return os.path.join(root, "annotations", f"instances_{split}.json")


def mask_polygons(mask: np.ndarray) -> list:
    """Outer outlines of the parts of a binary mask as COCO polygons.

    The outlines are traced on the mask upsampled 2x (nearest) and halved, so they run along
    pixel edges rather than through the boundary pixels' centres: pycocotools rasterises them
    back to exactly the mask's pixels (holes filled); through the centres it lost about a
    tenth of the pixels of a small object.

    Args:
        mask: HxW bool or 0/1 array.

    Returns:
        list of ``[x1, y1, x2, y2, ...]`` float lists, one per connected part (at least 3
        points each).
    """
    up = np.kron(mask.astype(np.uint8), np.ones((2, 2), np.uint8))
    contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [(c.reshape(-1) / 2.0).tolist() for c in contours if len(c) >= 3]


def make_coco(
    root: str,
    seed: int = 0,
    train_images: int = 60,
    val_images: int = 30,
    min_side: int = 128,
    max_side: int = 192,
    max_objects: int = 4,
    classes=DET_CLASSES,
    jpeg_quality: int = 90,
) -> dict:
    """Write a seeded COCO-format instance-segmentation set under ``root``; return its summary.

    Args:
        root: output directory (see the module docstring for the layout).
        seed: images depend only on (seed, split, index).
        train_images, val_images: images per split.
        min_side, max_side: image width and height are drawn from this range (pixels).
        max_objects: each image has 1..max_objects objects before occlusion filtering.
        classes: object names, a subset of the shape vocabulary; category ids are 1, 2, ...
            in this order.
        jpeg_quality: fixed JPEG quality, so bytes are reproducible.

    Returns:
        ``{"classes", "seed", "splits": {"train": {"images", "objects": {class: n}}, ...}}``,
        also written to ``root/summary.json``.
    """
    unknown = [c for c in classes if c not in SHAPES]
    if unknown:
        raise ValueError(f"unknown classes {unknown}; choose from {SHAPES}")
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(classes)]
    category_id = {c["name"]: c["id"] for c in categories}
    summary = {"classes": list(classes), "seed": seed, "splits": {}}
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    for split, n in zip(SPLITS, (train_images, val_images)):
        os.makedirs(os.path.join(root, split), exist_ok=True)
        images, annotations = [], []
        counts = dict.fromkeys(classes, 0)
        for i in range(n):
            rng = np.random.default_rng([seed, _SPLIT_IDS[split], i])
            w, h = (int(v) for v in rng.integers(min_side, max_side + 1, size=2))
            img, objects = render_detection_image(rng, w, h, classes, max_objects, with_masks=True)
            file_name = f"{i + 1:06d}.jpg"
            with open(os.path.join(root, split, file_name), "wb") as f:
                f.write(encode_jpeg(img, jpeg_quality))
            images.append({"id": i + 1, "file_name": file_name, "width": w, "height": h})
            for obj in objects:
                polygons = mask_polygons(obj["mask"])
                if not polygons:
                    continue
                x0, y0, x1, y1 = (v - 1 for v in obj["bbox"])  # VOC 1-based -> 0-based pixels
                rle = mask_util.merge(mask_util.frPyObjects(polygons, h, w))
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": i + 1,
                        "category_id": category_id[obj["name"]],
                        "bbox": [x0, y0, x1 - x0 + 1, y1 - y0 + 1],
                        "area": int(mask_util.area(rle)),
                        "segmentation": polygons,
                        "iscrowd": 0,
                    }
                )
                counts[obj["name"]] += 1
        dataset = {
            "info": {"description": "moco-detectron2 synthetic", "seed": seed},
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
        with open(annotation_path(root, split), "w") as f:
            json.dump(dataset, f)
        summary["splits"][split] = {"images": n, "objects": counts}
    with open(os.path.join(root, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
    return summary
