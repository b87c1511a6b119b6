"""The converter never destroys its input or a good old output: in place, links, kill -9."""

import os
import pickle
import subprocess
import sys
import time

import pytest
import torch

from convert.__main__ import main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def checkpoint(tmp_path, thin_sd):
    src = tmp_path / "last.pth"
    torch.save(thin_sd, src)
    return src


@pytest.mark.parametrize("how", ["same path", "symlink", "hard link", "relative"])
def test_input_equal_to_output_is_refused(tmp_path, checkpoint, how, monkeypatch, cli_error):
    before = checkpoint.read_bytes()
    if how == "same path":
        out = str(checkpoint)
    elif how == "symlink":
        out = str(tmp_path / "link.pth")
        os.symlink(checkpoint, out)
    elif how == "hard link":
        out = str(tmp_path / "hard.pth")
        os.link(checkpoint, out)
    else:
        monkeypatch.chdir(tmp_path)
        out = "./last.pth"
    status, last, _ = cli_error(main, [str(checkpoint), out, "--overwrite"])  # not with it either
    assert status == 2 and last.startswith("error: output ") and "is the input" in last, last
    assert checkpoint.read_bytes() == before


def test_existing_output_needs_overwrite(tmp_path, checkpoint, cli_error):
    out = tmp_path / "r50.pkl"
    out.write_bytes(b"old model")
    status, last, _ = cli_error(main, [str(checkpoint), str(out)])
    assert status == 2 and last == f"error: {out} exists; pass --overwrite to replace it", last
    assert out.read_bytes() == b"old model"
    main([str(checkpoint), str(out), "--overwrite"])
    with open(out, "rb") as f:
        assert len(pickle.load(f)["model"]) == 265
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    main([str(checkpoint), str(tmp_path / "new.pkl")])  # a new file needs no flag
    assert (tmp_path / "new.pkl").exists()


def test_kill_during_write_keeps_the_old_output(tmp_path, checkpoint):
    """SIGKILL while the output is half written: the old output is still there, intact."""
    out = tmp_path / "r50.pkl"
    main([str(checkpoint), str(out)])
    good = out.read_bytes()
    # The converter, with a pickle.dump that writes a little and then hangs.
    script = (
        "import sys, time, convert.converter as c\n"
        "def slow_dump(obj, f):\n"
        "    f.write(b'partial'); f.flush(); print('writing', flush=True); time.sleep(600)\n"
        "c.pickle.dump = slow_dump\n"
        "from convert.__main__ import main\n"
        f"main([{str(checkpoint)!r}, {str(out)!r}, '--overwrite'])\n"
    )
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"writing\n"
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    time.sleep(0.1)
    assert out.read_bytes() == good
