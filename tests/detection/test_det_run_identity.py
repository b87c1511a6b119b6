"""`detection.train_net`: --resume continues only the run a folder holds, and one command writes
to an OUTPUT_DIR at a time (while a trial runner's lock next to the folder does not block it)."""

import os

import pytest
from det_helpers import TINY_CONFIG
from detectron2.engine import default_argument_parser

from common.runconfig import ChangedRunError
from detection import train_net
from detection.trial_locks import TrialLock


def _args(voc_root, out, *opts, resume=True):
    flags = ["--config-file", TINY_CONFIG] + (["--resume"] if resume else [])
    opts = [
        "TRANSFER.VOC_LIKE_ROOT",
        str(voc_root),
        "OUTPUT_DIR",
        str(out),
        "TRANSFER.INIT",
        "random",
        *opts,
    ]
    return default_argument_parser().parse_args(flags + opts)


def test_resume_with_a_changed_config_is_refused(tiny_voc_root, tmp_path):
    out = tmp_path / "det"
    first = train_net.setup(_args(tiny_voc_root, out, "SOLVER.BASE_LR", "0.02", resume=False))
    train_net.record_run_config(first)  # as run() does before training
    (out / "last_checkpoint").write_text("model_0000001.pth")  # it checkpointed
    os.remove(out / "config.yaml")

    changed = ("SOLVER.BASE_LR", "0.01", "SOLVER.MAX_ITER", "7", "SEED", "5")
    with pytest.raises(ChangedRunError) as err:
        train_net.setup(_args(tiny_voc_root, out, *changed))
    msg = str(err.value)
    for line in ("SOLVER.BASE_LR: 0.02 -> 0.01", "SEED: ", "SOLVER.MAX_ITER: "):
        assert line in msg, msg
    assert str(out / "run_config.yaml") in msg.splitlines()[0]
    assert "new OUTPUT_DIR" in msg.splitlines()[-1]
    assert not (out / "config.yaml").exists()  # refused before detectron2 wrote anything
    # workers, checkpoint period and data location may change
    free = ("SOLVER.BASE_LR", "0.02", "DATALOADER.NUM_WORKERS", "1")
    free += ("SOLVER.CHECKPOINT_PERIOD", "3", "TRANSFER.CPU_THREADS", "1")
    assert train_net.setup(_args(tiny_voc_root, out, *free)).DATALOADER.NUM_WORKERS == 1
    # a folder without run_config.yaml (older runs): detectron2's config.yaml of the last start
    os.remove(out / "run_config.yaml")
    with pytest.raises(ChangedRunError, match=r"config.yaml .*\n  SOLVER.BASE_LR: 0.02 -> 0.01"):
        train_net.setup(_args(tiny_voc_root, out, "SOLVER.BASE_LR", "0.01"))
    # without --resume it is a new run from MODEL.WEIGHTS: allowed
    assert train_net.setup(_args(tiny_voc_root, out, *changed, resume=False)).SEED == 5


def test_one_command_per_output_dir(tmp_path, monkeypatch, one_writer_check):
    out = tmp_path / "trial_0_seed_0"
    argv = ["--config-file", TINY_CONFIG, "--resume", "OUTPUT_DIR", str(out)]
    one_writer_check(train_net.main, argv, str(out), train_net)
    # a trial runner holds <trial folder>.lock and passes it to the trial: the trial still runs
    launched = []
    monkeypatch.setattr(train_net, "launch_from_args", lambda run, args: launched.append(args))
    runner_lock = TrialLock(str(out))
    runner_lock.acquire()
    try:
        train_net.main(argv)
    finally:
        runner_lock.release()
    assert len(launched) == 1 and runner_lock.path == str(out) + ".lock"
