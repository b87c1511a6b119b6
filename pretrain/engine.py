"""The MoCo training loop for one epoch (setup lives in ``train_net.py``, as in MAE)."""

import logging
import math
import time
from dataclasses import dataclass, field
from typing import List, Optional

import torch
from detectron2.utils import comm
from detectron2.utils.events import EventWriter, get_event_storage

from .data import skipped_indices
from .schedule import learning_rate

logger = logging.getLogger(__name__)


@dataclass
class LoopContext:
    """What the loop needs besides model, data and optimizer.

    ``iteration`` is the global iteration counter (updated in place); ``batched_aug`` turns
    uint8 batches (a BatchedMocoAug, INPUT.PIPELINE "batched") or encoded batches (a
    DeviceInput, "device") into views on the device (None for "pil"); ``amp_dtype`` is
    the autocast dtype (None = fp32); ``writers`` run every LOG_PERIOD iterations.
    """

    device: torch.device
    iters_per_epoch: int
    iteration: int = 0
    batched_aug: Optional[object] = None
    aug_generator: Optional[torch.Generator] = None
    amp_dtype: Optional[torch.dtype] = None
    channels_last: bool = False
    writers: List[EventWriter] = field(default_factory=list)
    skipped_images: int = 0
    # divergence guard (see _check_finite): loss bound and the run's last good checkpoint
    loss_limit: float = math.inf
    last_good: str = ""
    skipped_files: set = field(default_factory=set)  # paths of distinct unreadable files


def _views(batch, ctx: LoopContext):
    """Loader batch -> (im_q, im_k) on the device, NxCxSxS each."""
    if hasattr(ctx.batched_aug, "views"):  # "device": JPEG bytes, decoded on the device
        views = ctx.batched_aug.views(batch, ctx.aug_generator)
        _note_skipped(ctx.batched_aug.unreadable_files, ctx)
    elif ctx.batched_aug is not None:
        images = batch.to(ctx.device, non_blocking=True)  # Nx3xLxL uint8
        views = [ctx.batched_aug(images, ctx.aug_generator) for _ in range(2)]
    else:
        views = [v.to(ctx.device, non_blocking=True) for v in batch]
    if ctx.channels_last:
        views = [v.contiguous(memory_format=torch.channels_last) for v in views]
    return views


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


def _check_finite(loss: torch.Tensor, epoch: int, ctx: LoopContext, lr: float) -> None:
    """Raise FloatingPointError when ``loss`` is NaN/inf or above ``ctx.loss_limit``.

    The message names the step, the lr, the likely fixes and the last good checkpoint
    (``ctx.last_good``) with the --resume / --no-auto-resume choices.
    """
    from .checkpoint import resume_hint

    value = loss.item()
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


def train_one_epoch(model, loader, optimizer, scaler, epoch: int, cfg, ctx: LoopContext) -> None:
    """Train ``model`` (MoCo, possibly DDP-wrapped) for one pass over ``loader``.

    Sets the lr of every iteration from the schedule, steps ``optimizer`` (through ``scaler``
    when not None), records metrics into the current ``EventStorage`` and advances
    ``ctx.iteration``. Stops early after SOLVER.MAX_ITERS_PER_EPOCH iterations if set. Writers
    run every LOG_PERIOD iterations except on the epoch's last one, which the caller writes.
    """
    storage = get_event_storage()
    model.train()
    world = comm.get_world_size()
    on_cuda = ctx.device.type == "cuda"
    end = time.perf_counter()
    for i, (batch, skipped) in enumerate(loader):
        if i >= ctx.iters_per_epoch:
            break
        data_time = time.perf_counter() - end
        lr = learning_rate(ctx.iteration, ctx.iters_per_epoch, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        im_q, im_k = _views(batch, ctx)
        with torch.autocast(
            ctx.device.type, dtype=ctx.amp_dtype or torch.float32, enabled=ctx.amp_dtype is not None
        ):
            out = model(im_q, im_k)
        loss = out["loss"]
        _check_finite(loss, epoch, ctx, lr)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if on_cuda:
            torch.cuda.synchronize(ctx.device)  # honest step times
        step_time = time.perf_counter() - end

        if skipped[:, 1].any():  # (first, count) per sample: name distinct files, not events
            paths = loader.dataset.paths
            _note_skipped([paths[i] for i in skipped_indices(skipped, len(paths))], ctx)
        storage.iter = ctx.iteration
        acc1 = (out["logits"].argmax(dim=1) == 0).float().mean().item() * 100
        storage.put_scalars(
            loss=loss.item(),
            contrastive_acc1=acc1,
            emb_std=out["emb_std"].item(),
            neg_cos=out["neg_cos"].item(),
            time=step_time,
            data_time=data_time,
            images_per_s=im_q.shape[0] * world / step_time,
            skipped_images=ctx.skipped_images,
            epoch=epoch,
        )
        storage.put_scalar("lr", lr, smoothing_hint=False)
        if on_cuda:
            storage.put_scalar("gpu_mem_gb", torch.cuda.max_memory_allocated(ctx.device) / 2**30)
        ctx.iteration += 1
        # the epoch's last iteration is written by the caller, after its end-of-epoch metrics
        if ctx.iteration % cfg.LOG_PERIOD == 0 and i < ctx.iters_per_epoch - 1:
            for w in ctx.writers:
                w.write()
        end = time.perf_counter()


class ProgressPrinter(EventWriter):
    """Log one progress line: epoch, iteration, ETA, loss, acc@1, collapse indicators, speed.

    Like detectron2's CommonMetricPrinter (medians over the last ``window`` iterations), plus
    the MoCo-specific numbers: contrastive acc@1 of the (K+1)-way task, ``emb_std`` (->0 on
    collapse) and ``neg_cos`` (->1 on collapse).
    """

    def __init__(self, max_iter: int, window: int = 20):
        self.max_iter, self.window = max_iter, window

    def write(self):
        storage = get_event_storage()
        it = storage.iter
        hist = storage.histories()
        if "loss" not in hist:
            return
        med = {k: hist[k].median(self.window) for k in hist if k != "knn_top1"}
        eta = int(med["time"] * (self.max_iter - it - 1))
        mem = f"  mem {med['gpu_mem_gb']:.1f}G" if "gpu_mem_gb" in med else ""
        logger.info(
            "epoch %d  iter %d/%d  eta %d:%02d:%02d  loss %.3f  acc1 %.1f  emb_std %.4f  "
            "neg_cos %.3f  lr %.4g  %.1f img/s  time %.3f  data %.3f%s",
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
            med["images_per_s"],
            med["time"],
            med["data_time"],
            mem,
        )
