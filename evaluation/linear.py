"""Linear classification of a frozen pretrained ResNet-50 (``moco-lincls``).

The protocol of the MoCo paper: frozen backbone with BN in eval mode, a fresh fc (N(0, 0.01),
bias 0), SGD lr 30 momentum 0.9 weight decay 0, 100 epochs, lr x0.1 at 60 and 80, batch 256,
RandomResizedCrop + flip for training, Resize(crop*256/224) + CenterCrop(crop) for the 1-crop
top-1/top-5. After training, every backbone tensor is compared with the pretrained one.

    moco-lincls --checkpoint output/pretrain/last.pth --data datasets/imagenet --output-dir out
    moco-lincls --checkpoint last.pth --data synth --crop-size 64 --cached-features   # fast
    moco-lincls --checkpoint last.pth --data synth --output-dir out --evaluate

Any checkpoint :func:`convert.load_resnet50` reads works: this project's pretraining files, the
reference MoCo release and torchvision weights. ``--cached-features`` extracts features once
(cached, see :mod:`evaluation.features`) and trains the head on them without augmentation.
"""

from __future__ import annotations

from common.known_warnings import filter_known_warnings

filter_known_warnings()  # before detectron2 is imported: it warns while importing

import argparse
import logging
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
import torchvision.transforms as T
from detectron2.utils import comm
from detectron2.utils.events import EventStorage, JSONWriter, TensorboardXWriter
from detectron2.utils.file_io import PathManager
from torch.utils.data import DataLoader, DistributedSampler

from common.cli import above, at_least
from common.errors import entry_point
from common.files import split_root_problem
from common.io import atomic_write, atomic_write_json
from common.launch import add_launch_args, check_device, check_launch_args, launch_from_args
from common.locks import hold_output_dir
from common.runconfig import diff_lines, refuse_changes
from convert import FORMATS, load_resnet50
from pretrain.augment import IMAGENET_MEAN, IMAGENET_STD, eval_transform
from pretrain.distributed import select_device
from pretrain.knn import backbone_features, readable_batches
from pretrain.labelled import LabelledImages, SkipCounter, check_same_classes, collate_readable
from pretrain.logs import setup_named_logger

from .features import (
    backbone_hash,
    evaluate_cached,
    lr_at_epoch,
    make_linear_head,
    topk_accuracy,
)

logger = logging.getLogger("evaluation.linear")  # not __name__: "__main__" under -m
LAST = "last.pth"
FORMAT = "moco-detectron2/lincls/v1"
# The arguments that shape a training run of the head: a resume with one of them changed is
# refused (the backbone is checked by its hash, the classes by the head's shape). The others
# may change; --epochs among them, because the lr steps at fixed epochs (--schedule) and the
# data order depends on the epoch only, so a run resumed with more epochs continues exactly
# as one started with them.
RUN_ARGS = ("schedule", "lr", "momentum", "weight_decay", "batch_size", "crop_size", "seed")


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``moco-lincls``; defaults are the paper's ImageNet protocol."""
    p = argparse.ArgumentParser(prog="moco-lincls", description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="pretraining / MoCo release / torchvision file")
    src.add_argument("--random-init", action="store_true", help="baseline: untrained backbone")
    p.add_argument(
        "--format", default="auto", choices=FORMATS, help="checkpoint format; 'auto' detects it"
    )
    p.add_argument("--prefix", default=None, help="encoder key prefix when not auto-detected")
    p.add_argument(
        "--width-per-group", type=at_least(1), default=64, help="--random-init only (16=thin)"
    )
    p.add_argument("--data", required=True, help="ImageFolder root with train/ and val/")
    p.add_argument("--output-dir", default="output/lincls", help="last.pth, metrics, results")
    p.add_argument("--epochs", type=at_least(1), default=100, help="100 in the protocol")
    p.add_argument(
        "--schedule",
        type=at_least(0),
        nargs="*",
        default=[60, 80],
        help="epochs where lr drops x0.1",
    )
    p.add_argument(
        "--lr",
        type=above(0.0),
        default=30.0,
        help="30 for batch 256 (MoCo features have a small norm, hence the large lr); scale "
        "it linearly if you change --batch-size, and sweep it with --cached-features",
    )
    p.add_argument("--momentum", type=at_least(0.0, float), default=0.9)
    p.add_argument(
        "--weight-decay", type=at_least(0.0, float), default=0.0, help="0 in the protocol"
    )
    p.add_argument(
        "--batch-size",
        type=at_least(1),
        default=256,
        help="total over all processes (divided per GPU)",
    )
    p.add_argument(
        "--crop-size",
        type=at_least(1),
        default=224,
        help="train/eval crop; eval resizes to crop*256/224 first. Use the image size for "
        "small images (64 for the synthetic set)",
    )
    p.add_argument("--workers", type=at_least(0), default=4, help="data loader processes per GPU")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="", help="cpu or cuda (default: cuda if available)")
    p.add_argument("--evaluate", action="store_true", help="only evaluate the head in last.pth")
    p.add_argument("--no-resume", action="store_true", help="ignore an existing last.pth")
    p.add_argument(
        "--cached-features",
        action="store_true",
        help="fast sweep path: features once (cached in <output-dir>/features), no augmentation",
    )
    return add_launch_args(p)


