"""Runs the demo's stages one by one: each stage's output goes to its log
(:mod:`demo.stage_output`), the terminal shows its live progress line and its result line
(:mod:`demo.console`) with the time left (:mod:`demo.eta`), and a failing stage shows the end of
its log."""

import logging
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Optional

from .console import Console, LiveStage, hms, result_line, tail
from .eta import DemoEta
from .stage_output import StageOutput

logger = logging.getLogger("demo")
TAIL_LINES = 20  # lines of a failed stage's log shown in the terminal


@dataclass
class Meter:
    """How a stage reports progress. ``read()`` returns ``(work_done, shown_done)``: work units
    (of ``total_work``, what the ETA extrapolates) and what the line shows (of ``shown_total``
    ``unit``s)."""

    total_work: float
    shown_total: int
    unit: str
    read: Callable[[], tuple]


@dataclass
class StageResult:
    """Filled in by the stage's code: ``summary`` for its result line."""

    summary: str = ""


class StageRunner:
    """Runs stages named in ``names`` (their order) with ``output`` (logs), ``console``
    (terminal) and ``eta``. ``rerun_hint``: the command that continues the demo, named when a
    stage fails."""

    def __init__(self, names, output: StageOutput, console: Console, eta: DemoEta, rerun_hint: str):
        self.names, self.output, self.console, self.eta = list(names), output, console, eta
        self.rerun_hint = rerun_hint

    @contextmanager
    def stage(self, name: str, meter: Optional[Meter] = None):
        """Run the block as stage ``name``: its output into ``logs/<name>.log``, the progress
        line while it runs, then the result line from the yielded :class:`StageResult`. An
        exception is logged (traceback in the stage's log), reported with the log's last lines
        and re-raised."""
        index, count = self.names.index(name) + 1, len(self.names)
        started = time.time()
        base = meter.read()[0] if meter else 0.0  # work done by an earlier, interrupted run
        self.eta.start(name, started, meter.total_work if meter else 0.0, base)

        def probe():
            if meter is None:
                return 0, 0, ""
            work, shown = meter.read()
            self.eta.update(work, time.time())
            return shown, meter.shown_total, meter.unit

        def eta():
            self.eta.now = time.time()
            return self.eta.left()

        result = StageResult()
        with self.output.capture(name) as log:
            logger.info("stage %s (%d/%d) started", name, index, count)
            try:
                with LiveStage(self.console, index, count, name, probe, eta):
                    yield result
            except BaseException as e:
                traceback.print_exc()  # into the stage's log
                failure = e
            else:
                failure = None
                logger.info("stage %s done: %s", name, result.summary)
        elapsed = time.time() - started
        if failure is not None:
            self._report_failure(index, count, name, elapsed, log.path, failure)
            failure.demo_log = log.path  # reported: callers need not print it again
            raise failure
        skipped = bool(meter) and base >= meter.total_work
        self.eta.finish(name, elapsed, skipped=skipped)
        summary = result.summary
        if log.warnings:  # the stage's warnings stay in its log; say that there are some
            summary += f" ({log.warnings} warning{'s' * (log.warnings > 1)} in {log.path})"
        self.console.line(result_line(index, count, name, elapsed, summary))

    def _report_failure(self, index, count, name, elapsed, log_path, error) -> None:
        self.eta.finish(name, elapsed, skipped=True)
        if isinstance(error, KeyboardInterrupt):
            self.console.line(
                f"[{index}/{count}] {name} interrupted after {hms(elapsed)}; "
                f"{self.rerun_hint} continues where it stopped (log: {log_path})"
            )
            return
        lines = tail(log_path, TAIL_LINES)
        self.console.line(f"[{index}/{count}] {name} FAILED after {hms(elapsed)}.")
        self.console.line(f"Last {len(lines)} lines of {log_path}:")
        for line in lines:
            self.console.line("    " + line)
        message = str(error).strip() or type(error).__name__
        self.console.line(
            f"The {name} stage failed: {message}\nFull log: {log_path}. After fixing the cause, "
            f"{self.rerun_hint} continues where it stopped."
        )
