"""The trial runner end to end on the synthetic set: a killed trial resumes, finished trials are
skipped, the summary holds every trial. Runs real `python -m detection.train_net` subprocesses."""

import json
import math
import signal
import subprocess
import time

import pytest
from det_helpers import REPO, TINY_CONFIG, processes_mentioning, runner_args, runner_env
from detectron2.engine import default_argument_parser

from detection import train_net

TIMEOUT = 600  # generous: the machine is shared


@pytest.mark.slow
def test_killed_trial_resumes_and_finished_trials_are_skipped(tiny_voc_root, tmp_path, one_thread):
    out = tmp_path / "trials"
    t0, t1 = out / "trial_0_seed_0", out / "trial_1_seed_1000"
    args, env = runner_args(out, tiny_voc_root), runner_env()

    # 1. Start the runner; stop it (SIGTERM) once trial 0 has checkpointed iteration 1 of 0..3.
    with open(tmp_path / "run1.log", "w") as log:
        runner = subprocess.Popen(args, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + TIMEOUT
    while not (t0 / "last_checkpoint").exists():
        assert runner.poll() is None, (tmp_path / "run1.log").read_text()[-3000:]
        assert time.time() < deadline, "trial 0 never checkpointed"
        time.sleep(0.2)
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(timeout=120) == 130
    assert (t0 / "last_checkpoint").read_text().strip() == "model_0000001.pth"
    assert not (t0 / "final_metrics.json").exists()
    assert not t1.exists()
    assert processes_mentioning(str(t0)) == []  # the trial's processes went with the runner

    # 2. Same command again: trial 0 resumes from its checkpoint, trial 1 starts, both finish.
    run2 = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT)
    assert run2.returncode == 0, run2.stderr[-3000:]
    assert "Starting training from iteration 2" in (t0 / "log.txt").read_text()
    assert "Starting training from iteration 0" in (t1 / "log.txt").read_text()
    summary = json.loads((out / "summary.json").read_text())
    trials = summary["trials"]
    assert [(t["trial"], t["seed"], t["status"]) for t in trials] == [
        (0, 0, "finished"),
        (1, 1000, "finished"),
    ]
    assert trials[0]["resumed_from"] == ["model_0000001.pth"] and trials[1]["resumed_from"] == []
    for t, folder in zip(trials, (t0, t1)):
        final = json.loads((folder / "final_metrics.json").read_text())
        assert (final["seed"], final["trial"]) == (t["seed"], t["trial"])
        for m in ("AP50", "AP", "AP75"):
            assert final["results"]["bbox"][m] == t[m] and 0.0 <= t[m] <= 100.0
    for m in ("AP50", "AP", "AP75"):
        values = [t[m] for t in trials]
        assert summary["mean"][m] == pytest.approx(sum(values) / 2)
        assert summary["std"][m] == pytest.approx(abs(values[0] - values[1]) / math.sqrt(2))
    assert (out / "summary.csv").exists() and "mean ± std (n=2)" in (out / "summary.md").read_text()

    # 3. Once more: nothing left to run, nothing touched.
    stamps = {p: p.stat().st_mtime_ns for p in (t0 / "final_metrics.json", t1 / "log.txt")}
    run3 = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT)
    assert run3.returncode == 0, run3.stderr[-3000:]
    assert run3.stdout.count("finished earlier, skipped") == 2  # detectron2 logs to stdout
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    # 4. --eval-only on trial 1's final model reproduces its recorded results.
    args = default_argument_parser().parse_args(
        ["--config-file", TINY_CONFIG, "--eval-only", "MODEL.WEIGHTS", str(t1 / "model_final.pth"),
         "TRANSFER.VOC_LIKE_ROOT", str(tiny_voc_root), "OUTPUT_DIR", str(tmp_path / "eval")]
    )  # fmt: skip
    results = train_net.run(args)
    final = json.loads((t1 / "final_metrics.json").read_text())["results"]
    assert results["bbox"] == pytest.approx(final["bbox"])
