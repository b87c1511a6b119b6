"""Atomic, durable file writes: a kill at any moment leaves the old file or the new one.

Every file this project rewrites in place (checkpoints, converted weights, metrics, summaries,
caches, reports) goes through :func:`atomic_write`.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from typing import IO, Any, Callable

from detectron2.utils.file_io import PathManager  # iopath, with detectron2's handlers

__all__ = ["OutputExistsError", "atomic_write", "atomic_write_json", "fsync_dir"]


class OutputExistsError(FileExistsError):
    """The output file exists and overwriting was not asked for."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(directory: str) -> None:
    """Make a rename in ``directory`` durable (POSIX; a no-op where directories can't be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems (and Windows) refuse fsync on a directory
    finally:
        os.close(fd)


class _FullWrites(io.FileIO):
    """A file that writes every byte or raises ``OSError`` with its errno, and remembers it.

    A write cut short (a full disk, a file size limit) is retried, so the error surfaces as
    ``ENOSPC`` / ``EFBIG`` instead of a short count that torch's zip writer turns into
    "unexpected pos"; writers that wrap an ``OSError`` in their own exception lose its errno,
    so :func:`atomic_write` re-raises :attr:`error`."""

    error: OSError | None = None

    def write(self, data) -> int:
        view, done = memoryview(data).cast("B"), 0
        while done < len(view):
            try:
                done += super().write(view[done:])
            except OSError as e:
                self.error = e
                raise
        return done


def _on_destination(e: BaseException, raw: _FullWrites, path: str, tmp: str):
    """The OSError to raise for ``e`` met while writing ``tmp`` for ``path`` (naming ``path``,
    with the errno a writer may have wrapped away), or None to re-raise ``e`` as it is."""
    if isinstance(e, OutputExistsError):
        return None
    error = e if isinstance(e, OSError) else raw.error
    if error is None or error.errno is None or error.filename not in (None, tmp):
        return None
    return OSError(error.errno, error.strerror, path)


def atomic_write(
    path: str, write: Callable[[IO], None], overwrite: bool = True, text: bool = False
) -> None:
    """Write a file so that a kill at any moment leaves either the old file or the new one.

    ``write(f)`` fills a temporary file in the destination folder (same file system, so the
    final rename is atomic), opened in binary mode (``text=False``) or text mode; it is flushed
    and fsynced, then renamed over ``path`` with ``os.replace`` (``overwrite=True``) or
    hard-linked to ``path``, which fails if ``path`` exists (``overwrite=False``; raises
    :class:`OutputExistsError`), and the folder is fsynced. The folder is created when
    missing; the temporary file is removed on any error. A failed write (a full disk, no
    permission) raises ``OSError`` with its errno and ``path`` as its file name. Non-local
    iopath URIs are written through ``PathManager`` directly (no atomicity there).
    """
    mode = "w" if text else "wb"
    if "://" in path:
        if not overwrite and PathManager.exists(path):
            raise OutputExistsError(f"{path} exists; pass --overwrite to replace it")
        with PathManager.open(path, mode) as f:
            write(f)
        return
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    if not overwrite and os.path.lexists(path):
        raise OutputExistsError(f"{path} exists; pass --overwrite to replace it")
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    except OSError as e:  # name the file asked for, not the temporary one
        raise OSError(e.errno, e.strerror, path) from e
    raw = _FullWrites(fd, "wb")
    try:
        f = io.BufferedWriter(raw)
        with io.TextIOWrapper(f, encoding="utf-8") if text else f as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # atomic "create only if absent"
            except FileExistsError:
                raise OutputExistsError(
                    f"{path} appeared while writing; pass --overwrite to replace it"
                ) from None
            except OSError:  # file systems without hard links: checked above, rename now
                os.replace(tmp, path)
    except BaseException as e:
        error = _on_destination(e, raw, path, tmp)
        if error is not None:
            raise error from e
        raise
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    fsync_dir(folder)


def atomic_write_json(path: str, obj: Any, **dump_kwargs) -> None:
    """Write ``json.dumps(obj, **dump_kwargs)`` to ``path`` with :func:`atomic_write`."""
    text = json.dumps(obj, **dump_kwargs)
    atomic_write(path, lambda f: f.write(text), text=True)
