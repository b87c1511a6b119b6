"""Registration of PASCAL VOC, of VOC-format sets with their own class names and of
COCO-format sets (:func:`register_coco_like`).

detectron2 registers ``voc_2007_trainval``, ``voc_2012_trainval`` and ``voc_2007_test`` under
``$DETECTRON2_DATASETS`` as soon as ``detectron2.data`` is imported. The functions here keep
an existing registration's metadata when it already points where asked, and replace it (with a
log line) when it does not, so calling them twice, or after detectron2, is safe. Either way the
loader becomes :class:`CheckedVOCLoader`: the strict checker of :mod:`detection.voc_check`,
which returns the same dataset dicts as detectron2's ``load_voc_instances`` for valid data and
names every bad file otherwise. :func:`check_datasets` runs it over every VOC-format set a
config trains or tests on, before training starts.
"""

import logging
import os
import time

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.data.datasets.pascal_voc import CLASS_NAMES
from detectron2.utils import comm

from .voc_check import (
    BORDER_TOLERANCE_PX,
    VOCAnnotationError,
    format_problems,
    load_checked_voc_instances,
    scan_voc_split,
)

logger = logging.getLogger(__name__)

# (year directory, year, split) of the three splits the VOC07+12 recipe uses.
VOC_SPLITS = (
    ("VOC2007", 2007, "trainval"),
    ("VOC2012", 2012, "trainval"),
    ("VOC2007", 2007, "test"),
)


def default_voc_root():
    """Return the directory detectron2 reads PASCAL VOC from: ``$DETECTRON2_DATASETS`` or
    ``datasets`` (holding ``VOC2007/`` and ``VOC2012/``)."""
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


class CheckedVOCLoader:
    """The ``DatasetCatalog`` loader of a VOC-format split: checked, and parsed only once.

    Calling it returns detectron2 dataset dicts (:func:`load_checked_voc_instances`). After
    :meth:`scan`, the next call returns the scanned dicts instead of reading the files again,
    so checking before training costs no second parse.
    """

    def __init__(self, dirname, split, classes):
        """Args: dirname (str): the ``VOC<year>`` folder; split (str); classes (list)."""
        self.dirname, self.split, self.classes = dirname, split, tuple(classes)
        self._scanned = None

    def scan(self, for_evaluation=False, workers=None, shard=(0, 1)):
        """Check the split (decoding the images of ``shard``, see
        :func:`detection.voc_check.scan_voc_split`); returns the
        :class:`detection.voc_check.SplitScan`. Without problems, its dicts are what the next
        call returns."""
        scan = scan_voc_split(
            self.dirname, self.split, self.classes, for_evaluation, True, workers, shard
        )
        self._scanned = None if scan.problems else scan.dicts
        return scan

    def __call__(self):
        """Return the split's dataset dicts; raises VOCAnnotationError naming bad files."""
        if self._scanned is not None:
            dicts, self._scanned = self._scanned, None
            return dicts
        return load_checked_voc_instances(self.dirname, self.split, self.classes)

    def __repr__(self):
        return f"CheckedVOCLoader({self.dirname!r}, {self.split!r}, {len(self.classes)} classes)"


def _register_split(name, dirname, year, split, classes):
    """Register one VOC-format split, reusing or replacing an existing entry. Returns name."""
    classes = list(classes)
    wanted = {"thing_classes": classes, "dirname": dirname, "year": year, "split": split}
    if name in DatasetCatalog.list():
        meta = MetadataCatalog.get(name)
        current = {key: getattr(meta, key, None) for key in wanted}
        if current == wanted:
            if not isinstance(DatasetCatalog[name], CheckedVOCLoader):
                # e.g. detectron2's builtin: same data, but its loader checks nothing
                DatasetCatalog.remove(name)
                DatasetCatalog.register(name, CheckedVOCLoader(dirname, split, classes))
            return name
        logger.info("Re-registering data set %s: %s -> %s", name, current, wanted)
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, CheckedVOCLoader(dirname, split, classes))
    MetadataCatalog.get(name).set(**wanted, evaluator_type="pascal_voc")
    return name


def register_voc_like(name_prefix, root, classes):
    """Register a VOC-format set with custom class names under three names.

    Args:
        name_prefix (str): e.g. "synth" gives ``synth_2007_trainval``, ``synth_2012_trainval``
            and ``synth_2007_test``.
        root (str): directory holding ``VOC2007/`` and ``VOC2012/`` (each with ``JPEGImages``,
            ``Annotations`` and ``ImageSets/Main/<split>.txt``). Nothing is read until a split
            is used, so a missing directory fails when the data set is loaded.
        classes (Sequence[str]): class names in label order (``<name>`` tags of the XML files).

    Returns:
        list[str]: the registered data set names. Metadata: ``thing_classes``, ``dirname``,
        ``year`` (int), ``split`` and ``evaluator_type="pascal_voc"``.
    """
    if not classes:
        raise ValueError(f"register_voc_like({name_prefix!r}): no class names given")
    root = os.path.abspath(os.path.expanduser(root))
    names = []
    for dirname, year, split in VOC_SPLITS:
        name = f"{name_prefix}_{year}_{split}"
        names.append(_register_split(name, os.path.join(root, dirname), year, split, classes))
    return names


