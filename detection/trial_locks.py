"""Trial locks: one runner per trial folder.

Each trial is locked (``trial_<i>_seed_<s>.lock``, next to the trial folder, see
:class:`TrialLock`) while a runner works on it, so a second runner on the same trials refuses to
start (exit status 2) instead of running duplicates; the rules (owner, staleness, take-over) are
those of :class:`common.locks.OutputLock`.
"""

import os

from common.locks import STALE_LOCK_S, LockHeldError, OutputLock

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
