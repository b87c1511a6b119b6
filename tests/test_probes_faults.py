"""Probes: the machine's own faults (a full disk, a file size limit, no permission, a read-only
or failing disk) and Ctrl-C at awkward moments. The last line names the file or folder and the
fix, no half-written file is left, the output folder's lock is released. A full disk and the
permission errors are simulated by making the system call fail with that errno; the file size
limit is real (``RLIMIT_FSIZE``), and so is the SIGINT sent to a running generator."""

import errno
import os
import resource
import signal
import subprocess
import sys
import time

import pytest
import torch
from checkpoint_files import make_resnet50
from probe_cmds import REPO, detect_argv, pretrain_argv

import convert.converter
import pretrain.train_net
from convert.__main__ import main as convert_main
from demo.__main__ import main as demo_main
from detection.train_net import main as detect_main
from detection.trials import main as trials_main
from evaluation.knn import main as knn_main
from pretrain.train_net import main as pretrain_main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def r50(tmp_path_factory):
    """A thin torchvision ResNet-50 file the converter reads (about 24 MB)."""
    path = tmp_path_factory.mktemp("r50") / "r50.pth"
    torch.save(make_resnet50(width_per_group=16).state_dict(), path)
    return str(path)


def _fail_fsync_of_temporary_files(monkeypatch, code):
    """``os.fsync`` of a file being written atomically (``.<name>.*.tmp``) fails with ``code``,
    as on a disk that fills up (or a network file system that reports it late)."""
    real = os.fsync

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp"):
            raise OSError(code, os.strerror(code))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def _fail_makedirs(monkeypatch, target, code):
    real = os.makedirs

    def makedirs(name, *args, **kwargs):
        if os.path.abspath(name) == os.path.abspath(target):
            raise OSError(code, os.strerror(code), name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(os, "makedirs", makedirs)


def test_full_disk_while_converting(tmp_path, cli_error, monkeypatch, r50):
    _fail_fsync_of_temporary_files(monkeypatch, errno.ENOSPC)
    out = tmp_path / "r50.pkl"
    status, last, _ = cli_error(convert_main, [r50, str(out)])
    assert status == 1 and last.startswith(f"error: no space left on the device holding {tmp_path}")
    assert last.endswith(
        f"while writing {out}. Free space there, or set the output path to a "
        "folder on another disk."
    )
    assert os.listdir(tmp_path) == []  # no output, no temporary file


def test_full_disk_while_pretraining_saves(tmp_path, cli_error, monkeypatch, synthetic_cls_root):
    _fail_fsync_of_temporary_files(monkeypatch, errno.ENOSPC)
    out = tmp_path / "out"
    status, last, _ = cli_error(pretrain_main, pretrain_argv(synthetic_cls_root / "train", out))
    assert status == 1 and f"no space left on the device holding {out}" in last, last
    assert last.endswith(
        f"while writing {out / 'last.pth'}. Free space there, or set OUTPUT_DIR "
        "to a folder on another disk."
    )
    left = os.listdir(out)
    assert "last.pth" not in left and "run.lock" not in left and not any(".tmp" in n for n in left)


def test_file_size_limit_while_converting(tmp_path, cli_error, r50):
    """A real limit (ulimit -f): torch's zip writer reports the failed write as "unexpected
    pos"; the line still says what happened."""
    out = tmp_path / "r50.pth"  # written with torch.save
    before = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, before[1]))
    try:
        status, last, _ = cli_error(convert_main, [r50, str(out)])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, before)
    assert status == 1 and last == (
        f"error: {out} grew past the largest file allowed here (the file size limit, ulimit -f, "
        "or the file system's). Raise the limit (ulimit -f unlimited), or set the output path to "
        "a folder on another disk."
    )
    assert os.listdir(tmp_path) == []


def test_file_size_limit_while_detection_saves(tmp_path, cli_error, synthetic_voc_root):
    """detectron2's checkpointer writes model_final.pth in place (not atomically) with
    torch.save; the real limit stops it after 4 MB."""
    argv = detect_argv(synthetic_voc_root, tmp_path, SOLVER__MAX_ITER=2, SOLVER__STEPS="(1,)")
    before = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4 << 20, before[1]))
    try:
        status, last, _ = cli_error(detect_main, argv + ["TEST.EVAL_PERIOD", "0"])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, before)
    assert status == 1 and last.startswith(
        f"error: {tmp_path / 'model_final.pth'} grew past the largest file allowed here"
    ), last
    assert last.endswith("or set OUTPUT_DIR to a folder on another disk.")
    assert "run.lock" not in os.listdir(tmp_path)


