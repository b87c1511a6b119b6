"""The MoCo training loop for one epoch (setup lives in ``train_net.py``, as in MAE).

Speed is reported from wall-clock totals over each logging window (the iterations between two
metric writes), not from per-iteration medians: a loader that stalls every few iterations shows
up in the images/s, the ETA and the data-wait share. See docs/pretrain_speed.md.
"""

import logging
import math
import time
from contextlib import closing
from dataclasses import dataclass, field
from typing import List, Optional

import torch
from detectron2.utils import comm
from detectron2.utils.events import EventWriter, get_event_storage

from .checkpoint import resume_hint
from .data import skipped_indices
from .prefetch import Prefetcher
from .schedule import learning_rate

logger = logging.getLogger(__name__)

# warn when waiting for data takes more than this share of a window's wall clock
DATA_WAIT_WARN = 0.10
_WARN_EVERY_S = 600.0  # repeat the data-wait warning at most this often


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


@dataclass
class LoopContext:
    """What the loop needs besides model, data and optimizer.

    ``iteration`` is the global iteration counter (updated in place); ``batched_aug`` turns
    uint8 batches (a BatchedMocoAug, INPUT.PIPELINE "batched") or encoded batches (a
    DeviceInput, "device") into views on the device (None for "pil"); ``amp_dtype`` is
    the autocast dtype (None = fp32); ``writers`` run every LOG_PERIOD iterations;
    ``compile_mode`` is SOLVER.COMPILE ("" = eager); ``prefetch`` is INPUT.PREFETCH; ``speed``
    holds the current logging window's wall-clock totals.
    """

    device: torch.device
    iters_per_epoch: int
    iteration: int = 0
    batched_aug: Optional[object] = None
    aug_generator: Optional[torch.Generator] = None  # on the device (colour stage)
    crop_generator: Optional[torch.Generator] = None  # on the CPU ("device" pipeline's boxes)
    amp_dtype: Optional[torch.dtype] = None
    channels_last: bool = False
    writers: List[EventWriter] = field(default_factory=list)
    skipped_images: int = 0
    # divergence guard (see _check_finite): loss bound and the run's last good checkpoint
    loss_limit: float = math.inf
    last_good: str = ""
    skipped_files: set = field(default_factory=set)  # paths of distinct unreadable files
    compile_mode: str = ""
    prefetch: int = 0
    speed: SpeedWindow = field(default_factory=SpeedWindow)
    startup_steps: List[float] = field(default_factory=list)


def _views(batch, ctx: LoopContext):
    """Loader batch -> ([im_q, im_k] on the device, NxCxSxS each; the paths of unreadable files
    so far). Runs in the prefetch thread when INPUT.PREFETCH > 0 (pretrain/prefetch.py)."""
    unreadable = []
    if hasattr(ctx.batched_aug, "views"):  # "device": JPEG bytes, decoded on the device
        views = ctx.batched_aug.views(batch, ctx.aug_generator, ctx.crop_generator)
        unreadable = list(ctx.batched_aug.unreadable_files)  # a copy, read by the main thread
    elif ctx.batched_aug is not None:
        images = batch.to(ctx.device, non_blocking=True)  # Nx3xLxL uint8
        views = [ctx.batched_aug(images, ctx.aug_generator) for _ in range(2)]
    else:
        views = [v.to(ctx.device, non_blocking=True) for v in batch]
    if ctx.channels_last:
        views = [v.contiguous(memory_format=torch.channels_last) for v in views]
    return views, unreadable


def _in_line(loader, ctx: LoopContext):
    """INPUT.PREFETCH 0: the views of each batch, made when the step asks for them."""
    for batch, skipped in loader:
        yield (*_views(batch, ctx), skipped)


def loss_limit(K: int, T: float, symmetric: bool = False) -> float:
    """The largest InfoNCE loss L2-normalised embeddings can give, plus a margin of 1.

    Logits are cosines / T in [-1/T, 1/T] over K+1 classes, so one loss term is at most
    ln(K+1) + 2/T (twice that with the symmetric loss). A larger loss means the forward pass
    is numerically broken (overflow in the encoder), i.e. the run has exploded.
    """
    return (2 if symmetric else 1) * (math.log(K + 1) + 2 / T) + 1


