"""Helpers of benchmarks/pretrain_e2e.py at the tiniest size (so the script does not rot)."""

import pytest
from PIL import Image


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("pretrain_e2e")


def test_jpeg_folder_is_an_image_folder_of_the_asked_size(bench, tmp_path):
    info = bench.write_jpeg_folder(str(tmp_path), 3, width=50, height=40, classes=2, processes=1)
    files = sorted(p for p in tmp_path.rglob("*.jpg"))
    assert len(files) == 3 and {p.parent.name for p in files} == {"c00", "c01"}
    assert Image.open(files[0]).size == (50, 40)
    assert info["mean_kib"] == pytest.approx(sum(p.stat().st_size for p in files) / 3 / 1024)


def test_row_config_applies_or_rejects(bench):
    cfg, notes = bench.row_config(["SOLVER.BATCH_SIZE", "64", "INPUT.PIPELINE", "batched"])
    assert cfg.SOLVER.BATCH_SIZE == 64 and cfg.INPUT.PIPELINE == "batched" and notes == []
    with pytest.raises((KeyError, AssertionError, ValueError)):
        bench.row_config(["SOLVER.NO_SUCH_KEY", "1"])
    with pytest.raises(ValueError, match="SOLVER.AMP"):
        bench.row_config(["SOLVER.AMP", "fp8"])


def test_target_status_and_table(bench):
    e2e = ("e2e", bench.E2E_TARGET)
    assert bench.target_status({"pairs_per_s": 4000.0, "data_wait_pct": 1.0}, e2e).startswith(
        "target met"
    )
    assert "missed by 50%" in bench.target_status({"pairs_per_s": 1750.0, "data_wait_pct": 1}, e2e)
    slow_data = bench.target_status({"pairs_per_s": 4000.0, "data_wait_pct": 9.0}, e2e)
    assert slow_data.startswith("missed; data wait 9%")
    assert bench.target_status({"pairs_per_s": 10.0}, None) == ""
    rows = {
        "a": {"pairs_per_s": 12.5, "data_wait_pct": 3.0, "peak_mem_gib": 1.0, "target_status": ""},
        "b": {"unsupported": "AssertionError: Non-existent key: SOLVER.COMPILE"},
    }
    lines = bench.format_table(rows).splitlines()
    assert lines[1].split()[:3] == ["a", "12.5", "3.0%"]
    assert lines[2].split()[1] == "unsupported:"


def test_rows_a_full_name_selects_one_row_a_prefix_several(bench):
    names = {"device eager": 0, "device compiled": 0, "device eager, in line": 0}
    picked = [n for n in names if bench.selected(n, ["device eager"], names)]
    assert picked == ["device eager"]
    assert [n for n in names if bench.selected(n, ["device "], names)] == list(names)
    assert bench.selected("anything", None, names)
