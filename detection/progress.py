"""What the trial runner shows while it works: one line per trial and an overall ETA.

- :func:`format_status` turns :class:`TrialState` records into those lines and
  :func:`estimate_eta` gives the overall ETA; both are pure functions of the states.
- :class:`StatusDisplay` builds the states from the runner's trial records and each trial's
  files (read by a function the runner passes in, see ``detection.trial_folders.trial_files``) and
  shows them: on a terminal the lines are refreshed in place (tqdm, one line per trial, with
  the runner's own log lines printed above them); otherwise (a pipe, CI, the demo) they are
  logged as plain lines every ``log_period`` seconds.

A trial is *waiting* (not started, or queued for a retry), *running* (training; its iteration
and speed come from its ``metrics.json``), *evaluating* (its last training iteration is done but
its ``final_metrics.json`` is not written yet), *done* (with AP50) or *failed*.
"""

import datetime
import heapq
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from typing import NamedTuple, Optional

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

logger = logging.getLogger("detection.trials")
PHASES = ("waiting", "running", "evaluating", "done", "failed")
TTY_REFRESH_S = 1.0  # how often the lines are redrawn on a terminal


class TrialFiles(NamedTuple):
    """What a trial's files say about it (all None when a file is missing)."""

    iteration: Optional[int]  # training iterations done (last metrics.json line)
    eta_s: Optional[float]  # detectron2's own training ETA in that line
    checkpoint: Optional[str]  # the file last_checkpoint names (what a resume loads)
    eval_s: Optional[float]  # final evaluation time of a finished trial
    log: str  # the trial's log file


@dataclass
class TrialState:
    """One trial as :func:`format_status` shows it.

    ``phase`` is one of :data:`PHASES`; ``iteration`` the training iterations done of
    ``max_iter``; ``it_per_s`` its measured training speed; ``phase_s`` the seconds since it
    entered its phase (running: since its start; evaluating: since training ended);
    ``eval_s`` its measured final evaluation (done trials); ``attempt`` the attempts started
    of ``attempts`` allowed; ``resume_from`` the checkpoint a waiting trial resumes from.
    """

    trial: int
    seed: int
    phase: str
    iteration: Optional[int] = None
    max_iter: Optional[int] = None
    it_per_s: Optional[float] = None
    phase_s: Optional[float] = None
    eval_s: Optional[float] = None
    ap50: Optional[float] = None
    log: str = ""
    attempt: int = 0
    attempts: int = 1
    resume_from: Optional[str] = None


def _hms(seconds):
    return str(datetime.timedelta(seconds=int(round(seconds))))


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _typical(states):
    """(mean measured it/s, mean measured evaluation seconds of done trials, whether one was
    timed): what trials without their own measurement are assumed to need."""
    speed = _mean([s.it_per_s for s in states])
    eval_s = _mean([s.eval_s for s in states if s.phase == "done"])
    return speed, eval_s or 0.0, eval_s is not None


def _remaining(s, speed, eval_s):
    """Seconds ``s`` still needs (training at its own or the typical speed, then evaluation),
    or None when unknown."""
    if s.phase == "evaluating":
        return max(eval_s - (s.phase_s or 0.0), 0.0)
    if s.max_iter is None:
        return None
    left = max(s.max_iter - (s.iteration or 0), 0)
    rate = s.it_per_s or speed
    if left and not rate:
        return None
    return (left / rate if left else 0.0) + eval_s


def estimate_eta(states, slots):
    """Seconds until every trial is done or failed, or None while a needed speed is unknown.

    Training speed is each trial's own measured ``it_per_s``; the others get the mean of the
    measured speeds. Each trial adds the mean evaluation time measured on done trials (0 while
    none is known). Trials are given to ``slots`` concurrent places in order, each to the place
    that frees up first, as the runner does.
    """
    speed, eval_s, _ = _typical(states)
    busy = [_remaining(s, speed, eval_s) for s in states if s.phase in ("running", "evaluating")]
    queue = [_remaining(s, speed, eval_s) for s in states if s.phase == "waiting"]
    if None in busy or None in queue:
        return None
    free = busy + [0.0] * max(slots - len(busy), 0)
    heapq.heapify(free)
    for work in queue:
        heapq.heappush(free, heapq.heappop(free) + work)
    return max(free, default=0.0)


