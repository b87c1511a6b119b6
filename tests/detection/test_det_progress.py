"""The trial runner's status lines: the formatter and ETA on given states, the display on a
terminal and on a pipe, and the phases read from a trial's files."""

import io
import json
import logging
import os
import sys

import pytest

from detection.progress import StatusDisplay, TrialFiles, TrialState, estimate_eta, format_status
from detection.trial_folders import trial_files

LOG = "out/trial_{}/train_net.out"


def state(trial, phase, **kw):
    return TrialState(trial=trial, seed=1000 * trial, phase=phase, max_iter=1000,
                      log=LOG.format(trial), attempts=2, **kw)  # fmt: skip


def test_every_phase_and_the_overall_eta():
    states = [
        state(0, "done", ap50=82.414, eval_s=60.0, attempt=1),
        state(1, "running", iteration=100, it_per_s=1.0, phase_s=300.0, attempt=1),
        state(2, "running", iteration=500, it_per_s=2.0, phase_s=250.0, attempt=2),
        state(3, "waiting", attempt=1, resume_from="model_0000499.pth"),
        state(4, "evaluating", iteration=1000, phase_s=20.0, attempt=1),
        state(5, "failed", attempt=2),
        state(6, "running", phase_s=5.0, attempt=1),  # no metrics.json line yet
    ]
    # Typical speed: mean of 1 and 2 it/s; evaluation: 60 s (measured on trial 0). Remaining:
    # trial 1 900/1 + 60 = 960, trial 2 500/2 + 60 = 310, trial 4 60 - 20 = 40, trial 6
    # 1000/1.5 + 60 = 726.7; trial 3 waits for the first of 4 places to free up (trial 4, at 40)
    # and ends at 40 + 726.7. The last to end is trial 1.
    assert estimate_eta(states, slots=4) == pytest.approx(960.0)
    assert format_status(states, slots=4) == [
        "trial 0 (seed 0)     done, AP50 82.41",
        "trial 1 (seed 1000)  running iteration 100 of 1000 (10%), 1.00 it/s, eta 0:16:00, "
        "log out/trial_1/train_net.out",
        "trial 2 (seed 2000)  running iteration 500 of 1000 (50%), 2.00 it/s, eta 0:05:10, "
        "log out/trial_2/train_net.out",
        "trial 3 (seed 3000)  waiting (attempt 2 of 2), resumes from model_0000499.pth",
        "trial 4 (seed 4000)  evaluating (training done, 0:00:20 so far), "
        "log out/trial_4/train_net.out",
        "trial 5 (seed 5000)  FAILED after 2 attempt(s), log out/trial_5/train_net.out",
        "trial 6 (seed 6000)  starting (0:00:05 elapsed, no metrics.json line yet), "
        "log out/trial_6/train_net.out",
        "all 7 trials: 1 waiting, 3 running, 1 evaluating, 1 done, 1 failed; "
        "ETA 0:16:00 (1.50 it/s per trial, evaluation 0:01:00 each)",
    ]


def test_eta_follows_the_free_places_and_is_unknown_without_a_speed():
    running = state(0, "running", iteration=900, it_per_s=1.0)  # 100 s left
    waiting = [state(1, "waiting"), state(2, "waiting")]  # 1000 s each at 1 it/s
    assert estimate_eta([running, *waiting], slots=1) == pytest.approx(2100.0)
    # two places: trial 1 starts now (ends at 1000), trial 2 when trial 0 ends (at 1100)
    assert estimate_eta([running, *waiting], slots=2) == pytest.approx(1100.0)
    starting = state(0, "running", phase_s=3.0)
    assert estimate_eta([starting, *waiting], slots=1) is None
    assert format_status([starting], slots=1)[-1] == (
        "all 1 trials: 1 running; ETA unknown until a running trial reports its speed"
    )
    assert format_status([state(0, "done"), state(1, "failed", attempt=2)], slots=1)[-1] == (
        "all 2 trials: 1 done, 1 failed"
    )


class Files:
    """A fake ``read``: the TrialFiles of each output dir, changed by the test as time goes."""

    def __init__(self, trials):
        self.now = {t["output_dir"]: TrialFiles(None, None, None, None, t["output_dir"] + "/log")
                    for t in trials}  # fmt: skip

    def set(self, trial, **kw):
        self.now[trial["output_dir"]] = self.now[trial["output_dir"]]._replace(**kw)

    def __call__(self, output_dir):
        return self.now[output_dir]


@pytest.fixture
def status_records():
    """The messages logged by the status display (its plain lines)."""
    records, handler = [], logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    status_logger = logging.getLogger("detection.trials")
    status_logger.addHandler(handler)
    level, status_logger.level = status_logger.level, logging.INFO
    yield records
    status_logger.removeHandler(handler)
    status_logger.setLevel(level)


def two_trials():
    return [{"trial": i, "seed": 1000 * i, "output_dir": f"/runs/trial_{i}"} for i in (0, 1)]


