"""Probes: environment mistakes. CUDA asked for on a machine without it, more processes than
GPUs, and the exit status a console script gives back. The GPUs torch sees are set by the test
(monkeypatched), so the probes mean the same on a CPU and on a GPU machine."""

import os
import subprocess
import sys

import pytest
import torch
from probe_cmds import REPO, VOC_CONFIG, detect_argv, pretrain_argv

from detection.train_net import main as detect_main
from evaluation.knn import main as knn_main
from evaluation.linear import main as linear_main
from pretrain.train_net import main as pretrain_main
from synthetic.__main__ import main as synth_main


def _gpus(monkeypatch, count):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def _no_cuda_line(key):
    return (
        f"error: {key} is 'cuda', but torch {torch.__version__} sees no CUDA device (CUDA build: "
        f"{torch.version.cuda or 'none'}; CUDA_VISIBLE_DEVICES=0). Set {key} cpu, or run on a "
        "machine with a GPU."
    )


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    _gpus(monkeypatch, 0)


@pytest.mark.parametrize(
    "command",
    ["pretrain MODEL.DEVICE cuda", "detect (VOC config: detectron2's default cuda)", "knn"],
)
def test_cuda_asked_for_on_a_machine_without_it(tmp_path, cli_error, no_gpu, command):
    out = tmp_path / "out"
    if command.startswith("pretrain"):
        main, argv = pretrain_main, pretrain_argv(tmp_path, out, MODEL__DEVICE="cuda")
    elif command.startswith("detect"):
        main, argv = detect_main, detect_argv("", out, config=VOC_CONFIG)
    else:
        main, argv = knn_main, ["--random-init", "--data", str(tmp_path), "--device", "cuda"]
    status, last, err = cli_error(main, argv)
    key = "--device" if main is knn_main else "MODEL.DEVICE"
    assert status == 2 and last == _no_cuda_line(key), err
    assert not out.exists()  # refused before any process, lock or folder


@pytest.mark.parametrize("command", ["detect", "lincls"])
def test_more_processes_than_gpus(tmp_path, cli_error, monkeypatch, command):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    _gpus(monkeypatch, 1)
    out = tmp_path / "out"
    if command == "detect":
        argv = detect_argv("", out, "--num-gpus", "4", config=VOC_CONFIG)
        main = detect_main
    else:
        main = linear_main
        argv = ["--random-init", "--data", str(tmp_path), "--output-dir", str(out)]
        argv += ["--device", "cuda", "--num-gpus", "4"]
    status, last, _ = cli_error(main, argv)
    assert status == 2 and last == (
        "error: --num-gpus 4 starts one process per GPU, but 1 GPU(s) are visible "
        "(CUDA_VISIBLE_DEVICES=0). Pass --num-gpus 1 (with a config made for 1 GPU(s)), or run "
        "where 4 are visible."
    )
    assert not out.exists()


def test_console_script_that_succeeds_exits_with_status_0(tmp_path):
    """The console scripts run ``sys.exit(main())``: a command that returns its result (a dict)
    used to exit with status 1 and print the dict as its last line."""
    script = "import sys; from synthetic.__main__ import main; sys.exit(main())"
    argv = ["cls", str(tmp_path / "cls"), "--num-classes", "2", "--train-per-class", "1"]
    argv += ["--val-per-class", "1"]
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run(
        [sys.executable, "-c", script, *argv], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert f"wrote {tmp_path / 'cls'} in " in proc.stdout


def test_result_is_returned_to_code_that_calls_main(tmp_path, monkeypatch):
    tiny = ["--num-classes", "1", "--train-per-class", "1", "--val-per-class", "1"]
    summary = synth_main(["cls", str(tmp_path / "a"), *tiny])
    assert summary["counts"] == {"train": {"disk": 1}, "val": {"disk": 1}}
    monkeypatch.setattr(sys, "argv", ["moco-synth", "cls", str(tmp_path / "b"), *tiny])
    assert synth_main() == 0  # argv from the command line: an exit status
