"""benchmarks/gpu_check.sh, the one-call GPU check: its runner (time limits, skips, rows written
as stages finish), its row readers, and the whole check at tiny size on the CPU, so that its
commands cannot rot between GPU leases."""

import json
import os
import resource
import signal
import subprocess
import sys
import tarfile
import threading
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import check_rows  # noqa: E402
import check_runner  # noqa: E402
from check_runner import Runner, Stage  # noqa: E402

# Every row of the check, as the brief of each stage names it: setup, the smoke list (every
# CUDA path) and the headline numbers.
EXPECTED_ROWS = [
    "offline install", "environment", "data: ImageNet-sized JPEGs", "data: classification set",
    "data: VOC-format set",
    "pretrain pil eager", "pretrain pil compiled", "pretrain batched eager",
    "pretrain batched compiled", "pretrain device eager", "pretrain device compiled",
    "pretrain CLI: 1 epoch, then stop", "pretrain CLI: resume for epoch 2",
    "kNN monitor (TEST.KNN_PERIOD 1)", "convert to a detectron2 .pkl",
    "detection from the converted weights", "detection.trials: 2 short trials",
    "linear evaluation, cached features", "demo --preset smoke",
    "end to end, device pipeline, eager", "end to end, device pipeline, compiled",
    "compile time, SOLVER.COMPILE default", "compile time, SOLVER.COMPILE reduce-overhead",
    "compile time, end to end (first step)",
    "training step, eager", "training step, reduce-overhead",
    "JPEG batch decode (nvJPEG on CUDA)", "device pipeline views",
    "host syncs per DeviceInput.views", "Faster R-CNN step, AMP", "Faster R-CNN step, fp32",
]  # fmt: skip


def _runner(tmp_path, budget_s=60.0):
    env = check_runner.python_env("", REPO)
    return Runner(str(tmp_path / "out"), str(tmp_path / "logs"), budget_s, env, REPO,
                  {"mode": "test"})  # fmt: skip


def _py(code):
    return [sys.executable, "-c", code]