def test_plain_lines_every_log_period_when_not_a_terminal(status_records):
    trials = two_trials()
    files = Files(trials)
    display = StatusDisplay(trials, files, 1, 100, 2, log_period=30.0, stream=io.StringIO())
    display.update({0: 1000.0}, now=1000.0)  # trial 0 just started: shown at once
    assert status_records == [
        "trial 0 (seed 0)     starting (0:00:00 elapsed, no metrics.json line yet), log "
        "/runs/trial_0/log",
        "trial 1 (seed 1000)  waiting",
        "all 2 trials: 1 waiting, 1 running; ETA unknown until a running trial reports its speed",
    ]
    files.set(trials[0], iteration=20)
    display.update({0: 1000.0}, now=1010.0)
    assert len(status_records) == 3  # nothing new within --log-period
    files.set(trials[0], iteration=60)
    display.update({0: 1000.0}, now=1030.0)  # measured: 40 iterations in 20 s
    assert status_records[3:] == [
        "trial 0 (seed 0)     running iteration 60 of 100 (60%), 2.00 it/s, eta 0:00:20, "
        "log /runs/trial_0/log",
        "trial 1 (seed 1000)  waiting",
        "all 2 trials: 1 waiting, 1 running; ETA 0:01:10 (2.00 it/s per trial, evaluation not "
        "timed yet)",
    ]
    files.set(trials[0], iteration=101)  # the final evaluation's line: training is done
    display.update({0: 1000.0}, now=1050.0)
    display.update({0: 1000.0}, now=1060.0)
    assert status_records[6] == (
        "trial 0 (seed 0)     evaluating (training done, 0:00:10 so far), log /runs/trial_0/log"
    )
    trials[0].update(status="finished", AP50=81.25, attempts=1)
    files.set(trials[0], eval_s=70.0)
    display.update({1: 1120.0}, now=1125.0)  # trial 1 starts: its speed is not known yet
    # trial 1 is assumed as fast as trial 0 (100 iterations at 2 it/s) and to evaluate as long
    assert status_records[-1] == (
        "all 2 trials: 1 running, 1 done; ETA 0:02:00 (2.00 it/s per trial, evaluation 0:01:10 "
        "each)"
    )
    trials[1].update(status="failed", attempts=2)
    display.close()
    assert status_records[-3:] == [
        "trial 0 (seed 0)     done, AP50 81.25",
        "trial 1 (seed 1000)  FAILED after 2 attempt(s), log /runs/trial_1/log",
        "all 2 trials: 1 done, 1 failed",
    ]
    assert not any("\r" in line or "\x1b" in line for line in status_records)


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_lines_are_redrawn_in_place_on_a_terminal(monkeypatch, status_records):
    term = Terminal()
    monkeypatch.setattr(sys, "stdout", term)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("LINES", "40")
    runner_log = logging.getLogger("test_det_progress.runner")
    handler = logging.StreamHandler(sys.stdout)  # the runner's console handler
    runner_log.handlers, runner_log.propagate = [handler], False
    runner_log.setLevel(logging.INFO)
    trials = two_trials()
    files = Files(trials)
    display = StatusDisplay(trials, files, 1, 100, 2, log_period=60.0, loggers=[runner_log])
    files.set(trials[0], iteration=10, eta_s=45.0)  # 90 iterations in 45 s: 2 it/s
    display.update({0: 1000.0}, now=1000.0)
    runner_log.info("trial 1 (seed 1000): something to say")
    files.set(trials[0], iteration=14)
    display.update({0: 1000.0}, now=1002.0)  # a terminal is redrawn every second
    text = term.getvalue()
    first = "trial 0 (seed 0)     running iteration 10 of 100 (10%), 2.00 it/s, eta 0:00:45"
    second = "trial 0 (seed 0)     running iteration 14 of 100 (14%), 2.00 it/s, eta 0:00:43"
    assert first in text and second in text and "\r" in text and "\x1b[A" in text  # cursor up
    # the log record is printed once, between the two drawings, on a line of its own
    assert text.count("trial 1 (seed 1000): something to say\n") == 1
    assert text.index(first) < text.index("something to say") < text.rindex(second)
    assert status_records == []  # on a terminal the lines are not logged meanwhile
    trials[0].update(status="finished", AP50=50.0, attempts=1)
    trials[1].update(status="finished", AP50=51.0, attempts=1)
    display.close()
    assert runner_log.handlers == [handler]  # the console handler is back
    assert status_records == [
        "trial 0 (seed 0)     done, AP50 50.00",
        "trial 1 (seed 1000)  done, AP50 51.00",
        "all 2 trials: 2 done",
    ]


def test_trial_files_give_iteration_checkpoint_and_evaluation_time(tmp_path):
    out = str(tmp_path)
    assert trial_files(out) == TrialFiles(None, None, None, None, f"{out}/train_net.out")
    with open(tmp_path / "metrics.json", "w") as f:
        f.write(json.dumps({"iteration": 19, "eta_seconds": 12.5}) + "\n")
        f.write(json.dumps({"iteration": 39, "eta_seconds": 8.0}) + "\n")
    (tmp_path / "last_checkpoint").write_text("model_final.pth")
    files = trial_files(out)
    assert (files.iteration, files.eta_s, files.checkpoint) == (40, 8.0, "model_final.pth")
    assert files.eval_s is None  # not evaluated yet
    (tmp_path / "final_metrics.json").write_text("{}")
    os.utime(tmp_path / "last_checkpoint", (1000.0, 1000.0))
    os.utime(tmp_path / "final_metrics.json", (1090.0, 1090.0))
    assert trial_files(out).eval_s == pytest.approx(90.0)
