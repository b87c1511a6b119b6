"""benchmarks/detection_speed.py runs end to end at the tiniest size (so it does not rot)."""

import json


def test_detection_speed_benchmark_tiny_profiled_run(
    tiny_voc_root, tmp_path, one_thread, load_benchmark
):
    bench = load_benchmark("detection_speed")
    out = tmp_path / "speed.json"
    # "all": every speed option at once (AMP is switched off on CPU, compile uses the eager
    # backend), profiled over one step after one warm-up step
    result = bench.main(
        ["--tiny", "--profile", "all", "--profile-iters", "1", "--iters", "1", "--warmup", "1",
         "--infer-images", "1", "--compile-backend", "eager", "--data-root", str(tiny_voc_root),
         "--out", str(out)]
    )  # fmt: skip
    with open(out) as f:
        written = json.load(f)
    assert next(iter(written)) == "device_name" and written["device_name"] == "cpu"
    row = written["rows"]["all"]
    assert "error" not in row, row
    assert row["s_per_iter"] > 0 and row["data_s_per_iter"] >= 0 and row["max_mem_gib"] > 0
    assert row["infer_s_per_image"] > 0 and row["timed_iters"] == 1
    assert any("AMP" in note for note in row["notes"])  # switched off on CPU, and said so
    assert 0 < len(row["profile"]) <= 20
    times = [r["self_cpu_ms"] for r in row["profile"]]
    assert times == sorted(times, reverse=True)  # by self CPU time on CPU
    assert result["rows"]["all"]["s_per_iter"] == row["s_per_iter"]


def test_failed_variant_is_a_table_row_not_a_crash(load_benchmark):
    bench = load_benchmark("detection_speed")
    ok = {"s_per_iter": 1.0, "data_s_per_iter": 0.1, "max_mem_gib": 2.0, "notes": []}
    table = bench.format_table({"fp32": ok, "amp": {"error": "OutOfMemoryError: CUDA"}})
    lines = table.splitlines()
    assert lines[1].split()[:2] == ["fp32", "1.000"]
    assert lines[2].startswith("amp") and "failed: OutOfMemoryError" in lines[2]
