"""Command line: ``moco-synth {cls,voc,coco} ROOT [options]`` (also ``python -m synthetic``)."""

from __future__ import annotations

import argparse
import json
import time

from common.cli import at_least
from common.errors import entry_point

from .classification import CLS_CLASSES, make_classification
from .coco import make_coco
from .voc import make_voc


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the generators (sub-commands ``cls``, ``voc`` and ``coco``); each
    option is the generator's keyword argument of the same name."""
    parser = argparse.ArgumentParser(prog="moco-synth", description=__doc__)
    sub = parser.add_subparsers(dest="kind", required=True)
    cls = sub.add_parser("cls", help="ImageFolder classification set (root/train, root/val)")
    cls.set_defaults(make=make_classification)
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
    voc.set_defaults(make=make_voc)
    voc.add_argument("root")
    voc.add_argument("--seed", type=at_least(0), default=0)
    voc.add_argument("--years", nargs="+", default=["2007", "2012"])
    voc.add_argument("--trainval-images", type=at_least(1), default=60, help="per year")
    voc.add_argument("--test-images", type=at_least(1), default=30, help="VOC2007 test only")
    _add_image_args(voc)
    coco = sub.add_parser(
        "coco", help="COCO-format set with boxes and polygon masks (annotations/, train/, val/)"
    )
    coco.set_defaults(make=make_coco)
    coco.add_argument("root")
    coco.add_argument("--seed", type=at_least(0), default=0)
    coco.add_argument("--train-images", type=at_least(1), default=60)
    coco.add_argument("--val-images", type=at_least(1), default=30)
    _add_image_args(coco)
    return parser


def _add_image_args(parser):
    """Image size and object count options shared by the detection sets."""
    parser.add_argument("--min-side", type=at_least(1), default=128)
    parser.add_argument("--max-side", type=at_least(1), default=192)
    parser.add_argument("--max-objects", type=at_least(1), default=4)


@entry_point(output="ROOT", interrupted="the set is incomplete; rerun the same command")
def main(argv=None) -> dict:
    """Parse ``argv`` (default: sys.argv), generate the data set, print and return its summary."""
    kwargs = vars(build_parser().parse_args(argv))
    make, root = kwargs.pop("make"), kwargs.pop("root")
    del kwargs["kind"]
    start = time.perf_counter()
    summary = make(root, **kwargs)
    print(json.dumps(summary, indent=2, sort_keys=True))
    print(f"wrote {root} in {time.perf_counter() - start:.1f} s")
    return summary


if __name__ == "__main__":
    main()
