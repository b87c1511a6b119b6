"""``python -m demo`` / ``moco-demo``: the whole pipeline on generated data, on CPU.

Everything lands in --output-dir (default output/demo); rerunning the same command after an
interruption continues where it stopped (finished stages and trials are kept).
"""

import argparse
import logging
import os
import sys

from detectron2.utils.logger import setup_logger

from common.cli import at_least
from common.errors import entry_point

from .pipeline import run_demo
from .presets import PRESETS, default_preset_name


@entry_point(
    output="--output-dir",
    interrupted="rerun the same command: finished stages and trials are kept",
)
def main(argv=None) -> int:
    """Parse arguments, run the demo, print the report. Returns 0, or 1 when ``--strict`` and
    a claim does not hold."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--output-dir", default="output/demo", help="all artefacts go here")
    p.add_argument(
        "--preset",
        default=None,
        choices=sorted(PRESETS),
        help="'default' (CPU, about 15 minutes on 2 quiet cores), 'gpu' (one GPU, full-width R50; "
        "the default when CUDA is available), 'smoke' (checks the glue in about a minute; its "
        "numbers mean nothing)",
    )
    p.add_argument(
        "--seeds", type=at_least(0), nargs="+", help="detection trial seeds (default: 3)"
    )
    p.add_argument("--data-seed", type=at_least(0), default=0, help="seed of the generated data")
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit with status 1 if a claim does not hold (kNN, or the AP50 paired-difference "
        "rule of the report)",
    )
    args = p.parse_args(argv)
    args.preset = args.preset or default_preset_name()

    os.makedirs(args.output_dir, exist_ok=True)
    setup_logger(os.path.join(args.output_dir, "demo.log"), name="demo", abbrev_name="demo")
    logging.getLogger("demo").info("preset %r", args.preset)
    report = run_demo(args.output_dir, args.preset, args.seeds, args.data_seed)
    if args.strict and not all(report["claims"].values()):
        logging.getLogger("demo").error("a claim does not hold: %s", report["claims"])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