def register_voc(root=None):
    """Make sure ``voc_2007_trainval``, ``voc_2012_trainval`` and ``voc_2007_test`` point at
    ``root`` with the 20 PASCAL VOC classes.

    Args:
        root (str or None): directory holding ``VOC2007/`` and ``VOC2012/``; None means
            :func:`default_voc_root` (the same place detectron2's builtin registration uses).

    Returns:
        list[str]: the three data set names.
    """
    root = default_voc_root() if root is None else os.path.expanduser(root)
    # detectron2 stores the joined path as given (relative or not): compare like with like.
    return [
        _register_split(f"voc_{year}_{split}", os.path.join(root, d), year, split, CLASS_NAMES)
        for d, year, split in VOC_SPLITS
    ]


# Splits of a COCO-format set under its root: annotations/instances_<split>.json, <split>/*.jpg
COCO_SPLITS = ("train", "val")


def coco_like_files(root, split):
    """Return (annotation JSON, image folder) of one split of a COCO-format set under ``root``:
    ``<root>/annotations/instances_<split>.json`` and ``<root>/<split>``."""
    return os.path.join(root, "annotations", f"instances_{split}.json"), os.path.join(root, split)


def register_coco_like(name_prefix, root):
    """Register a COCO-format instance set (boxes, polygon masks) as ``<name_prefix>_train`` and
    ``<name_prefix>_val`` with detectron2's ``register_coco_instances``.

    An existing registration that points at the same files is kept; one that points elsewhere
    is replaced (logged), so calling this twice is safe. Class names come from the JSON's
    ``categories`` when a split is loaded.

    Args:
        name_prefix (str): e.g. "synth_coco".
        root (str): the folder holding ``annotations/instances_{train,val}.json`` and the image
            folders ``train/`` and ``val/`` (see :func:`coco_like_files`).

    Returns:
        list[str]: the registered names. Metadata: ``json_file``, ``image_root`` and
        ``evaluator_type="coco"``.
    """
    root = os.path.abspath(os.path.expanduser(root))
    names = []
    for split in COCO_SPLITS:
        name = f"{name_prefix}_{split}"
        json_file, image_root = coco_like_files(root, split)
        if name in DatasetCatalog.list():
            meta = MetadataCatalog.get(name)
            current = (meta.get("json_file", None), meta.get("image_root", None))
            if current == (json_file, image_root):
                names.append(name)
                continue
            logger.info("Re-registering data set %s: %s -> %s", name, current, json_file)
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        register_coco_instances(name, {}, json_file, image_root)
        names.append(name)
    return names


def register_from_config(cfg):
    """Register the data sets a config asks for through ``cfg.TRANSFER`` (``VOC_ROOT``,
    ``VOC_LIKE_ROOT``, ``COCO_LIKE_ROOT``).

    Args:
        cfg (CfgNode): config with the ``TRANSFER`` node.

    Returns:
        list[str]: names registered or confirmed (empty when the config asks for nothing).

    Raises:
        FileNotFoundError: ``COCO_LIKE_ROOT`` lacks an annotation file or image folder (named,
            with the fix).
    """
    names = []
    if cfg.TRANSFER.VOC_ROOT:
        names += register_voc(cfg.TRANSFER.VOC_ROOT)
    if cfg.TRANSFER.VOC_LIKE_ROOT:
        classes = list(cfg.TRANSFER.VOC_LIKE_CLASSES)
        if not classes:
            raise ValueError(
                "TRANSFER.VOC_LIKE_CLASSES is empty: give the class names of "
                f"TRANSFER.VOC_LIKE_ROOT={cfg.TRANSFER.VOC_LIKE_ROOT!r} in label order"
            )
        prefix, root = cfg.TRANSFER.VOC_LIKE_PREFIX, cfg.TRANSFER.VOC_LIKE_ROOT
        names += register_voc_like(prefix, root, classes)
    if cfg.TRANSFER.COCO_LIKE_ROOT:
        root = cfg.TRANSFER.COCO_LIKE_ROOT
        missing = [
            path
            for split in COCO_SPLITS
            for path in coco_like_files(os.path.abspath(os.path.expanduser(root)), split)
            if not os.path.exists(path)
        ]
        if missing:
            raise FileNotFoundError(
                f"TRANSFER.COCO_LIKE_ROOT={root!r} lacks {missing}. Set it to a folder holding "
                "annotations/instances_{train,val}.json and the image folders train/ and val/, "
                f"or generate a synthetic set there: python -m synthetic coco {root}"
            )
        names += register_coco_like(cfg.TRANSFER.COCO_LIKE_PREFIX, root)
    return names


def _root_setting(cfg, name):
    """The setting that chose the root of the VOC-format set ``name`` (for messages)."""
    if cfg.TRANSFER.VOC_LIKE_ROOT and name.startswith(cfg.TRANSFER.VOC_LIKE_PREFIX + "_"):
        return "TRANSFER.VOC_LIKE_ROOT"
    if cfg.TRANSFER.VOC_ROOT:
        return "TRANSFER.VOC_ROOT"
    return "DETECTRON2_DATASETS"


