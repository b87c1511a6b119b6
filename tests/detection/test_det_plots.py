"""Per-trial figure and the comparison table/figure of several summaries."""

import pytest
from det_helpers import TINY_CONFIG

from detection import trials as trials_mod
from detection.plots import compare_markdown, main, plot_trials
from detection.summary import aggregate, write_summary

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def summary_of(values, reference=None):
    records = [
        {"trial": i, "seed": i, "status": "finished", "AP50": a, "AP": b, "AP75": c}
        for i, (a, b, c) in enumerate(values)
    ]
    return aggregate(records, reference)


def test_trials_figure(tmp_path):
    s = summary_of([(82.0, 57.0, 63.0), (82.4, 57.2, 63.8)], "mocov2_200ep")
    path = plot_trials(s, str(tmp_path / "trials.png"))
    data = open(path, "rb").read()
    assert data.startswith(PNG_MAGIC) and len(data) > 5000


def test_compare_table_and_figure(tmp_path):
    runs = {
        "random": summary_of([(60.0, 30.0, 28.0), (62.0, 32.0, 30.0)]),
        "supervised": summary_of([(81.0, 53.0, 58.0), (81.6, 54.0, 59.6), (81.3, 53.5, 58.8)]),
    }
    paths = []
    for name, s in runs.items():
        (tmp_path / name).mkdir()
        paths.append(write_summary(str(tmp_path / name), s)["json"])
    out = tmp_path / "cmp" / "compare"
    assert main(["compare", *paths, "--labels", "random init", "sup", "--out", str(out)]) == 0
    text = (tmp_path / "cmp" / "compare.md").read_text()
    # random: AP50 mean 61, sample std sqrt(2); supervised: AP50 81.3, std 0.3
    assert "| random init | 2 | 61.00 ± 1.41 | 31.00 ± 1.41 | 29.00 ± 1.41 |" in text
    assert "| sup | 3 | 81.30 ± 0.30 | 53.50 ± 0.50 | 58.80 ± 0.80 |" in text
    assert (tmp_path / "cmp" / "compare.png").read_bytes().startswith(PNG_MAGIC)
    with pytest.raises(SystemExit):  # labels must match the summaries
        main(["compare", *paths, "--labels", "only one", "--out", str(out)])


def test_single_trial_has_no_std():
    text = compare_markdown([summary_of([(80.0, 50.0, 55.0)])], ["one"])
    assert "| one | 1 | 80.00 | 50.00 | 55.00 |" in text


def test_runner_summary_shows_the_trials_figure(tmp_path, monkeypatch):
    def fake_run_trials(trials, *args, **kwargs):  # every trial finishes with given numbers
        for t in trials:
            t.update(status="finished", attempts=1, AP50=80.0 + t["trial"], AP=50.0, AP75=55.0)

    monkeypatch.setattr(trials_mod, "run_trials", fake_run_trials)
    argv = ["--config-file", TINY_CONFIG, "--output-dir", str(tmp_path), "--seeds", "0", "7"]
    assert trials_mod.main(argv + ["--reference", "none"]) == 0
    md = (tmp_path / "summary.md").read_text()
    assert md.endswith("\n![AP50, AP and AP75 of each trial](trials.png)\n")
    data = (tmp_path / "trials.png").read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5000
