"""The whole mission on generated data: synthetic sets -> MoCo pretraining -> kNN vs random
init -> conversion -> multi-seed detection transfer (MoCo init vs random init) -> report.

``python -m demo`` (``make demo``) runs it; ``demo.pipeline.run_demo`` is the function.
"""

from .pipeline import PRESETS, Preset, run_demo

__all__ = ["PRESETS", "Preset", "run_demo"]
