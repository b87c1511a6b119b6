"""No command replaces a finished summary with an empty one: `--num-trials 0` is refused before
anything runs, and a run that finished no trial writes no summary (exit status 1)."""

import os

import pytest
from det_helpers import TINY_CONFIG

from detection import trials as trials_mod
from detection.summary import EmptySummaryError, aggregate, write_summary

GOOD = {"json": '{"num_finished": 5}\n', "csv": "row,trial\n", "md": "| trial |\n"}


def _existing_summary(out):
    os.makedirs(out, exist_ok=True)
    for ext, text in GOOD.items():
        with open(os.path.join(out, f"summary.{ext}"), "w") as f:
            f.write(text)


def _unchanged(out):
    return all(open(os.path.join(out, f"summary.{e}")).read() == t for e, t in GOOD.items())


def test_zero_trials_is_refused_and_the_summary_kept(tmp_path, capsys):
    out = str(tmp_path)
    _existing_summary(out)
    argv = ["--config-file", TINY_CONFIG, "--output-dir", out, "--num-trials", "0"]
    with pytest.raises(SystemExit) as exit_info:
        trials_mod.main(argv)
    assert exit_info.value.code == 2 and "argument --num-trials" in capsys.readouterr().err
    assert _unchanged(out)


def test_a_run_that_finished_nothing_keeps_the_summary(tmp_path, monkeypatch):
    out = str(tmp_path)
    _existing_summary(out)

    def all_fail(trials, *args, **kwargs):
        for t in trials:
            t.update(status="failed", attempts=2, resumed_from=[])

    monkeypatch.setattr(trials_mod, "run_trials", all_fail)
    argv = ["--config-file", TINY_CONFIG, "--output-dir", out, "--num-trials", "2"]
    assert trials_mod.main(argv + ["--reference", "none"]) == 1
    assert _unchanged(out)
    log = open(os.path.join(out, "trials.log")).read()
    assert "no trial finished" in log and "stays as it was" in log
    # the library call refuses too, and one finished trial is enough to write
    failed = [{"trial": 0, "seed": 0, "status": "failed"}]
    with pytest.raises(EmptySummaryError):
        write_summary(out, aggregate(failed))
    assert _unchanged(out)
    finished = {"trial": 1, "seed": 1000, "status": "finished", "AP50": 1.0, "AP": 2.0, "AP75": 3.0}
    write_summary(out, aggregate(failed + [finished]))
    assert '"num_finished": 1' in open(os.path.join(out, "summary.json")).read()
