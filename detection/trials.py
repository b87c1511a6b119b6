r"""Run several seeded fine-tunes of one detection config and summarise them.

    python -m detection.trials --config-file configs/detection/pascal_voc_R_50_C4_24k_moco.yaml \
        --output-dir output/voc_moco --num-trials 5 --gpus-per-trial 8 MODEL.WEIGHTS moco.pkl

Each trial is ``python -m detection.train_net --resume ... OUTPUT_DIR <out>/trial_<i>_seed_<s>
SEED <s> TRANSFER.TRIAL <i>`` in its own process (own process group), so trials are isolated
and a stopped runner can simply be started again with the same arguments:

- a trial with ``final_metrics.json`` is finished and skipped;
- a trial with a ``last_checkpoint`` resumes from it (detectron2's ``--resume``);
- a trial that fails is reported with the end of its log and retried once (``--retries``),
  resuming from its last checkpoint; if it fails again it is listed as failed in the summary
  and the runner exits with status 1.

Trials run one after another, or several at once when more GPUs are visible than one trial
needs (``--gpus-per-trial``; each trial gets its own CUDA_VISIBLE_DEVICES). With ``--slurm``
every trial is one SLURM job submitted through submitit (``pip install '.[slurm]'``), all
submitted at once. The end result is ``summary.json``, ``summary.csv`` and ``summary.md`` in
``--output-dir``: per-trial AP50/AP/AP75, mean ± sample std (ddof=1) and the difference to a
published reference (``--reference``, see ``detection.summary.REFERENCES``).
"""

import argparse
import collections
import datetime
import json
import logging
import os
import signal
import sys
import threading
import time

from detectron2.utils.logger import setup_logger

from detection.summary import METRICS, REFERENCES, aggregate, format_markdown, write_summary

logger = logging.getLogger("detection.trials")
RESERVED_KEYS = ("OUTPUT_DIR", "SEED", "TRANSFER.TRIAL")  # set per trial by the runner
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_seeds(num_trials, base_seed=0):
    """Return ``num_trials`` distinct seeds ``base_seed + 1000 * i``. The spacing keeps the
    per-process seeds detectron2 derives (SEED + rank) distinct across trials."""
    return [base_seed + 1000 * i for i in range(num_trials)]


def trial_dir(out_dir, index, seed):
    """Return the output folder of one trial: ``<out_dir>/trial_<index>_seed_<seed>``."""
    return os.path.join(out_dir, f"trial_{index}_seed_{seed}")