def voc_root_hint(cfg, names):
    """One line naming the setting to change when the year folder (``VOC2007/``) of a VOC-format
    set in ``names`` is missing: a root one level too deep (a year folder itself), an unset
    ``DETECTRON2_DATASETS``, or a root without the year folders. Returns "" when every year
    folder is there."""
    for name in names:
        dirname = MetadataCatalog.get(name).get("dirname", None) if name in DatasetCatalog else None
        if not dirname or os.path.isdir(dirname):
            continue
        root, key = os.path.dirname(os.path.normpath(dirname)), _root_setting(cfg, name)
        want = "the folder holding VOC2007/ and VOC2012/"
        if os.path.isdir(os.path.join(root, "ImageSets")):
            return (
                f"{key}={root!r} is itself a VOC year folder (it holds ImageSets/): set {key} to "
                f"its parent {os.path.dirname(root) or '.'!r}, {want}."
            )
        if key == "DETECTRON2_DATASETS" and "DETECTRON2_DATASETS" not in os.environ:
            return (
                f"DETECTRON2_DATASETS is not set, so the VOC sets are read from {root!r} "
                f"({os.path.abspath(root)}), which lacks {os.path.basename(dirname)}/: export "
                f"DETECTRON2_DATASETS=<{want}>, or set TRANSFER.VOC_ROOT."
            )
        return f"{key}={root!r} lacks {os.path.basename(dirname)}/: set {key} to {want}."
    return ""


def check_datasets(cfg, workers=None):
    """Check every VOC-format data set of ``DATASETS.TRAIN`` and ``DATASETS.TEST`` up front.

    Called by ``detection.train_net`` before the model is built (training and ``--eval-only``),
    so a bad annotation or an unreadable image stops the run before iteration 0, not hours
    later in the data loader or in the final evaluation. Every image is decoded, once: with
    several processes each decodes its share and the problems are gathered to all. Sets whose
    ``evaluator_type`` is ``"pascal_voc"`` are scanned (test sets with the evaluator's stricter
    needs); a VOC set registered with another loader (e.g. detectron2's
    ``register_pascal_voc``) gets the checked loader first. Others are left to their own loaders.

    Args:
        cfg (CfgNode): the config.
        workers (int or None): threads for the scan (see :func:`scan_voc_split`).

    Returns:
        dict: data set name -> number of images, for the sets that were checked.

    Raises:
        VOCAnnotationError: every problem of every set (the first ``MAX_REPORTED`` listed, with
            the total), each naming its file; also an unregistered set name.
    """
    train, test = list(cfg.DATASETS.TRAIN), list(cfg.DATASETS.TEST)
    problems, counts, start = [], {}, time.time()
    for name in dict.fromkeys(train + test):
        key = "DATASETS.TEST" if name in test else "DATASETS.TRAIN"
        if name not in DatasetCatalog.list():
            problems.append(
                f"data set {name!r} in {key} is not registered; set TRANSFER.VOC_ROOT or "
                "TRANSFER.VOC_LIKE_ROOT, or register it before training"
            )
            continue
        meta = MetadataCatalog.get(name)
        if meta.get("evaluator_type", None) != "pascal_voc":
            logger.info("Data set %s is not VOC-format: left to its own loader", name)
            continue
        loader = DatasetCatalog[name]
        if not isinstance(loader, CheckedVOCLoader):
            missing = [k for k in ("dirname", "split", "thing_classes") if not meta.get(k, None)]
            if missing:
                problems.append(f"data set {name!r} ({key}): VOC metadata lacks {missing}")
                continue
            loader = CheckedVOCLoader(meta.dirname, meta.split, meta.thing_classes)
            DatasetCatalog.remove(name)
            DatasetCatalog.register(name, loader)
        # every process checks the XML; the images are decoded once, shared out among them
        scan = loader.scan(name in test, workers, (comm.get_rank(), comm.get_world_size()))
        problems += scan.problems
        if scan.clipped:
            logger.warning(
                "%s: %d box(es) overhanging the image by <= %d px clipped to it, e.g. %s",
                name,
                len(scan.clipped),
                BORDER_TOLERANCE_PX,
                scan.clipped[0],
            )
        counts[name] = len(scan.dicts)
    if comm.get_world_size() > 1:  # the same list, in the same order, in every process
        problems = list(dict.fromkeys(p for part in comm.all_gather(problems) for p in part))
    if problems:
        message = format_problems(problems, f"the data sets {train + test}")
        hint = voc_root_hint(cfg, train + test) or (
            "Fix the files listed above (or drop those images from ImageSets/Main/<split>.txt), "
            "then rerun the same command."
        )
        raise VOCAnnotationError(f"{message}\n{hint}")
    if counts:
        logger.info(
            "Checked %d images of %s in %.1fs: no problems",
            sum(counts.values()),
            list(counts),
            time.time() - start,
        )
    return counts
