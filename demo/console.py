"""What ``python -m demo`` shows in the terminal: per stage one live progress line (bar,
elapsed time, the stage's time left, the demo's ETA) and one result line.

On a terminal the progress line is redrawn in place (carriage return); anywhere else (CI, a
pipe, a file) the same information comes as plain lines, at most one every
``Console.plain_interval`` seconds, with no carriage return. The formatting is done by the pure
functions :func:`progress_line` and :func:`result_line`; the bar is tqdm's.
"""

import collections
import threading
import time

from tqdm import tqdm

# Bar width on a terminal whose width is unknown; tqdm sizes {bar} to fill ``ncols``.
DEFAULT_WIDTH = 100


def hms(seconds) -> str:
    """``75`` -> ``"1m15s"``, ``3725`` -> ``"1h02m05s"``; None -> ``"?"``."""
    if seconds is None:
        return "?"
    seconds = max(int(round(seconds)), 0)
    hours, rest = divmod(seconds, 3600)
    if hours:
        return f"{hours}h{rest // 60:02d}m{rest % 60:02d}s"
    return f"{rest // 60}m{rest % 60:02d}s"


def progress_line(
    index: int,
    count: int,
    stage: str,
    done: float,
    total,
    unit: str,
    elapsed: float,
    left,
    demo_left,
    bar: bool,
    width: int = DEFAULT_WIDTH,
) -> str:
    """One progress line of a stage.

    ``index``/``count``: the stage's place ("[2/6]"); ``done`` of ``total`` ``unit``s (total
    None or 0: no fraction is known); ``elapsed``: seconds in the stage; ``left`` and
    ``demo_left``: seconds until the stage and the whole demo end (None: not known yet);
    ``bar``: draw tqdm's bar sized to ``width`` columns (terminal), else plain text. Returns the
    line without a newline.
    """
    head = f"[{index}/{count}] {stage:<8}"
    times = f"{hms(elapsed)} elapsed, {hms(left)} left, demo ETA {hms(demo_left)}"
    if not total:
        return f"{head} {times}"
    if not bar:
        pct = 100.0 * done / total
        return f"{head} {int(done)}/{int(total)} {unit} ({pct:.0f}%), {times}"
    fmt = "{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} " + unit + ", " + times
    return tqdm.format_meter(
        int(done), int(total), elapsed, ncols=width, prefix=head, bar_format=fmt
    )


def result_line(index: int, count: int, stage: str, elapsed: float, summary: str) -> str:
    """The line a finished (or skipped) stage leaves: ``[i/n] stage  done in 1m02s: summary``."""
    return f"[{index}/{count}] {stage:<8} done in {hms(elapsed)}: {summary}"


class Console:
    """Writes the demo's lines to ``stream`` (the user's terminal, or a pipe).

    ``tty`` (default: ``stream.isatty()``) picks in-place redraws or plain lines;
    ``width``: the terminal's columns for the bar (default :data:`DEFAULT_WIDTH`).
    """

    plain_interval = 60.0  # seconds between plain progress lines (not a terminal)
    redraw_interval = 0.5  # seconds between redraws on a terminal

    def __init__(self, stream, tty=None, width=None):
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.width = width or DEFAULT_WIDTH
        self._live = False  # a progress line is on screen without its newline
        self._lock = threading.Lock()

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def line(self, text: str) -> None:
        """Print ``text`` on its own line(s), above a live progress line if there is one."""
        with self._lock:
            if self._live:
                self._write("\r\x1b[K")
                self._live = False
            self._write(text + "\n")

    def progress(self, text: str) -> None:
        """Show a progress line: redrawn in place on a terminal, one plain line otherwise."""
        with self._lock:
            if self.tty:
                self._write("\r" + text + "\x1b[K")
                self._live = True
            else:
                self._write(text + "\n")

    def close_line(self) -> None:
        """End a live progress line (keep it on screen)."""
        with self._lock:
            if self._live:
                self._write("\n")
                self._live = False


class LiveStage:
    """Draws a stage's progress line in a background thread while the stage runs; on a
    terminal the next :meth:`Console.line` (the result line) replaces it.

    ``probe()`` returns ``(done, total, unit)``; ``eta()`` returns ``(stage_left,
    demo_left)`` in seconds (None when unknown). The line is redrawn every
    ``Console.redraw_interval`` seconds on a terminal, and printed every
    ``Console.plain_interval`` seconds otherwise (plus once at the start).
    """

    def __init__(self, console: Console, index: int, count: int, stage: str, probe, eta):
        self.console, self.index, self.count, self.stage = console, index, count, stage
        self.probe, self.eta = probe, eta
        self.started = time.time()
        self._stop = threading.Event()
        self._thread = None

    def text(self) -> str:
        """The current progress line."""
        done, total, unit = self.probe()
        left, demo_left = self.eta()
        return progress_line(
            self.index,
            self.count,
            self.stage,
            done,
            total,
            unit,
            time.time() - self.started,
            left,
            demo_left,
            bar=self.console.tty,
            width=self.console.width,
        )

    def _run(self):
        interval = self.console.redraw_interval if self.console.tty else self.console.plain_interval
        while True:
            self.console.progress(self.text())
            if self._stop.wait(interval):
                return

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, name=f"demo-{self.stage}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        if self.console.tty:  # the final state, until the result line replaces it
            self.console.progress(self.text())
        return False


def tail(path: str, lines: int = 20) -> list:
    """The last ``lines`` lines of the text file ``path`` (without newlines); [] if unreadable."""
    try:
        with open(path, errors="replace") as f:
            return [line.rstrip("\n") for line in collections.deque(f, maxlen=lines)]
    except OSError:
        return []
