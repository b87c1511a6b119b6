"""The trial runner's scheduler: start the unfinished trials on free slots, reap the ones that
ended, retry failures, keep the locks alive.

:func:`run_trials` locks the trials (:mod:`detection.trial_locks`), then a
:class:`TrialScheduler` ticks until every trial finished or failed: each tick starts the
waiting trials on free slots (:meth:`TrialScheduler.start_ready`), records the ones that ended
(:meth:`TrialScheduler.reap_finished`: finished with ``final_metrics.json``, or failed and
queued again while retries are left) and refreshes the locks' heartbeat. A slot is a group of
GPUs (``CUDA_VISIBLE_DEVICES`` of its trial, :func:`make_slots`) or, without GPUs or under
SLURM, a place for one trial. Each trial is ``python -m detection.train_net --resume ...``
(:func:`trial_command`) started by a launcher (:mod:`detection.launchers`).
"""

import collections
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from common.locks import HEARTBEAT_S, STALE_LOCK_S

from .progress import StatusDisplay
from .trial_folders import CorruptMetricsError, last_checkpoint, read_final_metrics, trial_files
from .trial_locks import lock_trials

logger = logging.getLogger("detection.trials")
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class TrialOptions:
    """How :func:`run_trials` runs the trials.

    ``slots``: one entry per concurrent trial, a list of GPU ids or None (no GPU pinning);
    ``retries``: extra attempts for a failed trial; ``log_period``: seconds between status lines
    when stdout is not a terminal; ``max_iter``: iterations per trial, for the progress
    percentage; ``poll_interval``: seconds between polls of the running trials;
    ``force_unlock``, ``stale_lock_s``, ``lock_wait_s``: see
    :meth:`common.locks.OutputLock.acquire`.
    """

    slots: Sequence = (None,)
    retries: int = 1
    log_period: float = 60.0
    max_iter: Optional[int] = None
    poll_interval: float = 1.0
    force_unlock: bool = False
    stale_lock_s: float = STALE_LOCK_S
    lock_wait_s: float = 0.0


def run_trials(trials, launcher, make_command, options: TrialOptions = TrialOptions()):
    """Run the unfinished ``trials``, at most ``len(options.slots)`` at once, retrying failures.

    Args:
        trials (list[dict]): {"trial", "seed", "output_dir"}; updated in place with "status"
            ("finished" | "failed"), "attempts", "resumed_from" and the metrics.
        launcher: a :mod:`detection.launchers` launcher.
        make_command (callable): trial -> argv.
        options (TrialOptions): slots, retries, status lines, polling and lock rules.

    Returns:
        list[dict]: the trials. KeyboardInterrupt (also raised for SIGTERM by the CLI) stops
        the running trials and propagates. Raises :class:`detection.trial_locks.TrialLockError`
        (nothing started) when another runner holds a trial,
        :class:`detection.trial_folders.CorruptMetricsError` (nothing started) when a
        ``final_metrics.json`` is damaged.
    """
    o = options
    locks = lock_trials(trials, o.force_unlock, o.stale_lock_s, o.lock_wait_s)
    try:
        TrialScheduler(trials, launcher, make_command, options, locks).run()
    finally:
        for lock in locks.values():
            lock.release()
    return trials


class TrialScheduler:
    """Trials waiting, running (one per slot) and done, and the steps that move them.

    Built from the trial records (see :func:`run_trials`): finished trials are marked so and
    skipped, the others wait. ``locks`` ({trial index: lock}) are heartbeaten while the
    scheduler runs and handed to the trials when the launcher can pass descriptors on, so a
    trial that outlives its runner still holds its lock. Raises
    :class:`detection.trial_folders.CorruptMetricsError` naming every damaged
    ``final_metrics.json`` before anything starts.
    """

    def __init__(self, trials, launcher, make_command, options: TrialOptions, locks=None):
        self.trials, self.launcher, self.make_command = trials, launcher, make_command
        self.options, self.locks = options, locks or {}
        self.pending = collections.deque(_unfinished(trials))
        self.free = list(range(len(options.slots)))
        self.running = {}  # slot -> (trial, launcher handle, start time)
        self._last_beat = time.time()

    def start_ready(self) -> None:
        """Start waiting trials while slots are free (a retried trial first)."""
        while self.pending and self.free:
            self._start(self.free.pop(0), self.pending.popleft())

    def reap_finished(self) -> None:
        """Record the running trials that ended and free their slots: finished (exit status 0
        and AP in ``final_metrics.json``), else queued again while retries are left, else
        failed."""
        for slot, (t, handle, _) in list(self.running.items()):
            rc = self.launcher.poll(handle)
            if rc is None:
                continue
            del self.running[slot]
            self.free.append(slot)
            self._record(t, rc)

    def tick(self) -> None:
        """One round: start what can start, reap what ended, refresh the locks' heartbeat."""
        self.start_ready()
        self.reap_finished()
        if time.time() - self._last_beat >= HEARTBEAT_S:
            self._last_beat = time.time()
            for lock in self.locks.values():
                lock.heartbeat()

    def run(self) -> None:
        """Tick until no trial waits or runs, showing the status lines; on KeyboardInterrupt
        stop the running trials and re-raise."""
        o = self.options
        display = StatusDisplay(
            self.trials, trial_files, len(o.slots), o.max_iter, o.retries + 1, o.log_period
        )
        try:
            while self.pending or self.running:
                self.tick()
                display.update({t["trial"]: started for t, _, started in self.running.values()})
                time.sleep(o.poll_interval if self.running else 0)
        except KeyboardInterrupt:
            logger.warning(
                "Interrupted: stopping %d running trial(s); rerun to resume", len(self.running)
            )
            for _, handle, _ in self.running.values():
                self.launcher.stop(handle)
            raise
        finally:
            display.close()

    def _start(self, slot: int, t: dict) -> None:
        gpus = self.options.slots[slot]
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
            self.options.retries + 1,
            f" on GPUs {gpus}" if gpus is not None else "",
        )
        log_path = os.path.join(t["output_dir"], "train_net.out")
        # The trial inherits its lock, so the lock outlives the runner while it runs.
        extra = {}
        if self.launcher.inherits_fds and t["trial"] in self.locks:
            extra["pass_fds"] = (self.locks[t["trial"]].fd,)
        handle = self.launcher.start(self.make_command(t), trial_env(gpus), log_path, **extra)
        self.running[slot] = (t, handle, time.time())

    def _record(self, t: dict, rc: int) -> None:
        try:
            metrics = read_final_metrics(t["output_dir"])
        except CorruptMetricsError as e:
            logger.error("trial %d (seed %d): %s", t["trial"], t["seed"], e)
            metrics = None
        if rc == 0 and metrics:
            t.update(metrics, status="finished")
            logger.info("trial %d (seed %d): finished %s", t["trial"], t["seed"], metrics)
            return
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
        if t["attempts"] <= self.options.retries:
            logger.warning("trial %d: retrying, resuming if it checkpointed", t["trial"])
            self.pending.appendleft(t)
        else:
            t["status"] = "failed"


def _unfinished(trials) -> list:
    """The trials without results, each given "attempts" and "resumed_from"; finished ones are
    marked so. Raises CorruptMetricsError naming every damaged ``final_metrics.json``."""
    waiting, corrupt = [], []
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
            waiting.append(t)
    if corrupt:
        raise CorruptMetricsError("not starting anything:\n  " + "\n  ".join(corrupt))
    return waiting


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