def _trial_line(s, speed, eval_s):
    if s.phase == "done":
        return f"done, AP50 {s.ap50:.2f}" if s.ap50 is not None else "done"
    if s.phase == "failed":
        return f"FAILED after {s.attempt} attempt(s), log {s.log}"
    retry = f" (attempt {s.attempt + 1} of {s.attempts})" if s.attempt else ""
    if s.phase == "waiting":
        return "waiting" + retry + (f", resumes from {s.resume_from}" if s.resume_from else "")
    since = f"{_hms(s.phase_s)} " if s.phase_s is not None else ""
    if s.phase == "evaluating":
        return f"evaluating (training done, {since}so far), log {s.log}"
    if s.iteration is None:
        return f"starting ({since}elapsed, no metrics.json line yet), log {s.log}"
    of = f" of {s.max_iter} ({100.0 * s.iteration / s.max_iter:.0f}%)" if s.max_iter else ""
    rate = f", {s.it_per_s:.2f} it/s" if s.it_per_s else ""
    left = _remaining(s, speed, eval_s)
    eta = f", eta {_hms(left)}" if left is not None else ""
    return f"running iteration {s.iteration}{of}{rate}{eta}, log {s.log}"


def format_status(states, slots):
    """Lines showing ``states`` (a list of :class:`TrialState`): one per trial, then the overall
    counts and ETA (:func:`estimate_eta` over ``slots`` concurrent places). Returns list[str]."""
    speed, eval_s, timed = _typical(states)
    heads = [f"trial {s.trial} (seed {s.seed})" for s in states]
    width = max(map(len, heads), default=0)
    lines = [f"{h:<{width}}  {_trial_line(s, speed, eval_s)}" for h, s in zip(heads, states)]
    counts = ", ".join(
        f"{n} {phase}" for phase in PHASES if (n := sum(s.phase == phase for s in states))
    )
    if all(s.phase in ("done", "failed") for s in states):
        return lines + [f"all {len(states)} trials: {counts}"]
    eta = estimate_eta(states, slots)
    if eta is None:
        detail = "ETA unknown until a running trial reports its speed"
    else:
        rate = f"{speed:.2f} it/s per trial" if speed else "no training left"
        measured = f"evaluation {_hms(eval_s)} each" if timed else "evaluation not timed yet"
        detail = f"ETA {_hms(eta)} ({rate}, {measured})"
    return lines + [f"all {len(states)} trials: {counts}; {detail}"]


