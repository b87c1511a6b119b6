"""The MoCo step loop for one epoch (set-up lives in ``train_net.py``, as in MAE).

The loop sees only tensors: a view maker (:mod:`pretrain.views`, chosen once for
``INPUT.PIPELINE``) turns each loader batch into the query and key views, in line or ahead of
the step (:mod:`pretrain.prefetch`); a :class:`pretrain.meter.TrainMeter` keeps the wall clock,
the unreadable files and the writers. Each step sets the lr from the schedule, runs the model,
steps the optimizer and records its scalars in the current ``EventStorage``.
"""

import math
from contextlib import closing

import torch
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage

from .meter import TrainMeter
from .prefetch import Prefetcher, prefetch_depth
from .schedule import learning_rate
from .views import ViewGenerators


def steps_per_epoch(loader, cfg) -> int:
    """Optimizer steps in an epoch: the loader's batches, at most SOLVER.MAX_ITERS_PER_EPOCH."""
    if cfg.SOLVER.MAX_ITERS_PER_EPOCH:
        return min(len(loader), cfg.SOLVER.MAX_ITERS_PER_EPOCH)
    return len(loader)


def amp_dtype(cfg, device):
    """The autocast dtype of SOLVER.AMP on CUDA (bf16 or fp16), or None for fp32."""
    if torch.device(device).type != "cuda" or not cfg.SOLVER.AMP:
        return None  # autocast on CPU is slower than fp32 for convs here; keep CPU exact
    return torch.bfloat16 if cfg.SOLVER.AMP == "bf16" else torch.float16


def loss_limit(K: int, T: float, symmetric: bool = False) -> float:
    """The largest InfoNCE loss L2-normalised embeddings can give, plus a margin of 1.

    Logits are cosines / T in [-1/T, 1/T] over K+1 classes, so one loss term is at most
    ln(K+1) + 2/T (twice that with the symmetric loss). A larger loss means the forward pass
    is numerically broken (overflow in the encoder), i.e. the run has exploded.
    """
    return (2 if symmetric else 1) * (math.log(K + 1) + 2 / T) + 1


def check_loss(loss: float, limit: float, epoch: int, iteration: int, lr: float) -> None:
    """Raise FloatingPointError when ``loss`` is NaN/inf or above ``limit``
    (:func:`loss_limit`), naming the step, the lr and the likely fixes. The caller adds which
    checkpoint to resume from (:func:`pretrain.checkpoint.resume_hint`)."""
    if math.isfinite(loss) and loss <= limit:
        return
    what = f"{loss}" if math.isfinite(loss) else f"{loss} (non-finite)"
    if math.isfinite(loss):
        what += f", above the largest possible {limit:.3g} (exploding)"
    raise FloatingPointError(
        f"Loss became {what} at epoch {epoch}, iteration {iteration} "
        f"(lr {lr:.4g}). Lower SOLVER.BASE_LR, add warm-up (SOLVER.WARMUP_EPOCHS), or, "
        "with SOLVER.AMP fp16, switch to bf16 or '' (fp32)."
    )


def _in_line(loader, make):
    """INPUT.PREFETCH 0: the views of each batch, made when the step asks for them."""
    for batch, skip in loader:
        yield (*make(batch), skip)


def _step(model, im_q, im_k, optimizer, scaler, dtype, cuda_graphs: bool) -> dict:
    """One forward, backward and optimizer step (through ``scaler`` when not None) under
    autocast to ``dtype`` (None: fp32). Returns the step's scalars on the host: ``loss``,
    ``contrastive_acc1``, ``emb_std``, ``neg_cos``."""
    if cuda_graphs:  # a new step: CUDA-graph outputs of the last one may be overwritten
        torch.compiler.cudagraph_mark_step_begin()
    device_type = im_q.device.type
    with torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None):
        out = model(im_q, im_k)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(out["loss"]).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        out["loss"].backward()
        optimizer.step()
    # one device->host copy for all of the step's scalars; it also waits for the step, so the
    # meter's wall time is the step's, not just its launch
    with torch.no_grad():
        acc1 = (out["logits"].argmax(dim=1) == 0).float().mean() * 100
        loss = out["loss"].detach().float()
        values = torch.stack([loss, acc1, out["emb_std"].float(), out["neg_cos"].float()])
        loss, acc1, emb_std, neg_cos = values.tolist()
    return {"loss": loss, "contrastive_acc1": acc1, "emb_std": emb_std, "neg_cos": neg_cos}


def train_one_epoch(
    model,
    loader,
    optimizer,
    scaler,
    epoch: int,
    iteration: int,
    cfg,
    *,
    view_maker,
    generators: ViewGenerators,
    meter: TrainMeter,
) -> int:
    """Train ``model`` (MoCo, possibly DDP-wrapped) for one pass over ``loader``.

    ``loader`` yields ``(batch, skip)``; ``view_maker.views(batch, generators)`` makes the
    views on its device. Sets the lr of every step from the schedule (global ``iteration``
    onwards), steps ``optimizer`` (through ``scaler`` when not None) and records the step's
    scalars in the current ``EventStorage``; ``meter`` adds the speed and runs the writers
    (except on the epoch's last step, which the caller writes). Stops after
    :func:`steps_per_epoch` steps. Returns the global iteration after the epoch. Raises
    FloatingPointError when the loss is not finite or above :func:`loss_limit`.
    """
    model.train()
    storage = get_event_storage()
    device = view_maker.device
    steps = steps_per_epoch(loader, cfg)
    limit = loss_limit(cfg.MODEL.K, cfg.MODEL.T, cfg.MODEL.SYMMETRIC)
    dtype = amp_dtype(cfg, device)
    cuda_graphs = cfg.SOLVER.COMPILE == "reduce-overhead" and device.type == "cuda"
    world = comm.get_world_size()

    def make(batch):  # runs in the prefetch thread when views are made ahead
        return view_maker.views(batch, generators)

    meter.start_epoch()
    depth = prefetch_depth(cfg, device)
    batches = Prefetcher(loader, make, depth, device) if depth else _in_line(loader, make)
    with closing(batches):
        for i, ((im_q, im_k), unreadable, skip) in enumerate(batches):
            if i == steps:
                break
            meter.got_batch(unreadable, skip)
            storage.iter = iteration
            lr = learning_rate(iteration, steps, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            scalars = _step(model, im_q, im_k, optimizer, scaler, dtype, cuda_graphs)
            # checked on the host copy; a diverged step stops the run before anything is written
            check_loss(scalars["loss"], limit, epoch, iteration, lr)
            meter.step_done(storage, im_q.shape[0] * world)  # images of all processes
            storage.put_scalars(**scalars, skipped_images=meter.skipped_images, epoch=epoch)
            storage.put_scalar("lr", lr, smoothing_hint=False)
            if device.type == "cuda":
                storage.put_scalar("gpu_mem_gb", torch.cuda.max_memory_allocated(device) / 2**30)
            iteration += 1
            meter.end_step(storage, iteration, last=i == steps - 1)
    return iteration
