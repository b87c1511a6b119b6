"""Known harmless messages of dependencies, hidden at the command-line entry points.

Every entry point (``demo``, ``pretrain.train_net``, ``detection.train_net``,
``detection.trials``, ``evaluation.knn``, ``evaluation.linear``, ``convert``) calls
:func:`filter_known_warnings` before it imports detectron2, which warns while it is imported.
Each entry below is matched by its exact text and the module that issues it, so the same text
from anywhere else, and every warning of this project, still shows. Imports nothing but the
standard library, so it can run first.
"""

import logging
import re
import warnings

# (category, exact message, issuing module, why it is harmless)
KNOWN_WARNINGS = (
    (
        FutureWarning,
        "`torch.jit.script` is deprecated. Please switch to `torch.compile` or `torch.export`.",
        "torch.jit._script",
        # detectron2 (0.7) decorates two box-regression helpers with @torch.jit.script when
        # its modeling package is imported; torch 2.14 still scripts them, and this project
        # never exports TorchScript. Nothing to do for a user.
        "detectron2 scripts two helpers at import",
    ),
    (
        UserWarning,
        "torch.meshgrid: in an upcoming release, it will be required to pass the indexing "
        "argument.",
        "torch.functional",
        # detectron2's anchor generator calls torch.meshgrid(shifts_y, shifts_x) and relies on
        # the default "ij" indexing, which is what torch does today; a future torch that
        # requires the argument will fail loudly, not change the anchors.
        "detectron2's anchor grid uses today's default indexing on purpose",
    ),
)

# (logger name, exact format string of the record, why it is harmless)
KNOWN_LOG_RECORDS = (
    (
        "torch.utils.cpp_extension",
        "No CUDA runtime is found, using CUDA_HOME='%s'",
        # detectron2's environment table (default_setup -> collect_env_info) imports
        # torch.utils.cpp_extension, which looks for a CUDA toolkit to build extensions with.
        # On a CPU-only torch there is no runtime to use it with and nothing is compiled.
        "a CPU-only torch finds a CUDA toolkit folder it will not use",
    ),
    (
        "torch.fx._symbolic_trace",
        "is_fx_tracing will return true for both fx.symbolic_trace and torch.export. Please use "
        "is_fx_tracing_symbolic_tracing() for specifically fx.symbolic_trace or "
        "torch.compiler.is_compiling() for specifically torch.export/compile.",
        # detectron2's ROI pooler asks whether it is being traced, to skip a shape assertion;
        # nothing here traces or exports a model, so either answer is the same.
        "detectron2's pooler asks whether it is traced; nothing is",
    ),
)

# Warnings raised by torch's C++ code carry the place they were raised at, which depends on
# the build: "... (Triggered internally at /path/TensorShape.cpp:4221.)".
_CPP_SUFFIX = r"( \(Triggered internally at [^)]*\))?"


class _DropExact(logging.Filter):
    """Drops the records whose format string is one of ``messages``."""

    def __init__(self, messages):
        super().__init__()
        self.messages = frozenset(messages)

    def filter(self, record):
        return record.msg not in self.messages


def filter_known_warnings() -> None:
    """Hide the entries of :data:`KNOWN_WARNINGS` (``warnings`` filters) and
    :data:`KNOWN_LOG_RECORDS` (a filter on each named logger). Idempotent. Returns None."""
    for category, message, module, _why in KNOWN_WARNINGS:
        warnings.filterwarnings(
            "ignore",
            message=re.escape(message) + _CPP_SUFFIX + r"\Z",
            category=category,
            module=re.escape(module) + r"\Z",
        )
    by_logger = {}
    for name, message, _why in KNOWN_LOG_RECORDS:
        by_logger.setdefault(name, []).append(message)
    for name, messages in by_logger.items():
        target = logging.getLogger(name)
        for old in [f for f in target.filters if isinstance(f, _DropExact)]:
            target.removeFilter(old)
        target.addFilter(_DropExact(messages))
