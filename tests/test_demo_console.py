"""The demo's terminal output: the progress and result lines, terminal and plain modes, the
stage logs (--verbose included), a failing stage's log tail, and the ETA's re-estimation."""

import io
import os
import subprocess
import sys
import time

import pytest

from demo.console import Console, LiveStage, hms, progress_line, result_line
from demo.eta import DemoEta, detection_done, pretrain_done
from demo.stage_output import StageOutput
from demo.stages import StageRunner


def test_hms():
    assert [hms(s) for s in (0, 59.6, 75, 3725)] == ["0m00s", "1m00s", "1m15s", "1h02m05s"]
    assert hms(None) == "?"


def test_progress_line_with_bar_and_plain():
    args = (2, 6, "pretrain", 30, 120, "it", 65.0, 190.0, 725.0)
    bar = progress_line(*args, bar=True, width=90)
    assert bar.startswith("[2/6] pretrain") and " 25%|" in bar and "| 30/120 it," in bar
    assert "1m05s elapsed, 3m10s left, demo ETA 12m05s" in bar
    assert len(bar) == 90  # tqdm sizes the bar to the width
    plain = progress_line(*args, bar=False)
    assert plain == ("[2/6] pretrain 30/120 it (25%), 1m05s elapsed, 3m10s left, demo ETA 12m05s")
    # no total (a stage without progress units) and nothing known yet
    assert progress_line(1, 6, "data", 0, 0, "", 3.0, None, None, bar=True) == (
        "[1/6] data     0m03s elapsed, ? left, demo ETA ?"
    )
    assert result_line(4, 6, "convert", 1.2, "x.pkl") == "[4/6] convert  done in 0m01s: x.pkl"


def test_console_tty_redraws_in_place():
    out = io.StringIO()
    console = Console(out, tty=True)
    console.progress("a 10%")
    console.progress("a 20%")
    console.line("result a")  # clears the live line, then prints
    console.progress("b 5%")
    console.close_line()
    assert out.getvalue() == ("\ra 10%\x1b[K\ra 20%\x1b[K\r\x1b[Kresult a\n\rb 5%\x1b[K\n")


def test_console_plain_mode_has_no_carriage_returns():
    out = io.StringIO()
    console = Console(out, tty=False)
    console.progress("a 10%")
    console.line("result a")
    console.close_line()  # nothing live: no extra newline
    assert out.getvalue() == "a 10%\nresult a\n"


@pytest.mark.parametrize("tty", [True, False])
def test_live_stage_draws_start_and_final_state(tty):
    out = io.StringIO()
    console = Console(out, tty=tty, width=80)
    state = {"done": 0}
    with LiveStage(console, 2, 6, "pretrain", lambda: (state["done"], 10, "it"), lambda: (5, 9)):
        while not out.getvalue():  # the first line is drawn when the stage starts
            time.sleep(0.01)
        state["done"] = 10
    text = out.getvalue()
    assert ("\r" in text) == tty
    lines = [line for line in text.replace("\r", "\n").split("\n") if line.strip("\x1b[K")]
    assert "[2/6] pretrain" in lines[0]
    if tty:  # the final redraw shows the finished bar
        assert "10/10 it" in lines[-1] and "100%" in lines[-1]
    else:  # one plain line at the start (the next would come after plain_interval)
        assert lines == ["[2/6] pretrain 0/10 it (0%), 0m00s elapsed, 0m05s left, demo ETA 0m09s"]


def test_stage_output_goes_to_its_log_and_verbose_also_to_the_terminal(tmp_path, capsys):
    before = sys.stdout, sys.stderr
    for verbose in (False, True):
        with StageOutput(str(tmp_path / f"logs{verbose}"), verbose=verbose) as output:
            with output.capture("pretrain") as log:
                log = log.path
                print("python-level line")
                print("stderr line", file=sys.stderr)
                os.write(1, b"fd-level line\n")  # what C code and child processes write
                subprocess.run([sys.executable, "-c", "print('child line')"], check=True)
            output.terminal.write("terminal line\n")
        seen = capsys.readouterr().out
        logged = open(log).read()
        assert "python-level line" in logged and "stderr line" in logged
        assert "terminal line" in seen and "terminal line" not in logged
        if verbose:  # today's output on the terminal, and the log as well
            assert "python-level line" in seen
        else:
            assert "python-level line" not in seen
            assert "fd-level line" in logged and "child line" in logged
    assert (sys.stdout, sys.stderr) == before


