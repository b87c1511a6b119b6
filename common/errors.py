"""The last line a command prints is about the user's problem.

Every console entry point is wrapped by :func:`entry_point`. An exception that ends a command
becomes one final ``error: <what, naming the path or key>. <fix>`` on stderr and an exit status
(:data:`USER_MISTAKE` 2 for a wrong input, :data:`FAILURE` 1 otherwise, :data:`INTERRUPTED`
130 for Ctrl-C). The full traceback goes to every log file the command opened; on the terminal
it is shown above the last line only for an error nobody anticipated, or for every error with
``MOCO_DEBUG=1``.

:func:`describe` decides the line:

- messages this project raises (a ``ValueError`` naming a config key, a checkpoint error ...)
  are kept word for word; this module only makes them the last line;
- ``OSError`` is translated from its errno (``ENOSPC`` -> no space left on the disk holding the
  folder, ``EACCES``, ``EROFS``, ``ENOENT``, ``EDQUOT`` ...), naming the path;
- a YAML syntax error names the file, line and column; CUDA asked for on a machine without it
  names the switch to set;
- an exception raised in a worker process of detectron2's ``launch`` (torch's spawn re-raises it
  in the parent as text) ends with the worker's own line: :func:`report_to_parent` wraps it in
  the worker, :func:`describe` unwraps it in the parent.

Standard library only (torch and yaml are looked up in ``sys.modules``, never imported here).
"""

from __future__ import annotations

import errno
import functools
import io
import logging
import multiprocessing
import os
import re
import shutil
import sys
import traceback
from dataclasses import dataclass
from typing import Callable

__all__ = [
    "DEBUG_ENV",
    "FAILURE",
    "INTERRUPTED",
    "USER_MISTAKE",
    "Report",
    "WorkerError",
    "describe",
    "entry_point",
    "report_to_parent",
]

USER_MISTAKE, FAILURE, INTERRUPTED = 2, 1, 130
DEBUG_ENV = "MOCO_DEBUG"  # MOCO_DEBUG=1: every error also prints its traceback on the terminal
# The project's top-level packages (setup.py): an exception raised in their code carries a
# message written for the user.
PROJECT_PACKAGES = ("common", "pretrain", "convert", "detection", "evaluation", "synthetic", "demo")
# Raised by project code, these are programming errors, not messages for the user (so is a
# KeyError whose message is a bare key rather than a sentence).
_BUG_TYPES = (AssertionError, AttributeError, NameError, TypeError, IndexError, ZeroDivisionError)
_WORKER_MARK = "common.errors.WorkerError: [exit status "
# torch's zip writer (torch.save) after a failed write; the OSError's errno is lost
_TORCH_WRITE_FAILED = ("PytorchStreamWriter failed", "unexpected pos", "file write failed")
_CUDA_MISSING = (
    "Found no NVIDIA driver",
    "Torch not compiled with CUDA enabled",
    "No CUDA GPUs are available",
    "CUDA driver initialization failed",
    "invalid device ordinal",
)


@dataclass(frozen=True)
class Report:
    """What a command prints last for an exception: ``text`` (starts with ``error:`` or
    ``interrupted``; its last line is the fix), the exit ``status``, and whether the error was
    ``expected`` (False: nobody anticipated it, so its traceback is shown too)."""

    text: str
    status: int
    expected: bool = True


class WorkerError(Exception):
    """An exception of a spawned worker process, as its :class:`Report` (see
    :func:`report_to_parent`); torch's spawn hands its text to the parent."""

    def __init__(self, report: Report):
        super().__init__(f"[exit status {report.status}]\n{report.text}")


