"""Pretraining tests run single-threaded.

On a small shared CPU, OpenMP threads of several busy processes spin-wait on each other: tiny
convolutions and BN layers then take 10x longer than on one thread.
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
