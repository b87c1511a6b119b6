"""The MoCo v1/v2 model: query and momentum key encoders, the queue and the InfoNCE logits.

Follows the reference ``moco/builder.py``: the encoder is injected and each mechanism (momentum
update, shuffle, unshuffle, enqueue) is one method. Differences, on purpose:

- no hard ``.cuda()`` and no DDP-only assumption: collectives are identity at world size 1;
- a global batch that does not divide K wraps around the queue;
- split BN for one process: the key batch is shuffled and its BN statistics are computed over
  ``key_bn_splits`` sub-batches in one forward pass (:class:`SplitBatchNorm2d`), so
  single-GPU/CPU runs get shuffle BN's protection;
- optional BN in the MLP head and a symmetric loss (both directions), for short runs;
- ``forward`` returns the loss and two collapse indicators, not just the logits.
"""

import functools
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from detectron2.utils import comm

from common.configs import COMPILE_MODES

from .distributed import broadcast_, concat_all_gather


def build_encoder_factory(arch: str = "resnet50", **kwargs) -> Callable[..., nn.Module]:
    """Return ``f(num_classes=...) -> nn.Module`` building torchvision ``arch`` with ``kwargs``.

    ``kwargs`` go to the torchvision constructor, e.g. ``width_per_group=16`` for a thin
    ResNet-50 that keeps every key name of the full one, or ``zero_init_residual=True``.
    """
    if not hasattr(torchvision.models, arch) or not arch.startswith(("resnet", "resnext", "wide")):
        raise ValueError(
            f"MODEL.ARCH={arch!r} is not a torchvision ResNet; use e.g. resnet50, resnet18"
        )
    return functools.partial(getattr(torchvision.models, arch), weights=None, **kwargs)


def _mlp_head(fc: nn.Linear, hidden: int, head_bn: bool) -> nn.Sequential:
    """Linear(d, hidden) [-BN] -ReLU- fc; without BN the keys are fc.0 / fc.2 (reference)."""
    dim_in = fc.weight.shape[1]
    if hidden != dim_in:  # the output layer now reads the hidden width
        fc = nn.Linear(hidden, fc.out_features)
    layers = [nn.Linear(dim_in, hidden)]
    if head_bn:
        layers.append(nn.BatchNorm1d(hidden))
    layers += [nn.ReLU(inplace=True), fc]
    return nn.Sequential(*layers)


def check_key_bn_splits(batch: int, splits: int, what: str = "") -> None:
    """Raise ValueError naming MODEL.KEY_BN_SPLITS when ``batch`` is not divisible by ``splits``.

    ``what`` describes the batch in the message (default ``"batch <batch>"``); split BN needs
    equal sub-batches, so this is checked before training and again where the batch is split.
    """
    if batch % splits:
        raise ValueError(
            f"{what or f'batch {batch}'} is not divisible by MODEL.KEY_BN_SPLITS={splits}; "
            "change either"
        )