def read_final_metrics(output_dir):
    """Return {"AP50", "AP", "AP75"} from ``<output_dir>/final_metrics.json``, or None when the
    file is missing or holds no bbox results (an unfinished or failed trial)."""
    path = os.path.join(output_dir, "final_metrics.json")
    try:
        with open(path) as f:
            bbox = json.load(f)["results"]["bbox"]
        return {m: float(bbox[m]) for m in METRICS}
    except (OSError, ValueError, KeyError, TypeError):
        return None


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

    Returns:
        list[dict]: the trials. KeyboardInterrupt (also raised for SIGTERM by :func:`main`)
        stops the running trials and propagates.
    """
    pending = collections.deque()
    for t in trials:
        t.setdefault("attempts", 0)
        t.setdefault("resumed_from", [])
        metrics = read_final_metrics(t["output_dir"])
        if metrics:
            t.update(metrics, status="finished")
            logger.info("trial %d (seed %d): finished earlier, skipped", t["trial"], t["seed"])
        else:
            pending.append(t)
    free, running, last_log = list(range(len(slots))), {}, 0.0
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
                handle = launcher.start(make_command(t), trial_env(slots[slot]), log_path)
                running[slot] = (t, handle, time.time())
            for slot, (t, handle, _) in list(running.items()):
                rc = launcher.poll(handle)
                if rc is None:
                    continue
                del running[slot]
                free.append(slot)
                metrics = read_final_metrics(t["output_dir"])
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
            if running and time.time() - last_log >= log_period:
                last_log = time.time()
                for t, _, started in running.values():
                    logger.info("%s", _progress_line(t, started, max_iter))
            time.sleep(poll_interval if running else 0)
    except KeyboardInterrupt:
        logger.warning("Interrupted: stopping %d running trial(s); rerun to resume", len(running))
        for _, handle, _ in running.values():
            launcher.stop(handle)
        raise
    return trials


def _progress_line(t, started, max_iter):
    head = f"trial {t['trial']} (seed {t['seed']}):"
    elapsed = datetime.timedelta(seconds=int(time.time() - started))
    progress = read_progress(t["output_dir"])
    if progress is None:
        return f"{head} running, no metrics.json line yet, {elapsed} elapsed"
    it, eta = progress
    total = f"/{max_iter} ({100.0 * (it + 1) / max_iter:.0f}%)" if max_iter else ""
    eta = f", eta {datetime.timedelta(seconds=int(eta))}" if eta is not None else ""
    return f"{head} iter {it + 1}{total}{eta}, {elapsed} elapsed"


def visible_gpus():
    """Return the GPU ids this process may hand out: CUDA_VISIBLE_DEVICES if set, else
    0..torch.cuda.device_count()-1 (empty without CUDA)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    import torch

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
    p.add_argument("--num-trials", type=int, default=5, help="the papers report 5")
    p.add_argument("--base-seed", type=int, default=0, help="seeds are base + 1000 * i")
    p.add_argument("--seeds", type=int, nargs="+", help="explicit seeds (sets --num-trials)")
    p.add_argument(
        "--gpus-per-trial",
        type=int,
        default=1,
        help="--num-gpus of each trial; more visible GPUs run trials in parallel",
    )
    p.add_argument("--retries", type=int, default=1, help="extra attempts for a failed trial")
    p.add_argument(
        "--reference",
        default=None,
        help=f"published result to compare with, one of {sorted(REFERENCES)} or "
        "'none'; default: the config's TRANSFER.REFERENCE",
    )
    p.add_argument("--log-period", type=float, default=60.0, help="seconds between progress lines")
    s = p.add_argument_group("SLURM (submitit; pip install '.[slurm]')")
    s.add_argument("--slurm", action="store_true", help="submit one job per trial")
    s.add_argument("--slurm-partition", default="")
    s.add_argument("--slurm-constraint", default="")
    s.add_argument("--slurm-timeout-min", type=int, default=4320)
    s.add_argument("--slurm-cpus-per-gpu", type=int, default=10)
    s.add_argument("--slurm-mem-gb", type=int, default=0)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p


def _load_cfg(config_file, opts):
    from detectron2.config import get_cfg

    from detection.config import add_moco_detection_config

    cfg = get_cfg()
    add_moco_detection_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(opts)
    return cfg


def main(argv=None):
    """Command-line entry point (``moco-trials``). Returns the exit status: 0 when every trial
    finished, 1 when one failed twice, 130 when interrupted."""
    args = build_parser().parse_args(argv)
    opts = [o for o in args.opts if o != "--"]
    clash = [k for k in opts[::2] if k in RESERVED_KEYS]
    if clash:
        raise SystemExit(f"{clash} are set per trial by the runner; remove them from the overrides")
    os.makedirs(args.output_dir, exist_ok=True)
    setup_logger(output=os.path.join(args.output_dir, "trials.log"), name="detection")
    config_file = os.path.abspath(args.config_file)
    cfg = _load_cfg(config_file, opts)  # fails early on a bad config or override
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
        from detection.launchers import SlurmLauncher

        launcher = SlurmLauncher(
            os.path.join(out_dir, "slurm"),
            args.gpus_per_trial,
            args.slurm_partition,
            args.slurm_timeout_min,
            args.slurm_cpus_per_gpu,
            args.slurm_mem_gb,
            args.slurm_constraint,
        )
        slots = [None] * len(trials)  # SLURM places the jobs
    else:
        from detection.launchers import LocalLauncher

        launcher, slots = LocalLauncher(), make_slots(visible_gpus(), args.gpus_per_trial)

    def command(t):
        return trial_command(config_file, t, args.gpus_per_trial, opts)

    # SIGTERM stops the running trials like Ctrl-C (signals can only be set in the main thread).
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler) if in_main else None
    try:
        run_trials(
            trials, launcher, command, slots, args.retries, args.log_period, cfg.SOLVER.MAX_ITER
        )
    except KeyboardInterrupt:
        return 130
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    summary = aggregate(trials, reference)
    summary.update(config_file=config_file, overrides=opts)
    paths = write_summary(out_dir, summary)
    logger.info("Summary (%s):\n%s", paths["md"], format_markdown(summary))
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
