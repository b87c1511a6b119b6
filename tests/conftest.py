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
import os

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
