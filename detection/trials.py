r"""Run several seeded fine-tunes of one detection config and summarise them.

    python -m detection.trials --config-file configs/detection/pascal_voc_R_50_C4_24k_moco.yaml \
        --output-dir output/voc_moco --num-trials 5 --gpus-per-trial 8 MODEL.WEIGHTS moco.pkl

Each trial is ``python -m detection.train_net --resume ... OUTPUT_DIR <out>/trial_<i>_seed_<s>
SEED <s> TRANSFER.TRIAL <i>`` in its own process (own process group), so trials are isolated
and a stopped runner can simply be started again with the same arguments. Trials die with the
runner, also when it is killed with SIGKILL (see ``detection.launchers.LocalLauncher``). Each
trial is locked (``trial_<i>_seed_<s>.lock``, see :class:`TrialLock`) while a runner works on
it, so a second runner on the same trials refuses to start (exit status 2) instead of running
duplicates. On a rerun:

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

import argparse
import collections
import json
import logging
import os
import signal
import sys
import threading
import time

import torch
from detectron2.utils.logger import setup_logger

from common.cli import above, at_least
from common.errors import entry_point
from common.io import atomic_write_json
from common.locks import HEARTBEAT_S, STALE_LOCK_S, LockHeldError, OutputLock
from common.runconfig import ChangedRunError, diff_lines, flatten_config
from common.slurm import add_slurm_args

from .config import load_cfg
from .launchers import LocalLauncher, SlurmLauncher
from .plots import plot_trials
from .progress import StatusDisplay, TrialFiles
from .summary import (
    FINAL_METRICS,
    METRICS,
    REFERENCES,
    EmptySummaryError,
    aggregate,
    format_markdown,
    write_summary,
)

logger = logging.getLogger("detection.trials")
RESERVED_KEYS = ("OUTPUT_DIR", "SEED", "TRANSFER.TRIAL")  # set per trial by the runner
# detectron2 draws a random seed for a negative SEED: such a trial could not be repeated
SEED_WHY = " (a negative SEED makes detectron2 pick a random one)"
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_seeds(num_trials, base_seed=0):
    """Return ``num_trials`` distinct seeds ``base_seed + 1000 * i``. The spacing keeps the
    per-process seeds detectron2 derives (SEED + rank) distinct across trials."""
    return [base_seed + 1000 * i for i in range(num_trials)]


def trial_dir(out_dir, index, seed):
    """Return the output folder of one trial: ``<out_dir>/trial_<index>_seed_<seed>``."""
    return os.path.join(out_dir, f"trial_{index}_seed_{seed}")


class CorruptMetricsError(ValueError):
    """``final_metrics.json`` exists but cannot be read; the message names it and the fix."""


class ChangedConfigError(ChangedRunError):
    """A trial folder was started with another config than this run's; the message names the
    folder, the keys that differ and the fix."""


TRIAL_CONFIG = "trial_config.json"  # the config a trial folder was started with


def comparable_config(cfg):
    """``{"KEY.SUB": value}`` of a config without the keys set per trial (RESERVED_KEYS), as
    written to :data:`TRIAL_CONFIG` (tuples become lists)."""
    flat = flatten_config(cfg)
    for key in RESERVED_KEYS:
        flat.pop(key, None)
    return flat


def check_trial_configs(trials, config):
    """Refuse to continue trials that were started with another config.

    A rerun skips finished trials and resumes started ones, so a rerun with a changed config or
    override would silently mix results of two settings in one summary. Every trial folder that
    holds a :data:`TRIAL_CONFIG` must match ``config`` (from :func:`comparable_config`).

    Raises:
        ChangedConfigError: naming each differing folder and up to 5 keys (old -> new).
    """
    problems = []
    for t in trials:
        path = os.path.join(t["output_dir"], TRIAL_CONFIG)
        if not os.path.exists(path):
            continue
        try:
            with open(path) as f:
                old = json.load(f)
        except (OSError, ValueError) as e:
            problems.append(f"{path}: unreadable ({e})")
            continue
        lines = diff_lines(old, config)
        if lines:
            shown = ", ".join(lines[:5])
            more = f" (+{len(lines) - 5} more)" if len(lines) > 5 else ""
            problems.append(f"{t['output_dir']}: {shown}{more}")
    if problems:
        raise ChangedConfigError(
            "not starting anything: these trials were started with another config, and "
            "continuing them would mix two settings in one summary:\n  "
            + "\n  ".join(problems)
            + "\nUse a new --output-dir for the new setting (or delete those trial folders)."
        )


def write_trial_config(trial, config):
    """Record ``config`` in the trial folder (once, before its first launch)."""
    path = os.path.join(trial["output_dir"], TRIAL_CONFIG)
    if not os.path.exists(path):
        atomic_write_json(path, config, indent=1, sort_keys=True)


def read_final_metrics(output_dir):
    """Return {"AP50", "AP", "AP75"} (box AP) from ``<output_dir>/final_metrics.json``, plus
    {"mask_AP50", "mask_AP", "mask_AP75"} when the results hold ``segm`` (Mask R-CNN), or None
    when the file is missing (an unfinished trial).

    Raises :class:`CorruptMetricsError` when the file exists but is not valid JSON, lacks
    ``results.bbox.{AP50,AP,AP75}`` or has a ``results.segm`` without those three numbers:
    train_net writes it atomically, so such a file was damaged or edited later, and silently
    re-running the trial would hide that.
    """
    path = os.path.join(output_dir, FINAL_METRICS)
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise CorruptMetricsError(f"{path}: cannot be read ({e})") from None
    fix = (
        "Restore it, or delete it to have the runner redo this trial's final evaluation "
        "(it resumes from last_checkpoint, so a finished trial only re-evaluates)."
    )
    try:
        record = json.loads(text)
    except ValueError as e:
        raise CorruptMetricsError(f"{path}: not valid JSON ({e}). {fix}") from None
    try:
        bbox = record["results"]["bbox"]
        metrics = {m: float(bbox[m]) for m in METRICS}
    except (KeyError, TypeError, ValueError) as e:
        raise CorruptMetricsError(
            f"{path}: no numeric results.bbox.{{AP50,AP,AP75}} ({type(e).__name__}: {e}); was "
            f"the trial run without DATASETS.TEST? {fix}"
        ) from None
    if "segm" in record["results"]:
        try:
            segm = record["results"]["segm"]
            metrics.update({f"mask_{m}": float(segm[m]) for m in METRICS})
        except (KeyError, TypeError, ValueError) as e:
            raise CorruptMetricsError(
                f"{path}: results.segm lacks numeric AP50/AP/AP75 ({type(e).__name__}: {e}). {fix}"
            ) from None
    return metrics


def last_checkpoint(output_dir):
    """Return the checkpoint file name recorded in ``<output_dir>/last_checkpoint`` (what
    ``--resume`` will load), or None."""
    try:
        with open(os.path.join(output_dir, "last_checkpoint")) as f:
            return f.read().strip() or None
    except OSError:
        return None


def read_progress(output_dir):
    """Return (iteration, eta_seconds or None) from the last line of ``metrics.json``, or None
    before the first line is written."""
    try:
        with open(os.path.join(output_dir, "metrics.json"), "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            record = json.loads(f.read().decode().strip().splitlines()[-1])
        return int(record["iteration"]), record.get("eta_seconds")
    except (OSError, ValueError, KeyError, IndexError):
        return None


LOCK_SUFFIX = ".lock"  # <out>/trial_<i>_seed_<s>.lock, next to the trial folder
TrialLockError = LockHeldError  # raised when another live runner holds a trial


class TrialLock(OutputLock):
    """Per-trial lock file ``<output_dir>.lock`` so two runners never run one trial.

    It sits next to the trial folder, not in it, so locking does not create the folders of
    trials that have not started; the trial's own ``detection.train_net`` locks
    ``<output_dir>/run.lock``, a different file. The runner passes the descriptor to the trial,
    so a trial that outlived its runner still holds it. The rules are those of
    :class:`common.locks.OutputLock`; a lock of another host is taken over with
    ``--force-unlock``.
    """

    def __init__(self, output_dir):
        """Args: output_dir (str): the trial folder (its parent is created if missing)."""
        super().__init__(
            os.path.normpath(output_dir) + LOCK_SUFFIX,
            kind="runner",
            force_hint="pass --force-unlock",
        )


def lock_trials(trials, force=False, stale_after=STALE_LOCK_S, wait_s=0.0):
    """Lock every trial folder of ``trials``; returns {trial index: TrialLock}.

    All or nothing: when any lock is refused, the ones taken are released and one
    :class:`TrialLockError` lists every refused lock.
    """
    locks, refused = {}, []
    for t in trials:
        lock = TrialLock(t["output_dir"])
        try:
            lock.acquire(force, stale_after, wait_s)
        except TrialLockError as e:
            refused.append(str(e))
            continue
        locks[t["trial"]] = lock
    if refused:
        for lock in locks.values():
            lock.release()
        raise TrialLockError(
            "another runner is working on these trials; not starting anything:\n  "
            + "\n  ".join(refused)
        )
    return locks


def trial_command(config_file, trial, num_gpus, opts):
    """Return the argv that trains one trial (list of str); ``opts`` are KEY VALUE overrides."""
    return [
        sys.executable,
        "-m",
        "detection.train_net",
        "--config-file",
        config_file,
        "--num-gpus",
        str(num_gpus),
        "--resume",
        *opts,
        "OUTPUT_DIR",
        trial["output_dir"],
        "SEED",
        str(trial["seed"]),
        "TRANSFER.TRIAL",
        str(trial["trial"]),
    ]


def trial_env(gpu_ids):
    """Environment of a trial: this one, with the project importable and, when ``gpu_ids`` is
    not None, CUDA_VISIBLE_DEVICES limited to those GPUs."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PROJECT_ROOT, env.get("PYTHONPATH")) if p)
    if gpu_ids is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpu_ids)
    return env


