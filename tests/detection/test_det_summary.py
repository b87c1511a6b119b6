"""Aggregation of trial results and the trial scheduler, on given numbers and a fake launcher."""

import csv
import io
import json
import math
import os

import pytest

from detection.scheduler import TrialOptions, TrialScheduler, make_slots, run_trials
from detection.summary import (
    REFERENCES,
    aggregate,
    format_csv,
    format_markdown,
    mean_std,
    write_summary,
)
from detection.trial_folders import CorruptMetricsError, read_final_metrics, trial_dir
from detection.trials import make_seeds


def record(trial, ap50, ap, ap75, status="finished"):
    return {"trial": trial, "seed": 1000 * trial, "status": status,
            "AP50": ap50, "AP": ap, "AP75": ap75}  # fmt: skip


def test_mean_and_sample_std_by_hand():
    # mean 82; squared deviations 4+1+0+1+4 = 10; ddof=1 -> sqrt(10 / 4)
    mean, std = mean_std([80.0, 81.0, 82.0, 83.0, 84.0])
    assert mean == pytest.approx(82.0)
    assert std == pytest.approx(math.sqrt(2.5))
    assert std != pytest.approx(math.sqrt(2.0))  # not the population std (ddof=0)
    assert mean_std([57.0]) == (57.0, None)
    with pytest.raises(ValueError):
        mean_std([])


def test_aggregate_by_hand_with_a_failed_trial_and_a_reference():
    records = [
        record(2, 82.0, 57.5, 64.0),
        record(0, 82.6, 56.9, 63.2),
        record(1, 82.3, 56.8, 63.9),
        record(3, None, None, None, status="failed"),
    ]
    s = aggregate(records, reference="mocov2_200ep")
    assert [r["trial"] for r in s["trials"]] == [0, 1, 2, 3]
    assert (s["num_trials"], s["num_finished"], s["failed"]) == (4, 3, [3])
    # AP50: mean 82.3, deviations .3, 0, -.3 -> std sqrt(0.18 / 2) = 0.3
    assert s["mean"]["AP50"] == pytest.approx(82.3)
    assert s["std"]["AP50"] == pytest.approx(0.3)
    # AP: mean 57.0666..., deviations -.1667, -.2667, .4333 -> sum of squares 0.28667
    assert s["mean"]["AP"] == pytest.approx(171.2 / 3)
    assert s["std"]["AP"] == pytest.approx(math.sqrt(0.286667 / 2), rel=1e-4)
    assert s["mean"]["AP75"] == pytest.approx(63.7)
    assert s["std"]["AP75"] == pytest.approx(math.sqrt((0.25 + 0.04 + 0.09) / 2))
    ref = s["reference"]
    assert (ref["AP50"], ref["AP"], ref["AP75"]) == (82.4, 57.0, 63.6)
    assert ref["delta"]["AP50"] == pytest.approx(82.3 - 82.4)
    assert "ddof=1" in s["std_kind"]


def test_references_hold_the_papers_numbers():
    table = {k: (v["AP50"], v["AP"], v["AP75"]) for k, v in REFERENCES.items()}
    assert table["mocov2_200ep"] == (82.4, 57.0, 63.6)
    assert table["supervised"] == (81.3, 53.5, 58.8)
    assert table["mocov1_200ep"] == (81.5, 55.9, 62.6)
    with pytest.raises(KeyError):
        aggregate([record(0, 1, 2, 3)], reference="nonexistent")


def test_summary_files(tmp_path):
    s = aggregate([record(0, 80.0, 50.0, 55.0), record(1, 82.0, 52.0, 57.0)], "supervised")
    paths = write_summary(str(tmp_path), s)
    assert json.loads(open(paths["json"]).read())["mean"]["AP"] == pytest.approx(51.0)
    rows = list(csv.DictReader(io.StringIO(format_csv(s))))
    assert [r["row"] for r in rows] == ["trial", "trial", "mean", "std", "reference", "delta"]
    assert float(rows[3]["AP50"]) == pytest.approx(math.sqrt(2.0))  # (2^2 / 2) ** 0.5
    md = open(paths["md"]).read()
    assert "| mean ± std (n=2) | | | 81.00 ± 1.41 | 51.00 ± 1.41 | 56.00 ± 1.41 |" in md
    assert "| reference: supervised | | | 81.30 | 53.50 | 58.80 |" in md
    assert "| mean - reference | | | -0.30 | -2.50 | -2.80 |" in md