def load_backbone_model(args) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """The frozen torchvision ResNet-50 and a CPU copy of its weights for the sanity check.

    Reads any supported checkpoint through :func:`convert.load_resnet50` (format detection
    lives in convert only): the torchvision network is built at the detected width and every
    backbone tensor must load (the log says how many did).
    """
    if args.random_init:
        torch.manual_seed(args.seed)
        net = torchvision.models.resnet50(width_per_group=args.width_per_group)
        logger.info("--random-init: loaded 0 backbone tensors (the random-init baseline)")
    else:
        net, ext, report = load_resnet50(args.checkpoint, fmt=args.format, prefix=args.prefix)
        line = report.line(args.checkpoint)
        logger.info("%s (format '%s', prefix '%s')", line, ext.fmt, ext.prefix)
    # A CPU copy taken now, so that the check at the end compares against the loaded weights.
    reference = {
        k: v.detach().clone()
        for k, v in net.state_dict().items()
        if not k.startswith("fc.") and not k.endswith("num_batches_tracked")
    }
    net.fc = nn.Identity()  # the head lives outside, so only it is DDP-wrapped and trained
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval(), reference


def check_backbone_unchanged(backbone: nn.Module, reference: dict[str, torch.Tensor]) -> None:
    """Raise ``RuntimeError`` naming the first backbone tensor that differs from ``reference``.

    ``reference``: torchvision-named tensors as loaded (without fc / num_batches_tracked).
    """
    state = backbone.state_dict()
    for name, want in reference.items():
        if name not in state or not torch.equal(state[name].cpu(), want.cpu()):
            raise RuntimeError(f"backbone tensor '{name}' changed during linear training")
    logger.info("Sanity check passed: %d backbone tensors unchanged", len(reference))


