"""Pretraining tests run single-threaded (``one_torch_thread`` in tests/conftest.py says why)."""

import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    yield