def test_runner_limits_skips_and_writes_rows_as_stages_finish(tmp_path):
    out = tmp_path / "out" / "gpu_check.json"
    # "reads" succeeds only if the row of "first" is in gpu_check.json while the check runs
    reads = _py(f"import json; rows = json.load(open({str(out)!r}))['rows']; "
                "assert 'first' in [r['name'] for r in rows], rows")  # fmt: skip
    # "slow" starts a child in its own process group and outlives its limit: both are stopped
    pid_file = tmp_path / "child.pid"
    slow = _py(f"import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', "
               f"'import time; time.sleep(60)']); open({str(pid_file)!r}, 'w').write(str(p.pid));"
               " print('ValueError: the real problem', flush=True); time.sleep(60)")  # fmt: skip
    plan = [
        [[Stage("first", "setup", "first", _py("print('hi')"), 30)]],
        [[Stage("reads", "setup", "reads", reads, 30, needs=("first",)),
          Stage("slow", "smoke", "slow", slow, 4),
          Stage("after", "smoke", "after", _py("pass"), 30, needs=("slow",))],
         [Stage("broken", "smoke", "broken", _py("raise SystemExit('TypeError: bad key')"), 30),
          Stage("reused", "setup", "reused", _py("raise SystemExit(1)"), 30,
                reuse=(str(tmp_path),))]],
    ]  # fmt: skip
    runner = _runner(tmp_path)
    start = time.monotonic()
    runner.run(plan)
    assert time.monotonic() - start < 40  # the 60 s sleeps were cut at the 4 s limit
    rows = {r["name"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["first"]["status"] == rows["reads"]["status"] == "OK"
    assert rows["slow"]["status"] == "FAILED"
    assert rows["slow"]["detail"].startswith("timed out after 4 s")
    assert "ValueError: the real problem" in rows["slow"]["detail"]
    assert rows["after"]["status"] == "SKIPPED" and "needs slow" in rows["after"]["detail"]
    assert rows["broken"]["status"] == "FAILED"
    assert rows["broken"]["detail"] == "exit status 1: TypeError: bad key"
    assert rows["reused"]["status"] == "OK" and rows["reused"]["detail"] == "reused"
    child = int(pid_file.read_text())
    time.sleep(0.5)
    assert not os.path.exists(f"/proc/{child}") or "Z" in open(f"/proc/{child}/stat").read()
    with tarfile.open(tmp_path / "out" / "gpu_check_logs.tar.gz") as tar:
        assert {"logs/first.log", "logs/slow.log", "logs/broken.log"} <= set(tar.getnames())
    table = (tmp_path / "out" / "gpu_check.txt").read_text()
    assert "FAILED  slow" in table and table.rstrip().endswith("3 OK, 2 FAILED, 1 SKIPPED")


def test_no_stage_starts_once_the_budget_is_spent(tmp_path):
    runner = _runner(tmp_path, budget_s=check_runner.MIN_START_S - 1)
    runner.run([[[Stage("late", "smoke", "late", _py("pass"), 30)]]])
    (r,) = runner.all_rows()
    assert r["status"] == "SKIPPED" and "time budget of 9 s spent" in r["detail"]


def test_headline_rows_state_the_shortfall(tmp_path):
    e2e = {"rows": {
        "device eager": {"pairs_per_s": 2800.0, "data_wait_pct": 7.5, "batch": 256,
                         "first_step_s": 9.0, "peak_mem_gib": 30.0},
        "device compiled": {"failed": "RuntimeError: CUDA error: out of memory"},
    }}  # fmt: skip
    (tmp_path / "e2e.json").write_text(json.dumps(e2e))
    rows = {r["name"]: r for r in check_rows.e2e_rows(str(tmp_path / "e2e.json"), False)(None)}
    eager = rows["end to end, device pipeline, eager"]
    assert eager["value"] == "2,800 pairs/s, wait 7.5%"
    assert eager["shortfall"] == "missed by 700 pairs/s (20%); data wait 7.5% not < 5%"
    assert rows["pretrain device eager"]["status"] == "OK"
    assert rows["pretrain device compiled"]["status"] == "FAILED"
    assert "out of memory" in rows["end to end, device pipeline, compiled"]["detail"]
    step = {
        "args": {"batch": 32},
        "device_views_host_syncs": 2,
        "rows": {
            "step/optimized (reduce-overhead)": {
                "images_per_s": 1600.0,
                "first_steps_s": [40.0, 1.0],
                "amp": "bfloat16",
                "peak_mem_mib": 4096,
            },
            "data/device-decode": {"images_per_s": 5000.0, "batch": 256, "images": 2048},
        },
    }
    det = {
        "args": {"batch": 16},
        "config": "configs/detection/x_1gpu.yaml",
        "rows": {
            "amp": {"s_per_iter": 0.767, "max_mem_gib": 35.3},
            "fp32": {"error": "OutOfMemoryError"},
        },
    }
    for name, data in (("step", step), ("det", det)):
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
    rows.update(
        (r["name"], r) for r in check_rows.step_rows(str(tmp_path / "step.json"), False)(None)
    )
    rows.update(
        (r["name"], r) for r in check_rows.detection_rows(str(tmp_path / "det.json"), False)(None)
    )
    assert rows["training step, reduce-overhead"]["shortfall"] == "met"
    assert "training step, eager" not in rows  # not measured: the runner lists it as FAILED
    assert rows["JPEG batch decode (nvJPEG on CUDA)"]["value"] == "5,000 images/s"
    assert rows["host syncs per DeviceInput.views"]["shortfall"] == "2 too many"
    amp = rows["Faster R-CNN step, AMP"]
    assert amp["value"] == "0.767 s/iter, 35.3 GiB"
    assert amp["shortfall"] == "missed by 0.317 s/iter (70% over)"
    assert rows["Faster R-CNN step, fp32"]["status"] == "FAILED"
    assert check_rows.at_least(4000, 3500, "") == check_rows.at_most(0.4, 0.45, "") == "met"


def test_last_error_line_prefers_the_error_over_later_noise():
    log = "step 1\nTraceback (most recent call last):\n  File 'x.py'\nKeyError: 'SOLVER.X'\ndone\n"
    assert check_runner.last_error_line(log) == "KeyError: 'SOLVER.X'"
    assert check_runner.last_error_line("all\nfine\n") == "fine"
    runner_log = "ValueError: schedule too short\n| 0 | 0 | failed | - |\n"
    assert check_runner.last_error_line(runner_log) == "ValueError: schedule too short"
    ours = "Traceback ...\nValueError: x\nerror: SOLVER.STEPS (0,) does not fit\nlogging Error\n"
    assert check_runner.last_error_line(ours) == "error: SOLVER.STEPS (0,) does not fit"


def test_only_keeps_the_stages_needed(load_benchmark):
    gpu_check = load_benchmark("gpu_check")
    args = gpu_check.build_parser().parse_args(["--device", "cpu", "--tiny", "--work", "/w"])
    args.python = sys.executable
    phases = gpu_check.select(gpu_check.build_plan(args), ["convert"])
    keys = [st.key for ph in phases for stream in ph for st in stream]
    assert sorted(keys) == ["convert", "data-cls", "environment", "install", "pretrain", "resume"]
    with pytest.raises(SystemExit, match="no such stage"):
        gpu_check.select(phases, ["nope"])


@pytest.mark.slow
def test_cpu_tiny_check_runs_every_stage(tmp_path):
    env = dict(os.environ, PY=sys.executable, SITE=str(tmp_path / "site"))
    start, cpu = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--device", "cpu", "--tiny", "--budget-s", "600",
         "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=800,
    )  # fmt: skip
    written = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    rows = {r["name"]: r for r in written["rows"]}
    not_ok = {n: r["detail"] for n, r in rows.items() if r["status"] != "OK"}
    assert not not_ok, (not_ok, result.stdout[-3000:])
    assert sorted(rows) == sorted(EXPECTED_ROWS)
    assert result.returncode == 0
    assert written["mode"] == "cpu, tiny" and written["device_name"] == "cpu"
    assert {"e2e", "step", "detection", "pipelines"} <= set(written["benchmarks"])
    table = (tmp_path / "out" / "gpu_check.txt").read_text()
    assert result.stdout.endswith(table)  # the table is printed last
    assert table.rstrip().endswith(f"{len(EXPECTED_ROWS)} OK, 0 FAILED, 0 SKIPPED")
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime
    print(f"tiny CPU check: {time.monotonic() - start:.0f} s wall, {used:.0f} s of CPU")


def test_an_interrupted_check_stops_its_commands_and_lists_the_rest(tmp_path):
    runner = _runner(tmp_path)
    plan = [[[Stage("long", "smoke", "long", _py("import time; time.sleep(60)"), 90)]],
            [[Stage("next", "smoke", "next", _py("pass"), 30)]]]  # fmt: skip
    # Ctrl-C as in a terminal, also where this test runs with SIGINT ignored (a background job)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGINT)).start()
        start = time.monotonic()
        runner.run(plan)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert time.monotonic() - start < 30
    rows = {r["name"]: r for r in runner.all_rows()}
    assert rows["long"]["status"] == "FAILED"
    assert rows["next"]["status"] == "SKIPPED" and "interrupted" in rows["next"]["detail"]
