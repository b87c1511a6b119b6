"""Known harmless dependency warnings are hidden at the entry points; nothing else is."""

import logging
import os
import subprocess
import sys
import warnings

import pytest
import torch

from common.known_warnings import KNOWN_LOG_RECORDS, KNOWN_WARNINGS, filter_known_warnings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _plus_one(x: torch.Tensor) -> torch.Tensor:
    return x + 1


def test_a_known_warning_is_hidden_and_the_same_text_elsewhere_is_not():
    category, message, module, _ = KNOWN_WARNINGS[0]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        filter_known_warnings()
        torch.jit.script(_plus_one)  # the dependency's own calls: hidden
        torch.meshgrid(torch.arange(3), torch.arange(2))  # raised in C++, with its location
        warnings.warn_explicit(message, category, "x.py", 1, module=module)  # hidden
        # the same text from another module, and a warning of this project: shown
        warnings.warn_explicit(message, category, "x.py", 1, module="detection.roi_heads")
        warnings.warn("MODEL.K is not well below the number of images", UserWarning, stacklevel=1)
    shown = [(w.category, str(w.message)) for w in seen]
    assert shown == [
        (category, message),
        (UserWarning, "MODEL.K is not well below the number of images"),
    ]


def test_a_known_log_record_is_dropped_and_others_of_that_logger_are_kept():
    name, message, _ = KNOWN_LOG_RECORDS[0]
    log = logging.getLogger(name)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    log.addHandler(handler)
    try:
        filter_known_warnings()
        filter_known_warnings()  # idempotent: still one filter
        log.warning(message, "/usr/local")
        log.warning("Error building extension %s", "x")
    finally:
        log.removeHandler(handler)
    assert [r.getMessage() for r in records] == ["Error building extension x"]
    assert sum(type(f).__name__ == "_DropExact" for f in log.filters) == 1


@pytest.mark.parametrize("module", ["detection.train_net", "evaluation.knn"])
def test_entry_points_start_without_warnings(module):
    """``python -m detection.train_net`` imports the ``detection`` package (and detectron2)
    before the module itself; ``evaluation.knn`` used to trip runpy's double-import warning."""
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=REPO),
        timeout=120,
    )
    assert result.returncode == 0 and result.stdout.startswith("usage:")
    assert result.stderr == ""
