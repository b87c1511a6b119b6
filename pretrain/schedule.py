"""Learning-rate schedules as pure functions of (iteration, iterations per epoch, cfg).

The lr is recomputed every iteration (as in MAE), so a run resumed at any iteration follows
exactly the schedule of an uninterrupted one. The reference release updates the lr once per
epoch; per-iteration cosine differs from it by less than one epoch's worth of decay.
"""

import math

from .config import effective_lr


def lr_factor(epoch: float, cfg) -> float:
    """Multiplier of the base lr at fractional ``epoch`` (no warm-up): cosine, step or constant."""
    total = cfg.SOLVER.EPOCHS
    if cfg.SOLVER.SCHEDULE == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(epoch, total) / total))
    if cfg.SOLVER.SCHEDULE == "step":
        return cfg.SOLVER.GAMMA ** sum(epoch >= s for s in cfg.SOLVER.STEPS)
    return 1.0


def learning_rate(iteration: int, iters_per_epoch: int, cfg) -> float:
    """The lr for global ``iteration`` (0-based) given ``iters_per_epoch`` and the config.

    Linear warm-up from ~0 over SOLVER.WARMUP_EPOCHS * iters_per_epoch + SOLVER.WARMUP_ITERS
    iterations, multiplied into the decay schedule (so warm-up never overshoots the schedule).
    """
    base = effective_lr(cfg)
    epoch = iteration / max(iters_per_epoch, 1)
    lr = base * lr_factor(epoch, cfg)
    warmup = cfg.SOLVER.WARMUP_EPOCHS * iters_per_epoch + cfg.SOLVER.WARMUP_ITERS
    if warmup > 0 and iteration < warmup:
        lr *= (iteration + 1) / warmup
    return lr
