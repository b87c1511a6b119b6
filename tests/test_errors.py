"""common.errors: every error a command meets ends in one line about the user's problem, with
an exit status, the traceback in the log files; worker processes' errors reach the parent."""

import errno
import logging
import os

import pytest
import yaml

from common.errors import (
    DEBUG_ENV,
    FAILURE,
    INTERRUPTED,
    USER_MISTAKE,
    WorkerError,
    describe,
    entry_point,
)
from common.launch import launch_from_args
from pretrain.config import load_cfg

# (errno, path, words the line must hold, status): the path of each is made under tmp_path
ERRNO_CASES = [
    (errno.ENOSPC, "out/last.pth", ["no space left on the device holding", "OUTPUT_DIR"], 1),
    (errno.EDQUOT, "out/last.pth", ["disk quota exceeded on", "OUTPUT_DIR"], 1),
    (errno.EFBIG, "out/last.pth", ["grew past the largest file allowed", "ulimit -f"], 1),
    (errno.EROFS, "out/last.pth", ["read-only file system", "OUTPUT_DIR"], 1),
    (errno.EACCES, "out/last.pth", ["permission denied", "chmod"], 1),
    (errno.EIO, "out/last.pth", ["input/output error", "rerun"], 1),
    (errno.ENOENT, "nowhere/x.pth", ["does not exist (nor does its folder", "Check the path"], 2),
    (errno.EISDIR, "out", ["is a folder, but a file is needed", "Pass the file"], 2),
    (errno.ENOTDIR, "a_file/x.pth", ["a_file is a file, but", "Choose another path"], 2),
    (errno.EEXIST, "a_file", ["exists and is a file, but a folder is needed", "move"], 2),
]


@pytest.mark.parametrize(
    "code, rel, words, status", ERRNO_CASES, ids=[errno.errorcode[c[0]] for c in ERRNO_CASES]
)
def test_os_errors_are_translated_from_their_errno(tmp_path, code, rel, words, status):
    (tmp_path / "out").mkdir()
    (tmp_path / "a_file").write_text("x")
    path = str(tmp_path / rel)
    report = describe(OSError(code, os.strerror(code), path), output="OUTPUT_DIR")
    assert report.text.startswith("error: ") and report.status == status, report
    assert path in report.text or str(tmp_path) in report.text, report.text
    assert all(w in report.text for w in words), report.text
    assert "\n" not in report.text and "Errno" not in report.text


def test_a_write_error_without_a_file_name_names_the_open_file(tmp_path):
    target = tmp_path / "summary.json"

    def write():
        with open(target, "w") as f:  # f.write raises OSError(ENOSPC) without a file name
            f.write("{}")
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as err:
        write()
    report = describe(err.value, output="ROOT")
    assert f"while writing {target}" in report.text and "set ROOT" in report.text, report.text


@pytest.mark.parametrize(
    "message, words",
    [
        ("[Errno 28] No space left on device", "no space left on the device holding"),
        ("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598", "is full"),
    ],
    ids=["errno in the text", "zip writer position"],
)
def test_torchs_write_failures_name_the_file(tmp_path, message, words):
    """torch.save hands a failed write on as a RuntimeError: the errno only as text, or not at
    all ("unexpected pos" after a short write)."""
    target = tmp_path / "model_final.pth"
    with pytest.raises(RuntimeError) as err:
        with open(target, "wb") as f:  # as detectron2's checkpointer writes
            f.write(b"PK")
            raise RuntimeError(message)
    report = describe(err.value, output="OUTPUT_DIR")
    assert report.status == FAILURE and words in report.text, report.text
    assert str(target) in report.text and "set OUTPUT_DIR to a folder on another disk" in (
        report.text
    )


