"""Shared pytest fixtures. Tests run on CPU, seeded, on small generated data.

Session-scoped data fixtures (generated once per test session into a temporary directory, in
about a second each; treat them as read-only, copy them before modifying anything):

- ``synthetic_cls_root``: an ImageFolder classification set written by
  ``synthetic.make_classification(seed=0, num_classes=8, train_per_class=20, val_per_class=8,
  image_size=64)``: ``<root>/train/<class>/*.jpg`` (160 images) and ``<root>/val/<class>/*.jpg``
  (64 images), classes ``synthetic.CLS_CLASSES``.
- ``synthetic_voc_root``: a PASCAL-VOC-format set written by ``synthetic.make_voc(seed=0,
  trainval_images=16, test_images=12, min_side=128, max_side=160)``: ``<root>/VOC2007``
  (trainval 16 images, test 12) and ``<root>/VOC2012`` (trainval 16), classes
  ``synthetic.DET_CLASSES``. Register it with detectron2's ``register_pascal_voc(name,
  <root>/VOC2007, split, 2007, synthetic.DET_CLASSES)``.

Both fixtures return the root as a ``pathlib.Path``; the generator's summary dict is in
``<root>/summary.json``.
"""

import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys

import pytest
import torch

import synthetic

SYNTHETIC_CLS_KWARGS = dict(
    seed=0, num_classes=8, train_per_class=20, val_per_class=8, image_size=64
)
SYNTHETIC_VOC_KWARGS = dict(seed=0, trainval_images=16, test_images=12, min_side=128, max_side=160)


