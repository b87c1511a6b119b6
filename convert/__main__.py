"""``moco-convert`` / ``python -m convert``: checkpoint -> detectron2 ``.pkl`` (or ``.pth``).

Example::

    python -m convert output/pretrain/last.pth output/r50_moco.pkl
    python -m convert moco_v2_800ep_pretrain.pth.tar r50_moco.pkl          # reference release
    python -m convert resnet50-0676ba61.pth r50_supervised.pkl             # torchvision
    python -m convert simclr.pth r50.pkl --prefix module.encoder.          # other layouts
    python -m convert last.pth r50_moco.pkl --overwrite                    # replace r50_moco.pkl

The output is written to a temporary file in its folder, fsynced and renamed into place, so a
kill leaves the old output or the new one, never a partial file. The input is never written.
"""

from __future__ import annotations

from common.known_warnings import filter_known_warnings

filter_known_warnings()  # before detectron2 is imported: it warns while importing

import argparse
import logging
import os
import sys

from detectron2.utils.logger import setup_logger

from common.errors import entry_point
from common.io import OutputExistsError

from .converter import convert_checkpoint, save_detectron2_pkl, save_torchvision_pth
from .formats import FORMATS, load_checkpoint_file

logger = logging.getLogger("convert")


def build_parser() -> argparse.ArgumentParser:
    """The converter's argument parser."""
    p = argparse.ArgumentParser(
        prog="moco-convert",
        description="Convert a MoCo / torchvision ResNet-50 checkpoint to a Detectron2 R50-C4 "
        "backbone (.pkl for MODEL.WEIGHTS) or a torchvision-named backbone (.pth).",
    )
    p.add_argument("input", help="checkpoint file (local path or iopath URI)")
    p.add_argument(
        "output",
        help="'.pkl': detectron2 weights for MODEL.WEIGHTS; '.pth'/'.pt': the query backbone "
        "with torchvision names (no fc) for other frameworks",
    )
    p.add_argument(
        "--format",
        default="auto",
        choices=FORMATS,
        help="input format; 'auto' recognises this project's pretraining checkpoints by their "
        "'format' tag, the reference MoCo release by 'module.encoder_q.' keys and anything "
        "else as a torchvision state dict. Only override when detection guesses wrong.",
    )
    p.add_argument(
        "--prefix",
        default=None,
        help="key prefix of the encoder to keep, e.g. 'module.encoder.' or 'backbone.'; needed "
        "when the checkpoint was not written by MoCo or torchvision (the error lists the "
        "prefixes it saw)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing output file (it is replaced atomically: a kill during the "
        "write leaves the old file, never half a file)",
    )
    return p


def _same_file(a: str, b: str) -> bool:
    """Whether paths ``a`` and ``b`` name the same file (also through links)."""
    if os.path.abspath(a) == os.path.abspath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist (or is not local): cannot be the same file
        return False


@entry_point(output="the output path", interrupted="the output file is unchanged; rerun")
def main(argv: list[str] | None = None) -> int:
    """Run the converter; returns 0, or exits (status 2) with a last line naming the file and
    the fix (:func:`common.errors.entry_point`)."""
    args = build_parser().parse_args(argv)
    setup_logger(name="convert", abbrev_name="convert")
    if not args.output.endswith((".pkl", ".pth", ".pt")):
        raise ValueError(f"{args.output}: output must end in .pkl (detectron2) or .pth/.pt")
    if _same_file(args.input, args.output):
        raise ValueError(
            f"output {args.output} is the input {args.input}; converting in place would "
            "destroy the checkpoint. Choose another output file."
        )
    if not args.overwrite and os.path.lexists(args.output):
        raise OutputExistsError(f"{args.output} exists; pass --overwrite to replace it")
    obj = load_checkpoint_file(args.input)
    result = convert_checkpoint(obj, fmt=args.format, prefix=args.prefix, where=args.input)
    if args.output.endswith(".pkl"):
        save_detectron2_pkl(result.model, args.output, overwrite=args.overwrite)
    else:
        save_torchvision_pth(result.extracted.backbone, args.output, overwrite=args.overwrite)
    logger.info("%s -> %s\n%s", args.input, args.output, result.report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
