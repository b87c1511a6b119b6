"""``python -m demo`` / ``moco-demo``: the whole pipeline on generated data, on CPU.

Everything lands in --output-dir (default output/demo); rerunning the same command after an
interruption continues where it stopped (finished stages and trials are kept). The terminal
shows one progress line and one result line per stage; each stage's own output is in
<output-dir>/logs/<stage>.log (--verbose shows it as well).
"""

from common.known_warnings import filter_known_warnings

filter_known_warnings()  # first: the stages import detectron2, which warns while importing

import argparse
import shlex
import sys

from common.cli import at_least
from common.errors import entry_point

from .presets import PRESETS, default_preset_name


@entry_point(
    output="--output-dir",
    interrupted="rerun the same command: finished stages and trials are kept",
)
def main(argv=None) -> int:
    """Parse arguments, run the demo, print the report. Returns 0; 1 when a stage failed
    (its log's last lines are printed) or, with ``--strict``, when a claim does not hold."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--output-dir", default="output/demo", help="all artefacts go here")
    p.add_argument(
        "--preset",
        default=None,
        choices=sorted(PRESETS),
        help="'default' (CPU, about 25 minutes on 2 quiet cores), 'gpu' (one GPU, full-width R50; "
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
    p.add_argument(
        "--verbose",
        action="store_true",
        help="also print everything the stages log (it always goes to <output-dir>/logs)",
    )
    args = p.parse_args(argv)
    args.preset = args.preset or default_preset_name()
    from .pipeline import run_demo  # imports torch: after --help and argument errors

    rerun = shlex.join(["python", "-m", "demo", *(sys.argv[1:] if argv is None else argv)])
    # A failing stage prints the end of its log (demo.pipeline.StageRunner); entry_point then
    # ends with the one `error:` line and the exit status (130 after Ctrl-C).
    report = run_demo(
        args.output_dir,
        args.preset,
        args.seeds,
        args.data_seed,
        verbose=args.verbose,
        rerun_hint=f"`{rerun}`",
    )
    if args.strict and not all(report["claims"].values()):
        failed = [name for name, holds in report["claims"].items() if not holds]
        print(f"--strict: claim(s) {failed} do not hold (see the report); exit status 1")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