def _note_skipped(paths, ctx: LoopContext) -> None:
    """Add unreadable files to the distinct count; log the total when it grows."""
    before = len(ctx.skipped_files)
    ctx.skipped_files.update(paths)
    if len(ctx.skipped_files) > before:
        ctx.skipped_images = len(ctx.skipped_files)
        logger.warning("%d unreadable image(s) skipped so far", ctx.skipped_images)


def _check_finite(loss, epoch: int, ctx: LoopContext, lr: float) -> None:
    """Raise FloatingPointError when ``loss`` is NaN/inf or above ``ctx.loss_limit``.

    The message names the step, the lr, the likely fixes and the last good checkpoint
    (``ctx.last_good``) with the --resume / --no-auto-resume choices.
    """
    value = float(loss)  # a float or a 0-d tensor
    if math.isfinite(value) and value <= ctx.loss_limit:
        return
    what = f"{value}" if math.isfinite(value) else f"{value} (non-finite)"
    if math.isfinite(value):
        what += f", above the largest possible {ctx.loss_limit:.3g} (exploding)"
    raise FloatingPointError(
        f"Loss became {what} at epoch {epoch}, iteration {ctx.iteration} "
        f"(lr {lr:.4g}). Lower SOLVER.BASE_LR, add warm-up (SOLVER.WARMUP_EPOCHS), or, "
        "with SOLVER.AMP fp16, switch to bf16 or '' (fp32). " + resume_hint(ctx.last_good)
    )


def _close_window(storage, ctx: LoopContext, cfg) -> None:
    """Put the window's speed scalars (un-smoothed) and warn if the loader is the bottleneck."""
    win = ctx.speed
    if win.iters == 0:
        return
    storage.put_scalars(**win.summary(), smoothing_hint=False)
    share = win.steady_wait_share()
    now = time.perf_counter()
    if share > DATA_WAIT_WARN and now - win.last_warning > _WARN_EVERY_S:
        win.last_warning = now
        logger.warning(
            "Waiting for data took %.0f%% of the last %d iterations (not counting the first "
            "batch of an epoch, which includes loader start-up): the step is starved. Raise "
            "DATA.NUM_WORKERS (now %d), or %s.",
            100 * share,
            win.iters,
            cfg.DATA.NUM_WORKERS,
            _starved_advice(cfg, ctx),
        )
    win.reset()


def _starved_advice(cfg, ctx: LoopContext) -> str:
    """The data-wait warning's second fix, for the pipeline in use."""
    if cfg.INPUT.PIPELINE == "pil":
        return (
            "decode and augment on the GPU with INPUT.PIPELINE device (or INPUT.PIPELINE batched)"
        )
    if ctx.prefetch == 0:
        return "make the views ahead of the step with INPUT.PREFETCH 2"
    return (
        f"raise INPUT.PREFETCH (now {ctx.prefetch}); the decode, crops and colour stage of "
        "this pipeline run in the training process, so check their rate alone with "
        "benchmarks/pretrain_step.py (data/* rows)"
    )


def _log_startup(ctx: LoopContext, storage, seconds: float) -> None:
    """With SOLVER.COMPILE, log how long the first (compiling) steps of this process took."""
    if not ctx.compile_mode or len(ctx.startup_steps) >= 3:
        return
    ctx.startup_steps.append(seconds)
    if len(ctx.startup_steps) == 3:
        total = sum(ctx.startup_steps)
        logger.info(
            "SOLVER.COMPILE %s: the first 3 steps took %s s (%.1f s in all: compilation%s)",
            ctx.compile_mode,
            ", ".join(f"{t:.2f}" for t in ctx.startup_steps),
            total,
            " and CUDA graph capture" if ctx.compile_mode == "reduce-overhead" else "",
        )
        storage.put_scalar("compile_startup_s", total, smoothing_hint=False)


