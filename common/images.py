"""How every image file of the project is read and listed: one reading rule, one folder scan.

:func:`read_rgb` turns a file (path or bytes) into the 8-bit RGB picture a viewer shows, or
raises :class:`UnreadableImage` naming the file and what is wrong. The rule, used by every loader
(pretraining pipelines, kNN and linear evaluation sets, the VOC check):

* the whole file is decoded (PIL), so a file cut short after its header is refused here, not
  half-read; zero-byte files, files PIL does not recognise and anything that is not a regular
  file (a FIFO named ``x.jpg`` would block forever) are refused too;
* the EXIF orientation is applied (``ImageOps.exif_transpose``), as detectron2's ``read_image``,
  TorchCodec's JPEG decoder and every image viewer do;
* animated files (GIF, APNG, WebP, MPO) give their first frame;
* transparency (RGBA, LA, PA, palette or RGB with a transparent colour) is composited over
  white, so hidden colour under transparent pixels never leaks into the picture;
* 16-bit grey images (``I;16``) are scaled to 8 bits (``round(v / 257)``, as torchvision and
  TorchCodec do); 32-bit integer (``I``) and floating-point (``F``) images, whose value range
  the file does not state, are refused;
* every other mode (1, L, P, CMYK, YCbCr, LAB, HSV, ...) goes through PIL's ``convert("RGB")``.

:func:`scan_image_folder` lists ``root/<class>/**/<image>`` once per file, whatever the folder
holds: symbolic-link loops, several links to one folder, FIFOs and sockets named like images,
hidden files and folders (``._x.jpg`` AppleDouble files, ``.snapshot``), unreadable sub-folders.
"""

from __future__ import annotations

import io
import logging
import os
import stat
from typing import List, Optional, Tuple

import numpy as np
from detectron2.utils.file_io import PathManager  # iopath, with detectron2's handlers
from PIL import Image, ImageOps

logger = logging.getLogger(__name__)

__all__ = [
    "BACKGROUND",
    "IMG_EXTENSIONS",
    "UnreadableImage",
    "is_image_name",
    "read_image_bytes",
    "read_rgb",
    "scan_image_folder",
]

# torchvision's ImageFolder extensions, compared case-insensitively (".JPEG" in ImageNet)
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
BACKGROUND = (255, 255, 255)  # what transparent pixels become
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