class _SplitBatchNormMixin:
    """Training-mode BN whose statistics come from ``num_splits`` interleaved sub-batches.

    Sample n of the batch belongs to sub-batch ``n % num_splits``; the caller permutes the
    batch randomly first, so the sub-batches are random. Each sub-batch is normalised with its
    own mean and (biased) variance, as if the batch had been run in ``num_splits`` chunks, but in
    one pass: a contiguous NxC[xHxW] input is viewed as (N/s) x (s*C) [xHxW] and normalised by
    one ``F.batch_norm`` call (s copies of the channels); any other layout (channels_last) gets
    the same per-sub-batch statistics from one ``var_mean`` over a free view (N split into
    (N/s) x s) and one ``addcmul``.

    Running statistics get ONE exponential-average update per forward, with the average over
    the sub-batches of their means and unbiased variances:
    ``running <- (1 - momentum) * running + momentum * mean_b(stat_b)``, and
    ``num_batches_tracked`` grows by one. (Running the sub-batches one after another instead
    applies the average s times in sequence, weighting later sub-batches more.) Evaluation mode
    and ``num_splits == 1`` are plain BatchNorm. Parameters and buffers are those of the
    BatchNorm class, so state-dict keys and shapes are unchanged.
    """

    num_splits: int

    def _factor(self) -> float:
        # as nn.BatchNorm: momentum None means a cumulative moving average
        if self.momentum is None:
            return 1.0 / float(self.num_batches_tracked)
        return self.momentum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.num_splits
        if not self.training or s == 1 or not self.track_running_stats:
            return super().forward(x)
        self._check_input_dim(x)
        n, c = x.shape[:2]
        check_key_bn_splits(n, s)
        self.num_batches_tracked.add_(1)
        factor = self._factor()
        if x.is_contiguous():
            weight = self.weight.repeat(s) if self.affine else None
            bias = self.bias.repeat(s) if self.affine else None
            # (N/s) x (s*C): channel j*C + c holds channel c of samples j, j+s, j+2s, ...
            grouped = x.view(n // s, s * c, *x.shape[2:])
            mean = self.running_mean.repeat(s)
            var = self.running_var.repeat(s)
            out = F.batch_norm(grouped, mean, var, weight, bias, True, factor, self.eps)
            with torch.no_grad():
                self.running_mean.copy_(mean.view(s, c).mean(0))
                self.running_var.copy_(var.view(s, c).mean(0))
            return out.view(x.shape)
        # channels_last (or any strided layout): split N only, which is a view in every layout
        per_channel = (1, 1, c) + (1,) * (x.dim() - 2)  # broadcasts over (N/s) x s x C x ...
        xs = x.view(n // s, s, *x.shape[1:])
        dims = [0] + list(range(3, xs.dim()))
        # reductions accumulate in fp32 even for bf16 input; only the s x C results are rounded
        var_b, mean_b = torch.var_mean(xs, dim=dims, correction=0, keepdim=True)
        var_b, mean_b = var_b.float(), mean_b.float()
        rstd = torch.rsqrt(var_b + self.eps)
        scale = rstd * self.weight.float().view(per_channel) if self.affine else rstd
        shift = -mean_b * scale
        if self.affine:
            shift = shift + self.bias.float().view(per_channel)
        out = torch.addcmul(shift.to(x.dtype), xs, scale.to(x.dtype)).view(x.shape)
        with torch.no_grad():
            count = xs.numel() // (s * c)
            unbiased = var_b.view(s, c) * (count / max(count - 1, 1))
            self.running_mean.mul_(1 - factor).add_(mean_b.view(s, c).mean(0), alpha=factor)
            self.running_var.mul_(1 - factor).add_(unbiased.mean(0), alpha=factor)
        return out


class SplitBatchNorm1d(_SplitBatchNormMixin, nn.BatchNorm1d):
    """BatchNorm1d with split statistics in training mode (see :class:`_SplitBatchNormMixin`)."""

    def __init__(self, num_features: int, num_splits: int, **kwargs):
        super().__init__(num_features, **kwargs)
        self.num_splits = num_splits


class SplitBatchNorm2d(_SplitBatchNormMixin, nn.BatchNorm2d):
    """BatchNorm2d with split statistics in training mode (see :class:`_SplitBatchNormMixin`)."""

    def __init__(self, num_features: int, num_splits: int, **kwargs):
        super().__init__(num_features, **kwargs)
        self.num_splits = num_splits


def convert_split_bn(module: nn.Module, num_splits: int) -> nn.Module:
    """Replace every BatchNorm1d/2d inside ``module`` by its split version, in place.

    The new layers take over the old parameter and buffer tensors, so state-dict keys, values
    and the order of ``module.parameters()`` are unchanged. Returns ``module``.
    """
    for name, child in module.named_children():
        if isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d)) and not isinstance(
            child, _SplitBatchNormMixin
        ):
            cls = SplitBatchNorm2d if isinstance(child, nn.BatchNorm2d) else SplitBatchNorm1d
            new = cls(
                child.num_features,
                num_splits,
                eps=child.eps,
                momentum=child.momentum,
                affine=child.affine,
                track_running_stats=child.track_running_stats,
            )
            new._parameters = child._parameters  # the same tensors, in the same order
            new._buffers = child._buffers
            new.train(child.training)
            setattr(module, name, new)
        else:
            convert_split_bn(child, num_splits)
    return module


