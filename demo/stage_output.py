"""Where the output of the demo's stages goes: ``<output>/logs/<stage>.log``.

Between stages (and for the demo's own lines) it goes to ``<output>/logs/demo.log``.

While a stage runs, everything it prints lands in its log: Python's ``sys.stdout`` and
``sys.stderr`` (logging handlers, warnings, tracebacks, the relayed output of the detection
trial runners) and, when the process has real file descriptors 1 and 2, whatever C code and
child processes write to them. The terminal stays free for :mod:`demo.console`. With
``verbose`` the Python-level output is copied to the terminal too (and file-descriptor output
goes only there), as before this module existed.
"""

import io
import os
import re
import sys
from contextlib import contextmanager

# Terminal colour codes (detectron2 colours its console log lines and the YAML it prints)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# A warning in a log: detectron2's console format ("WARNING [time logger]: ...", relayed lines
# prefixed with "[init] ") or Python's ("file:line: UserWarning: ...")
_WARNING = re.compile(r"^(?:\[\w+\] )?WARNING \[|^\S+:\d+: \w*Warning: ", re.M)


class _Plain:
    """A log file that drops terminal colour codes from what is written to it and counts the
    warnings in it (``warnings``); ``path`` is the file's path."""

    def __init__(self, file):
        self.file, self.path, self.warnings = file, file.name, 0

    def write(self, text):
        text = _ANSI.sub("", text)
        self.warnings += len(_WARNING.findall(text))
        return self.file.write(text)

    def flush(self):
        self.file.flush()

    def fileno(self):
        return self.file.fileno()

    @property
    def encoding(self):
        return self.file.encoding


class _Router(io.TextIOBase):
    """Stands in for ``sys.stdout`` / ``sys.stderr`` during the demo and writes to the current
    targets. Logging handlers keep a reference to the stream they were created with; routing
    through one object keeps those handlers writing to the log of whatever stage runs now."""

    def __init__(self, fallback):
        super().__init__()
        self.fallback = fallback
        self.targets = [fallback]

    def write(self, text):
        for target in self.targets:
            target.write(text)
        return len(text)

    def flush(self):
        for target in self.targets:
            target.flush()

    def isatty(self):
        return False  # stage output is a log, not a terminal: no colours or progress bars

    def fileno(self):
        return self.targets[-1].fileno()

    @property
    def encoding(self):
        return getattr(self.targets[-1], "encoding", "utf-8")


# One router per original stream for the life of the process: handlers created during one
# demo run (detectron2 caches its loggers) still route correctly in the next run.
_ROUTERS = {}


def _router(stream) -> _Router:
    if stream not in _ROUTERS:
        _ROUTERS[stream] = _Router(stream)
    return _ROUTERS[stream]


def _fd_is(stream, fd: int) -> bool:
    try:
        return stream.fileno() == fd
    except (AttributeError, OSError, ValueError):
        return False


class StageOutput:
    """Captures the output of each stage into ``<log_dir>/<stage>.log``.

    Use as a context manager around the whole demo (it installs the routers and gives
    :attr:`terminal`, where the demo's own lines go), and :meth:`capture` around each stage.
    """

    def __init__(self, log_dir: str, verbose: bool = False):
        self.log_dir, self.verbose = log_dir, verbose
        self.terminal = self.demo_log = None
        self._saved = None

    def __enter__(self):
        os.makedirs(self.log_dir, exist_ok=True)
        sys.stdout.flush()
        # The terminal must survive the redirection of file descriptor 1: write to a copy of it
        # when sys.stdout is fd 1 (a real run), else to the sys.stdout object itself (a test
        # harness that captured it).
        if _fd_is(sys.stdout, 1):
            self.terminal = os.fdopen(os.dup(1), "w", buffering=1, encoding=sys.stdout.encoding)
        else:
            self.terminal = sys.stdout
        self.demo_log = _Plain(open(self.log_path("demo"), "a", buffering=1, encoding="utf-8"))
        self._saved = (sys.stdout, sys.stderr)
        sys.stdout, sys.stderr = _router(sys.stdout), _router(sys.stderr)
        self._idle()
        return self

    def __exit__(self, *exc):
        for router in (sys.stdout, sys.stderr):
            router.flush()
            router.targets = [router.fallback]
        sys.stdout, sys.stderr = self._saved
        if self.terminal is not sys.stdout:
            self.terminal.close()
        self.demo_log.file.close()
        return False

    def _idle(self):
        """Between stages: demo.log (and the terminal with verbose)."""
        for router in (sys.stdout, sys.stderr):
            router.flush()
            router.targets = [self.demo_log] + ([router.fallback] if self.verbose else [])

    def log_path(self, stage: str) -> str:
        """``<log_dir>/<stage>.log``."""
        return os.path.join(self.log_dir, f"{stage}.log")

    @contextmanager
    def capture(self, stage: str):
        """Append everything printed inside the block to the stage's log. Yields the log: its
        ``path`` and the number of ``warnings`` written to it so far through Python."""
        path = self.log_path(stage)
        routers = (sys.stdout, sys.stderr)
        with open(path, "a", buffering=1, encoding="utf-8", errors="replace") as file:
            log = _Plain(file)
            for router in routers:
                router.flush()
                router.targets = [log, router.fallback] if self.verbose else [log]
            saved_fds = [] if self.verbose else _redirect_fds(log.fileno())
            try:
                yield log
            finally:
                self._idle()
                for fd, copy in saved_fds:
                    os.dup2(copy, fd)
                    os.close(copy)


def _redirect_fds(target: int) -> list:
    """Point file descriptors 1 and 2 at ``target``; returns ``[(fd, saved copy)]`` to undo it.
    Descriptors that are not open are left alone."""
    saved = []
    for fd in (1, 2):
        try:
            copy = os.dup(fd)
        except OSError:
            continue
        os.dup2(target, fd)
        saved.append((fd, copy))
    return saved