def build_loaders(args, world: int, rank: int):
    """ImageFolder train (RandomResizedCrop + flip) and val (resize + center crop) loaders.

    The sets are :class:`pretrain.labelled.LabelledImages`: batches are (images, labels,
    skipped paths), unreadable files left out and named.
    """
    train_tf = T.Compose(
        [
            T.RandomResizedCrop(args.crop_size),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    train_set = LabelledImages(os.path.join(args.data, "train"), train_tf, "--data train/")
    val_tf = eval_transform(args.crop_size)
    val_set = LabelledImages(os.path.join(args.data, "val"), val_tf, "--data val/")
    check_same_classes(train_set, val_set)
    per_gpu = max(1, args.batch_size // world)
    loaders = []
    for ds, train in ((train_set, True), (val_set, False)):
        sampler = DistributedSampler(ds, world, rank, shuffle=train, seed=args.seed)
        loaders.append(
            DataLoader(
                ds,
                batch_size=per_gpu,
                sampler=sampler,
                num_workers=args.workers,
                drop_last=False,
                persistent_workers=args.workers > 0,
                collate_fn=collate_readable,
            )
        )
    return train_set, val_set, loaders[0], loaders[1]


def train_one_epoch(backbone, head, loader, optimizer, device, skipped=None) -> float:
    """One epoch of the head on frozen features; returns the mean loss on this process.
    Unreadable files (see :func:`pretrain.knn.readable_batches`) go to ``skipped``."""
    backbone.eval()  # BN statistics of the backbone must never update
    total, count = 0.0, 0
    for images, target in readable_batches(loader, skipped):
        images, target = images.to(device), target.to(device)
        with torch.no_grad():
            feats = backbone_features(backbone, images)
        loss = F.cross_entropy(head(feats), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total, count = total + loss.item() * target.numel(), count + target.numel()
    return total / max(count, 1)


@torch.no_grad()
def evaluate(backbone, head, loader, device, skipped=None) -> tuple[float, float]:
    """1-crop top-1 / top-5 (0..1) over the readable val images, summed over all processes.

    With several processes, DistributedSampler pads the set to a multiple of the world size,
    so up to world-1 images count twice (as in the reference implementation).
    """
    backbone.eval()
    hits, n = torch.zeros(2), 0
    for images, target in readable_batches(loader, skipped):
        logits = head(backbone_features(backbone, images.to(device))).cpu()
        hits += torch.tensor(topk_accuracy(logits, target)) * target.numel()
        n += target.numel()
    parts = comm.all_gather((hits, n))  # identity at world size 1
    total = sum(p[1] for p in parts)
    top1, top5 = (sum(p[0] for p in parts) / max(total, 1)).tolist()
    return top1, top5


def _writers(args) -> list:
    """metrics.json and TensorBoard writers on the main process (none elsewhere)."""
    if not comm.is_main_process():
        return []
    return [
        JSONWriter(os.path.join(args.output_dir, "metrics.json")),
        TensorboardXWriter(args.output_dir),
    ]


def _finish(args, result: dict) -> dict:
    metrics = ("top1", "top5", "knn_top1")
    line = ", ".join(f"{k} {result[k]:.4f}" for k in metrics if k in result)
    logger.info("Linear evaluation (%s) of %s: %s", result["mode"], result["source"], line)
    if comm.is_main_process():  # atomically: a kill never leaves half a results.json
        atomic_write_json(os.path.join(args.output_dir, "results.json"), result, indent=2)
    return result


def _save_last(args, head, optimizer, epoch: int, key: str, result: dict) -> None:
    """Save the head (not the frozen backbone) from the main process, atomically."""
    if not comm.is_main_process():
        return
    ckpt = {
        "head": head.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "backbone_hash": key,
        "result": result,
        "args": vars(args),
        "format": FORMAT,
    }
    path = os.path.join(args.output_dir, LAST)
    atomic_write(path, lambda f: torch.save(ckpt, f))


def check_same_head_run(ckpt: dict, args, head: nn.Module, path: str) -> None:
    """Refuse to continue the head in ``ckpt`` (from ``path``) with other :data:`RUN_ARGS` than
    its run had (``ckpt["args"]``) or for another number of classes. Returns None; raises
    :class:`common.runconfig.ChangedRunError` listing each change (``--flag: old -> new``)."""
    flag = {a: "--" + a.replace("_", "-") for a in RUN_ARGS}
    saved = ckpt.get("args") or {}
    old = {flag[a]: saved[a] for a in RUN_ARGS if a in saved}
    new = {flag[a]: getattr(args, a) for a in RUN_ARGS if a in saved}
    lines = diff_lines(old, new)
    classes = (ckpt["head"]["weight"].shape[0], head.weight.shape[0])
    if classes[0] != classes[1]:
        lines.append(f"classes of --data: {classes[0]} -> {classes[1]}")
    refuse_changes(
        path,
        lines,
        "Set these back to continue that run, or use a new --output-dir (or --no-resume, which "
        "trains afresh and overwrites this last.pth).",
    )


def _resume(args, head, optimizer, key: str) -> int:
    """Load ``last.pth`` if present (and allowed); returns the epoch to start from."""
    path = os.path.join(args.output_dir, LAST)
    if args.no_resume or not PathManager.exists(path):
        if args.evaluate:
            raise FileNotFoundError(f"--evaluate: no trained head at {path}")
        return 0
    with PathManager.open(path, "rb") as f:
        ckpt = torch.load(f, map_location="cpu", weights_only=False)
    if ckpt.get("format") != FORMAT or ckpt.get("backbone_hash") != key:
        raise ValueError(
            f"{path} was trained on another backbone (or is not a linear-eval checkpoint); "
            "use a fresh --output-dir or --no-resume"
        )
    if not args.evaluate:
        check_same_head_run(ckpt, args, head, path)
    head.load_state_dict(ckpt["head"])
    optimizer.load_state_dict(ckpt["optimizer"])
    logger.info("Resumed from %s at epoch %d", path, ckpt["epoch"])
    return ckpt["epoch"]


def run(args) -> dict:
    """One process of the linear evaluation; returns the results dict (also results.json)."""
    world, rank = comm.get_world_size(), comm.get_rank()
    device = select_device(
        args.device, key="--device"
    )  # on CUDA: this process's GPU (set by launch)
    PathManager.mkdirs(args.output_dir)
    for name in ("evaluation", "convert"):
        setup_named_logger(args.output_dir, distributed_rank=rank, name=name)
    torch.manual_seed(args.seed + rank)
    backbone, reference = load_backbone_model(args)
    backbone.to(device)
    key = backbone_hash(reference)
    source = "random-init" if args.random_init else args.checkpoint
    base = {"source": source, "epochs": args.epochs, "lr": args.lr}
    if args.cached_features:
        if world > 1:
            raise ValueError("--cached-features runs in one process; use --num-gpus 1")
        res = evaluate_cached(
            backbone,
            key,
            args.data,
            os.path.join(args.output_dir, "features"),
            crop_size=args.crop_size,
            batch_size=args.batch_size,
            workers=args.workers,
            device=device,
            epochs=args.epochs,
            lr=args.lr,
            milestones=tuple(args.schedule),
            momentum=args.momentum,
            weight_decay=args.weight_decay,
            seed=args.seed,
        )
        check_backbone_unchanged(backbone, reference)
        writers = _writers(args)
        with EventStorage(0) as storage:
            for row in res.pop("history"):
                storage.iter = row.pop("epoch")
                storage.put_scalars(**row, smoothing_hint=False)
                for w in writers:
                    w.write()
        for w in writers:
            w.close()
        return _finish(args, {"mode": "cached-features", **base, **res})

    train_set, _, train_loader, val_loader = build_loaders(args, world, rank)
    with torch.no_grad():
        probe = torch.zeros(1, 3, args.crop_size, args.crop_size, device=device)
        dim = backbone_features(backbone, probe).shape[1]
    torch.manual_seed(args.seed)  # same head init on every process
    head = make_linear_head(dim, len(train_set.classes)).to(device)
    optimizer = torch.optim.SGD(
        head.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay
    )
    start = _resume(args, head, optimizer, key)
    skipped = {s: SkipCounter(f"--data {s}/") for s in ("train", "val")}
    # Only the head is wrapped: the frozen backbone has no gradients to synchronise.
    ddp_head = head
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        ddp_head = nn.parallel.DistributedDataParallel(head, device_ids=ids)
    result = {"mode": "full", **base}
    if args.evaluate:
        top1, top5 = evaluate(backbone, head, val_loader, device, skipped["val"])
        skipped["val"].report()
        check_backbone_unchanged(backbone, reference)
        return _finish(args, {**result, "epoch": start, "top1": top1, "top5": top5})
    writers = _writers(args)
    top1 = top5 = float("nan")
    with EventStorage(start) as storage:
        for epoch in range(start, args.epochs):
            train_loader.sampler.set_epoch(epoch)
            lr = lr_at_epoch(epoch, args.lr, args.schedule)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = train_one_epoch(
                backbone, ddp_head, train_loader, optimizer, device, skipped["train"]
            )
            top1, top5 = evaluate(backbone, head, val_loader, device, skipped["val"])
            storage.iter = epoch + 1
            storage.put_scalars(lr=lr, train_loss=loss, top1=top1, top5=top5, smoothing_hint=False)
            for w in writers:
                w.write()
            logger.info(
                "epoch %d/%d lr %g loss %.4f top1 %.4f top5 %.4f",
                epoch + 1,
                args.epochs,
                lr,
                loss,
                top1,
                top5,
            )
            _save_last(args, head, optimizer, epoch + 1, key, {"top1": top1, "top5": top5})
    for w in writers:
        w.close()
    if start >= args.epochs:  # resumed a finished run: report its head
        top1, top5 = evaluate(backbone, head, val_loader, device, skipped["val"])
    for counter in skipped.values():
        counter.report()
    check_backbone_unchanged(backbone, reference)
    return _finish(args, {**result, "top1": top1, "top5": top5})


@entry_point(
    output="--output-dir",
    interrupted="rerun the same command to resume from <output-dir>/last.pth",
)
def main(argv=None) -> dict | None:
    """CLI entry point: parse, then run on every process (detectron2 ``launch``), holding
    ``<output-dir>/run.lock`` in this launching process (first machine only): a second command
    on the folder exits with status 2, naming the first."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_launch_args(parser, args)
    check_device(args.device, args.num_gpus, key="--device")
    problem = split_root_problem(args.data)
    if problem:
        raise FileNotFoundError(problem)
    with hold_output_dir(args.output_dir, enabled=args.machine_rank == 0):
        return launch_from_args(run, args)


if __name__ == "__main__":
    main()