def _log_tail(path, lines=20):
    try:
        with open(path, errors="replace") as f:
            return "".join(collections.deque(f, maxlen=lines))
    except OSError:
        return "(no log)"


def run_trials(
    trials,
    launcher,
    make_command,
    slots,
    retries=1,
    log_period=60.0,
    max_iter=None,
    poll_interval=1.0,
    force_unlock=False,
    stale_lock_s=STALE_LOCK_S,
    lock_wait_s=0.0,
):
    """Run unfinished trials, at most ``len(slots)`` at once, retrying failures.

    Args:
        trials (list[dict]): {"trial", "seed", "output_dir"}; updated in place with "status"
            ("finished" | "failed"), "attempts", "resumed_from" and the metrics.
        launcher: a :mod:`detection.launchers` launcher.
        make_command (callable): trial -> argv.
        slots (list): one entry per concurrent trial: a list of GPU ids or None (no GPU pinning).
        retries (int): extra attempts for a failed trial.
        log_period (float): seconds between progress lines.
        max_iter (int or None): iterations per trial, for the progress percentage.
        force_unlock, stale_lock_s, lock_wait_s: see :meth:`TrialLock.acquire`.

    Returns:
        list[dict]: the trials. KeyboardInterrupt (also raised for SIGTERM by :func:`main`)
        stops the running trials and propagates. Raises :class:`TrialLockError` (nothing
        started) when another runner holds a trial, :class:`CorruptMetricsError` (nothing
        started) when a ``final_metrics.json`` is damaged.
    """
    locks = lock_trials(trials, force_unlock, stale_lock_s, lock_wait_s)
    try:
        return _run_locked(
            trials, launcher, make_command, slots, retries, log_period, max_iter, poll_interval,
            locks,
        )  # fmt: skip
    finally:
        for lock in locks.values():
            lock.release()


