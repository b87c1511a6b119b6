"""Fixtures of the detection tests."""

import pytest

import synthetic


@pytest.fixture(scope="session")
def tiny_voc_root(tmp_path_factory):
    """A smaller synthetic VOC set than ``synthetic_voc_root`` (4 trainval images per year, 3
    test images; seed 6 puts every class in the test split, so no class AP is undefined):
    the trial-runner tests evaluate every trial, and evaluation costs per image."""
    root = tmp_path_factory.mktemp("tiny_voc")
    synthetic.make_voc(
        str(root), seed=6, trainval_images=4, test_images=3, min_side=128, max_side=160
    )
    return root


@pytest.fixture
def one_thread():
    """Run torch on one thread for the test: on a shared 2-core machine two OpenMP threads
    that wait on each other cost several times more than one thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
