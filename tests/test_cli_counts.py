"""Counts and sizes that would mean "nothing" are refused on every command line, naming the
flag, with argparse's usage and exit status 2, before anything is read or written."""

import os

import pytest

from demo.__main__ import main as demo_main
from detection.train_net import main as detect_main
from detection.trials import main as trials_main
from evaluation.knn import main as knn_main
from evaluation.linear import main as linear_main
from pretrain.train_net import main as pretrain_main
from synthetic.__main__ import main as synth_main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DET_CONFIG = os.path.join(REPO, "configs", "detection", "tiny_synthetic.yaml")
PRE_CONFIG = os.path.join(REPO, "configs", "pretrain", "tiny_synthetic.yaml")
TRIALS = ["--config-file", DET_CONFIG, "--output-dir", "unused"]
KNN = ["--random-init", "--data", "unused"]

CASES = [
    (trials_main, TRIALS + ["--num-trials", "0"], "--num-trials", ">= 1, got 0"),
    (trials_main, TRIALS + ["--seeds", "0", "-1"], "--seeds", "random one), got -1"),
    (trials_main, TRIALS + ["--gpus-per-trial", "0"], "--gpus-per-trial", ">= 1"),
    (trials_main, TRIALS + ["--retries", "-1"], "--retries", ">= 0"),
    (trials_main, TRIALS + ["--log-period", "0"], "--log-period", "> 0.0"),
    (trials_main, TRIALS + ["--num-trials", "two"], "--num-trials", "an integer, got 'two'"),
    (pretrain_main, ["--stop-after-epochs", "0"], "--stop-after-epochs", "leave the flag out"),
    (pretrain_main, ["--config-file", PRE_CONFIG, "--num-gpus", "0"], "--num-gpus", ">= 1"),
    (detect_main, ["--config-file", DET_CONFIG, "--num-machines", "0"], "--num-machines", ">= 1"),
    (detect_main, ["--config-file", DET_CONFIG, "--machine-rank", "1"], "--machine-rank", "0..0"),
    (linear_main, KNN + ["--epochs", "0"], "--epochs", ">= 1"),
    (linear_main, KNN + ["--batch-size", "0"], "--batch-size", ">= 1"),
    (linear_main, KNN + ["--lr", "0"], "--lr", "> 0.0"),
    (linear_main, KNN + ["--workers", "-1"], "--workers", ">= 0"),
    (knn_main, KNN + ["--k", "0"], "--k", ">= 1"),
    (knn_main, KNN + ["--batch-size", "-8"], "--batch-size", ">= 1"),
    (demo_main, ["--seeds", "-1"], "--seeds", ">= 0"),
    (synth_main, ["cls", "unused", "--train-per-class", "0"], "--train-per-class", ">= 1"),
    (synth_main, ["voc", "unused", "--test-images", "0"], "--test-images", ">= 1"),
]


@pytest.mark.parametrize("main, argv, flag, why", CASES, ids=[f"{c[2]}={c[1][-1]}" for c in CASES])
def test_counts_meaning_nothing_are_refused(tmp_path, monkeypatch, capsys, main, argv, flag, why):
    monkeypatch.chdir(tmp_path)  # "unused" paths would land here; nothing may be written
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # the last line the user sees names the flag and why
    assert f"error: argument {flag}: must be" in last and why in last, err
    assert os.listdir(tmp_path) == []
