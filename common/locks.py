"""One writer per output folder: a lock file that names its owner and is taken over when the
owner is gone.

Used by the trial runner for trial folders (``<trial folder>.lock``, next to the folder) and by
pretraining, detection and linear evaluation for their output folder (``<folder>/run.lock``,
through :func:`hold_output_dir`). Standard library only, so a process that only needs the
lock (or :func:`pid_alive`) starts quickly.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import shlex
import socket
import sys
import threading
import time

__all__ = [
    "HEARTBEAT_S",
    "RUN_LOCK",
    "STALE_LOCK_S",
    "LockHeldError",
    "OutputLock",
    "hold_output_dir",
    "pid_alive",
]

logger = logging.getLogger(__name__)
RUN_LOCK = "run.lock"  # the lock file inside an output folder (see hold_output_dir)
STALE_LOCK_S = 600.0  # a lock from another host whose heartbeat is older than this is stale
HEARTBEAT_S = 30.0  # how often an owner refreshes the mtime of the locks it holds
# Set by SLURM in every step of a job and kept when the job is requeued: a lock written by the
# same job on another node is that job's earlier, preempted attempt.
SLURM_JOB_ENV = "SLURM_JOB_ID"


class LockHeldError(RuntimeError):
    """The lock belongs to another live owner; the message names the lock file and the owner."""


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (a killed process its parent has not
    reaped yet is already dead for our purposes)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS): os.kill is all we know


def _command(owner: dict) -> str:
    argv = owner.get("argv")
    if not isinstance(argv, list) or not argv:
        return "?"
    text = shlex.join(str(a) for a in argv)
    return text if len(text) <= 300 else text[:297] + "..."


class OutputLock:
    """A lock file, held with ``fcntl.flock``, that records its owner.

    The file holds the owner's ``{"pid", "host", "started", "argv", "slurm_job"}``. The kernel
    releases a flock when every process holding the descriptor is gone, so a child given the
    descriptor (``pass_fds``) keeps the lock held after its parent died. Rules, see
    :meth:`acquire`: held by a live process -> refused; written on this host but no longer held
    -> stale, taken over (logged); written on another host (where flock may not reach, e.g.
    NFS without locking) -> refused while its mtime, refreshed every :data:`HEARTBEAT_S` by the
    owner, is younger than ``stale_after`` seconds, unless forced or written by the same SLURM
    job (a requeued job restarting on another node).
    """

    def __init__(self, path: str, kind: str = "runner", force_hint: str = ""):
        """Args: path (str): the lock file (its folder is created when missing); kind (str):
        what owns it, in messages ("runner", "run"); force_hint (str): how to take over a lock
        of another host (default: delete the file)."""
        self.path = os.path.normpath(path)
        self.kind = kind
        self.force_hint = force_hint or f"delete {self.path}"
        self.fd = None
        self._stop = None

    @staticmethod
    def _owner(fd: int):
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            return json.loads(os.read(fd, 65536).decode() or "null")
        except (OSError, ValueError):
            return None

    def _held_message(self, owner: dict, host: str) -> str:
        pid, where = owner.get("pid"), owner.get("host", "?")
        alive = where != host or (isinstance(pid, int) and pid_alive(pid))
        head = (
            f"{self.path} is held: {self.kind} pid {pid} on {where}, started "
            f"{owner.get('started', '?')}, command: {_command(owner)}"
        )
        if alive:
            return f"{head}. Wait for it to finish or stop it (kill {pid})"
        return (
            f"{head}; that process is gone but a process it started still holds the lock "
            f"(find it with: fuser {self.path})"
        )

    def acquire(self, force: bool = False, stale_after: float = STALE_LOCK_S, wait_s: float = 0.0):
        """Take the lock or raise :class:`LockHeldError` naming the lock and its live owner.

        Args:
            force (bool): take over a lock written on another host even if it looks live.
            stale_after (float): seconds without heartbeat after which another host's lock is
                stale.
            wait_s (float): how long to wait for a held lock before refusing.

        Returns:
            dict or None: the previous owner's record when a stale lock was taken over.
        """
        import fcntl  # POSIX only: imported where a lock is taken, so the module imports anywhere

        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        host, deadline = socket.gethostname(), time.time() + wait_s
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.time() < deadline:
                    os.close(fd)
                    time.sleep(0.1)
                    continue
                owner = self._owner(fd) or {}
                os.close(fd)
                raise LockHeldError(self._held_message(owner, host)) from None
            try:  # a releasing owner unlinks the file: make sure we locked the current one
                current = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)
        owner = self._owner(fd)
        if owner:
            age = time.time() - os.fstat(fd).st_mtime
            job = os.environ.get(SLURM_JOB_ENV)
            same_job = bool(job) and owner.get("slurm_job") == job
            if owner.get("host") != host and age < stale_after and not (force or same_job):
                os.close(fd)
                raise LockHeldError(
                    f"{self.path} belongs to {self.kind} pid {owner.get('pid')} on host "
                    f"{owner.get('host')} (heartbeat {age:.0f}s ago, command: "
                    f"{_command(owner)}); this host cannot see whether it is alive. If it is "
                    f"gone, {self.force_hint}, or wait until the lock is older than "
                    f"{stale_after:.0f}s."
                )
            logger.warning(
                "%s: taking over the stale lock of %s pid %s on %s (started %s%s)",
                self.path,
                self.kind,
                owner.get("pid"),
                owner.get("host"),
                owner.get("started"),
                ", same SLURM job" if same_job and owner.get("host") != host else "",
            )
        record = {
            "pid": os.getpid(),
            "host": host,
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "argv": sys.argv,
            "slurm_job": os.environ.get(SLURM_JOB_ENV),
        }
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(record).encode())
        os.fsync(fd)
        self.fd = fd
        return owner

    def heartbeat(self) -> None:
        """Refresh the lock's mtime (what other hosts judge staleness by)."""
        if self.fd is not None:
            os.utime(self.fd if os.utime in os.supports_fd else self.path)

    def keep_alive(self, interval: float = HEARTBEAT_S) -> None:
        """Refresh the mtime every ``interval`` seconds from a daemon thread until
        :meth:`release` (for owners without a loop of their own to do it)."""
        self._stop = threading.Event()

        def beat(stop=self._stop):
            while not stop.wait(interval):
                self.heartbeat()

        self._thread = threading.Thread(target=beat, name="lock-heartbeat", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Remove the lock file (if it is still ours) and drop the lock."""
        if self._stop is not None:
            self._stop.set()
            self._thread.join()
            self._stop = None
        if self.fd is None:
            return
        try:
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None


@contextlib.contextmanager
def hold_output_dir(folder: str, enabled: bool = True):
    """Hold ``<folder>/run.lock`` for the ``with`` body: one writer per output folder.

    For command-line entry points, in the one process of a run that should hold it (the
    launching process, or rank 0 under torchrun; ``enabled=False`` elsewhere yields None). A
    live owner makes the command print the lock, the owner's pid, host, start time and command
    to stderr and exit with status 2 before anything is written; a dead owner's lock is taken
    over (logged). Yields the :class:`OutputLock`; releases it (and removes the file) on exit.
    """
    if not enabled:
        yield None
        return
    lock = OutputLock(os.path.join(folder, RUN_LOCK), kind="run")
    try:
        lock.acquire()
    except LockHeldError as e:
        print(
            f"error: another process writes to {folder}: {e}. Use another output folder for a "
            "second run.",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    lock.keep_alive()
    try:
        yield lock
    finally:
        lock.release()
