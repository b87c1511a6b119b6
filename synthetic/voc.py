"""PASCAL-VOC-format detection set (its annotation checker is ``detection.voc_check``).

Layout written by :func:`make_voc` (as detectron2's ``register_pascal_voc`` expects)::

    root/VOC2007/JPEGImages/<id>.jpg
    root/VOC2007/Annotations/<id>.xml
    root/VOC2007/ImageSets/Main/{trainval,test}.txt
    root/VOC2012/...                                   (trainval only, as the real VOC2012)

Boxes follow the VOC convention: 1-based inclusive pixel indices, so a box covering the whole
image is ``xmin=1, ymin=1, xmax=width, ymax=height``.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET

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

DET_CLASSES = SHAPES[:6]  # ("disk", "square", "triangle", "star", "cross", "ring")
_SPLIT_IDS = {"trainval": 0, "test": 1}
_MIN_VISIBLE_PX = 12  # objects hidden below this are not annotated at all


def _box_iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def render_detection_image(
    rng: np.random.Generator,
    width: int,
    height: int,
    classes=DET_CLASSES,
    max_objects: int = 4,
    clutter: int = 6,
    size_range: tuple = (None, 1.0 / 3.0),
    distractor_p: float = 0.5,
    with_masks: bool = False,
) -> tuple:
    """Render one detection image; returns ``(rgb float32 HxWx3, list of object dicts)``.

    Each object dict has ``name``, ``bbox`` (VOC 1-based xmin, ymin, xmax, ymax of the visible
    pixels), ``truncated`` (cut by the image border) and ``difficult`` (small or mostly hidden);
    with ``with_masks`` also ``mask``, its visible pixels (bool HxW; the pixels are the same).
    Objects are drawn in order, so later ones partly occlude earlier ones; radii are log-uniform
    in ``size_range`` (fractions of the short side; ``None`` as the lower end: 6 pixels).
    ``clutter`` is the number of background distractors and ``distractor_p`` the probability of
    one more distractor drawn over the objects.
    """
    hw = (height, width)
    pad = max(width, height) // 2  # shapes are drawn on a padded canvas to measure truncation
    img = background(hw, rng, clutter=clutter)
    label = np.full(hw, -1, np.int32)
    placed, full_areas, names, cut = [], [], [], []
    short = min(width, height)
    r_lo = 6.0 if size_range[0] is None else max(6.0, size_range[0] * short)
    r_hi = max(r_lo + 1.0, size_range[1] * short)
    for k in range(int(rng.integers(1, max_objects + 1))):
        for _ in range(10):  # reject placements that would hide an earlier object entirely
            radius = float(np.exp(rng.uniform(np.log(r_lo), np.log(r_hi))))
            cx, cy = rng.uniform(0.05, 0.95) * width, rng.uniform(0.05, 0.95) * height
            box = (cx - radius, cy - radius, cx + radius, cy + radius)
            if all(_box_iou(box, b) < 0.4 for b in placed):
                break
        name = classes[int(rng.integers(len(classes)))]
        padded = shape_mask(
            name, (height + 2 * pad, width + 2 * pad), (cx + pad, cy + pad), radius, rng
        )
        mask = padded[pad : pad + height, pad : pad + width]
        paint_object(img, mask, SHAPE_TEXTURE[name], (cx, cy), radius, rng)
        label[mask.astype(bool)] = k
        placed.append(box)
        full_areas.append(int(padded.sum()))
        cut.append(int(mask.sum()) < full_areas[-1])  # part of the shape fell outside
        names.append(name)
    if rng.random() < distractor_p:  # a distractor over the objects: occlusion by non-objects too
        before = img.copy()
        add_clutter(img, rng)
        label[np.any(img != before, axis=2)] = -1
    objects = []
    for k, name in enumerate(names):
        ys, xs = np.nonzero(label == k)
        if len(xs) < _MIN_VISIBLE_PX:
            continue
        visible = len(xs) / max(full_areas[k], 1)
        x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
        small = max(x1 - x0, y1 - y0) + 1 < 12
        objects.append(
            {
                "name": name,
                "bbox": (x0 + 1, y0 + 1, x1 + 1, y1 + 1),  # 0-based inclusive -> VOC 1-based
                "truncated": int(cut[k]),
                "difficult": int(small or visible < 0.35),
            }
        )
        if with_masks:
            objects[-1]["mask"] = label == k
    return img, objects


def _annotation_xml(folder: str, filename: str, width: int, height: int, objects) -> ET.Element:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = folder
    ET.SubElement(root, "filename").text = filename
    source = ET.SubElement(root, "source")
    ET.SubElement(source, "database").text = "moco-detectron2 synthetic"
    size = ET.SubElement(root, "size")
    for key, val in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, key).text = str(val)
    ET.SubElement(root, "segmented").text = "0"
    for obj in objects:
        node = ET.SubElement(root, "object")
        ET.SubElement(node, "name").text = obj["name"]
        ET.SubElement(node, "pose").text = "Unspecified"
        ET.SubElement(node, "truncated").text = str(obj["truncated"])
        ET.SubElement(node, "difficult").text = str(obj["difficult"])
        bnd = ET.SubElement(node, "bndbox")
        for key, val in zip(("xmin", "ymin", "xmax", "ymax"), obj["bbox"]):
            ET.SubElement(bnd, key).text = str(val)
    ET.indent(root)
    return root


def make_voc(
    root: str,
    seed: int = 0,
    years=("2007", "2012"),
    trainval_images: int = 60,
    test_images: int = 30,
    min_side: int = 128,
    max_side: int = 192,
    max_objects: int = 4,
    classes=DET_CLASSES,
    jpeg_quality: int = 90,
    clutter: int = 6,
    size_range: tuple = (None, 1.0 / 3.0),
    distractor_p: float = 0.5,
) -> dict:
    """Write a seeded PASCAL-VOC-format detection set under ``root``; return its summary.

    Args:
        root: output directory; ``VOC<year>/`` folders are created in it.
        seed: images depend only on (seed, year, split, index).
        years: subset of ("2007", "2012"). VOC2007 gets ``trainval`` and ``test``; VOC2012 gets
            ``trainval`` only, like the real data, so the 07+12 training path is exercised.
        trainval_images, test_images: images per split (per year for trainval).
        min_side, max_side: image width and height are drawn from this range (pixels).
        max_objects: each image has 1..max_objects objects before occlusion filtering.
        classes: object names, a subset of the shape vocabulary (default ``DET_CLASSES``).
        jpeg_quality: fixed JPEG quality, so bytes are reproducible.
        clutter, size_range, distractor_p: difficulty, see :func:`render_detection_image`
            (the defaults are the cluttered set the tests use).

    Returns:
        ``{"classes", "seed", "splits": {"VOC2007/trainval": {"images", "objects": {class: n},
        "difficult", "truncated"}, ...}}``, also written to ``root/summary.json``.
    """
    unknown = [c for c in classes if c not in SHAPES]
    if unknown:
        raise ValueError(f"unknown classes {unknown}; choose from {SHAPES}")
    bad_years = [y for y in years if str(y) not in ("2007", "2012")]
    if bad_years:
        raise ValueError(f"years must be '2007' and/or '2012', got {bad_years}")
    summary = {"classes": list(classes), "seed": seed, "splits": {}}
    for year in map(str, years):
        base = os.path.join(root, f"VOC{year}")
        for sub in ("JPEGImages", "Annotations", os.path.join("ImageSets", "Main")):
            os.makedirs(os.path.join(base, sub), exist_ok=True)
        splits = [("trainval", trainval_images)] + ([("test", test_images)] * (year == "2007"))
        next_id = 1
        for split, n in splits:
            stats = {"images": n, "objects": dict.fromkeys(classes, 0)}
            stats.update(difficult=0, truncated=0)
            ids = []
            for i in range(n):
                rng = np.random.default_rng([seed, int(year), _SPLIT_IDS[split], i])
                w, h = (int(v) for v in rng.integers(min_side, max_side + 1, size=2))
                img, objects = render_detection_image(
                    rng, w, h, classes, max_objects, clutter, size_range, distractor_p
                )
                fileid = f"{next_id:06d}" if year == "2007" else f"{year}_{next_id:06d}"
                next_id += 1
                ids.append(fileid)
                with open(os.path.join(base, "JPEGImages", fileid + ".jpg"), "wb") as f:
                    f.write(encode_jpeg(img, jpeg_quality))
                xml = _annotation_xml(f"VOC{year}", fileid + ".jpg", w, h, objects)
                ET.ElementTree(xml).write(os.path.join(base, "Annotations", fileid + ".xml"))
                for obj in objects:
                    stats["objects"][obj["name"]] += 1
                    stats["difficult"] += obj["difficult"]
                    stats["truncated"] += obj["truncated"]
            with open(os.path.join(base, "ImageSets", "Main", split + ".txt"), "w") as f:
                f.write("".join(i + "\n" for i in ids))
            summary["splits"][f"VOC{year}/{split}"] = stats
    with open(os.path.join(root, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
    return summary
