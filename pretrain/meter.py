"""What the pretraining loop reports besides its per-step scalars (as MAE's ``MetricLogger``).

Speed is reported from wall-clock totals over each logging window (the iterations between two
metric writes), not from per-iteration medians: a loader that stalls every few iterations shows
up in the images/s, the ETA and the data-wait share (docs/pretrain_speed.md). When waiting for
data takes a large share of the window, a warning names the fix for the pipeline in use. With
``SOLVER.COMPILE`` the first (compiling) steps' time is logged. Unreadable image files are
counted once each, over the whole run. The writers (progress line, ``metrics.json``,
TensorBoard) run at the end of each window.
"""

import logging
import time
from typing import Iterable, List, Sequence

import torch
from detectron2.utils.events import EventWriter, get_event_storage

from .data import skipped_indices

logger = logging.getLogger(__name__)

# warn when waiting for data takes more than this share of a window's wall clock
DATA_WAIT_WARN = 0.10
_WARN_EVERY_S = 600.0  # repeat the data-wait warning at most this often
_STARTUP_STEPS = 3  # the steps whose time is logged with SOLVER.COMPILE


class SpeedWindow:
    """Wall-clock totals of the training loop since the last metric write.

    Each iteration adds its wall time (from the end of the previous optimizer step, or from the
    start of the epoch's loop, to the end of its own: bookkeeping and metric writes of the
    previous iteration, data wait and step),
    its images (global batch) and its data wait (time blocked in the loader). The first
    iteration of each epoch also includes loader start-up, so its wait is kept apart as
    ``startup_wait`` for the warning. Time between epochs (checkpoints, kNN) is not counted.
    """

    def __init__(self):
        self.last_warning = -float("inf")
        self.reset()

    def reset(self) -> None:
        """Start a new window."""
        self.iters, self.images = 0, 0
        self.seconds = self.data_wait = self.startup_wait = 0.0

    def add(self, seconds: float, images: int, data_wait: float, epoch_start: bool) -> None:
        """Account one iteration."""
        self.iters += 1
        self.images += images
        self.seconds += seconds
        self.data_wait += data_wait
        if epoch_start:
            self.startup_wait += data_wait

    def summary(self) -> dict:
        """Window scalars: images_per_s, time and data_time (s per iteration), data_wait_pct."""
        sec = max(self.seconds, 1e-9)
        return {
            "images_per_s": self.images / sec,
            "time": sec / max(self.iters, 1),
            "data_time": self.data_wait / max(self.iters, 1),
            "data_wait_pct": 100.0 * self.data_wait / sec,
        }

    def steady_wait_share(self) -> float:
        """Data-wait share of the window without each epoch's first batch (loader start-up)."""
        sec = self.seconds - self.startup_wait
        return (self.data_wait - self.startup_wait) / sec if sec > 0 else 0.0


def starved_advice(cfg, prefetch: int) -> str:
    """The data-wait warning's second fix, for ``cfg.INPUT.PIPELINE`` and the prefetch depth
    in use (:func:`pretrain.prefetch.prefetch_depth`)."""
    if cfg.INPUT.PIPELINE == "pil":
        return (
            "decode and augment on the GPU with INPUT.PIPELINE device (or INPUT.PIPELINE batched)"
        )
    if prefetch == 0:
        return "make the views ahead of the step with INPUT.PREFETCH 2"
    return (
        f"raise INPUT.PREFETCH (now {prefetch}); the decode, crops and colour stage of "
        "this pipeline run in the training process, so check their rate alone with "
        "benchmarks/pretrain_step.py (data/* rows)"
    )


def _views_share_the_cores(cfg) -> bool:
    """True on the CPU with ``INPUT.PIPELINE batched`` or ``device``: the views are made by
    torch ops in the training process, on the same cores as the step, so the wait is work those
    cores do, not idle time that workers or a prefetch thread could fill (on 2 cores the
    thread slowed the step: docs/input_pipelines.md, "Views made ahead of the step")."""
    return cfg.MODEL.DEVICE == "cpu" and cfg.INPUT.PIPELINE in ("batched", "device")