def test_read_only_output_folder(tmp_path, cli_error, monkeypatch, r50):
    def mkstemp(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path / ".r50.pkl.x.tmp"))

    monkeypatch.setattr(convert.converter.atomic_write.__globals__["tempfile"], "mkstemp", mkstemp)
    out = tmp_path / "r50.pkl"
    status, last, _ = cli_error(convert_main, [r50, str(out)])
    assert status == 1 and last == (
        f"error: {tmp_path} is on a read-only file system (writing {out}). Use a writable folder: "
        "set the output path to a folder on another disk."
    )


@pytest.mark.parametrize(
    "main, code, words",
    [
        (trials_main, errno.EACCES, "permission denied: {out} (uid"),
        (demo_main, errno.EDQUOT, "disk quota exceeded on {tmp} while writing {out}."),
    ],
    ids=["trials EACCES", "demo EDQUOT"],
)
def test_output_folder_refused_by_the_system(tmp_path, cli_error, monkeypatch, main, code, words):
    out = tmp_path / "runs"
    _fail_makedirs(monkeypatch, out, code)
    argv = ["--output-dir", str(out)]
    if main is trials_main:
        argv += ["--config-file", os.path.join(REPO, "configs", "detection", "tiny_synthetic.yaml")]
    status, last, _ = cli_error(main, argv)
    assert status == 1 and words.format(out=out, tmp=tmp_path) in last, last
    assert "--output-dir" in last and not out.exists()


def test_disk_error_reading_a_checkpoint_is_not_called_corrupt(
    tmp_path, cli_error, monkeypatch, synthetic_cls_root
):
    path = tmp_path / "last.pth"
    path.write_bytes(b"PK\x03\x04" + b"\x00" * 64)  # binary: only reading it can tell more

    def load(*args, **kwargs):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(torch, "load", load)
    argv = ["--checkpoint", str(path), "--data", str(synthetic_cls_root), "--device", "cpu"]
    status, last, _ = cli_error(knn_main, argv)
    assert status == 1 and last == (
        f"error: input/output error on {path}: the disk or network file system failed (see "
        "dmesg). Check it, then rerun the same command."
    )


def test_ctrl_c_during_pretraining(tmp_path, cli_error, monkeypatch, synthetic_cls_root):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pretrain.train_net, "train_one_epoch", interrupted)
    out = tmp_path / "out"
    status, last, err = cli_error(pretrain_main, pretrain_argv(synthetic_cls_root / "train", out))
    assert status == 130 and "Traceback" not in err, err
    assert last == (
        "interrupted (Ctrl-C): rerun the same command to resume from OUTPUT_DIR/last.pth (the "
        "epoch in progress is redone)"
    )
    assert "run.lock" not in os.listdir(out)  # the next run is not refused


def test_ctrl_c_while_the_converter_writes(tmp_path, cli_error, monkeypatch, r50):
    out = tmp_path / "r50.pkl"
    out.write_bytes(b"old model")

    def dump(obj, f):
        f.write(b"half a model")
        raise KeyboardInterrupt

    monkeypatch.setattr(convert.converter.pickle, "dump", dump)
    status, last, _ = cli_error(convert_main, [r50, str(out), "--overwrite"])
    assert status == 130 and last == "interrupted (Ctrl-C): the output file is unchanged; rerun"
    assert out.read_bytes() == b"old model" and os.listdir(tmp_path) == ["r50.pkl"]


def test_sigint_to_a_running_generator(tmp_path):
    root = tmp_path / "cls"
    script = "import sys; from synthetic.__main__ import main; sys.exit(main())"
    argv = ["cls", str(root), "--num-classes", "1", "--train-per-class", "100000"]
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *argv],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        # a Ctrl-C reaches the command even where this test runs with SIGINT ignored (nohup, a
        # background job), as it does in a terminal
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.time() + 120
        while not (root / "train" / "disk" / "00010.jpg").exists() and time.time() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == (
        "interrupted (Ctrl-C): the set is incomplete; rerun the same command"
    )
