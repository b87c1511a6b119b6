r"""Run several seeded fine-tunes of one detection config and summarise them.

    python -m detection.trials --config-file configs/detection/pascal_voc_R_50_C4_24k_moco.yaml \
        --output-dir output/voc_moco --num-trials 5 --gpus-per-trial 8 MODEL.WEIGHTS moco.pkl

Each trial is ``python -m detection.train_net --resume ... OUTPUT_DIR <out>/trial_<i>_seed_<s>
SEED <s> TRANSFER.TRIAL <i>`` in its own process (own process group), so trials are isolated
and a stopped runner can simply be started again with the same arguments. Trials die with the
runner, also when it is killed with SIGKILL (see ``detection.launchers.LocalLauncher``). Each
trial is locked (``trial_<i>_seed_<s>.lock``, see :mod:`detection.trial_locks`) while a runner
works on it, so a second runner on the same trials refuses to start (exit status 2) instead of
running duplicates. On a rerun:

- a trial with ``final_metrics.json`` is finished and skipped; a damaged one is reported (exit
  status 2, nothing started) rather than silently re-evaluated;
- a trial with a ``last_checkpoint`` resumes from it (detectron2's ``--resume``);
- a trial folder started with another config or overrides (its ``trial_config.json``, written
  at its first launch, differs) stops the rerun (exit status 2, nothing started), naming the
  keys that changed, instead of mixing two settings in one summary;
- a trial that fails is reported with the end of its log and retried once (``--retries``),
  resuming from its last checkpoint; if it fails again it is listed as failed in the summary
  and the runner exits with status 1.

Trials run one after another, or several at once when more GPUs are visible than one trial
needs (``--gpus-per-trial``; each trial gets its own CUDA_VISIBLE_DEVICES). With ``--slurm``
every trial is one SLURM job submitted through submitit, all submitted at once; Ctrl-C or
SIGTERM cancels them, and a rerun adopts the jobs of a runner that was killed instead of
submitting them again. The end result is ``summary.json``, ``summary.csv`` and ``summary.md`` in
``--output-dir``: per-trial AP50/AP/AP75, mean ± sample std (ddof=1) and the difference to a
published reference (``--reference``, see ``detection.summary.REFERENCES``).
"""

from common.known_warnings import filter_known_warnings

filter_known_warnings()  # before detectron2 is imported: it warns while importing
# The command line only: scheduling in detection.scheduler, trial folders (config record,
# results, progress) in detection.trial_folders, locks in detection.trial_locks.

import argparse
import logging
import os
import signal
import sys
import threading

from detectron2.utils.logger import setup_logger

from common.cli import above, at_least
from common.errors import entry_point
from common.locks import STALE_LOCK_S
from common.slurm import add_slurm_args

from .config import load_cfg
from .launchers import LocalLauncher, SlurmLauncher
from .plots import plot_trials
from .scheduler import TrialOptions, make_slots, run_trials, trial_command, visible_gpus
from .summary import REFERENCES, EmptySummaryError, aggregate, format_markdown, write_summary
from .trial_folders import (
    RESERVED_KEYS,
    ChangedConfigError,
    CorruptMetricsError,
    check_trial_configs,
    comparable_config,
    trial_dir,
    write_trial_config,
)
from .trial_locks import TrialLockError

logger = logging.getLogger("detection.trials")
# detectron2 draws a random seed for a negative SEED: such a trial could not be repeated
SEED_WHY = " (a negative SEED makes detectron2 pick a random one)"


def make_seeds(num_trials, base_seed=0):
    """Return ``num_trials`` distinct seeds ``base_seed + 1000 * i``. The spacing keeps the
    per-process seeds detectron2 derives (SEED + rank) distinct across trials."""
    return [base_seed + 1000 * i for i in range(num_trials)]


