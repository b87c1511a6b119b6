"""Strict checker and loader of PASCAL VOC(-format) splits: every bad input named, in one pass.

:func:`scan_voc_split` reads ``<dirname>/ImageSets/Main/<split>.txt`` and, for every listed id,
``Annotations/<id>.xml`` and decodes ``JPEGImages/<id>.jpg``; it returns detectron2's
dataset dicts (exactly what ``detectron2.data.datasets.load_voc_instances`` returns for a valid
split, so the scan *is* the loader and nothing is parsed twice) together with every problem
found, each naming the file and what is wrong. :func:`load_checked_voc_instances` raises
:class:`VOCAnnotationError` listing the first :data:`MAX_REPORTED` problems and their count.

What is checked, per listed id:

* the XML exists and is well-formed; ``size/width`` and ``size/height`` are positive integers
  (detectron2 reads them with ``int()``);
* each ``<object>`` has a ``<name>`` among the classes and a ``<bndbox>`` with numeric
  ``xmin, ymin, xmax, ymax``; ``xmin <= xmax`` and ``ymin <= ymax``; ``difficult`` /
  ``truncated``, when present, are integers;
* the box lies in the image. VOC coordinates are 1-based inclusive pixel indices: ``xmin = 1,
  xmax = width`` covers the whole image, and detectron2's loader turns the box into the
  continuous ``[xmin - 1, xmax]``. A box that overhangs the image by at most
  :data:`BORDER_TOLERANCE_PX` pixel (``xmin = 0`` or ``xmax = width + 1``: 0-based
  coordinates written by a converter) is clipped to the image and counted in the log; further
  out, or negative, is an error;
* the image exists and decodes whole by the project's reading rule
  (:func:`common.images.read_rgb`: a file cut short after its header is found here, not after
  the fine-tune), and its size (after EXIF rotation, as detectron2's ``read_image`` applies it)
  equals the XML's ``size``; detectron2 would otherwise fail with ``SizeMismatchError`` in the
  middle of training;
* with ``for_evaluation=True`` (splits in ``DATASETS.TEST``) also what detectron2's
  ``PascalVOCDetectionEvaluator`` needs when it re-reads the XML after inference: ``<pose>``,
  integer ``<truncated>`` and ``<difficult>``, integer box coordinates.

Difficult objects are kept, as detectron2's loader keeps them (trained on; the evaluator
ignores them when scoring).
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from detectron2.structures import BoxMode

from common.images import UnreadableImage, read_rgb

logger = logging.getLogger(__name__)

__all__ = [
    "BORDER_TOLERANCE_PX",
    "MAX_REPORTED",
    "SplitScan",
    "VOCAnnotationError",
    "check_annotation",
    "check_voc_split",
    "format_problems",
    "load_checked_voc_instances",
    "scan_voc_split",
]

BORDER_TOLERANCE_PX = 1
MAX_REPORTED = 20
_COORDS = ("xmin", "ymin", "xmax", "ymax")
_BATCH = 256  # ids per pool task: amortises the pool's per-task cost


class VOCAnnotationError(ValueError):
    """A VOC split has problems; the message names each file and what is wrong with it."""


@dataclass
class SplitScan:
    """Result of :func:`scan_voc_split`: detectron2 dicts, records, problems, clipped boxes."""

    where: str
    dicts: list = field(default_factory=list)
    records: list = field(default_factory=list)
    problems: list = field(default_factory=list)
    clipped: list = field(default_factory=list)


def _text(node, path):
    text = node.findtext(path)
    if text is None:
        return None
    return text.strip() or None


def _int(text):
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def _parse(xml_path, index, for_evaluation):
    """Parse one annotation file. Returns (record or None, problems, clipped notes)."""
    problems, clipped = [], []
    try:
        root = ET.parse(xml_path).getroot()
    except FileNotFoundError:
        return None, [f"{xml_path}: annotation file missing"], clipped
    except ET.ParseError as e:
        return None, [f"{xml_path}: not well-formed XML ({e})"], clipped
    except OSError as e:
        return None, [f"{xml_path}: cannot be read ({e})"], clipped
    size = {}
    for key in ("width", "height"):
        text = _text(root, f"size/{key}")
        value = _int(text)
        if value is None or value <= 0:
            what = "missing" if text is None else f"not a positive integer: {text!r}"
            problems.append(f"{xml_path}: <size><{key}> {what}")
            value = None
        size[key] = value
    record = {"filename": _text(root, "filename"), **size, "objects": []}
    for i, obj in enumerate(root.findall("object")):  # direct children, as detectron2
        found, obj_problems, note = _object(obj, index, for_evaluation, **size)
        if found is not None:
            record["objects"].append(found)
        if obj_problems or note:
            name = _text(obj, "name")
            label = f"{xml_path}: object {i}" + (f" ({name})" if name else "")
            problems += [f"{label} {p}" for p in obj_problems]
            if note:
                clipped.append(f"{label} {note}")
    return (None if problems else record), problems, clipped


def _object(obj, index, for_evaluation, width, height):
    """One ``<object>``: (record or None, problems, clipping note or None)."""
    problems = []
    name = _text(obj, "name")
    if name is None:
        problems.append("has no <name>")
    elif name not in index:
        problems.append(f"has unknown class {name!r}; expected one of {tuple(index)}")
    flags = {}
    for key in ("difficult", "truncated"):
        text = _text(obj, key)
        if text is None and not for_evaluation:
            flags[key] = 0
        elif _int(text) is None:
            what = "missing" if text is None else f"not an integer: {text!r}"
            problems.append(f"<{key}> {what}")
        else:
            flags[key] = int(text)
    if for_evaluation and obj.find("pose") is None:
        problems.append("has no <pose> (the VOC evaluator reads it)")
    bndbox = obj.find("bndbox")
    if bndbox is None:
        return None, problems + ["has no <bndbox>"], None
    box = []
    for key in _COORDS:
        text = _text(bndbox, key)
        try:
            value = float(text) if text is not None else None
        except ValueError:
            value = None
        if value is None:
            what = "missing" if text is None else f"not a number: {text!r}"
            problems.append(f"<bndbox><{key}> {what}")
        elif for_evaluation and _int(text) is None:
            problems.append(
                f"<bndbox><{key}> {text!r} is not an integer (the VOC evaluator reads test "
                "boxes with int())"
            )
        box.append(value)
    if None in box:
        return None, problems, None
    x0, y0, x1, y1 = box
    if x0 > x1 or y0 > y1:
        problems.append(
            f"box (xmin, ymin, xmax, ymax) = {_fmt(box)} is inverted (xmax < xmin or ymax < ymin)"
        )
        return None, problems, None
    if width is None or height is None:  # already reported; the box cannot be checked
        return None, problems, None
    tol = BORDER_TOLERANCE_PX
    if x0 < 1 - tol or y0 < 1 - tol or x1 > width + tol or y1 > height + tol:
        problems.append(
            f"box {_fmt(box)} is outside the image: VOC boxes are 1-based pixel indices in "
            f"[1, {width}] x [1, {height}]"
        )
        return None, problems, None
    if problems:
        return None, problems, None
    inside = (max(x0, 1.0), max(y0, 1.0), min(x1, float(width)), min(y1, float(height)))
    note = None if inside == (x0, y0, x1, y1) else f"box {_fmt(box)} clipped to {_fmt(inside)}"
    return {"name": name, "bbox": inside, **flags}, [], note


def _fmt(box):
    return "(" + ", ".join(f"{v:g}" for v in box) + ")"


def _image_problem(jpg, width, height):
    """None if ``jpg`` decodes (the project's reading rule, :func:`common.images.read_rgb`) to
    ``width`` x ``height`` after EXIF rotation, else the problem."""
    try:
        w, h = read_rgb(jpg).size
    except UnreadableImage as e:
        if not os.path.lexists(jpg):
            return f"{jpg}: image missing"
        return f"{jpg}: not a readable image ({e.reason})"
    if width is not None and height is not None and (w, h) != (width, height):
        return (
            f"{jpg}: image is {w}x{h} but its annotation says {width}x{height} "
            "(detectron2 would stop training with SizeMismatchError)"
        )
    return None


def _check_ids(dirname, ids, index, for_evaluation, decode):
    """Check a batch of ids, decoding the images of the ids in ``decode`` (a set). Returns a
    list of (fileid, record, dict, problems, clipped)."""
    out = []
    for fileid in ids:
        xml = os.path.join(dirname, "Annotations", fileid + ".xml")
        jpg = os.path.join(dirname, "JPEGImages", fileid + ".jpg")
        record, problems, clipped = _parse(xml, index, for_evaluation)
        if fileid in decode:
            w, h = (record["width"], record["height"]) if record else (None, None)
            problem = _image_problem(jpg, w, h)
            if problem:
                problems.append(problem)
        d = None
        if not problems:
            d = {"file_name": jpg, "image_id": fileid, "height": record["height"]}
            d["width"] = record["width"]
            d["annotations"] = [
                {
                    "category_id": index[o["name"]],
                    # detectron2's convention: 1-based inclusive -> continuous [xmin - 1, xmax]
                    "bbox": [o["bbox"][0] - 1.0, o["bbox"][1] - 1.0, o["bbox"][2], o["bbox"][3]],
                    "bbox_mode": BoxMode.XYXY_ABS,
                }
                for o in record["objects"]
            ]
        out.append((fileid, record, d, problems, clipped))
    return out


def _read_ids(dirname, split):
    """The ids of ``ImageSets/Main/<split>.txt``, and the problems of that file."""
    path = os.path.join(dirname, "ImageSets", "Main", split + ".txt")
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as e:
        return [], [f"{path}: cannot read the list of {split} images ({e.strerror or e})"]
    ids, problems, seen = [], [], set()
    for n, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 1:
            problems.append(
                f"{path}: line {n} has {len(fields)} fields ({line.strip()!r}); "
                "ImageSets/Main/<split>.txt lists one image id per line"
            )
            continue
        if fields[0] in seen:
            problems.append(f"{path}: line {n}: image id {fields[0]!r} listed twice")
            continue
        seen.add(fields[0])
        ids.append(fields[0])
    if not ids and not problems:
        problems.append(f"{path}: lists no images")
    return ids, problems


def default_workers():
    """Threads used by :func:`scan_voc_split` when not told: up to 8, at most the CPUs."""
    return max(1, min(8, os.cpu_count() or 1))


def scan_voc_split(
    dirname, split, classes, for_evaluation=False, check_images=True, workers=None, shard=(0, 1)
):
    """Check and load one VOC-format split; never raises for bad data, reports it instead.

    Args:
        dirname (str): folder with ``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/``.
        split (str): e.g. ``"trainval"`` or ``"test"``.
        classes (Sequence[str]): class names in label order.
        for_evaluation (bool): also require what the VOC evaluator reads (see module doc).
        check_images (bool): decode each image and check its size.
        workers (int or None): threads (None: :func:`default_workers`; 0 or 1: none).
        shard (tuple): ``(i, n)``: decode only the images of every n-th id from the i-th, so
            that n processes share the decoding (the XML files are all checked in each).

    Returns:
        SplitScan: ``dicts`` (detectron2 format, in list order; only for files without
        problems), ``records`` (parsed annotations, same order), ``problems`` (one string per
        problem, naming the file) and ``clipped`` (boxes clipped to the image border).
    """
    where = os.path.join(dirname, "ImageSets", "Main", split + ".txt")
    scan = SplitScan(where=where)
    ids, scan.problems = _read_ids(dirname, split)
    index = {c: i for i, c in enumerate(classes)}
    batches = [ids[i : i + _BATCH] for i in range(0, len(ids), _BATCH)]
    workers = default_workers() if workers is None else workers
    rank, world = shard
    args = (index, for_evaluation, set(ids[rank::world]) if check_images else set())
    if workers <= 1 or len(batches) <= 1:
        results = [_check_ids(dirname, b, *args) for b in batches]
    else:
        # Threads, not processes: PIL decodes with the GIL released, file reads release it
        # too, and the dicts need no pickling back (benchmarks/voc_check.py).
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(lambda b: _check_ids(dirname, b, *args), batches))
    for batch in results:
        for _, record, d, problems, clipped in batch:
            scan.problems += problems
            scan.clipped += clipped
            if d is not None:
                scan.dicts.append(d)
                scan.records.append(record)
    return scan


def format_problems(problems, what, limit=MAX_REPORTED):
    """One message: ``what``, the number of problems, the first ``limit`` of them."""
    head = f"{len(problems)} problem(s) in {what}; fix them before training"
    lines = [f"  - {p}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return head + ":\n" + "\n".join(lines)


def _raise_if_problems(scan):
    if scan.problems:
        raise VOCAnnotationError(format_problems(scan.problems, scan.where))
    if scan.clipped:
        logger.warning(
            "%s: %d box(es) overhanging the image by <= %d px clipped, e.g. %s",
            scan.where,
            len(scan.clipped),
            BORDER_TOLERANCE_PX,
            scan.clipped[0],
        )


def load_checked_voc_instances(dirname, split, classes, for_evaluation=False, workers=None):
    """Drop-in for detectron2's ``load_voc_instances`` that checks everything first.

    Inputs as :func:`scan_voc_split`. Returns detectron2 dataset dicts (``file_name``,
    ``image_id``, ``height``, ``width``, ``annotations`` with 0-based ``XYXY_ABS`` boxes).
    Raises :class:`VOCAnnotationError` listing every problem (the first ``MAX_REPORTED``).
    """
    scan = scan_voc_split(dirname, split, classes, for_evaluation, workers=workers)
    _raise_if_problems(scan)
    return scan.dicts


def check_voc_split(dirname, split, classes, for_evaluation=False, workers=None):
    """Validate every annotation and image of a split; returns the parsed records.

    Records are ``{"filename", "width", "height", "objects": [{"name", "bbox", "difficult",
    "truncated"}]}`` with VOC 1-based boxes, in list order. Raises
    :class:`VOCAnnotationError` listing every problem.
    """
    scan = scan_voc_split(dirname, split, classes, for_evaluation, workers=workers)
    _raise_if_problems(scan)
    return scan.records


def check_annotation(xml_path, classes, for_evaluation=False):
    """Parse and validate one VOC annotation file (the image is not looked at).

    Returns ``{"filename", "width", "height", "objects": [{"name", "bbox", "difficult",
    "truncated"}]}`` with ``bbox`` in VOC 1-based pixel coordinates. Raises
    :class:`VOCAnnotationError` whose message starts with ``xml_path`` and lists its problems.
    """
    record, problems, _ = _parse(xml_path, {c: i for i, c in enumerate(classes)}, for_evaluation)
    if problems:
        raise VOCAnnotationError("\n".join(problems))
    return record