def train_one_epoch(model, loader, optimizer, scaler, epoch: int, cfg, ctx: LoopContext) -> None:
    """Train ``model`` (MoCo, possibly DDP-wrapped) for one pass over ``loader``.

    Sets the lr of every iteration from the schedule, steps ``optimizer`` (through ``scaler``
    when not None), records metrics into the current ``EventStorage`` and advances
    ``ctx.iteration``. Stops early after SOLVER.MAX_ITERS_PER_EPOCH iterations if set. Every
    LOG_PERIOD iterations and at the epoch's end the logging window's wall-clock speed is put
    into the storage; writers then run, except on the epoch's last iteration, which the caller
    writes.
    """
    model.train()
    # When this process started waiting for the first batch: the loader's start-up counts as
    # the first batch's wait.
    end = time.perf_counter()
    # Without worker processes the dataset runs in the thread that iterates the loader and
    # seeds torch's process-wide RNG per sample (pretrain.data.TwoViewDataset), which the step
    # also draws from: only prefetch when workers load the data.
    if ctx.prefetch > 0 and getattr(loader, "num_workers", 0) > 0:
        source = Prefetcher(loader, lambda b: _views(b, ctx), ctx.prefetch, ctx.device)
    else:
        source = _in_line(loader, ctx)
    with closing(source):
        _train_steps(
            model, source, getattr(loader, "dataset", None), optimizer, scaler, epoch, cfg, ctx, end
        )


def _train_steps(model, source, dataset, optimizer, scaler, epoch, cfg, ctx, end) -> None:
    """The loop of :func:`train_one_epoch` over ``(views, unreadable, skipped)`` items."""
    storage = get_event_storage()
    world = comm.get_world_size()
    on_cuda = ctx.device.type == "cuda"
    cuda_graphs = ctx.compile_mode == "reduce-overhead" and on_cuda
    # `end`: when this process started waiting for the next batch; `mark`: the end of the
    # previous step, so an iteration's wall time also covers the previous one's bookkeeping
    # and metric writes.
    mark = end
    for i, ((im_q, im_k), unreadable, skipped) in enumerate(source):
        if i >= ctx.iters_per_epoch:
            break
        data_time = time.perf_counter() - end
        _note_skipped(unreadable, ctx)
        if cuda_graphs:  # a new training step: CUDA-graph outputs of the last one may be reused
            torch.compiler.cudagraph_mark_step_begin()
        lr = learning_rate(ctx.iteration, ctx.iters_per_epoch, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast(
            ctx.device.type, dtype=ctx.amp_dtype or torch.float32, enabled=ctx.amp_dtype is not None
        ):
            out = model(im_q, im_k)
        loss = out["loss"]
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        # one device->host copy for all per-iteration scalars; it also waits for the step, so
        # the wall time below is the step's, not just its launch
        with torch.no_grad():
            acc1 = (out["logits"].argmax(dim=1) == 0).float().mean() * 100
            values = torch.stack(
                [loss.detach().float(), acc1, out["emb_std"].float(), out["neg_cos"].float()]
            ).tolist()
        # checked on the copy above (one host sync per step, not two); a diverged step stops the
        # run here, before anything is written from its weights
        _check_finite(values[0], epoch, ctx, lr)
        step_end = time.perf_counter()
        ctx.speed.add(step_end - mark, im_q.shape[0] * world, data_time, epoch_start=i == 0)
        mark = step_end

        if skipped[:, 1].any():  # (first, count) per sample: name distinct files, not events
            paths = dataset.paths
            _note_skipped([paths[j] for j in skipped_indices(skipped, len(paths))], ctx)
        storage.iter = ctx.iteration
        _log_startup(ctx, storage, step_end - end - data_time)
        storage.put_scalars(
            loss=values[0],
            contrastive_acc1=values[1],
            emb_std=values[2],
            neg_cos=values[3],
            skipped_images=ctx.skipped_images,
            epoch=epoch,
        )
        storage.put_scalar("lr", lr, smoothing_hint=False)
        if on_cuda:
            storage.put_scalar("gpu_mem_gb", torch.cuda.max_memory_allocated(ctx.device) / 2**30)
        ctx.iteration += 1
        last = i == ctx.iters_per_epoch - 1
        if ctx.iteration % cfg.LOG_PERIOD == 0 or last:
            _close_window(storage, ctx, cfg)
            # the epoch's last iteration is written by the caller, after end-of-epoch metrics
            if not last:
                for w in ctx.writers:
                    w.write()
        end = time.perf_counter()


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