class UnreadableImage(ValueError):
    """An image file that gives no picture; ``str()`` is ``"<path>: <what is wrong>"``."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def is_image_name(name: str) -> bool:
    """True when ``name`` ends with an image extension (any case) and is not hidden."""
    return not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS)


def read_image_bytes(path: str) -> bytes:
    """The bytes of image file ``path`` (through iopath); raises :class:`UnreadableImage` for
    an I/O error, an empty file or a local path that is not a regular file (a FIFO named like
    an image would otherwise block the reader forever)."""
    try:
        if "://" not in path and not stat.S_ISREG(os.stat(path).st_mode):
            raise ValueError("not a regular file (a FIFO, socket, device or folder)")
        with PathManager.open(path, "rb") as f:
            data = f.read()
    except ValueError as e:
        raise UnreadableImage(path, str(e)) from e
    except OSError as e:
        raise UnreadableImage(path, f"cannot be read ({e.strerror or e})") from e
    except Exception as e:  # an iopath handler may raise anything
        raise UnreadableImage(path, f"cannot be read ({type(e).__name__}: {e})") from e
    if not data:
        raise UnreadableImage(path, "empty file (0 bytes)")
    return data


class _Undefined(ValueError):
    """Pixels whose meaning as 8-bit RGB the file does not define."""


def _to_rgb(img: Image.Image) -> Image.Image:
    """A loaded PIL image of any mode -> its 8-bit RGB picture (see the module doc)."""
    mode = img.mode
    if mode.startswith("I;16"):
        grey = np.asarray(img, dtype=np.float32) / 257.0
        img = Image.fromarray(np.rint(grey).astype(np.uint8), "L")
        return img.convert("RGB")
    if mode in ("I", "F"):
        what = "32-bit integer" if mode == "I" else "floating-point"
        raise _Undefined(
            f"{what} pixels (PIL mode {mode}) have no defined 0-255 range; save the image as "
            "8-bit (or 16-bit PNG) RGB or greyscale"
        )
    if mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img if mode == "RGB" else img.convert("RGB")


def read_rgb(path: str, data: Optional[bytes] = None) -> Image.Image:
    """The 8-bit RGB picture of an image file, by the project's one reading rule.

    Args:
        path: the file (read through iopath unless ``data`` is given; named in errors).
        data: the file's bytes, when the caller has read them already.

    Returns:
        an RGB ``PIL.Image`` (EXIF orientation applied, so its size is the rotated one).

    Raises:
        UnreadableImage: naming ``path`` and what is wrong (empty, not an image, truncated or
            corrupt, an undefined value range, not a regular file, I/O error).
    """
    if data is None:
        data = read_image_bytes(path)
    if not data:
        raise UnreadableImage(path, "empty file (0 bytes)")
    stage = "not an image file PIL recognises, or its header is cut short"
    try:
        with Image.open(io.BytesIO(data)) as img:
            stage = f"{img.format} image data cut short or corrupt"
            img.load()  # the whole file: PIL raises on truncated data
            stage = f"{img.format} image in PIL mode {img.mode} not converted to RGB"
            img = ImageOps.exif_transpose(img)
            rgb = _to_rgb(img)
    except _Undefined as e:
        raise UnreadableImage(path, str(e)) from e
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
        detail = (
            "" if type(e).__name__ == "UnidentifiedImageError" else f" ({type(e).__name__}: {e})"
        )
        raise UnreadableImage(path, stage + detail) from e
    if min(rgb.size) < 1:
        raise UnreadableImage(path, f"image has no pixels ({rgb.size[0]}x{rgb.size[1]})")
    return rgb


def _entries(folder: str, problems: List[str]) -> List[os.DirEntry]:
    """``folder``'s entries sorted by name, hidden ones left out; an unreadable folder is
    noted in ``problems`` and gives none."""
    try:
        with os.scandir(folder) as it:
            return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as e:
        problems.append(f"{folder}: cannot list ({e.strerror or e})")
        return []


def _dir_id(entry: os.DirEntry) -> Optional[Tuple[int, int]]:
    """(st_dev, st_ino) of the folder ``entry`` points to, or None when it is none."""
    try:
        if not entry.is_dir():  # follows symbolic links
            return None
        st = entry.stat()
    except OSError:  # dangling link, permission
        return None
    return st.st_dev, st.st_ino


def _walk(top: str, seen_dirs: set, found: list, problems: List[str]) -> None:
    """Append (folder, name, real path) of the image files below ``top``; every folder once."""
    stack = [top]
    while stack:
        folder = stack.pop()
        real = os.path.realpath(folder)
        subdirs = []
        for entry in _entries(folder, problems):
            key = _dir_id(entry)
            if key is not None:
                if key not in seen_dirs:  # a loop or a second link to a folder: once
                    seen_dirs.add(key)
                    subdirs.append(entry.path)
                continue
            try:
                # FIFOs, sockets, devices and dangling links are not images (and a FIFO
                # would block the reader forever)
                if not is_image_name(entry.name) or not entry.is_file():
                    continue
                link = entry.is_symlink()
            except OSError:
                continue
            # each folder is visited once, so only a linked file can be met twice
            ident = os.path.realpath(entry.path) if link else os.path.join(real, entry.name)
            found.append((folder, entry.name, ident))
        stack.extend(reversed(subdirs))


def scan_image_folder(root: str, key: str = "DATA.TRAIN") -> Tuple[List[str], List[int], List[str]]:
    """List an ImageFolder root ``root/<class>/**/<image>`` -> (paths, labels, class names).

    Classes are the sub-folders of ``root`` (symbolic links followed, hidden ones skipped), in
    sorted order, as torchvision's ``ImageFolder``; each class's images are found recursively
    and ordered by (folder, name). The scan always ends and lists every file once: folders are
    visited once by (st_dev, st_ino) (symbolic-link loops, several links to one folder), files
    once by real path (a file reached under two names belongs to the first class listing it),
    and only regular files with an image extension (any case) that are not hidden count.
    Unreadable folders and classes without images are logged as warnings.

    Raises FileNotFoundError / ValueError naming ``key`` when the root is missing or holds no
    images, with the expected layout in the message.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"{key}={root!r} does not exist or is not a directory; point {key} at an "
            "ImageFolder root (root/<class>/<image>.jpg) or a text file listing image paths"
        )
    problems: List[str] = []
    top = os.stat(root)
    seen_dirs = {(top.st_dev, top.st_ino)}
    class_dirs = []
    for entry in _entries(root, problems):
        ident = _dir_id(entry)
        if ident is not None:
            class_dirs.append((entry.name, entry.path, ident))
    classes = [name for name, _, _ in class_dirs]
    paths, labels, seen_files, empty = [], [], set(), []
    for label, (name, path, ident) in enumerate(class_dirs):
        found: list = []
        if ident not in seen_dirs:
            seen_dirs.add(ident)
            _walk(path, seen_dirs, found, problems)
        found.sort(key=lambda f: (f[0], f[1]))  # the order of sorted(os.walk(...)) before
        before = len(paths)
        for folder, fname, file_id in found:
            if file_id not in seen_files:
                seen_files.add(file_id)
                paths.append(os.path.join(folder, fname))
                labels.append(label)
        if len(paths) == before:
            empty.append(name)
    for p in problems:
        logger.warning("%s: %s", key, p)
    if not paths:
        raise ValueError(
            f"{key}={root!r} holds no images in class sub-folders (found {len(classes)} "
            f"folders); expected root/<class>/<image> with extensions {IMG_EXTENSIONS}"
        )
    if empty:
        logger.warning(
            "%s=%r: %d class folder(s) without images of their own (empty, or links to "
            "folders listed under an earlier class): %s",
            key,
            root,
            len(empty),
            ", ".join(empty[:10]) + (" ..." if len(empty) > 10 else ""),
        )
    return paths, labels, classes