def test_a_failing_stage_prints_the_end_of_its_log(tmp_path, capsys):
    with StageOutput(str(tmp_path / "logs")) as output:
        console = Console(output.terminal, tty=False)
        eta = DemoEta({"data": 5, "pretrain": 100}, ["data", "pretrain"])
        runner = StageRunner(["data", "pretrain"], output, console, eta, "`python -m demo`")
        with runner.stage("data") as stage:
            stage.summary = "made"
            print("WARNING [12/06 05:21:50 synthetic]: a warning of the stage")
        with pytest.raises(ValueError, match="DATA.TRAIN") as failure:
            with runner.stage("pretrain"):
                for i in range(30):
                    print(f"log line {i}")
                raise ValueError("DATA.TRAIN='/nope' is not a directory; set DATA.TRAIN")
    log = str(tmp_path / "logs" / "pretrain.log")
    assert failure.value.demo_log == log
    shown = capsys.readouterr().out.splitlines()
    assert shown[0].startswith("[1/2] data     0m00s elapsed")
    data_log = tmp_path / "logs" / "data.log"
    assert shown[1] == f"[1/2] data     done in 0m00s: made (1 warning in {data_log})"
    assert any(line.startswith("[2/2] pretrain FAILED after") for line in shown)
    assert f"Last 20 lines of {log}:" in shown
    tail = shown[shown.index(f"Last 20 lines of {log}:") + 1 :]
    # the log's last 20 lines: the end of the printed lines, then the traceback
    assert "    log line 29" in tail and "    log line 9" not in tail
    assert any("ValueError: DATA.TRAIN='/nope'" in line for line in tail)
    # the last two lines are about the problem: the error, the log and how to continue
    assert shown[-2] == (
        "The pretrain stage failed: DATA.TRAIN='/nope' is not a directory; set DATA.TRAIN"
    )
    assert shown[-1].startswith(f"Full log: {log}.") and "`python -m demo` continues" in shown[-1]
    logged = open(log).read()
    assert "log line 0\n" in logged and "Traceback" in logged


def test_eta_is_reestimated_from_measured_progress():
    eta = DemoEta({"data": 5, "pretrain": 200, "knn": 10, "detect": 600}, ["data", "pretrain",
                  "knn", "detect"])  # fmt: skip
    eta.start("data", 0.0)
    assert eta.left() == (5, 815)  # reference seconds before anything is measured
    eta.finish("data", 30.0)  # too short a reference to say anything about the machine
    eta.start("pretrain", 30.0, total_units=100)
    eta.update(2, 60.0)  # 2% done: not yet extrapolated, but slower than the reference...
    assert eta.left()[0] == 200 - 30
    eta.update(10, 70.0)  # 10% in 40 s: the stage takes 400 s, twice its reference
    stage_left, demo_left = eta.left()
    assert stage_left == pytest.approx(360) and demo_left == pytest.approx(360 + 2 * 610)
    eta.finish("pretrain", 400.0)
    eta.start("knn", 430.0)
    eta.now = 432.0
    assert eta.left() == (pytest.approx(18), pytest.approx(18 + 1200))
    eta.finish("knn", 25.0)
    eta.start("detect", 455.0, total_units=1000, done_units=500)  # half done by an earlier run
    eta.update(600, 505.0)  # 20% of the rest in 50 s
    assert eta.left()[0] == pytest.approx(200)
    assert eta.factor == pytest.approx(500 / 600)  # the whole stage would take 500 s


def test_progress_is_read_from_the_stages_files(tmp_path):
    pre = tmp_path / "pretrain"
    pre.mkdir()
    assert pretrain_done(str(pre), 20) == (0, 0)
    (pre / "metrics.json").write_text('{"iteration": 9}\n{"iteration": 19, "loss": 5}\n')
    assert pretrain_done(str(pre), 20) == (40, 20)
    moco, rand = tmp_path / "moco", tmp_path / "random_init"
    (moco / "trial_0_seed_0").mkdir(parents=True)
    (moco / "trial_0_seed_0" / "final_metrics.json").write_text("{}")
    (moco / "trial_1_seed_1000").mkdir()
    (moco / "trial_1_seed_1000" / "metrics.json").write_text('{"iteration": 39}\n')
    (rand / "trial_0_seed_0").mkdir(parents=True)  # started, no metrics line yet
    (moco / "trial_0_seed_0.lock").write_text("{}")  # not a trial folder
    work, iterations = detection_done([str(moco), str(rand)], max_iter=100, overhead_units=10)
    assert (work, iterations) == (100 + 10 + 40 + 5, 140)
