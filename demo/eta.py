"""The demo's time left, re-estimated from the speed this machine shows while the demo runs.

A preset's ``estimates`` are the seconds each stage took on a reference machine. They are
used as they are only until something has been measured:

- the running stage's time left is extrapolated from its own progress (done / total work
  units, elapsed seconds) as soon as it has made enough of it; pretraining counts iterations,
  detection counts the iterations of all trials plus, per trial, ``overhead_units``
  iteration-equivalents for its start-up, precise BN and evaluation;
- the stages still to come take their reference seconds times the machine factor: how much
  longer than its reference the last measured stage is projected (or was) to take.

The progress itself is read from files the stages write (``metrics.json`` of pretraining and
of each detection trial, ``final_metrics.json`` of a finished trial): see :func:`pretrain_done`
and :func:`detection_done`.
"""

import os

from detection.summary import FINAL_METRICS
from detection.trial_folders import read_progress

# Extrapolate a stage from its own progress once this share of its work is done and this many
# seconds have passed; before that, its reference time (times the machine factor) is used.
MIN_FRACTION = 0.03
MIN_SECONDS = 20.0
# Stages with a shorter reference time (data generation, conversion) say too little about the
# machine's speed to set the factor.
MIN_REFERENCE = 10.0


class DemoEta:
    """Seconds left in the running stage and in the whole demo.

    ``estimates``: stage -> reference seconds (a preset's ``estimates``); ``order``: the stage
    names in running order. Call :meth:`start`, :meth:`update` (any number of times) and
    :meth:`finish` for each stage, and :meth:`left` for the numbers to show.
    """

    def __init__(self, estimates: dict, order):
        self.estimates, self.order = dict(estimates), list(order)
        self.finished = set()
        self.factor = 1.0  # measured / reference seconds of the last measured stage
        self.stage, self.started, self.now = None, 0.0, 0.0
        self.total = self.done = self.base = 0.0

    def start(self, stage: str, now: float, total_units: float = 0.0, done_units=0.0) -> None:
        """``stage`` starts at time ``now`` with ``total_units`` of work (0: no progress is
        reported, the reference time is used), ``done_units`` of which an earlier run did."""
        self.stage, self.started, self.now = stage, now, now
        self.total, self.done, self.base = float(total_units), float(done_units), float(done_units)

    def update(self, done_units: float, now: float) -> None:
        """The running stage has done ``done_units`` at time ``now``."""
        self.done, self.now = float(done_units), now
        reference = self.estimates.get(self.stage, 0)
        if reference < MIN_REFERENCE:
            return
        projected = self._projected()
        if projected is not None:  # scaled to the whole stage when an earlier run did a part
            self.factor = projected * self.total / (self.total - self.base) / reference
        else:  # no usable progress yet: the stage is at least as slow as its elapsed time says
            self.factor = max(self.factor, (now - self.started) / reference)

    def finish(self, stage: str, elapsed: float, skipped: bool = False) -> None:
        """``stage`` ended after ``elapsed`` seconds (``skipped``: it had been done earlier, so
        its time says nothing about this machine)."""
        reference = self.estimates.get(stage, 0)
        if not skipped and reference >= MIN_REFERENCE and elapsed > 0:
            self.factor = elapsed / reference
        self.finished.add(stage)
        self.stage = None

    def _projected(self):
        """Projected total seconds of the running stage from its own progress, or None."""
        elapsed = self.now - self.started
        todo = self.total - self.base
        if todo <= 0 or self.done <= self.base or elapsed < MIN_SECONDS:
            return None
        fraction = min((self.done - self.base) / todo, 1.0)
        if fraction < MIN_FRACTION:
            return None
        return elapsed / fraction

    def left(self) -> tuple:
        """``(stage_left, demo_left)`` in seconds. ``stage_left`` is None between stages and
        when the running stage has outlived its estimate without measurable progress."""
        stage_left = None
        if self.stage is not None:
            elapsed = self.now - self.started
            projected = self._projected()
            if projected is None:
                projected = self.estimates.get(self.stage, 0) * self.factor
            stage_left = projected - elapsed if projected > elapsed else None
        later = [s for s in self.order if s not in self.finished and s != self.stage]
        demo_left = (stage_left or 0.0) + sum(self.estimates.get(s, 0) for s in later) * self.factor
        return stage_left, demo_left


def pretrain_done(output_dir: str, startup_units: float) -> tuple:
    """``(work units, iterations)`` done by the pretraining writing to ``output_dir``: the
    iterations in its ``metrics.json``, plus ``startup_units`` once the first line is there."""
    progress = read_progress(output_dir)
    if progress is None:
        return 0.0, 0
    iterations = progress[0] + 1
    return startup_units + iterations, iterations


def detection_done(folders, max_iter: int, overhead_units: float) -> tuple:
    """``(work units, iterations)`` done by the detection trials under ``folders`` (one folder
    per init, holding ``trial_<i>_seed_<s>/``). Work: per finished trial ``max_iter +
    overhead_units``, per started trial its iterations so far plus the start-up share (half of
    ``overhead_units``)."""
    done = iterations = 0.0
    for folder in folders:
        try:
            names = [n for n in os.listdir(folder) if n.startswith("trial_")]
        except OSError:
            continue
        for name in names:
            trial = os.path.join(folder, name)
            if not os.path.isdir(trial):
                continue
            if os.path.exists(os.path.join(trial, FINAL_METRICS)):
                done, iterations = done + max_iter + overhead_units, iterations + max_iter
                continue
            progress = read_progress(trial)
            if progress is not None:
                its = min(progress[0] + 1, max_iter)
                done, iterations = done + its + overhead_units / 2, iterations + its
    return done, int(iterations)
