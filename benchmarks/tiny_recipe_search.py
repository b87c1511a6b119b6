"""Measure tiny MoCo recipes on CPU: kNN top-1 at random init vs after a short pretraining run.

This is the record of how the numbers in docs/tiny_recipe.md were produced. It is a
self-contained prototype (it does not use the ``pretrain`` package) so that one file holds
every knob that was varied. Example::

    python benchmarks/tiny_recipe_search.py --steps 300 --lr 0.06 --bn-splits 4 --seed 0

Prints progress (loss, collapse indicators, pairs/s) and a final JSON line with the results.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from PIL import Image
from torchvision.ops import roi_align

import synthetic

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def load_split(root: str, split: str):
    """ImageFolder split -> (uint8 tensor Nx3xHxW, int64 labels N)."""
    classes = sorted(os.listdir(os.path.join(root, split)))
    imgs, labels = [], []
    for ci, c in enumerate(classes):
        d = os.path.join(root, split, c)
        for f in sorted(os.listdir(d)):
            imgs.append(np.asarray(Image.open(os.path.join(d, f)).convert("RGB")))
            labels.append(ci)
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(labels)


def augment(x: torch.Tensor, out: int, g: torch.Generator, args) -> torch.Tensor:
    """MoCo v2 "aug+" on a whole uint8 batch at once; returns normalised float Nx3xoutxout."""
    n, _, h, w = x.shape
    xf = x.float() / 255.0
    # RandomResizedCrop(scale, ratio 3/4-4/3) through roi_align: one bilinear resample per image.
    area = torch.empty(n).uniform_(args.crop_min, 1.0, generator=g) * h * w
    logr = torch.empty(n).uniform_(math.log(3 / 4), math.log(4 / 3), generator=g)
    cw = torch.sqrt(area * torch.exp(logr)).clamp(max=w)
    ch = torch.sqrt(area / torch.exp(logr)).clamp(max=h)
    x0 = torch.rand(n, generator=g) * (w - cw)
    y0 = torch.rand(n, generator=g) * (h - ch)
    boxes = torch.stack([torch.arange(n).float(), x0, y0, x0 + cw, y0 + ch], 1)
    xf = roi_align(xf, boxes, (out, out), 1.0, sampling_ratio=2, aligned=True)
    flip = torch.rand(n, generator=g) < 0.5
    xf = torch.where(flip.view(n, 1, 1, 1), xf.flip(3), xf)
    # Colour jitter (p=0.8): brightness, contrast, saturation, hue (as a YIQ chroma rotation).
    s = args.jitter
    jit = (torch.rand(n, generator=g) < 0.8).view(n, 1, 1, 1)
    b = torch.empty(n, 1, 1, 1).uniform_(1 - s, 1 + s, generator=g)
    c = torch.empty(n, 1, 1, 1).uniform_(1 - s, 1 + s, generator=g)
    sat = torch.empty(n, 1, 1, 1).uniform_(1 - s, 1 + s, generator=g)
    gray_w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    y = xf * b
    y = (y - (y * gray_w).sum(1, keepdim=True).mean((2, 3), keepdim=True)) * c + (y * gray_w).sum(
        1, keepdim=True
    ).mean((2, 3), keepdim=True)
    gy = (y * gray_w).sum(1, keepdim=True)
    y = gy + (y - gy) * sat
    hue = torch.empty(n).uniform_(-args.hue, args.hue, generator=g) * 2 * math.pi
    rgb2yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    yiq2rgb = torch.linalg.inv(rgb2yiq)
    rot = torch.zeros(n, 3, 3)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2] = torch.cos(hue), -torch.sin(hue)
    rot[:, 2, 1], rot[:, 2, 2] = torch.sin(hue), torch.cos(hue)
    mat = yiq2rgb @ rot @ rgb2yiq  # n x 3 x 3
    y = torch.einsum("nij,njhw->nihw", mat, y).clamp(0, 1)
    xf = torch.where(jit, y, xf)
    gray = (torch.rand(n, generator=g) < args.gray_p).view(n, 1, 1, 1)
    xf = torch.where(gray, (xf * gray_w).sum(1, keepdim=True).expand_as(xf), xf)
    # Gaussian blur p=0.5, sigma U(0.1, 2.0) scaled from 224 px to this image size.
    sigma = torch.empty(n).uniform_(0.1, 2.0, generator=g) * out / 224
    blur = torch.rand(n, generator=g) < 0.5
    sigma = torch.where(blur, sigma, torch.full_like(sigma, 1e-3))
    r = 3
    t = torch.arange(-r, r + 1).float()
    k = torch.exp(-(t.view(1, -1) ** 2) / (2 * sigma.view(-1, 1) ** 2))
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(3, 0)  # (3n) x (2r+1)
    z = xf.reshape(1, 3 * n, out, out)
    z = F.conv2d(F.pad(z, (r, r, 0, 0), mode="reflect"), k.view(3 * n, 1, 1, -1), groups=3 * n)
    z = F.conv2d(F.pad(z, (0, 0, r, r), mode="reflect"), k.view(3 * n, 1, -1, 1), groups=3 * n)
    xf = z.view(n, 3, out, out)
    return (xf - MEAN) / STD


def build_encoder(args) -> nn.Module:
    """torchvision ResNet-50 (thin via width_per_group) with the MoCo v2 MLP head as ``fc``."""
    net = torchvision.models.resnet50(width_per_group=args.width, zero_init_residual=args.zero_init)
    layers = [nn.Linear(2048, args.hidden)]
    if args.head_bn:
        layers.append(nn.BatchNorm1d(args.hidden))
    layers += [nn.ReLU(inplace=True), nn.Linear(args.hidden, args.dim)]
    if args.out_bn:  # centre and scale each embedding dimension over the batch
        layers.append(nn.BatchNorm1d(args.dim, affine=False))
    net.fc = nn.Sequential(*layers)
    return net


def split_forward(net, x, splits, perm=None):
    """Forward in ``splits`` sub-batches (ghost BN); ``perm`` shuffles which images share one."""
    if perm is not None:
        x = x[perm]
    out = torch.cat([net(c) for c in x.chunk(splits)]) if splits > 1 else net(x)
    if perm is not None:
        out = out[torch.argsort(perm)]
    return out


@torch.no_grad()
def features(net, x, batch=256, size=None):
    """Frozen avgpool features (BN in eval mode), L2-normalised; images resized to ``size``."""
    fc, net.fc = net.fc, nn.Identity()
    was = net.training
    net.eval()
    fs = []
    for c in x.split(batch):
        c = c.float() / 255.0
        if size and size != c.shape[-1]:
            c = F.interpolate(c, size=(size, size), mode="bilinear", antialias=True)
        fs.append(net((c - MEAN) / STD))
    net.fc = fc
    net.train(was)
    return F.normalize(torch.cat(fs), dim=1)


@torch.no_grad()
def knn_top1(net, xtr, ytr, xva, yva, k=20, t=0.07, size=None):
    """Weighted kNN (InstDisc/MoCo style): train split as memory, val split as queries."""
    ftr, fva = features(net, xtr, size=size), features(net, xva, size=size)
    num_classes = int(ytr.max()) + 1
    sim, idx = (fva @ ftr.T).topk(k, dim=1)
    w = (sim / t).exp()
    votes = torch.zeros(len(fva), num_classes).scatter_add_(1, ytr[idx], w)
    return (votes.argmax(1) == yva).float().mean().item()


@torch.no_grad()
def recalibrate_bn(net, x, size, batch=128, n_batches=8):
    """Re-estimate BN running stats from data (for a fairer random-init baseline)."""
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    net.train()
    for c in x[: batch * n_batches].split(batch):
        c = F.interpolate(c.float() / 255.0, size=(size, size), mode="bilinear", antialias=True)
        net((c - MEAN) / STD)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.1


def run(args) -> dict:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    root = os.path.join(args.data_root, f"c{args.classes}_n{args.train_per_class}_s{args.size}")
    if not os.path.exists(os.path.join(root, "summary.json")):
        synthetic.make_classification(
            root,
            seed=args.data_seed,
            num_classes=args.classes,
            train_per_class=args.train_per_class,
            val_per_class=args.val_per_class,
            image_size=args.size,
            clutter=args.clutter,
        )
    xtr, ytr = load_split(root, "train")
    xva, yva = load_split(root, "val")
    enc_q = build_encoder(args)
    enc_k = build_encoder(args)
    enc_k.load_state_dict(enc_q.state_dict())
    for p in enc_k.parameters():
        p.requires_grad = False
    res = {"args": vars(args)}
    t0 = time.perf_counter()
    res["knn_random"] = (
        0.0 if args.skip_random else knn_top1(enc_q, xtr, ytr, xva, yva, size=args.crop)
    )
    probe = build_encoder(args)
    probe.load_state_dict(enc_q.state_dict())
    if not args.skip_random and not args.no_recal:
        recalibrate_bn(probe, xtr[torch.randperm(len(xtr))], args.crop)
        res["knn_random_bnrecal"] = knn_top1(probe, xtr, ytr, xva, yva, size=args.crop)
    res["knn_time_s"] = time.perf_counter() - t0
    print(f"random init kNN {res['knn_random']:.3f} ({res.get('knn_random_bnrecal', 0):.3f})")

    queue = F.normalize(torch.randn(args.dim, args.K), dim=0)
    ptr = 0
    params = [p for p in enc_q.parameters() if p.requires_grad]
    if args.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.wd)
    else:
        opt = torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=args.wd)
    g = torch.Generator().manual_seed(args.seed)
    n = args.batch
    t_start = time.perf_counter()
    log = []
    for step in range(args.steps):
        if step < args.warmup:
            lr = args.lr * (step + 1) / args.warmup
        elif args.cosine:
            prog = (step - args.warmup) / max(1, args.steps - args.warmup)
            lr = args.lr * 0.5 * (1 + math.cos(math.pi * prog))
        else:
            lr = args.lr
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(len(xtr), (n,), generator=g)
        x = xtr[idx]
        im_q, im_k = augment(x, args.crop, g, args), augment(x, args.crop, g, args)
        with torch.no_grad():  # momentum update, then keys through shuffled ghost-BN batches
            for pq, pk in zip(enc_q.parameters(), enc_k.parameters()):
                pk.mul_(args.m).add_(pq.detach(), alpha=1 - args.m)
        views = [(im_q, im_k), (im_k, im_q)] if args.symmetric else [(im_q, im_k)]
        loss_total, keys = 0.0, []
        for a, b in views:
            q = F.normalize(split_forward(enc_q, a, args.bn_splits), dim=1)  # q: NxC
            with torch.no_grad():
                perm = torch.randperm(n, generator=g)
                k = F.normalize(split_forward(enc_k, b, args.bn_splits, perm), dim=1)  # k: NxC
            l_pos = (q * k).sum(1, keepdim=True)  # Nx1
            l_neg = q @ queue  # NxK
            logits = torch.cat([l_pos, l_neg], 1) / args.T
            loss = F.cross_entropy(logits, torch.zeros(n, dtype=torch.long))
            loss_total = loss_total + loss
            keys.append(k)
        opt.zero_grad(set_to_none=True)
        loss_total.backward()
        opt.step()
        with torch.no_grad():
            for k in keys:  # enqueue (K divisible by batch)
                queue[:, ptr : ptr + n] = k.T
                ptr = (ptr + n) % args.K
            qstd = q.std(0).mean().item()
            negcos = l_neg.mean().item()
        if step % args.log_every == 0 or step == args.steps - 1:
            el = time.perf_counter() - t_start
            rate = (step + 1) * n / el
            rec = dict(step=step, loss=loss.item(), lr=lr, qstd=qstd, negcos=negcos, pps=rate)
            log.append(rec)
            print(
                " ".join(
                    f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()
                ),
                flush=True,
            )
        if args.max_train_s and time.perf_counter() - t_start > args.max_train_s:
            print(f"stopping at step {step}: time budget reached")
            break
    res["train_s"] = time.perf_counter() - t_start
    res["steps_done"] = step + 1
    res["pairs_per_s"] = (step + 1) * n / res["train_s"]
    t1 = time.perf_counter()
    if args.skip_final:
        res["final"] = log[-1]
        return res
    res["knn_trained"] = knn_top1(enc_q, xtr, ytr, xva, yva, size=args.crop)
    if not args.no_recal:
        res["knn_trained_keyenc"] = knn_top1(enc_k, xtr, ytr, xva, yva, size=args.crop)
    res["eval_s"] = time.perf_counter() - t1
    res["final"] = log[-1]
    res["log"] = log
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__)
    a = p.add_argument
    a("--seed", type=int, default=0)
    a("--data-seed", type=int, default=0)
    a("--data-root", default="/tmp/tiny_recipe_data")
    a("--classes", type=int, default=8)
    a("--train-per-class", type=int, default=250)
    a("--val-per-class", type=int, default=50)
    a("--clutter", type=int, default=4)
    a("--size", type=int, default=64, help="generated image size")
    a("--crop", type=int, default=64, help="training (and kNN) input size")
    a("--width", type=int, default=16, help="ResNet-50 width_per_group (64 = standard)")
    a("--zero-init", action="store_true")
    a("--head-bn", action="store_true")
    a("--out-bn", action="store_true", help="BatchNorm1d(dim, affine=False) after the head")
    a("--hidden", type=int, default=2048)
    a("--dim", type=int, default=128)
    a("--K", type=int, default=1024)
    a("--m", type=float, default=0.99)
    a("--T", type=float, default=0.2)
    a("--lr", type=float, default=0.03)
    a("--wd", type=float, default=1e-4)
    a("--optimizer", choices=("sgd", "adamw"), default="sgd")
    a("--warmup", type=int, default=0)
    a("--cosine", action="store_true")
    a("--batch", type=int, default=64)
    a("--bn-splits", type=int, default=1)
    a("--symmetric", action="store_true")
    a("--crop-min", type=float, default=0.2)
    a("--jitter", type=float, default=0.4)
    a("--hue", type=float, default=0.1)
    a("--gray-p", type=float, default=0.2)
    a("--steps", type=int, default=200)
    a("--max-train-s", type=float, default=0)
    a("--skip-random", action="store_true", help="skip the random-init kNN (screening runs)")
    a("--no-recal", action="store_true", help="skip the BN-recalibrated and key-encoder kNN")
    a("--skip-final", action="store_true", help="skip the final kNN (screening runs)")
    a("--threads", type=int, default=2)
    a("--log-every", type=int, default=25)
    a("--tag", default="")
    a("--out", default="", help="append the result JSON to this file")
    args = p.parse_args()
    res = run(args)
    line = json.dumps({k: v for k, v in res.items() if k != "log"})
    print(line)
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
