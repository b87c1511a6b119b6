"""Precise BN whose statistics are pooled over every process, so all ranks end up equal.

detectron2's ``hooks.PreciseBN`` runs fvcore's ``update_bn_stats`` in every process, each on
its own batches. fvcore weights each batch by the sample count its own process saw (N x H x W
at the layer's input) and never exchanges those counts, so:

- with a synchronised norm (the recipe's ``naiveSyncBN``) every process sees the same
  all-reduced batch statistics but weights them with its own image sizes, and the ranks end
  with different running statistics (detectron2 issue 5398, fvcore issue 152);
- with plain ``BN`` each process estimates the statistics of its own images only.

Either way the checkpoint holds rank 0's statistics while every rank evaluates its share of the
test set with its own. :class:`PooledPreciseBN` keeps detectron2's hook (its period, its data
loader, fvcore's estimator) and afterwards pools the per-process estimates, weighted by their
sample counts, with one all-reduce: every rank then holds the population statistics of all the
batches of all the processes. At one process fvcore's estimate is kept as it is (except for a
layer no batch reached, which keeps its statistics instead of fvcore's zeros).
"""

import contextlib
import logging

import torch
import torch.distributed as dist
from detectron2.engine import hooks
from detectron2.utils import comm
from fvcore.nn.precise_bn import get_bn_modules

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def pooled_over_ranks(model):
    """Count the samples each BN layer of ``model`` sees inside the block, then pool the
    running statistics the block left behind over all processes.

    Meant around fvcore's ``update_bn_stats`` (which sets ``running_mean``/``running_var`` to
    its per-process estimates). On exit, for every train-mode BN layer: the mean and the mean
    of squares of each process, weighted by the samples that process fed the layer, are summed
    over processes (one all-reduce in float64) and turned back into a mean and a variance. A
    layer no process used keeps the statistics it had before the block (fvcore would leave
    zeros). Every process gets the same result.

    Args:
        model (nn.Module): the model (DDP-wrapped or not) whose BN layers are re-estimated.

    Yields:
        None.
    """
    layers = get_bn_modules(model)
    counts = [0] * len(layers)
    before = [(bn.running_mean.clone(), bn.running_var.clone()) for bn in layers]

    def counter(i):
        def hook(module, inputs):
            x = inputs[0]
            counts[i] += x.numel() // x.shape[1]  # spatial positions count as samples

        return hook

    handles = [bn.register_forward_pre_hook(counter(i)) for i, bn in enumerate(layers)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
    if layers:
        _pool(layers, counts, before)


def _pool(layers, counts, before):
    """Replace each layer's running statistics by their count-weighted pool over processes."""
    world = comm.get_world_size()
    if world == 1 and all(counts):
        return  # one process, every layer used: fvcore's estimate is already the answer
    device = layers[0].running_mean.device
    parts = []
    for bn, n in zip(layers, counts):
        mean = bn.running_mean.double()
        square = bn.running_var.double() + mean * mean
        parts += [
            torch.tensor([float(n)], dtype=torch.float64, device=device),
            n * mean,
            n * square,
        ]
    flat = torch.cat(parts)
    if world > 1:
        dist.all_reduce(flat)  # sums over processes; every rank receives the same sums
    offset = 0
    for bn, (old_mean, old_var) in zip(layers, before):
        c = bn.running_mean.numel()
        total = float(flat[offset])
        sum_mean, sum_square = (
            flat[offset + 1 : offset + 1 + c],
            flat[offset + 1 + c : offset + 1 + 2 * c],
        )
        offset += 1 + 2 * c
        if total == 0:  # unused everywhere: keep what it had instead of fvcore's zeros
            bn.running_mean.copy_(old_mean)
            bn.running_var.copy_(old_var)
            continue
        mean = sum_mean / total
        var = (sum_square / total - mean * mean).clamp_(min=0.0)  # rounding can dip below 0
        bn.running_mean.copy_(mean.to(bn.running_mean.dtype))
        bn.running_var.copy_(var.to(bn.running_var.dtype))


class PooledPreciseBN(hooks.PreciseBN):
    """detectron2's ``hooks.PreciseBN`` with the statistics pooled over processes afterwards
    (:func:`pooled_over_ranks`); same period, data loader and number of batches."""

    @classmethod
    def from_hook(cls, hook):
        """Return a ``PooledPreciseBN`` sharing ``hook``'s state (model, data loader, period),
        so the training data loader detectron2 built for it is reused, not built again."""
        pooled = cls.__new__(cls)
        pooled.__dict__.update(hook.__dict__)
        return pooled

    def update_stats(self):
        """Re-estimate the BN statistics (fvcore), then pool them over processes."""
        if self._disabled:
            return
        with pooled_over_ranks(self._model):
            super().update_stats()
        if comm.get_world_size() > 1:
            logger.info("Precise BN statistics pooled over %d processes", comm.get_world_size())