def _project_raised(exc: BaseException) -> bool:
    """Whether the innermost frame of ``exc``'s traceback is in this project's code."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    module = tb.tb_frame.f_globals.get("__name__", "")
    if module == "__main__":  # python -m pkg.mod
        spec = tb.tb_frame.f_globals.get("__spec__")
        module = getattr(spec, "name", "") or ""
    return module.split(".")[0] in PROJECT_PACKAGES


def _message(exc: BaseException) -> str:
    """``str(exc)``, without the quotes ``KeyError`` adds around a sentence."""
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return exc.args[0]
    return str(exc)


def _error(text: str) -> str:
    return text if text.startswith("error:") else f"error: {text}"


def _first_file(path: str) -> str:
    """The first component of ``path`` that exists and is not a folder (for ENOTDIR)."""
    parts = os.path.abspath(path).split(os.sep)
    for i in range(2, len(parts) + 1):
        head = os.sep.join(parts[:i])
        if os.path.exists(head) and not os.path.isdir(head):
            return head
    return path


def _existing_folder(path: str) -> str:
    """The nearest folder of ``path`` (itself, or a parent) that exists."""
    folder = os.path.abspath(path)
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    return folder


def _space(folder: str) -> str:
    try:
        usage = shutil.disk_usage(folder)
    except OSError:
        return ""
    gib = 1024**3
    return f" ({usage.free / gib:.1f} GiB free of {usage.total / gib:.1f} GiB)"


def _file_being_written(exc: BaseException) -> str | None:
    """The name of a file opened for writing in the innermost frame of ``exc``'s traceback that
    holds one (``with open(path, "w") as f: f.write(...)``: the write error has no file name)."""
    frames, tb = [], exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        for value in list(frame.f_locals.values()):
            mode = getattr(value, "mode", "")
            name = getattr(value, "name", None)
            if isinstance(value, io.IOBase) and isinstance(name, str) and isinstance(mode, str):
                if any(c in mode for c in "wax+"):
                    return name
    return None


def _os_error(exc: OSError, output: str) -> Report:
    """The report of an OSError, from its errno and file name(s); ``output`` names the setting
    that chooses where the command writes (e.g. ``OUTPUT_DIR``)."""
    path = exc.filename if exc.filename is not None else exc.filename2
    path = os.fsdecode(path) if path is not None else _file_being_written(exc)
    shown = path or "the file being written"
    folder = _existing_folder(path) if path else os.getcwd()
    elsewhere = f"set {output} to a folder on another disk" if output else "write elsewhere"
    code = exc.errno
    if code == errno.ENOSPC:
        text = (
            f"no space left on the device holding {folder}{_space(folder)} while writing "
            f"{shown}. Free space there, or {elsewhere}."
        )
        return Report(_error(text), FAILURE)
    if code == getattr(errno, "EDQUOT", None):
        text = (
            f"disk quota exceeded on {folder} while writing {shown}. Delete files of yours "
            f"there (quota -s shows the limit), or {elsewhere}."
        )
        return Report(_error(text), FAILURE)
    if code == errno.EFBIG:
        text = (
            f"{shown} grew past the largest file allowed here (the file size limit, ulimit -f, "
            f"or the file system's). Raise the limit (ulimit -f unlimited), or {elsewhere}."
        )
        return Report(_error(text), FAILURE)
    if code == errno.EROFS:
        text = (
            f"{folder} is on a read-only file system (writing {shown}). Use a writable folder: "
            f"{elsewhere}."
        )
        return Report(_error(text), FAILURE)
    if code in (errno.EACCES, errno.EPERM):
        text = (
            f"permission denied: {shown} (uid {os.getuid()} may not use it). Give yourself access "
            f"(ls -ld {folder}; chmod / chown), or use a path of yours"
            + (f" ({output})" if output else "")
            + "."
        )
        return Report(_error(text), FAILURE)
    if code == errno.ENOENT and path:
        parent = os.path.dirname(os.path.abspath(path))
        where = "" if os.path.isdir(parent) else f" (nor does its folder {parent})"
        text = (
            f"{path} does not exist{where}. Check the path: a typo, a path relative to another "
            "working directory, or a file removed while the command ran."
        )
        return Report(_error(text), USER_MISTAKE)
    if code == errno.ENOTDIR and path:
        text = (
            f"{_first_file(path)} is a file, but {path} needs it to be a folder. Choose another "
            "path, or move the file away."
        )
        return Report(_error(text), USER_MISTAKE)
    if code == errno.EISDIR and path:
        text = f"{path} is a folder, but a file is needed here. Pass the file inside it."
        return Report(_error(text), USER_MISTAKE)
    if code == errno.EEXIST and path and os.path.lexists(path) and not os.path.isdir(path):
        text = (
            f"{path} exists and is a file, but a folder is needed there. Choose another path, "
            "or move the file away."
        )
        return Report(_error(text), USER_MISTAKE)
    if code == errno.EIO:
        text = (
            f"input/output error on {shown}: the disk or network file system failed (see "
            "dmesg). Check it, then rerun the same command."
        )
        return Report(_error(text), FAILURE)
    if code in (errno.EMFILE, errno.ENFILE):
        text = (
            "too many open files. Raise the limit (ulimit -n 65536) or use fewer data loader "
            "workers."
        )
        return Report(_error(text), FAILURE)
    if code == errno.ENOMEM:
        text = "out of memory. Lower the batch size or the number of data loader workers."
        return Report(_error(text), FAILURE)
    if code == getattr(errno, "ESTALE", None):
        text = f"stale file handle on {shown}: the network file system dropped it. Rerun."
        return Report(_error(text), FAILURE)
    reason = exc.strerror or _message(exc)
    return Report(_error(f"{shown}: {reason}. Check the path and its disk."), FAILURE)


def _file_limit() -> str:
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    except (ImportError, OSError, ValueError):
        return ""
    return "" if soft == resource.RLIM_INFINITY else f" (ulimit -f is {soft} bytes)"


def _write_error(exc: BaseException, output: str) -> Report | None:
    """torch's zip writer reports a failed write (a full disk, a file size limit) as a
    RuntimeError without the errno; name the file it was writing and the likely causes."""
    text = _message(exc)
    if not isinstance(exc, RuntimeError):
        return None
    wrapped = re.match(r"\[Errno (\d+)\] (.*)", text)
    if wrapped:  # torch passed on the OSError of a write as its text
        code, reason = int(wrapped.group(1)), wrapped.group(2).strip()
        return _os_error(OSError(code, reason, _file_being_written(exc)), output)
    if not any(m in text for m in _TORCH_WRITE_FAILED):
        return None
    path = _file_being_written(exc)
    folder = _existing_folder(path) if path else os.getcwd()
    elsewhere = f"set {output} to a folder on another disk" if output else "write elsewhere"
    first = text.strip().splitlines()[0]
    return Report(
        _error(
            f"writing {path or 'a file'} failed ({first}): the disk holding {folder} is full"
            f"{_space(folder)}, or the file size limit{_file_limit()} was reached. Free space "
            f"there or raise the limit (ulimit -f unlimited), or {elsewhere}."
        ),
        FAILURE,
    )


def _yaml_error(exc: BaseException) -> Report | None:
    yaml = sys.modules.get("yaml")
    if yaml is None or not isinstance(exc, yaml.MarkedYAMLError):
        return None
    mark = exc.problem_mark or exc.context_mark
    where = (
        f"{mark.name}, line {mark.line + 1}, column {mark.column + 1}" if mark else "a YAML file"
    )
    what = exc.problem or exc.context or "a syntax error"
    text = (
        f"{where}: not valid YAML ({what}). Fix the syntax there: indentation, a missing "
        "bracket, quote or colon."
    )
    return Report(_error(text), USER_MISTAKE)


def _cuda_error(exc: BaseException) -> Report | None:
    torch = sys.modules.get("torch")
    text = _message(exc)
    if torch is not None and isinstance(exc, getattr(torch, "OutOfMemoryError", ())):
        return Report(
            _error(
                "the GPU ran out of memory. Lower the batch size (SOLVER.BATCH_SIZE, "
                "SOLVER.IMS_PER_BATCH or --batch-size) or the image size."
            ),
            FAILURE,
        )
    if isinstance(exc, (RuntimeError, AssertionError)) and any(m in text for m in _CUDA_MISSING):
        first = text.strip().splitlines()[0] if text.strip() else ""
        return Report(
            _error(
                f"CUDA was asked for, but this machine cannot use it ({first}). Set "
                "MODEL.DEVICE cpu (--device cpu), or run on a machine with a GPU."
            ),
            USER_MISTAKE,
        )
    return None


def _spawn_error(exc: BaseException) -> Report | None:
    spawn = sys.modules.get("torch.multiprocessing.spawn")
    if spawn is None:
        return None
    if isinstance(exc, spawn.ProcessRaisedException):
        text = str(exc)
        at = text.rfind(_WORKER_MARK)
        if at >= 0:
            status, _, rest = text[at + len(_WORKER_MARK) :].partition("]\n")
            if status.isdigit():
                return Report(rest.rstrip(), int(status))
        last = [line for line in text.strip().splitlines() if line.strip()][-1:]
        return Report(
            _error(f"worker process {exc.error_index} failed: {''.join(last)}"), FAILURE, False
        )
    if isinstance(exc, spawn.ProcessExitedException):
        if getattr(exc, "signal_name", None):
            why = f"was killed by {exc.signal_name}" + (
                ": often the out-of-memory killer (see dmesg)" if "KILL" in exc.signal_name else ""
            )
        else:
            why = f"exited with status {exc.exit_code}; its output above says why"
        text = (
            f"worker process {exc.error_index} (pid {exc.error_pid}) {why}. Lower the batch size "
            "or the data loader workers if memory ran out, then rerun the same command."
        )
        return Report(_error(text), FAILURE)
    return None


def describe(exc: BaseException, output: str = "", interrupted: str = "") -> Report:
    """The last line(s) a command prints for ``exc`` and its exit status.

    Args:
        exc: the exception that ended the command.
        output: the setting that chooses where the command writes (``OUTPUT_DIR``,
            ``--output-dir``), named in the fix of a full, read-only or forbidden folder.
        interrupted: what to do after Ctrl-C (e.g. how to resume).

    Returns:
        :class:`Report`; never raises.
    """
    if isinstance(exc, KeyboardInterrupt):
        text = "interrupted (Ctrl-C)" + (f": {interrupted}" if interrupted else "")
        return Report(text, INTERRUPTED)
    if isinstance(exc, SystemExit):
        code = exc.code
        if isinstance(code, str):
            return Report(_error(code), USER_MISTAKE)
        return Report(f"exit status {code}", code if isinstance(code, int) else FAILURE)
    if isinstance(exc, WorkerError):
        status, _, text = str(exc).partition("]\n")
        return Report(text, int(status.rsplit(" ", 1)[-1]))
    for special in (_spawn_error, _yaml_error, _cuda_error):
        report = special(exc)
        if report is not None:
            return report
    report = _write_error(exc, output)
    if report is not None:
        return report
    if isinstance(exc, OSError) and exc.errno is not None:
        return _os_error(exc, output)
    if isinstance(exc, MemoryError):
        return Report(
            _error("out of memory (RAM). Lower the batch size or the data loader workers."), FAILURE
        )
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        text = (
            f"the Python package {exc.name!r} is not installed for {sys.executable}. Install "
            "the project's requirements there (make install, or pip install -e .), or run with "
            "the Python that has them (.venv/bin/python)."
        )
        return Report(_error(text), FAILURE)
    bare_key = isinstance(exc, KeyError) and " " not in _message(exc)
    if _project_raised(exc) and not isinstance(exc, _BUG_TYPES) and not bare_key:
        mistake = isinstance(exc, (ValueError, LookupError, OSError))
        return Report(_error(_message(exc)), USER_MISTAKE if mistake else FAILURE)
    text = f"{type(exc).__name__}: {_message(exc)}".strip()
    return Report(_error(text), FAILURE, expected=False)


def _log_streams() -> list:
    """The handlers of every logger that write to a file (not the terminal), one per file."""
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    terminals = {id(s) for s in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)}
    seen, found = set(), []
    for lg in loggers:
        for handler in lg.handlers:
            stream = getattr(handler, "stream", None)
            if not isinstance(handler, logging.StreamHandler) or stream is None:
                continue
            if id(stream) in terminals or id(stream) in seen:
                continue
            seen.add(id(stream))
            found.append(handler)
    return found


def _write_logs(exc: BaseException, report: Report) -> None:
    """Append ``report`` and ``exc``'s traceback to every log file; a failing write (a full disk)
    is ignored: the terminal still gets the report."""
    text = "".join(traceback.format_exception(exc)) + report.text + "\n"
    for handler in _log_streams():
        try:
            handler.acquire()
            try:
                handler.stream.write(text)
                handler.flush()
            finally:
                handler.release()
        except Exception:  # noqa: BLE001 - the log is best effort, the terminal line is not
            pass


def _print_report(exc: BaseException, report: Report) -> None:
    try:
        sys.stdout.flush()  # earlier output first: the report must be the last line
    except Exception:  # noqa: BLE001 - a closed or full stdout must not hide the report
        pass
    try:
        if not report.expected or os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            traceback.print_exception(exc, file=sys.stderr)
        print(report.text, file=sys.stderr, flush=True)
    except OSError:  # stderr closed (a pipe whose reader left): the exit status still tells
        pass


def _in_spawned_worker() -> bool:
    return multiprocessing.parent_process() is not None


def report_to_parent(exc: BaseException) -> None:
    """In a worker process started by torch's spawn (detectron2's ``launch``): log ``exc`` and
    raise :class:`WorkerError` carrying its report, so the parent ends with the worker's line.
    Elsewhere (one process, torchrun), and for Ctrl-C or a clean exit, returns and the caller
    re-raises ``exc`` unchanged."""
    if not _in_spawned_worker() or isinstance(exc, KeyboardInterrupt):
        return
    if isinstance(exc, SystemExit) and exc.code in (None, 0):
        return
    report = describe(exc)
    _write_logs(exc, report)
    raise WorkerError(report) from exc


def entry_point(output: str = "", interrupted: str = "") -> Callable:
    """Decorate a console entry point ``main(argv=None)`` so that it ends with one final line.

    Args:
        output: the setting that chooses where the command writes (``"OUTPUT_DIR"``,
            ``"--output-dir"``), named in the fix for a full or read-only disk.
        interrupted: what to do after Ctrl-C (e.g. "rerun the same command to resume").

    Returns:
        The decorator. The decorated ``main(argv)``: on an exception, prints the report of
        :func:`describe` last on stderr (the traceback goes to the log files; to the terminal
        too when the error was not anticipated or ``MOCO_DEBUG=1``) and raises ``SystemExit``
        with its status; ``SystemExit`` of argparse and of the command pass through (a message
        instead of a status is printed as ``error: ...``, status 2). Called as a console script
        (``argv`` None), it returns an exit status for ``sys.exit`` (0 when the command returned
        a result that is not an int); called with ``argv`` (tests, the demo), it returns the
        command's own result.
    """

    def decorate(main: Callable) -> Callable:
        @functools.wraps(main)
        def wrapper(argv=None):
            try:
                result = main(argv)
            except SystemExit as e:
                if not isinstance(e.code, str):
                    raise
                report = describe(e)
                _print_report(e, report)
                raise SystemExit(report.status) from None
            except BaseException as e:  # noqa: BLE001 - every error ends with one line
                report = describe(e, output, interrupted)
                _write_logs(e, report)
                _print_report(e, report)
                raise SystemExit(report.status) from None
            if argv is None and not isinstance(result, int):
                return 0
            return result

        return wrapper

    return decorate