class TrainMeter:
    """The loop's wall clock, unreadable-file count and writers, over a whole run.

    Args:
        cfg: the pretraining config (LOG_PERIOD, SOLVER.COMPILE, the pipeline and workers named
            in the data-wait warning).
        prefetch: the prefetch depth in use (named in the warning).
        writers: detectron2 ``EventWriter``s, run at the end of each logging window except the
            epoch's last, which the caller writes (:meth:`write`) after end-of-epoch metrics.
        paths: the training set's image paths, to name the files a batch passed over.

    In the loop, per epoch: :meth:`start_epoch`; per step: :meth:`got_batch` when the views
    are there, :meth:`step_done` after the optimizer step, :meth:`end_step` last.
    """

    def __init__(
        self, cfg, prefetch: int = 0, writers: Iterable[EventWriter] = (), paths: Sequence = ()
    ):
        self.cfg, self.prefetch = cfg, prefetch
        self.writers = list(writers)
        self.paths = list(paths)
        self.speed = SpeedWindow()
        self.unreadable = set()  # paths of distinct unreadable files
        self.startup_steps: List[float] = []
        self._waiting_since = self._last_step_end = self._arrived = time.perf_counter()
        self._data_time, self._epoch_start = 0.0, True

    @property
    def skipped_images(self) -> int:
        """Distinct unreadable files met so far."""
        return len(self.unreadable)

    def start_epoch(self) -> None:
        """Mark the start of an epoch's loop: the loader's start-up counts as the first
        batch's wait, and time since the previous epoch (checkpoints, kNN) is not counted."""
        self._waiting_since = self._last_step_end = time.perf_counter()
        self._epoch_start = True

    def got_batch(self, unreadable: Sequence[str], skip: torch.Tensor) -> None:
        """A batch's views arrived: note the data wait and the unreadable files, those the
        view maker found (``unreadable``) and those the loader passed over (``skip``: Bx2
        ``(first, count)`` per sample, :class:`pretrain.data.TwoViewDataset`)."""
        self._arrived = time.perf_counter()
        self._data_time = self._arrived - self._waiting_since
        paths = list(unreadable)
        if skip[:, 1].any():  # name distinct files, not events
            paths += [self.paths[j] for j in skipped_indices(skip, len(self.paths))]
        before = len(self.unreadable)
        self.unreadable.update(paths)
        if len(self.unreadable) > before:
            logger.warning("%d unreadable image(s) skipped so far", len(self.unreadable))

    def step_done(self, storage, images: int) -> None:
        """The optimizer step of ``images`` (global batch) is done (its results are on the
        host); with SOLVER.COMPILE, the first steps' time goes to the log and ``storage``."""
        now = time.perf_counter()
        self.speed.add(now - self._last_step_end, images, self._data_time, self._epoch_start)
        self._last_step_end, self._epoch_start = now, False
        if self.cfg.SOLVER.COMPILE and len(self.startup_steps) < _STARTUP_STEPS:
            self._log_startup(storage, now - self._arrived)

    def end_step(self, storage, iteration: int, last: bool) -> None:
        """After the step's scalars: every LOG_PERIOD iterations (``iteration`` counts the
        steps done) and on the epoch's ``last`` step, put the window's speed into ``storage``
        and warn when the loader is the bottleneck; then run the writers, except on ``last``."""
        if iteration % self.cfg.LOG_PERIOD == 0 or last:
            self.close_window(storage)
            if not last:
                self.write()
        self._waiting_since = time.perf_counter()

    def write(self) -> None:
        """Run the writers."""
        for w in self.writers:
            w.write()

    def close(self) -> None:
        """Close the writers."""
        for w in self.writers:
            w.close()

    def close_window(self, storage) -> None:
        """Put the window's speed scalars (un-smoothed) and warn if the loader is the
        bottleneck."""
        win = self.speed
        if win.iters == 0:
            return
        storage.put_scalars(**win.summary(), smoothing_hint=False)
        share = win.steady_wait_share()
        now = time.perf_counter()
        if (
            share > DATA_WAIT_WARN
            and now - win.last_warning > _WARN_EVERY_S
            and not _views_share_the_cores(self.cfg)
        ):
            win.last_warning = now
            logger.warning(
                "Waiting for data took %.0f%% of the last %d iterations (not counting the first "
                "batch of an epoch, which includes loader start-up): the step is starved. Raise "
                "DATA.NUM_WORKERS (now %d), or %s.",
                100 * share,
                win.iters,
                self.cfg.DATA.NUM_WORKERS,
                starved_advice(self.cfg, self.prefetch),
            )
        win.reset()

    def _log_startup(self, storage, seconds: float) -> None:
        """Log how long the first (compiling) steps of this process took."""
        self.startup_steps.append(seconds)
        if len(self.startup_steps) < _STARTUP_STEPS:
            return
        total = sum(self.startup_steps)
        mode = self.cfg.SOLVER.COMPILE
        logger.info(
            "SOLVER.COMPILE %s: the first %d steps took %s s (%.1f s in all: compilation%s)",
            mode,
            _STARTUP_STEPS,
            ", ".join(f"{t:.2f}" for t in self.startup_steps),
            total,
            " and CUDA graph capture" if mode == "reduce-overhead" else "",
        )
        storage.put_scalar("compile_startup_s", total, smoothing_hint=False)


class ProgressPrinter(EventWriter):
    """Log one progress line: epoch, iteration, ETA, loss, acc@1, collapse indicators, speed.

    Loss, acc@1, ``emb_std`` (->0 on collapse) and ``neg_cos`` (->1 on collapse) are medians
    over the last ``window`` iterations, like detectron2's CommonMetricPrinter. The speed
    numbers are wall-clock totals of the last logging window (see :class:`SpeedWindow`):
    images/s, seconds per iteration, seconds of data wait per iteration and its share of the
    wall clock; the ETA is the remaining iterations at that window's rate.
    """

    def __init__(self, max_iter: int, window: int = 20):
        self.max_iter, self.window = max_iter, window

    def write(self):
        storage = get_event_storage()
        it = storage.iter
        hist = storage.histories()
        if "loss" not in hist or "images_per_s" not in hist:
            return
        keys = ("loss", "contrastive_acc1", "emb_std", "neg_cos")
        med = {k: hist[k].median(self.window) for k in keys}
        speed = {k: hist[k].latest() for k in ("images_per_s", "time", "data_time")}
        wait_pct = hist["data_wait_pct"].latest()
        eta = int(speed["time"] * max(self.max_iter - it - 1, 0))
        mem = f"  mem {hist['gpu_mem_gb'].latest():.1f}G" if "gpu_mem_gb" in hist else ""
        logger.info(
            "epoch %d  iter %d/%d  eta %d:%02d:%02d  loss %.3f  acc1 %.1f  emb_std %.4f  "
            "neg_cos %.3f  lr %.4g  %.1f img/s  time %.3f  data %.3f (%.0f%% waiting)%s",
            int(hist["epoch"].latest()),
            it + 1,
            self.max_iter,
            eta // 3600,
            eta % 3600 // 60,
            eta % 60,
            med["loss"],
            med["contrastive_acc1"],
            med["emb_std"],
            med["neg_cos"],
            hist["lr"].latest(),
            speed["images_per_s"],
            speed["time"],
            speed["data_time"],
            wait_pct,
            mem,
        )