class StatusDisplay:
    """Shows the runner's trials with :func:`format_status`; call :meth:`update` every poll and
    :meth:`close` at the end (it logs the final lines).

    Args:
        trials (list[dict]): the runner's records ({"trial", "seed", "output_dir"}, and once
            known "status" "finished" | "failed", "attempts", "AP50"), read, never changed.
        read (callable): output_dir -> :class:`TrialFiles`.
        slots (int): trials run at once. max_iter (int or None): iterations per trial.
        attempts (int): attempts allowed per trial. log_period (float): seconds between the
            plain lines when ``stream`` is not a terminal.
        stream: where the runner's console log goes (default sys.stdout); a terminal gets the
            lines in place, and the console handlers of ``loggers`` print above them meanwhile.
    """

    def __init__(
        self, trials, read, slots, max_iter, attempts, log_period, stream=None, loggers=None
    ):
        self.trials, self.read, self.slots, self.max_iter = trials, read, slots, max_iter
        self.attempts, self.log_period = attempts, log_period
        stream = stream or sys.stdout
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.period = min(TTY_REFRESH_S, log_period) if self.tty else log_period
        self.last_shown = -float("inf")
        self.speed = {}  # trial -> (started, (t0, it0), (t1, it1)): first and latest change
        self.eval_seen = {}  # trial -> (started, when its evaluation was first seen)
        self.files = {}  # trial -> TrialFiles of finished trials (they no longer change)
        self.bars, self.redirect = [], None
        if self.tty:
            self._open_bars(stream, loggers or [logging.getLogger("detection")])

    def _open_bars(self, stream, loggers):
        # tqdm draws each line at a fixed position, and its logging redirect clears the lines,
        # prints a log record, and draws them again, so records never mix with the display.
        self.bars = [
            tqdm(file=stream, position=i, bar_format="{desc}", leave=False)
            for i in range(len(self.trials) + 1)
        ]
        self.redirect = logging_redirect_tqdm(loggers=loggers, tqdm_class=tqdm)
        self.redirect.__enter__()

    def states(self, running, now):
        """:class:`TrialState` of every trial; ``running``: {trial index: start time (epoch s)}
        of the running trials."""
        return [self._state(t, running.get(t["trial"]), now) for t in self.trials]

    def _state(self, t, started, now):
        i, status = t["trial"], t.get("status")
        files = self.files.get(i) or self.read(t["output_dir"])
        if status:
            self.files[i] = files
        it = files.iteration
        if it is not None and self.max_iter:
            it = min(it, self.max_iter)  # the final evaluation's line has iteration max_iter
        s = TrialState(
            trial=i,
            seed=t["seed"],
            phase={"finished": "done", "failed": "failed"}.get(status, "waiting"),
            iteration=it,
            max_iter=self.max_iter,
            eval_s=files.eval_s,
            ap50=t.get("AP50"),
            log=_short(files.log),
            attempt=t.get("attempts", 0),
            attempts=self.attempts,
        )
        if started is None:
            if status is None:
                self.speed.pop(i, None)  # waiting (again): a retry measures its own speed
                s.resume_from = files.checkpoint
            s.it_per_s = self._rate(i, files)
            return s
        self._observe(i, started, it, now)
        s.it_per_s = self._rate(i, files)
        s.phase, s.phase_s = "running", now - started
        if self.max_iter and (it or 0) >= self.max_iter:
            if self.eval_seen.get(i, (None,))[0] != started:
                self.eval_seen[i] = (started, now)
            s.phase, s.phase_s = "evaluating", now - self.eval_seen[i][1]
        return s

    def _observe(self, i, started, it, now):
        """Remember when this attempt's iteration was first seen and when it last changed."""
        if it is None:
            return
        rec = self.speed.get(i)
        if rec is None or rec[0] != started or it < rec[2][1]:
            rec = (started, (now, it), (now, it))  # new attempt, or metrics.json was cut back
        elif it > rec[2][1]:
            rec = (started, rec[1], (now, it))
        self.speed[i] = rec

    def _rate(self, i, files):
        """Iterations/s between the first and the latest change of the iteration seen in the
        trial's latest attempt, else derived from detectron2's ETA in metrics.json, else None."""
        rec = self.speed.get(i)
        if rec is not None:
            (t0, it0), (t1, it1) = rec[1], rec[2]
            if it1 > it0 and t1 > t0:
                return (it1 - it0) / (t1 - t0)
        it = files.iteration
        if rec is not None and files.eta_s and self.max_iter and self.max_iter > it:
            return (self.max_iter - it) / files.eta_s
        return None

    def update(self, running, now=None):
        """Measure the running trials and, when the display is due, show every trial.
        ``running``: {trial index: start time (epoch s)}."""
        now = time.time() if now is None else now
        states = self.states(running, now)
        if not running or now - self.last_shown < self.period:
            return
        self.last_shown = now
        self._show(format_status(states, self.slots))

    def _show(self, lines):
        if not self.tty:
            for line in lines:
                logger.info("%s", line)
            return
        # Lines are cut at the terminal's width (a wrapped line would break the redraw). tqdm
        # reads a terminal that reports no size (0x0) as 0 columns and -1 rows and then draws
        # nothing; shutil falls back to 80x24 there.
        size = shutil.get_terminal_size()
        for bar, line in zip(self.bars, lines):
            bar.ncols, bar.nrows = size.columns, size.lines
            bar.set_description_str(line, refresh=False)
        for bar in self.bars:
            bar.refresh()

    def close(self):
        """Remove the lines from a terminal, restore the loggers, then log the final lines."""
        for bar in reversed(self.bars):
            bar.close()
        if self.redirect is not None:
            self.redirect.__exit__(None, None, None)
        self.bars, self.redirect, self.tty = [], None, False
        self._show(format_status(self.states({}, time.time()), self.slots))


def _short(path):
    """``path`` relative to the working directory when it lies below it (shorter lines)."""
    rel = os.path.relpath(path) if path else path
    return rel if rel and not rel.startswith(os.pardir) else path
