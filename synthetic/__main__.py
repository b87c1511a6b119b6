"""Command line: ``moco-synth {cls,voc} ROOT [options]`` (also ``python -m synthetic``)."""

from __future__ import annotations

import argparse
import json
import time

from common.cli import at_least

from .classification import CLS_CLASSES, make_classification
from .voc import make_voc


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for both generators (sub-commands ``cls`` and ``voc``)."""
    parser = argparse.ArgumentParser(prog="moco-synth", description=__doc__)
    sub = parser.add_subparsers(dest="kind", required=True)
    cls = sub.add_parser("cls", help="ImageFolder classification set (root/train, root/val)")
    cls.add_argument("root")
    cls.add_argument("--seed", type=at_least(0), default=0)
    cls.add_argument("--num-classes", type=at_least(1), default=len(CLS_CLASSES))
    cls.add_argument("--train-per-class", type=at_least(1), default=100)
    cls.add_argument("--val-per-class", type=at_least(1), default=25)
    cls.add_argument(
        "--image-size",
        type=at_least(16),
        default=64,
        help="square side in pixels; 64 leaves 2x2 res5 maps with the ImageNet stem",
    )
    cls.add_argument(
        "--clutter", type=at_least(0), default=4, help="background distractors per image"
    )
    voc = sub.add_parser("voc", help="PASCAL-VOC-format detection set (VOC2007, VOC2012)")
    voc.add_argument("root")
    voc.add_argument("--seed", type=at_least(0), default=0)
    voc.add_argument("--years", nargs="+", default=["2007", "2012"])
    voc.add_argument("--trainval-images", type=at_least(1), default=60, help="per year")
    voc.add_argument("--test-images", type=at_least(1), default=30, help="VOC2007 test only")
    voc.add_argument("--min-side", type=at_least(1), default=128)
    voc.add_argument("--max-side", type=at_least(1), default=192)
    voc.add_argument("--max-objects", type=at_least(1), default=4)
    return parser


def main(argv=None) -> dict:
    """Parse ``argv`` (default: sys.argv), generate the data set, print and return its summary."""
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    if args.kind == "cls":
        summary = make_classification(
            args.root,
            seed=args.seed,
            num_classes=args.num_classes,
            train_per_class=args.train_per_class,
            val_per_class=args.val_per_class,
            image_size=args.image_size,
            clutter=args.clutter,
        )
    else:
        summary = make_voc(
            args.root,
            seed=args.seed,
            years=tuple(args.years),
            trainval_images=args.trainval_images,
            test_images=args.test_images,
            min_side=args.min_side,
            max_side=args.max_side,
            max_objects=args.max_objects,
        )
    print(json.dumps(summary, indent=2, sort_keys=True))
    print(f"wrote {args.root} in {time.perf_counter() - start:.1f} s")
    return summary


if __name__ == "__main__":
    main()
