"""What a path given on the command line plainly is, for messages about the wrong kind of file
or folder: a folder where a checkpoint file is expected, a YAML config given as weights, an
image folder without class folders, a data set root one level off.

Standard library only; every function only reads.
"""

from __future__ import annotations

import os

__all__ = ["class_root_problem", "not_a_weights_file", "split_root_problem"]

WEIGHT_SUFFIXES = (".pth", ".pt", ".pkl", ".tar")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _listing(folder: str, suffixes: tuple, limit: int = 3) -> list:
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    return [n for n in names if n.lower().endswith(suffixes)][:limit]


def not_a_weights_file(path: str) -> str | None:
    """Why ``path`` cannot be a checkpoint or weights file, as the end of a sentence that starts
    with the path ("is a folder holding last.pth; pass that file"), or None when it is a
    non-empty binary file (which may still be corrupt: only its reader can tell)."""
    if "://" in path:  # an iopath URI: its reader checks it
        return None
    if not os.path.lexists(path):
        return "does not exist"
    if os.path.isdir(path):
        inside = _listing(path, WEIGHT_SUFFIXES)
        if inside:
            return (
                f"is a folder holding {', '.join(inside)}: pass one of those files, e.g. "
                f"{os.path.join(path, inside[0])}"
            )
        return "is a folder, not a checkpoint file"
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return None  # unreadable: the reader reports it with its errno
    if size == 0:
        return "is empty (0 bytes)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "\x00" in text or "\n" not in text:
        return None
    first = text.strip().splitlines()[0][:60] if text.strip() else ""
    guess = " (a YAML config?)" if path.lower().endswith((".yaml", ".yml")) or ":" in text else ""
    return f"is a text file{guess} starting with {first!r}, not a checkpoint"


def _subfolders(root: str) -> list:
    try:
        return sorted(e.name for e in os.scandir(root) if e.is_dir())
    except OSError:
        return []


def split_root_problem(root: str, splits=("train", "val"), flag: str = "--data") -> str | None:
    """Why ``root`` is not a classification set root holding ``<split>/<class>/<image>`` for
    every split in ``splits``, naming ``flag`` and the path to give instead; None when every
    split folder exists (its class folders are checked by the reader)."""
    missing = [s for s in splits if not os.path.isdir(os.path.join(root, s))]
    if not missing:
        return None
    want = "/ and ".join(splits) + "/"
    if not os.path.exists(root):
        return f"{flag} {root} does not exist; give the folder that holds {want}"
    if not os.path.isdir(root):
        return f"{flag} {root} is a file; give the folder that holds {want}"
    parent = os.path.dirname(os.path.normpath(root))
    if os.path.basename(os.path.normpath(root)) in splits and not split_root_problem(
        parent or ".", splits, flag
    ):
        return (
            f"{flag} {root} is itself a split of the set: give its parent, {flag} "
            f"{parent or '.'} (the folder that holds {want})"
        )
    if _listing(root, IMAGE_SUFFIXES, 1):
        return (
            f"{flag} {root} holds images directly; the set needs {want} with one folder per "
            f"class in each ({root}/train/<class>/<image>)"
        )
    found = _subfolders(root)
    return (
        f"{flag} {root} lacks {', '.join(s + '/' for s in missing)} (it holds "
        f"{', '.join(found[:5]) or 'no folders'}); give the folder that holds {want}"
    )


def class_root_problem(root: str, key: str = "DATA.TRAIN") -> str | None:
    """Why ``root``, given as an ImageFolder of class folders (``root/<class>/<image>``), looks
    like the root of a set with split folders (only ``train``/``val``/``test`` inside, which
    would become two or three "classes" and mix the splits); None otherwise."""
    found = _subfolders(root)
    if len(found) >= 2 and set(found) <= {"train", "val", "test"}:
        return (
            f"{key}={root!r} holds the split folders {found}, not class folders: point it at "
            f"one split, e.g. {key} {os.path.join(root, 'train')}"
        )
    return None
