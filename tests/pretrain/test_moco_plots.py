"""Pretraining curves (python -m pretrain.plots) from small hand-written metrics.json files."""

import json

import pytest

from pretrain.plots import curve_series, main, plot_curves, read_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def line(iteration, loss, knn=None, **extra):
    record = {"iteration": iteration, "loss": loss, "lr": 0.03 - iteration * 1e-4,
              "images_per_s": 100.0 + iteration, "data_wait_pct": 5.0, **extra}  # fmt: skip
    if knn is not None:
        record["knn_top1"] = knn
    return json.dumps(record) + "\n"


def test_curves_of_a_resumed_run_keep_each_iteration_once(tmp_path):
    # iterations 9..39 (kNN after 19 and 39), then a rerun resumed at iteration 20 repeats
    # 29 and 39 with other values, goes on to 49, and a kill cut the last line
    first = [line(9, 9.0), line(19, 8.0, knn=20.0), line(29, 7.0), line(39, 6.0, knn=30.0)]
    resumed = [line(29, 6.5), line(39, 5.5, knn=35.0), line(49, 5.0)]
    (tmp_path / "metrics.json").write_text("".join(first + resumed) + '{"iteration": 5')
    result = plot_curves(str(tmp_path))
    assert result["path"] == str(tmp_path / "curves.png")
    data = (tmp_path / "curves.png").read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 20000
    series = result["series"]
    assert series["loss"] == ([9, 19, 29, 39, 49], [9.0, 8.0, 6.5, 5.5, 5.0])
    assert series["knn_top1"] == ([19, 39], [20.0, 35.0])
    assert series["pairs_per_s"] == ([9, 19, 29, 39, 49], [109.0, 119.0, 129.0, 139.0, 149.0])
    assert series["data_wait_pct"][1] == [5.0] * 5
    assert series["lr"][1] == pytest.approx([0.0291, 0.0281, 0.0271, 0.0261, 0.0251])


def test_run_without_knn_and_unusable_metrics(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(line(9, 9.0) + line(19, 8.5))
    out = tmp_path / "figures" / "run.png"
    assert main([str(run), "--out", str(out)]) == 0
    assert out.read_bytes().startswith(PNG_MAGIC)
    series = curve_series(read_metrics(str(run / "metrics.json")))  # what main plotted
    assert series["knn_top1"] == ([], []) and series["loss"] == ([9, 19], [9.0, 8.5])

    missing = tmp_path / "nothing"
    with pytest.raises(SystemExit, match=rf"{missing}/metrics.json does not exist: give the "):
        main([str(missing)])
    (run / "metrics.json").write_text("")
    with pytest.raises(SystemExit, match=r"run/metrics.json holds no metrics yet"):
        main([str(run)])
    (run / "metrics.json").write_text('{"iteration": 3, "total_loss": 1.5, "lr": 0.02}\n')
    with pytest.raises(SystemExit, match=r"no 'loss' values: it is not a MoCo pretraining run"):
        main([str(run)])