@pytest.fixture
def one_torch_thread():
    """Run the test on one torch thread: on a small shared CPU, OpenMP threads of several busy
    processes spin-wait on each other and tiny convolutions take 10x longer."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def synthetic_cls_root(tmp_path_factory):
    """Root of a small synthetic ImageFolder set (see the module docstring)."""
    root = tmp_path_factory.mktemp("synthetic_cls")
    synthetic.make_classification(str(root), **SYNTHETIC_CLS_KWARGS)
    return root


@pytest.fixture(scope="session")
def synthetic_voc_root(tmp_path_factory):
    """Root of a small synthetic VOC2007 + VOC2012 set (see the module docstring)."""
    root = tmp_path_factory.mktemp("synthetic_voc")
    synthetic.make_voc(str(root), **SYNTHETIC_VOC_KWARGS)
    return root


# The learning tests' pretraining run (tests/pretrain/test_moco_learning.py and
# tests/evaluation/test_pretrained_beats_random.py share it): configs/pretrain/tiny_synthetic.yaml
# as shipped except for the paths and a shorter step budget, on the data design the config is
# made for (400 training images per class, so that the queue K=256 stays well below the number
# of images; 50 val images per class, so that one image is 0.25 points of top-1).
LEARNING_DATA_KWARGS = dict(
    seed=0, num_classes=8, train_per_class=400, val_per_class=50, image_size=64
)
LEARNING_EPOCHS = 5  # of the shipped 10 (250 steps), to keep `make test` under 15 minutes


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """Each test leaves torch's thread count as it found it: the detection trainer sets it to
    TRANSFER.CPU_THREADS (1 in the tiny configs) in this process, and every later test, the
    learning tests' 250-step pretraining among them, then ran on one core (510 s instead of
    about 250 s in a full run)."""
    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_moco_run(tmp_path_factory):
    """Pretrain once with the tiny recipe; return paths and the random-init baseline.

    Returns a dict: ``data`` (root of the ImageFolder set), ``cfg`` (the config used),
    ``init_path`` (the step-0 model, same seed, same checkpoint format as ``trained_path``),
    ``trained_path`` (``last.pth``), ``result`` (what ``pretrain.train_net.train`` returned,
    with the final ``knn_top1``) and ``minutes`` (training wall time).
    """
    import os
    import time

    import torch

    from pretrain.builder import build_moco
    from pretrain.checkpoint import FORMAT
    from pretrain.config import load_cfg
    from pretrain.train_net import train

    root = tmp_path_factory.mktemp("tiny_moco_run")
    data = root / "data"
    synthetic.make_classification(str(data), **LEARNING_DATA_KWARGS)
    config = os.path.join(
        os.path.dirname(__file__), "..", "configs", "pretrain", "tiny_synthetic.yaml"
    )
    opts = ["DATA.TRAIN", str(data / "train"), "OUTPUT_DIR", str(root / "pretrain")]
    opts += ["DATA.KNN_TRAIN", str(data / "train"), "DATA.KNN_VAL", str(data / "val")]
    opts += ["SOLVER.EPOCHS", str(LEARNING_EPOCHS), "TEST.KNN_PERIOD", str(LEARNING_EPOCHS)]
    cfg = load_cfg(config, opts)
    torch.manual_seed(cfg.SEED)  # train() seeds the same way before building the model
    init_path = str(root / "init.pth")
    torch.save({"model": build_moco(cfg).state_dict(), "format": FORMAT}, init_path)
    start = time.perf_counter()
    result = train(cfg, auto_resume=False)
    return dict(
        data=data,
        cfg=cfg,
        init_path=init_path,
        trained_path=str(root / "pretrain" / "last.pth"),
        result=result,
        minutes=(time.perf_counter() - start) / 60,
    )


@pytest.fixture(scope="session")
def slurm_cluster():
    """A one-node SLURM cluster on this machine (tools/start_slurm.sh in $MOCO_SLURM_DIR,
    default /tmp/moco-slurm); yields its slurm.conf, with SLURM_CONF set for the session.
    Skips when there is none and none can be started, fails then under MOCO_REQUIRE_SLURM=1
    (tests/slurm_cluster.py)."""
    from slurm_cluster import cluster_session

    yield from cluster_session(os.environ.get("MOCO_SLURM_DIR") or "/tmp/moco-slurm")


@pytest.fixture
def slurm(slurm_cluster):
    """``slurm_cluster`` for one test: yields its slurm.conf, and afterwards cancels the jobs
    the test left (a failed test must not hold the node for the next one)."""
    from slurm_cluster import cancel_all_jobs

    yield slurm_cluster
    cancel_all_jobs()


@pytest.fixture(scope="session")
def load_benchmark():
    """``load_benchmark(name)``: import ``benchmarks/<name>.py`` (a script, not a package)."""

    def load(name):
        path = os.path.join(os.path.dirname(__file__), "..", "benchmarks", f"{name}.py")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


# Holds <folder>/run.lock as a running command would, prints "ready" and sleeps.
_LOCK_HOLDER = (
    "import os, sys, time\n"
    "from common.locks import OutputLock\n"
    "OutputLock(os.path.join(sys.argv[1], 'run.lock'), kind='run').acquire()\n"
    "print('ready', flush=True)\n"
    "time.sleep(600)\n"
)


@pytest.fixture
def lock_holder():
    """``lock_holder(folder)``: start a process that holds ``<folder>/run.lock`` (its command
    line ends with ``holder-marker``) and return its ``Popen`` once it holds the lock. Kill it
    with ``kill()`` (SIGKILL, then reaped) to leave a dead owner's lock behind; any still
    running at the end of the test are killed."""
    procs = []
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def start(folder):
        proc = subprocess.Popen(
            [sys.executable, "-c", _LOCK_HOLDER, str(folder), "holder-marker"],
            env=dict(os.environ, PYTHONPATH=repo),
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        assert proc.stdout.readline().strip() == "ready"
        return proc

    def kill(proc):
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    start.kill = kill
    yield start
    for proc in procs:
        if proc.poll() is None:
            kill(proc)


@pytest.fixture
def one_writer_check(lock_holder, capsys, caplog, monkeypatch):
    """``one_writer_check(main, argv, folder, module)``: the command ``main(argv)`` of
    ``module`` (which launches through ``module.launch_from_args``) refuses while a live
    process holds ``<folder>/run.lock`` (exit status 2, the owner's pid, start time and command
    on stderr, nothing written), then takes the lock of that owner once it is dead (logged)
    and holds it, as this process, while it launches; the lock is gone afterwards."""

    def check(main, argv, folder, module):
        lock = os.path.join(folder, "run.lock")
        holder = lock_holder(folder)
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert f"{lock} is held: run pid {holder.pid} on " in err, err
        assert "started 20" in err and "holder-marker" in err and f"kill {holder.pid}" in err
        assert os.listdir(folder) == ["run.lock"]  # nothing of the command was written
        lock_holder.kill(holder)
        seen = []  # the lock's owner while the command "trains"
        monkeypatch.setattr(
            module, "launch_from_args", lambda run, args: seen.append(json.load(open(lock)))
        )
        with caplog.at_level(logging.WARNING, logger="common.locks"):
            main(argv)
        assert f"taking over the stale lock of run pid {holder.pid}" in caplog.text
        assert [owner["pid"] for owner in seen] == [os.getpid()] and not os.path.exists(lock)

    return check


@pytest.fixture
def cli_error(capsys, monkeypatch):
    """``cli_error(main, argv)``: run the console entry point ``main(argv)``, which must stop
    with an exit status (``common.errors.entry_point``); return ``(status, last, err)``: the
    status, the last line it printed to stderr (what the user reads last) and all of stderr."""
    # detectron2's setup_logger caches its console handlers, bound to the sys.stdout of the test
    # that first asked; logging them after that test's capture closed prints "Logging error"
    # on stderr, which a real command never meets.
    monkeypatch.setattr(logging, "raiseExceptions", False)

    def run(main, argv):
        capsys.readouterr()  # only this command's output
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        return exit_info.value.code, lines[-1] if lines else "", err

    return run