def test_yaml_and_cuda_errors_name_the_file_and_the_switch(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("MODEL:\n  K: [1, 2\n")
    with pytest.raises(yaml.YAMLError) as err:
        with open(path) as f:
            yaml.safe_load(f)
    report = describe(err.value)
    assert report.status == USER_MISTAKE and f"{path}, line 3, column 1: not valid YAML" in (
        report.text
    ), report.text
    cuda = describe(RuntimeError("Found no NVIDIA driver on your system. Please check ..."))
    assert cuda.status == USER_MISTAKE and "Set MODEL.DEVICE cpu (--device cpu)" in cuda.text


def _library_error():
    return int("ten")  # a ValueError raised by the interpreter, not by this project


def test_project_messages_are_kept_and_library_errors_show_their_traceback(
    tmp_path, capsys, monkeypatch
):
    @entry_point(output="OUTPUT_DIR")
    def bad_config(argv=None):
        load_cfg("", ["SOLVER.EPOCHS", "ten"])

    @entry_point()
    def library(argv=None):
        _library_error()

    handler = logging.FileHandler(tmp_path / "log.txt")
    logging.getLogger("probe.errors").addHandler(handler)
    try:
        with pytest.raises(SystemExit) as exit_info:
            bad_config([])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and "Traceback" not in err, err
        assert err.strip().splitlines() == [
            "error: the command-line overrides set SOLVER.EPOCHS to 'ten', but it must be of "
            "type int (like its default 200). Give a value of that type."
        ]
        log = (tmp_path / "log.txt").read_text()
        assert "Traceback" in log and "Type mismatch" in log  # the whole story is in the log
        with pytest.raises(SystemExit) as exit_info:
            library([])
        err = capsys.readouterr().err
        assert exit_info.value.code == FAILURE and "Traceback" in err and "_library_error" in err
        assert err.strip().splitlines()[-1] == (
            "error: ValueError: invalid literal for int() with base 10: 'ten'"
        )
        monkeypatch.setenv(DEBUG_ENV, "1")  # every traceback on the terminal too
        with pytest.raises(SystemExit):
            bad_config([])
        err = capsys.readouterr().err
        assert "Traceback" in err and err.strip().splitlines()[-1].startswith("error: the comm")
    finally:
        logging.getLogger("probe.errors").removeHandler(handler)
        handler.close()


def _raised_in(module, statement):
    """The exception of ``statement`` run as code of ``module`` (its innermost frame)."""
    try:
        exec(compile(statement, f"{module}.py", "exec"), {"__name__": module})
    except Exception as e:  # noqa: BLE001 - returned for the test to describe
        return e
    raise AssertionError("no exception")


@pytest.mark.parametrize(
    "module, statement, text, status, expected",
    [
        ("detection.fake", "raise NotImplementedError('no evaluator for x')", "no evaluator", 1, 1),
        ("detection.fake", "raise KeyError('unknown reference r; choose from [a]')", "unkno", 2, 1),
        ("detection.fake", "{}['SOLVER']", "KeyError: SOLVER", 1, 0),  # a bug: traceback too
        ("detection.fake", "assert False, 'ranks differ'", "AssertionError: ranks differ", 1, 0),
        ("somelib.core", "raise ValueError('bad value')", "ValueError: bad value", 1, 0),
        ("somelib.core", "import no_such_package_here", "'no_such_package_here' is not ", 1, 1),
    ],
    ids=["project message", "project KeyError sentence", "bare key", "assert", "library", "import"],
)
def test_who_raised_decides_between_a_message_and_a_bug(module, statement, text, status, expected):
    report = describe(_raised_in(module, statement))
    assert report.text.startswith("error: ") and text in report.text, report.text
    assert (report.status, report.expected) == (status, bool(expected)), report


def test_console_scripts_exit_0_on_success_and_130_on_ctrl_c(capsys):
    @entry_point(interrupted="rerun to resume")
    def command(argv=None):
        if argv == ["stop"]:
            raise KeyboardInterrupt
        return {"top1": 0.5}  # a result: sys.exit(dict) would print it and exit 1

    assert command(None) == 0  # console script: sys.exit(main())
    assert command([]) == {"top1": 0.5}  # called from code: the result
    with pytest.raises(SystemExit) as exit_info:
        command(["stop"])
    assert exit_info.value.code == INTERRUPTED
    assert capsys.readouterr().err.strip() == "interrupted (Ctrl-C): rerun to resume"


def _worker_reads_a_bad_config(args):
    load_cfg("", ["MODEL.K", "many"])  # every worker rebuilds its config


def test_worker_process_errors_end_with_the_workers_line(capsys):
    """detectron2's launch spawns the workers; torch re-raises their exceptions as text."""
    from argparse import Namespace

    args = Namespace(num_gpus=2, num_machines=1, machine_rank=0, dist_url="auto")

    @entry_point()
    def command(argv=None):  # argv: the function each worker runs
        launch_from_args(argv[0], args)

    with pytest.raises(SystemExit) as exit_info:
        command([_worker_reads_a_bad_config])
    err = capsys.readouterr().err
    assert exit_info.value.code == USER_MISTAKE, err
    assert err.strip().splitlines()[-1] == (
        "error: the command-line overrides set MODEL.K to 'many', but it must be of type int "
        "(like its default 65536). Give a value of that type."
    ), err


def test_a_killed_worker_is_named_with_the_likely_cause():
    from torch.multiprocessing import ProcessExitedException

    killed = ProcessExitedException(
        "process 1 terminated with signal SIGKILL", 1, 4242, -9, signal_name="SIGKILL"
    )
    report = describe(killed)
    assert report.status == FAILURE and "worker process 1 (pid 4242) was killed by SIGKILL" in (
        report.text
    )
    assert "out-of-memory killer" in report.text and "rerun the same command" in report.text


def test_worker_error_round_trips_its_report():
    report = describe(WorkerError(describe(ValueError("x"))))
    assert report.text == "error: ValueError: x" and report.status == FAILURE
