"""Weighted kNN classification on frozen avgpool features (the InstDisc / MoCo demo monitor).

The standalone CLI (``moco-knn``); the kNN core it runs (also the pretraining loop's monitor)
lives in :mod:`pretrain.knn`::

    moco-knn --checkpoint output/pretrain/last.pth --data datasets/synth_cls
    moco-knn --checkpoint resnet50-0676ba61.pth --data datasets/imagenet      # any ResNet-50
    moco-knn --random-init --arch resnet50 --width-per-group 16 --data datasets/synth_cls
"""

from common.known_warnings import filter_known_warnings

filter_known_warnings()  # before detectron2 is imported: it warns while importing

import argparse
import json
import logging
import os

import torch
import torch.nn as nn
from detectron2.utils.logger import setup_logger

from common.cli import above, at_least
from common.errors import entry_point
from common.files import split_root_problem
from convert import LoadReport, load_resnet50, torchvision_backbone_names
from pretrain.builder import build_encoder_factory
from pretrain.checkpoint import ForeignCheckpointError, load_moco
from pretrain.distributed import select_device
from pretrain.knn import knn_accuracy

__all__ = ["build_parser", "load_encoder", "main"]

logger = logging.getLogger("evaluation.knn")  # also when run as __main__


_CHOICES = (
    "pass --checkpoint a pretraining checkpoint (OUTPUT_DIR/last.pth or checkpoint_NNNN.pth), "
    "a MoCo release .pth.tar or a torchvision ResNet-50 .pth, or use --random-init"
)


def load_encoder(path: str) -> nn.Module:
    """The encoder of the weights file ``path``: the query encoder of a pretraining checkpoint
    (the torchvision ResNet it was trained as, loaded strictly), else the ResNet-50 of any file
    :func:`convert.load_resnet50` reads (MoCo release, torchvision). Logs how many backbone
    tensors loaded; raises with the file's name when they do not all load (a converted
    ``.pkl`` included: it is read by detection, not here)."""
    if not path.endswith(".pkl"):  # a .pkl is detectron2's format, never a pretraining file
        try:
            model, ckpt = load_moco(path, choices=_CHOICES)
        except ForeignCheckpointError:
            pass  # another layout: read below
        else:
            total = len(torchvision_backbone_names(model.encoder_q.state_dict()))
            line = LoadReport("backbone", total).line(path)  # strict load: all of them
            logger.info("%s (query encoder, epoch %d)", line, ckpt["epoch"])
            return model.encoder_q
    net, ext, report = load_resnet50(path)
    logger.info("%s (format '%s', prefix '%s')", report.line(path), ext.fmt, ext.prefix)
    return net


def _load_encoder(args) -> nn.Module:
    """The encoder of ``--checkpoint``, or a random-init encoder from args."""
    if args.checkpoint:
        return load_encoder(args.checkpoint)
    torch.manual_seed(args.seed)
    kwargs = {"width_per_group": args.width_per_group} if args.width_per_group else {}
    return build_encoder_factory(args.arch, **kwargs)(num_classes=128)


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``moco-knn``."""
    p = argparse.ArgumentParser(prog="moco-knn", description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--checkpoint",
        default="",
        help="pretraining checkpoint (.pth), MoCo release or torchvision ResNet-50 file",
    )
    src.add_argument("--random-init", action="store_true", help="evaluate a random-init encoder")
    p.add_argument("--data", required=True, help="root holding train/<class>/ and val/<class>/")
    p.add_argument("--arch", default="resnet50", help="with --random-init: torchvision ResNet")
    p.add_argument(
        "--width-per-group", type=at_least(0), default=0, help="with --random-init (16=thin)"
    )
    p.add_argument(
        "--size", type=at_least(1), default=224, help="center-crop size; use the train size"
    )
    p.add_argument("--k", type=at_least(1), default=20, help="neighbours (20 as in InstDisc)")
    p.add_argument("--t", type=above(0.0), default=0.07, help="temperature of neighbour weights")
    p.add_argument(
        "--batch-size", type=at_least(1), default=256, help="lower it if memory runs out"
    )
    p.add_argument("--workers", type=at_least(0), default=4, help="data loader processes")
    p.add_argument("--device", default="", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random-init encoder")
    return p


@entry_point(interrupted="nothing was written; rerun the same command")
def main(argv=None) -> dict:
    """CLI: weighted kNN top-1 of a pretraining checkpoint (or random init) on an ImageFolder."""
    args = build_parser().parse_args(argv)
    setup_logger(name="evaluation")
    device = select_device(args.device, key="--device")
    problem = split_root_problem(args.data)
    if problem:
        raise FileNotFoundError(problem)
    encoder = _load_encoder(args).to(device)
    acc = knn_accuracy(
        encoder,
        os.path.join(args.data, "train"),
        os.path.join(args.data, "val"),
        size=args.size,
        batch_size=args.batch_size,
        workers=args.workers,
        k=args.k,
        T=args.t,
        device=device,
        keys=("--data train/", "--data val/"),
    )
    result = {"knn_top1": acc, "k": args.k, "T": args.t, "checkpoint": args.checkpoint or None}
    logger.info("kNN top-1: %.4f", acc)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