def _run_locked(
    trials, launcher, make_command, slots, retries, log_period, max_iter, poll_interval, locks
):
    pending, corrupt = collections.deque(), []
    for t in trials:
        t.setdefault("attempts", 0)
        t.setdefault("resumed_from", [])
        try:
            metrics = read_final_metrics(t["output_dir"])
        except CorruptMetricsError as e:
            corrupt.append(str(e))
            continue
        if metrics:
            t.update(metrics, status="finished")
            logger.info("trial %d (seed %d): finished earlier, skipped", t["trial"], t["seed"])
        else:
            pending.append(t)
    if corrupt:
        raise CorruptMetricsError("not starting anything:\n  " + "\n  ".join(corrupt))
    free, running, last_beat = list(range(len(slots))), {}, time.time()
    display = StatusDisplay(trials, trial_files, len(slots), max_iter, retries + 1, log_period)
    try:
        while pending or running:
            while pending and free:
                slot, t = free.pop(0), pending.popleft()
                os.makedirs(t["output_dir"], exist_ok=True)
                ckpt = last_checkpoint(t["output_dir"])
                if ckpt:
                    t["resumed_from"].append(ckpt)
                t["attempts"] += 1
                logger.info(
                    "trial %d (seed %d): %s (attempt %d/%d)%s",
                    t["trial"],
                    t["seed"],
                    f"resuming from {ckpt}" if ckpt else "starting",
                    t["attempts"],
                    retries + 1,
                    f" on GPUs {slots[slot]}" if slots[slot] is not None else "",
                )
                log_path = os.path.join(t["output_dir"], "train_net.out")
                # The trial inherits its lock, so the lock outlives the runner while it runs.
                extra = {}
                if getattr(launcher, "inherits_fds", False) and t["trial"] in locks:
                    extra["pass_fds"] = (locks[t["trial"]].fd,)
                handle = launcher.start(make_command(t), trial_env(slots[slot]), log_path, **extra)
                running[slot] = (t, handle, time.time())
            for slot, (t, handle, _) in list(running.items()):
                rc = launcher.poll(handle)
                if rc is None:
                    continue
                del running[slot]
                free.append(slot)
                try:
                    metrics = read_final_metrics(t["output_dir"])
                except CorruptMetricsError as e:
                    logger.error("trial %d (seed %d): %s", t["trial"], t["seed"], e)
                    metrics = None
                if rc == 0 and metrics:
                    t.update(metrics, status="finished")
                    logger.info("trial %d (seed %d): finished %s", t["trial"], t["seed"], metrics)
                    continue
                log_path = os.path.join(t["output_dir"], "train_net.out")
                logger.error(
                    "trial %d (seed %d) failed (exit status %s%s). End of %s:\n%s",
                    t["trial"],
                    t["seed"],
                    rc,
                    "" if rc else ", but no bbox AP50/AP/AP75 in final_metrics.json",
                    log_path,
                    _log_tail(log_path),
                )
                if t["attempts"] <= retries:
                    logger.warning("trial %d: retrying, resuming if it checkpointed", t["trial"])
                    pending.appendleft(t)
                else:
                    t["status"] = "failed"
            if time.time() - last_beat >= HEARTBEAT_S:
                last_beat = time.time()
                for lock in locks.values():
                    lock.heartbeat()
            display.update({t["trial"]: started for t, _, started in running.values()})
            time.sleep(poll_interval if running else 0)
    except KeyboardInterrupt:
        logger.warning("Interrupted: stopping %d running trial(s); rerun to resume", len(running))
        for _, handle, _ in running.values():
            launcher.stop(handle)
        raise
    finally:
        display.close()
    return trials


