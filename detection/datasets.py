"""Registration of PASCAL VOC and of VOC-format sets with their own class names.

detectron2 registers ``voc_2007_trainval``, ``voc_2012_trainval`` and ``voc_2007_test`` under
``$DETECTRON2_DATASETS`` as soon as ``detectron2.data`` is imported. The functions here reuse
an existing registration when it already points where asked, and replace it (with a log line)
when it does not, so calling them twice, or after detectron2, is safe.
"""

import logging
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.pascal_voc import CLASS_NAMES, load_voc_instances

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


def _register_split(name, dirname, year, split, classes):
    """Register one VOC-format split, reusing or replacing an existing entry. Returns name."""
    classes = list(classes)
    wanted = {"thing_classes": classes, "dirname": dirname, "year": year, "split": split}
    if name in DatasetCatalog.list():
        meta = MetadataCatalog.get(name)
        current = {key: getattr(meta, key, None) for key in wanted}
        if current == wanted:
            return name  # already registered (e.g. by detectron2's builtin) with these values
        logger.info("Re-registering data set %s: %s -> %s", name, current, wanted)
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    # Default arguments bind the values now, not when the lambda runs.
    DatasetCatalog.register(
        name, lambda d=dirname, s=split, c=tuple(classes): load_voc_instances(d, s, c)
    )
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


def register_from_config(cfg):
    """Register the data sets a config asks for through ``cfg.TRANSFER``.

    Args:
        cfg (CfgNode): config with the ``TRANSFER`` node.

    Returns:
        list[str]: names registered or confirmed (empty when the config asks for nothing).
    """
    names = []
    if cfg.TRANSFER.VOC_ROOT:
        names += register_voc(cfg.TRANSFER.VOC_ROOT)
    if cfg.TRANSFER.VOC_LIKE_ROOT:
        classes = list(cfg.TRANSFER.VOC_LIKE_CLASSES)
        if not classes:
            from synthetic import DET_CLASSES  # the generated set's names, only when needed

            classes = list(DET_CLASSES)
        prefix, root = cfg.TRANSFER.VOC_LIKE_PREFIX, cfg.TRANSFER.VOC_LIKE_ROOT
        names += register_voc_like(prefix, root, classes)
    return names