def build_parser():
    """The ``moco-trials`` argument parser."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config-file", required=True, help="detection config (configs/detection)")
    p.add_argument("--output-dir", required=True, help="trial folders and summary go here")
    p.add_argument("--num-trials", type=at_least(1), default=5, help="the papers report 5")
    p.add_argument(
        "--base-seed", type=at_least(0, why=SEED_WHY), default=0, help="seeds are base + 1000 * i"
    )
    p.add_argument(
        "--seeds",
        type=at_least(0, why=SEED_WHY),
        nargs="+",
        help="explicit seeds (sets --num-trials)",
    )
    p.add_argument(
        "--gpus-per-trial",
        type=at_least(1),
        default=1,
        help="--num-gpus of each trial; more visible GPUs run trials in parallel",
    )
    p.add_argument(
        "--retries", type=at_least(0), default=1, help="extra attempts for a failed trial (0: none)"
    )
    p.add_argument(
        "--reference",
        default=None,
        help=f"published result to compare with, one of {sorted(REFERENCES)} or "
        "'none'; default: the config's TRANSFER.REFERENCE",
    )
    p.add_argument(
        "--log-period",
        type=above(0.0),
        default=60.0,
        help="seconds between the status lines when stdout is not a terminal (a terminal "
        "shows them in place, redrawn every second)",
    )
    p.add_argument(
        "--force-unlock",
        action="store_true",
        help="take over trial locks written by a runner on another host that still look live "
        "(heartbeat younger than --stale-lock-s); locks of live runners on this host are "
        "never taken over",
    )
    p.add_argument(
        "--stale-lock-s",
        type=above(0.0),
        default=STALE_LOCK_S,
        help="a lock from another host without heartbeat for this long is stale",
    )
    p.add_argument(
        "--lock-wait-s",
        type=at_least(0.0, float),
        default=10.0,
        help="wait this long for a locked trial (e.g. a runner just stopped) before refusing",
    )
    # --slurm: one job per trial (detection.launchers.SlurmLauncher)
    add_slurm_args(p, cpus_help="CPUs per GPU of a trial (per trial with MODEL.DEVICE cpu)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p


@entry_point(
    output="--output-dir",
    interrupted="rerun the same command: finished trials are kept, the others resume",
)
def main(argv=None):
    """Command-line entry point (``moco-trials``). Returns the exit status: 0 when every trial
    finished, 1 when one failed twice (no summary is written when none finished), 2 when nothing
    was started (a trial is locked by another live runner, or a ``final_metrics.json`` is
    damaged), 130 when interrupted."""
    args = build_parser().parse_args(argv)
    opts = [o for o in args.opts if o != "--"]
    clash = [k for k in opts[::2] if k in RESERVED_KEYS]
    if clash:
        raise SystemExit(f"{clash} are set per trial by the runner; remove them from the overrides")
    os.makedirs(args.output_dir, exist_ok=True)
    setup_logger(output=os.path.join(args.output_dir, "trials.log"), name="detection")
    config_file = os.path.abspath(args.config_file)
    cfg = load_cfg(config_file, opts)  # fails early on a bad config or override
    reference = cfg.TRANSFER.REFERENCE if args.reference is None else args.reference
    reference = None if reference in ("", "none") else reference
    if reference and reference not in REFERENCES:
        raise SystemExit(f"unknown --reference {reference!r}; choose from {sorted(REFERENCES)}")
    seeds = args.seeds or make_seeds(args.num_trials, args.base_seed)
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"seeds must be distinct, got {seeds}")
    out_dir = os.path.abspath(args.output_dir)
    trials = [
        {"trial": i, "seed": s, "output_dir": trial_dir(out_dir, i, s)} for i, s in enumerate(seeds)
    ]
    if args.slurm:
        gpus = 0 if cfg.MODEL.DEVICE == "cpu" else args.gpus_per_trial
        launcher = SlurmLauncher(os.path.join(out_dir, "slurm"), args, gpus)
        slots = [None] * len(trials)  # SLURM places the jobs
    else:
        launcher, slots = LocalLauncher(), make_slots(visible_gpus(), args.gpus_per_trial)

    config = comparable_config(cfg)

    def command(t):  # called when a trial is launched
        write_trial_config(t, config)
        return trial_command(config_file, t, args.gpus_per_trial, opts)

    # SIGTERM stops the running trials like Ctrl-C (signals can only be set in the main thread).
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler) if in_main else None
    try:
        check_trial_configs(trials, config)
        options = TrialOptions(
            slots=slots,
            retries=args.retries,
            log_period=args.log_period,
            max_iter=cfg.SOLVER.MAX_ITER,
            force_unlock=args.force_unlock,
            stale_lock_s=args.stale_lock_s,
            lock_wait_s=args.lock_wait_s,
        )
        run_trials(trials, launcher, command, options)
    except KeyboardInterrupt:
        return 130
    except (TrialLockError, CorruptMetricsError, ChangedConfigError) as e:
        logger.error("%s", e)
        return 2
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    summary = aggregate(trials, reference)
    summary.update(config_file=config_file, overrides=opts)
    # only from finished trials: a run that finished nothing leaves an earlier summary alone
    figure = None
    if summary.get("num_finished"):
        figure = plot_trials(summary, os.path.join(out_dir, "trials.png"))
    try:
        paths = write_summary(out_dir, summary, figure)
    except EmptySummaryError as e:
        logger.error("%s", e)
        return 1
    logger.info("Summary (%s):\n%s", paths["md"], format_markdown(summary))
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