def trial_files(output_dir):
    """What a trial's files say, for the status display (:class:`detection.progress.TrialFiles`):
    iterations done and detectron2's ETA (last ``metrics.json`` line), ``last_checkpoint``, and
    the final evaluation's duration, from ``last_checkpoint`` (written with the final
    checkpoint, right before the evaluation) to ``final_metrics.json``."""
    progress = read_progress(output_dir)
    try:
        eval_s = os.path.getmtime(os.path.join(output_dir, FINAL_METRICS)) - os.path.getmtime(
            os.path.join(output_dir, "last_checkpoint")
        )
    except OSError:
        eval_s = None
    return TrialFiles(
        iteration=progress[0] + 1 if progress else None,
        eta_s=progress[1] if progress else None,
        checkpoint=last_checkpoint(output_dir),
        eval_s=eval_s if eval_s is None or eval_s >= 0 else None,
        log=os.path.join(output_dir, "train_net.out"),
    )


def visible_gpus():
    """Return the GPU ids this process may hand out: CUDA_VISIBLE_DEVICES if set, else
    0..torch.cuda.device_count()-1 (empty without CUDA)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    return list(range(torch.cuda.device_count()))


def make_slots(gpus, gpus_per_trial):
    """Split ``gpus`` into groups of ``gpus_per_trial`` (leftovers unused); one group per
    concurrent trial. Without GPUs, one slot with no pinning (trials run one after another)."""
    if not gpus:
        return [None]
    if len(gpus) < gpus_per_trial:
        raise ValueError(f"{gpus_per_trial} GPUs per trial requested, {len(gpus)} visible")
    n = len(gpus) // gpus_per_trial
    return [list(gpus[i * gpus_per_trial : (i + 1) * gpus_per_trial]) for i in range(n)]


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
        run_trials(
            trials,
            launcher,
            command,
            slots,
            args.retries,
            args.log_period,
            cfg.SOLVER.MAX_ITER,
            force_unlock=args.force_unlock,
            stale_lock_s=args.stale_lock_s,
            lock_wait_s=args.lock_wait_s,
        )
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