# torch.compile backend for :func:`compile_encoders`; tests swap in "eager" (no C++ toolchain
# work) to exercise the same code path cheaply.
COMPILE_BACKEND = "inductor"


def compile_encoders(model: "MoCo", mode: str) -> None:
    """Compile the query and key encoders of ``model`` in place with ``torch.compile``.

    ``mode``: SOLVER.COMPILE, one of :data:`common.configs.COMPILE_MODES` ("" = leave eager).
    Only the encoder modules are compiled (``nn.Module.compile``), not the MoCo forward with its
    queue writes, and no wrapper module is inserted, so state-dict keys stay free of
    ``_orig_mod.``.
    """
    if mode not in COMPILE_MODES:
        raise ValueError(f"SOLVER.COMPILE={mode!r}; use one of {COMPILE_MODES}")
    if not mode:
        return
    kwargs = {"backend": COMPILE_BACKEND}
    if COMPILE_BACKEND == "inductor":
        kwargs["mode"] = mode
    model.encoder_q.compile(**kwargs)
    model.encoder_k.compile(**kwargs)


class MoCo(nn.Module):
    """MoCo with a query encoder, a momentum key encoder and a queue of K negative keys.

    Args:
        base_encoder: ``f(num_classes=dim) -> nn.Module`` whose ``fc`` is the output layer
            (a torchvision ResNet); see :func:`build_encoder_factory`.
        dim: embedding dimension C (128).
        K: queue length (65536); any positive value, it need not be a multiple of the batch.
        m: momentum of the key encoder update (0.999).
        T: softmax temperature (0.07 for v1, 0.2 for v2).
        mlp: use the v2 MLP head instead of the v1 linear head.
        mlp_hidden: hidden width of the MLP head; 0 means the encoder's feature width (2048).
        head_bn: put a BatchNorm1d after the first MLP layer (not in the paper).
        out_bn: end the head with BatchNorm1d(dim, affine=False) (not in the paper; it keeps
            the embedding spread out early in short runs).
        shuffle_bn: shuffle the key batch across processes (no effect in one process).
        key_bn_splits: number of sub-batches over which the key encoder's BN statistics are
            computed in each process (1 = whole per-process batch). >1 gives split BN: every
            BN layer of the key encoder (head included) becomes a :class:`SplitBatchNorm2d` /
            :class:`SplitBatchNorm1d` and the key batch is randomly permuted before it.
        symmetric: add the loss with the roles of the two views swapped (2x compute).
    """

    def __init__(
        self,
        base_encoder: Callable[..., nn.Module],
        dim: int = 128,
        K: int = 65536,
        m: float = 0.999,
        T: float = 0.07,
        mlp: bool = False,
        mlp_hidden: int = 0,
        head_bn: bool = False,
        out_bn: bool = False,
        shuffle_bn: bool = True,
        key_bn_splits: int = 1,
        symmetric: bool = False,
    ):
        super().__init__()
        if K <= 0:
            raise ValueError(f"MODEL.K must be positive, got {K}")
        if key_bn_splits < 1:
            raise ValueError(f"MODEL.KEY_BN_SPLITS must be >= 1, got {key_bn_splits}")
        self.K, self.m, self.T = K, m, T
        self.shuffle_bn, self.key_bn_splits, self.symmetric = shuffle_bn, key_bn_splits, symmetric

        self.encoder_q = base_encoder(num_classes=dim)
        self.encoder_k = base_encoder(num_classes=dim)
        for enc in (self.encoder_q, self.encoder_k):
            if mlp:
                enc.fc = _mlp_head(enc.fc, mlp_hidden or enc.fc.weight.shape[1], head_bn)
            if out_bn:  # centre and scale each embedding dimension over the batch
                layers = list(enc.fc) if mlp else [enc.fc]
                enc.fc = nn.Sequential(*layers, nn.BatchNorm1d(dim, affine=False))

        for param_q, param_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            param_k.data.copy_(param_q.data)
            param_k.requires_grad = False  # updated by momentum, never by gradient
        if key_bn_splits > 1:
            convert_split_bn(self.encoder_k, key_bn_splits)
        # fixed lists for the foreach momentum update (the Parameter objects survive .to())
        self._params_q: List[nn.Parameter] = list(self.encoder_q.parameters())
        self._params_k: List[nn.Parameter] = list(self.encoder_k.parameters())

        self.register_buffer("queue", F.normalize(torch.randn(dim, K), dim=0))  # CxK
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @torch.no_grad()
    def _momentum_update_key_encoder(self) -> None:
        """k <- m*k + (1-m)*q over parameters only; BN buffers of the key encoder are its own.

        Two multi-tensor (foreach) kernels over all parameters instead of two per parameter.
        """
        torch._foreach_mul_(self._params_k, self.m)
        torch._foreach_add_(self._params_k, self._params_q, alpha=1.0 - self.m)

    @torch.no_grad()
    def _dequeue_and_enqueue(self, keys: torch.Tensor) -> None:
        """Write the keys of all processes (N x C each) into the queue, wrapping around at K."""
        keys = concat_all_gather(keys)  # (world*N) x C
        if keys.shape[0] > self.K:  # a batch larger than the queue: keep the newest K
            keys = keys[-self.K :]
        n = keys.shape[0]
        ptr = int(self.queue_ptr)
        idx = (ptr + torch.arange(n, device=keys.device)) % self.K
        self.queue[:, idx] = keys.T.to(self.queue.dtype)
        self.queue_ptr[0] = (ptr + n) % self.K

    @torch.no_grad()
    def _batch_shuffle_ddp(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Shuffle the global batch across processes; return this rank's part and the inverse.

        x: NxCxHxW on each rank -> NxCxHxW (samples from any rank), idx_unshuffle: (world*N).
        """
        x_gather = concat_all_gather(x)  # (world*N)xCxHxW
        n_all = x_gather.shape[0]
        idx_shuffle = torch.randperm(n_all, device=x.device)
        broadcast_(idx_shuffle, src=0)  # every rank must use rank 0's permutation
        idx_unshuffle = torch.argsort(idx_shuffle)
        idx_this = idx_shuffle.view(comm.get_world_size(), -1)[comm.get_rank()]
        return x_gather[idx_this], idx_unshuffle

    @torch.no_grad()
    def _batch_unshuffle_ddp(self, x: torch.Tensor, idx_unshuffle: torch.Tensor) -> torch.Tensor:
        """Undo :meth:`_batch_shuffle_ddp`: NxC (shuffled) -> NxC in this rank's original order."""
        x_gather = concat_all_gather(x)  # (world*N)xC
        idx_this = idx_unshuffle.view(comm.get_world_size(), -1)[comm.get_rank()]
        return x_gather[idx_this]

    @torch.no_grad()
    def _keys(self, im_k: torch.Tensor) -> torch.Tensor:
        """Keys for a batch of key views: NxCxHxW -> NxC, L2-normalised, with shuffle BN."""
        across = self.shuffle_bn and comm.get_world_size() > 1
        if across:
            im_k, idx_unshuffle = self._batch_shuffle_ddp(im_k)
        splits = self.key_bn_splits
        if splits > 1:
            # random sub-batches: the split BN layers group samples n, n+s, n+2s, ... of this
            # permuted batch, so a key's statistics never come from a fixed set of neighbours
            check_key_bn_splits(im_k.shape[0], splits, f"per-process batch {im_k.shape[0]}")
            perm = torch.randperm(im_k.shape[0], device=im_k.device)
            k = self.encoder_k(im_k[perm])[torch.argsort(perm)]
        else:
            k = self.encoder_k(im_k)
        k = F.normalize(k.float(), dim=1)  # NxC
        if across:
            k = self._batch_unshuffle_ddp(k, idx_unshuffle)
        return k

    def _contrast(self, q: torch.Tensor, k: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """InfoNCE of normalised queries q (NxC) against keys k (NxC) and the queue.

        Returns (loss, logits N x (1+K)); the positive is column 0.
        """
        # fp32 even under autocast: bf16 logits would blur K similar negatives together
        with torch.autocast(q.device.type, enabled=False):
            l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)  # Nx1
            # clone: the queue is written in place after the loss; autograd must not see that
            l_neg = torch.einsum("nc,ck->nk", q, self.queue.clone().detach())  # NxK
            logits = torch.cat([l_pos, l_neg], dim=1) / self.T  # Nx(1+K)
            labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
            return F.cross_entropy(logits, labels), logits

    def forward(self, im_q: torch.Tensor, im_k: torch.Tensor) -> Dict[str, torch.Tensor]:
        """One MoCo step's forward pass on two views (each NxCxHxW) of the same N images.

        Returns a dict: ``loss`` (scalar, differentiable), ``logits`` (Nx(1+K), detached, of the
        q->k direction), ``emb_std`` (mean per-dimension std of the normalised queries across
        the batch; ~1/sqrt(C) when spread out, ->0 on collapse) and ``neg_cos`` (mean cosine of
        queries to the queue; ->1 on collapse). The queue is updated before returning.
        """
        q = F.normalize(self.encoder_q(im_q).float(), dim=1)  # NxC
        with torch.no_grad():
            self._momentum_update_key_encoder()
            k = self._keys(im_k)  # NxC
        loss, logits = self._contrast(q, k)
        new_keys = k
        if self.symmetric:
            q2 = F.normalize(self.encoder_q(im_k).float(), dim=1)  # NxC
            with torch.no_grad():
                k2 = self._keys(im_q)  # NxC
            loss = loss + self._contrast(q2, k2)[0]
            new_keys = torch.cat([k, k2], dim=0)  # 2NxC
        with torch.no_grad():
            emb_std = q.std(dim=0).mean() if q.shape[0] > 1 else q.new_zeros(())
            neg_cos = (logits[:, 1:] * self.T).mean()
        self._dequeue_and_enqueue(new_keys)
        return {"loss": loss, "logits": logits.detach(), "emb_std": emb_std, "neg_cos": neg_cos}


def build_moco(cfg) -> MoCo:
    """Build :class:`MoCo` from a pretraining config (see ``pretrain.config``)."""
    kwargs = {"zero_init_residual": cfg.MODEL.ZERO_INIT_RESIDUAL}
    if cfg.MODEL.WIDTH_PER_GROUP > 0:
        kwargs["width_per_group"] = cfg.MODEL.WIDTH_PER_GROUP
    return MoCo(
        build_encoder_factory(cfg.MODEL.ARCH, **kwargs),
        dim=cfg.MODEL.DIM,
        K=cfg.MODEL.K,
        m=cfg.MODEL.M,
        T=cfg.MODEL.T,
        mlp=cfg.MODEL.MLP,
        mlp_hidden=cfg.MODEL.MLP_HIDDEN_DIM,
        head_bn=cfg.MODEL.HEAD_BN,
        out_bn=cfg.MODEL.OUT_BN,
        shuffle_bn=cfg.MODEL.SHUFFLE_BN,
        key_bn_splits=cfg.MODEL.KEY_BN_SPLITS,
        symmetric=cfg.MODEL.SYMMETRIC,
    )