def test_seeds_and_slots():
    assert make_seeds(3, 7) == [7, 1007, 2007]
    assert make_seeds(5)[:3] == make_seeds(3)  # more trials later keep the first seeds
    assert make_slots([], 1) == [None]
    assert make_slots(list(range(8)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert make_slots(list(range(8)), 3) == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(ValueError):
        make_slots([0, 1], 4)


class FakeLauncher:
    """Finishes each attempt at once with the planned outcome: "ok" writes final metrics."""

    inherits_fds = False

    def __init__(self, plans):
        self.plans = plans  # trial index -> list of outcomes, one per attempt
        self.started, self.running, self.max_running = [], 0, 0

    def start(self, cmd, env, log_path):
        trial = int(cmd[cmd.index("TRANSFER.TRIAL") + 1])
        out = cmd[cmd.index("OUTPUT_DIR") + 1]
        outcome = self.plans[trial].pop(0)
        self.started.append((trial, env.get("CUDA_VISIBLE_DEVICES")))
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        return {"trial": trial, "out": out, "outcome": outcome, "polls": 0}

    def poll(self, job):
        job["polls"] += 1
        if job["polls"] < 2:  # stay "running" for one poll, so slots fill up
            return None
        self.running -= 1
        if job["outcome"] == "ok":
            bbox = {"AP": 50.0 + job["trial"], "AP50": 80.0, "AP75": 55.0}
            with open(os.path.join(job["out"], "final_metrics.json"), "w") as f:
                json.dump({"results": {"bbox": bbox}}, f)
            return 0
        return 1

    def stop(self, job):
        raise AssertionError("nothing to stop")


def make_trials(out, n):
    return [{"trial": i, "seed": s, "output_dir": trial_dir(str(out), i, s)}
            for i, s in enumerate(make_seeds(n))]  # fmt: skip


def command(t):
    return ["train", "OUTPUT_DIR", t["output_dir"], "TRANSFER.TRIAL", str(t["trial"])]


def test_failed_trial_is_retried_once_then_reported(tmp_path):
    trials = make_trials(tmp_path, 3)
    launcher = FakeLauncher({0: ["ok"], 1: ["fail", "ok"], 2: ["fail", "fail"]})
    run_trials(trials, launcher, command, TrialOptions(retries=1, poll_interval=0))
    assert [t["status"] for t in trials] == ["finished", "finished", "failed"]
    assert [t["attempts"] for t in trials] == [1, 2, 2]
    assert launcher.max_running == 1  # one slot: one trial at a time
    assert read_final_metrics(trials[1]["output_dir"]) == {"AP50": 80.0, "AP": 51.0, "AP75": 55.0}
    summary = aggregate(trials)
    assert summary["failed"] == [2] and summary["mean"]["AP"] == pytest.approx(50.5)


def test_scheduler_steps_start_reap_and_requeue_a_failure_first(tmp_path):
    trials = make_trials(tmp_path, 2)
    launcher = FakeLauncher({0: ["fail", "ok"], 1: ["ok"]})  # each attempt runs for one poll
    s = TrialScheduler(trials, launcher, command, TrialOptions(retries=1))
    s.start_ready()  # one slot: trial 0 starts, trial 1 waits
    assert [t["trial"] for t, _, _ in s.running.values()] == [0] and not s.free
    assert [t["trial"] for t in s.pending] == [1]
    s.reap_finished()  # still running
    assert len(s.running) == 1
    s.reap_finished()  # failed: its slot is free and it goes back to the front of the queue
    assert not s.running and s.free == [0] and [t["trial"] for t in s.pending] == [0, 1]
    s.tick()  # the retry starts (and is polled once)
    assert trials[0]["attempts"] == 2 and [t["trial"] for t in s.pending] == [1]
    for _ in range(3):
        s.tick()
    assert not s.pending and not s.running
    assert [t["status"] for t in trials] == ["finished", "finished"]
    assert [trial for trial, _ in launcher.started] == [0, 0, 1]


def test_trials_share_gpus_and_finished_ones_are_skipped(tmp_path):
    trials = make_trials(tmp_path, 4)
    launcher = FakeLauncher({i: ["ok"] for i in range(4)})
    options = TrialOptions(slots=make_slots([0, 1, 2, 3], 2), poll_interval=0)
    run_trials(trials, launcher, command, options)
    assert launcher.max_running == 2
    assert {gpus for _, gpus in launcher.started} == {"0,1", "2,3"}
    assert all(t["status"] == "finished" for t in trials)

    again = make_trials(tmp_path, 5)  # one more trial: only that one runs
    launcher = FakeLauncher({4: ["ok"]})
    run_trials(again, launcher, command, TrialOptions(poll_interval=0))
    assert [trial for trial, _ in launcher.started] == [4]
    assert [t["AP"] for t in again] == [50.0, 51.0, 52.0, 53.0, 54.0]


def test_mask_ap_is_read_and_summarised_after_the_box_ap(tmp_path):
    results = {"bbox": {"AP50": 60.0, "AP": 35.0, "AP75": 37.0, "APs": float("nan")},
               "segm": {"AP50": 56.0, "AP": 31.0, "AP75": 33.0}}  # fmt: skip
    (tmp_path / "final_metrics.json").write_text(json.dumps({"results": results}))
    metrics = read_final_metrics(str(tmp_path))
    assert metrics == {"AP50": 60.0, "AP": 35.0, "AP75": 37.0,
                       "mask_AP50": 56.0, "mask_AP": 31.0, "mask_AP75": 33.0}  # fmt: skip
    records = [dict(metrics, trial=0, seed=0, status="finished"),
               dict(metrics, trial=1, seed=1000, status="finished", mask_AP=33.0),
               {"trial": 2, "seed": 2000, "status": "failed"}]  # fmt: skip
    s = aggregate(records, reference="mocov2_200ep")
    assert s["mean"]["mask_AP"] == pytest.approx(32.0)
    assert s["std"]["mask_AP"] == pytest.approx(math.sqrt(2.0))
    assert set(s["reference"]["delta"]) == {"AP50", "AP", "AP75"}  # references are box AP
    md = format_markdown(s)
    assert "| trial | seed | status | AP50 | AP | AP75 | mask AP50 | mask AP | mask AP75 |" in md
    assert "| 1 | 1000 | finished | 60.00 | 35.00 | 37.00 | 56.00 | 33.00 | 33.00 |" in md
    assert "| 2 | 2000 | failed | - | - | - | - | - | - |" in md
    assert "| mean - reference | | | -22.40 | -22.00 | -26.60 | - | - | - |" in md
    rows = list(csv.DictReader(io.StringIO(format_csv(s))))
    assert float(rows[3]["mask_AP"]) == pytest.approx(32.0)  # the mean row
    # box-only results (VOC) keep the box columns only
    box_only = aggregate([record(0, 80.0, 50.0, 55.0)])
    assert "mask" not in format_markdown(box_only) + format_csv(box_only)
    assert set(box_only["mean"]) == {"AP50", "AP", "AP75"}


def test_damaged_mask_results_are_reported(tmp_path):
    results = {"bbox": {"AP50": 60.0, "AP": 35.0, "AP75": 37.0}, "segm": {"AP": 31.0}}
    (tmp_path / "final_metrics.json").write_text(json.dumps({"results": results}))
    with pytest.raises(CorruptMetricsError, match="results.segm lacks numeric AP50/AP/AP75"):
        read_final_metrics(str(tmp_path))
