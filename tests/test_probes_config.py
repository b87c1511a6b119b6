"""Probes: a broken config, as a tired researcher gives it to each command. Every one stops
with exit status 2 before anything is written, and its last line names the file (or "the
command-line overrides"), the key and the fix (docs/reliability.md, "Mistakes and machine
faults")."""

import os

import pytest
from probe_cmds import DETECT_CONFIG, PRETRAIN_CONFIG, detect_argv

from detection.train_net import main as detect_main
from detection.trials import main as trials_main
from pretrain.train_net import main as pretrain_main

BROKEN_YAML = "VERSION: 2\nSOLVER:\n  BASE_LR: [0.1, 0.2\n"  # a bracket never closed


@pytest.fixture
def here(tmp_path, monkeypatch):
    """Run in an empty folder; the test checks that nothing but its own files appears."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _refused(cli_error, main, argv, folder, keep=()):
    status, last, err = cli_error(main, argv)
    assert status == 2 and last.startswith("error: "), err
    assert "Traceback" not in err, err
    assert sorted(os.listdir(folder)) == sorted(keep), "nothing may be written"
    return last


@pytest.mark.parametrize("main", [pretrain_main, detect_main], ids=["pretrain", "detect"])
def test_config_file_that_does_not_exist(here, cli_error, main):
    last = _refused(cli_error, main, ["--config-file", "configs/moco.yaml"], here)
    assert last.startswith("error: --config-file configs/moco.yaml does not exist. Pass a ")
    assert last.endswith(("configs/pretrain/*.yaml.", "configs/detection/*.yaml.")), last


@pytest.mark.parametrize("main", [pretrain_main, detect_main], ids=["pretrain", "detect"])
def test_yaml_syntax_error_names_file_line_and_column(here, cli_error, main):
    (here / "mine.yaml").write_text(BROKEN_YAML)
    last = _refused(cli_error, main, ["--config-file", "mine.yaml"], here, keep=["mine.yaml"])
    assert last.startswith("error: mine.yaml, line 4, column 1: not valid YAML ("), last
    assert "Fix the syntax there" in last


@pytest.mark.parametrize("main", [pretrain_main, detect_main], ids=["pretrain", "detect"])
def test_base_that_does_not_exist(here, cli_error, main):
    (here / "mine.yaml").write_text('_BASE_: "Base-Moco.yaml"\nSEED: 3\n')
    last = _refused(cli_error, main, ["--config-file", "mine.yaml"], here, keep=["mine.yaml"])
    assert last == (
        f"error: mine.yaml: its _BASE_ 'Base-Moco.yaml' does not exist (looked for "
        f"{here / 'Base-Moco.yaml'}). A _BASE_ path is relative to the folder of the YAML file "
        "that names it."
    )


def test_override_of_the_wrong_type(here, cli_error):
    argv = ["--config-file", PRETRAIN_CONFIG, "SOLVER.EPOCHS", "ten"]
    assert _refused(cli_error, pretrain_main, argv, here) == (
        "error: the command-line overrides set SOLVER.EPOCHS to 'ten', but it must be of type "
        "int (like its default 10). Give a value of that type."
    )


def test_override_without_a_value(here, cli_error):
    argv = ["--config-file", PRETRAIN_CONFIG, "SOLVER.EPOCHS", "2", "SEED"]
    last = _refused(cli_error, pretrain_main, argv, here)
    assert last == "error: the KEY VALUE overrides come in pairs, but 'SEED' has no value."


@pytest.mark.parametrize(
    "main, config, flags",
    [
        (pretrain_main, PRETRAIN_CONFIG, ["--num-gpus", "2"]),
        (detect_main, DETECT_CONFIG, ["--eval-only"]),
    ],
    ids=["pretrain --num-gpus", "detect --eval-only"],
)
def test_flag_after_the_overrides(here, cli_error, main, config, flags):
    argv = ["--config-file", config, "SEED", "3", *flags]
    last = _refused(cli_error, main, argv, here)
    assert f"Command-line flags ({flags[0]}) go before the KEY VALUE overrides" in last, last


@pytest.mark.parametrize(
    "main, config, words",
    [
        (pretrain_main, DETECT_CONFIG, "is a detection config (run it with moco-detect"),
        (detect_main, PRETRAIN_CONFIG, "is a pretraining config (run it with moco-pretrain)"),
        (trials_main, PRETRAIN_CONFIG, "is a pretraining config (run it with moco-pretrain)"),
    ],
    ids=["pretrain<-detection", "detect<-pretraining", "trials<-pretraining"],
)
def test_config_of_another_command(here, cli_error, main, config, words):
    argv = ["--config-file", config] + (["--output-dir", "out"] if main is trials_main else [])
    last = _refused(cli_error, main, argv, here, keep=["out"] if main is trials_main else [])
    assert last.startswith(f"error: {config} {words}") and last.endswith("/*.yaml."), last


def test_typo_in_a_detection_override(here, cli_error):
    argv = ["--config-file", DETECT_CONFIG, "SOLVER.MAX_ITR", "30"]
    last = _refused(cli_error, detect_main, argv, here)
    assert last.startswith(
        "error: unknown config key 'SOLVER.MAX_ITR' in the command-line overrides; did you mean "
        "SOLVER.MAX_ITER"
    ), last


def test_lr_steps_that_do_not_fit_the_schedule(tmp_path, cli_error, synthetic_voc_root):
    """fvcore refused it at iteration 0, after the data scan, with "Total num_updates must be
    greater than length of param schedule"."""
    argv = detect_argv(synthetic_voc_root, tmp_path, SOLVER__MAX_ITER=1, SOLVER__STEPS="(0,)")
    status, last, err = cli_error(detect_main, argv)
    assert status == 2 and "Traceback" not in err, err
    assert last == (
        "error: SOLVER.STEPS (0,) does not fit SOLVER.MAX_ITER 1: no iteration is left for an lr "
        'step. Set SOLVER.STEPS "()", or raise SOLVER.MAX_ITER.'
    )
    assert not (tmp_path / "model_final.pth").exists()


def test_a_transfer_option_that_cannot_work_stops_the_runner_before_any_trial(here, cli_error):
    argv = ["--config-file", DETECT_CONFIG, "--output-dir", "out", "TRANSFER.OPTIMIZER", "Adam"]
    last = _refused(cli_error, trials_main, argv, here, keep=["out"])
    assert last == "error: TRANSFER.OPTIMIZER must be one of ('SGD', 'AdamW'), got 'Adam'"
    assert set(os.listdir(here / "out")) <= {"trials.log"}  # no trial folder: nothing started
