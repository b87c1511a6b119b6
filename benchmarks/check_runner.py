"""Runs the stages of a check (benchmarks/gpu_check.py): each one a command under its own time
limit and a shared deadline, in phases of parallel streams, writing its table rows as soon as it
finishes. Standard library only, so that it runs before anything is installed.

A plan is a list of phases; a phase is a list of streams that run side by side; a stream is a
list of :class:`Stage` run one after another. A phase starts when the one before it has ended.
Every stage ends as rows (its own, or those its ``rows`` function derives from its output):
"OK", "FAILED" (with the last line of its error) or "SKIPPED" (a stage it needs did not succeed,
or the time budget was spent). After each stage ``<out>/gpu_check.json``, ``gpu_check.txt`` (the
table) and ``gpu_check_logs.tar.gz`` (every stage's log) are rewritten, so a run cut short keeps
what it measured.
"""

import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

SECTIONS = {
    "setup": "setup",
    "headline": "headline numbers (one GPU)",
    "smoke": "smoke: does every path run?",
}
MIN_START_S = 10.0  # a stage is not started with less time than this left
KILL_GRACE_S = 15.0  # after SIGINT at the time limit, before SIGKILL


@dataclass
class Stage:
    """One command of the check.

    key: short id (log name, ``needs`` of other stages); section/title: its own table row;
    argv: the command, run in the repository root; limit_s: its time limit; needs: keys of
    stages that must have succeeded first; reuse: paths that, when all exist, make the stage
    "OK (reused)" without running it (data made by an earlier run); rows: ``f(result) -> list of
    row dicts`` for stages whose rows come from their output (default: one row, OK when the
    command exits 0); row_names: the names of those rows (listed as FAILED/SKIPPED when the
    stage does not get that far)."""

    key: str
    section: str
    title: str
    argv: list
    limit_s: float
    needs: tuple = ()
    reuse: tuple = ()
    rows: Callable = None
    row_names: tuple = ()

    def names(self):
        """The names of the rows this stage ends as."""
        return list(self.row_names) or [self.title]


@dataclass
class Result:
    """How a stage ended: status "ran", "timeout", "skipped" or "reused"; rc; seconds; log
    path; why (for skipped)."""

    stage: Stage
    status: str
    rc: int = 0
    seconds: float = 0.0
    log: str = ""
    why: str = ""
    rows: list = field(default_factory=list)

    def ok(self):
        """True when the command finished with status 0 (or its output was reused)."""
        return self.status == "reused" or (self.status == "ran" and self.rc == 0)

    def log_text(self):
        """The stage's log (empty when it did not run)."""
        if not self.log or not os.path.exists(self.log):
            return ""
        with open(self.log, errors="replace") as f:
            return f.read()

    def error(self):
        """Why the command failed: the last error line of its log, with the exit status."""
        if self.status == "timeout":  # the interrupt's own traceback says nothing
            text = self.log_text()
            cut = text.rfind(
                "Traceback (most recent call last)", 0, text.rfind("KeyboardInterrupt")
            )
            if "interrupted (Ctrl-C)" in text:  # the commands' own line for the interrupt
                cut = text.rfind("interrupted (Ctrl-C)")
            last = last_error_line(text[:cut] if cut >= 0 else text)
            return f"timed out after {self.seconds:.0f} s; last line: {last}"
        return f"exit status {self.rc}: {last_error_line(self.log_text())}"


def row(section, name, status, detail="", value="", target="", shortfall="", **extra):
    """A table row as a dict (the JSON form)."""
    return dict(section=section, name=name, status=status, detail=detail, value=value,
                target=target, shortfall=shortfall, **extra)  # fmt: skip


# the commands' own last line (common.errors), an exception or a killed process; else a line
# saying something failed
_ERRORS = (
    re.compile(r"^error: "),
    re.compile(r"(Error|Exception|Killed|No such file)"),
    re.compile(r"(error:|FAILED|failed)"),
)


def last_error_line(text):
    """The last ``error: ...`` line of ``text`` (what every command prints last when it stops),
    else the last that names an exception, else the last that says something failed, else its
    last non-empty line; shortened to 240 characters."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for pattern in _ERRORS:
        for line in reversed(lines):
            if pattern.search(line) and not line.startswith(("warnings.warn", "File ", "raise ")):
                return line[:240]
    return lines[-1][:240] if lines else "(no output)"


def _run_command(stage, limit_s, log_path, env, cwd, running):
    """Run ``stage.argv`` with stdout+stderr to ``log_path`` in its own process group; at
    ``limit_s`` send SIGINT to the group, then SIGKILL. Returns (rc, timed_out)."""
    with open(log_path, "w") as log:
        log.write(f"$ {' '.join(map(str, stage.argv))}\n")
        log.flush()
        proc = subprocess.Popen(
            [str(a) for a in stage.argv], cwd=cwd, env=env, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=default_sigint,
        )  # fmt: skip
        running.add(proc)
        try:
            return proc.wait(timeout=limit_s), False
        except subprocess.TimeoutExpired:
            stop_group(proc)
            return proc.returncode, True
        finally:
            running.discard(proc)


def default_sigint():
    """In a child before exec: SIGINT back to its default. A check started in the background
    or under ``nohup`` inherits SIGINT ignored, and then the time limit's SIGINT would not let
    a benchmark write what it has."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stop_group(proc):
    """SIGINT to ``proc``'s process group (benchmarks write what they have), then SIGKILL."""
    for sig, grace in ((signal.SIGINT, KILL_GRACE_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


class Runner:
    """Runs a plan (phases of streams of stages) against a deadline and writes the outputs.

    out_dir: where gpu_check.json/.txt and the logs archive go; log_dir: one log per stage;
    budget_s: the deadline, from construction; env/cwd: of every command; header: dict put at
    the top of the JSON (device, mode, ...); extra: ``f() -> dict`` merged into the JSON at
    every write (e.g. the benchmarks' own JSON); limit_scale: multiplies every stage's limit."""

    def __init__(
        self, out_dir, log_dir, budget_s, env, cwd, header, extra=lambda: {}, limit_scale=1.0
    ):
        self.limit_scale = limit_scale
        self.out_dir, self.log_dir, self.env, self.cwd = out_dir, log_dir, env, cwd
        self.start = time.monotonic()
        self.deadline = self.start + budget_s
        self.header, self.extra, self.budget_s = dict(header), extra, budget_s
        self.results, self.lock, self.running = {}, threading.Lock(), set()
        self.planned, self.stopped, self.order = set(), False, {}
        self.print_lock = threading.Lock()
        os.makedirs(out_dir, exist_ok=True)
        os.makedirs(log_dir, exist_ok=True)

    def say(self, text):
        """Print one progress line (whole, also from parallel streams)."""
        with self.print_lock:
            print(f"== [{self.elapsed():4.0f} s] {text}", flush=True)

    def elapsed(self):
        """Seconds since the check started."""
        return time.monotonic() - self.start

    def run_stage(self, stage):
        """Run one stage (or skip it); record and write its rows. Returns its Result."""
        missing = [k for k in stage.needs if not self.results.get(k) or not self.results[k].ok()]
        left = self.deadline - time.monotonic()
        if self.stopped:
            res = Result(stage, "skipped", why="the check was interrupted")
        elif missing:
            res = Result(stage, "skipped", why=f"needs {', '.join(missing)}, which did not succeed")
        elif stage.reuse and all(os.path.exists(p) for p in stage.reuse):
            res = Result(stage, "reused")
        elif left < MIN_START_S:
            res = Result(stage, "skipped", why=f"time budget of {self.budget_s:.0f} s spent")
        else:
            limit = min(stage.limit_s * self.limit_scale, left)
            log = os.path.join(self.log_dir, f"{stage.key}.log")
            self.say(f"{stage.key}: started (limit {limit:.0f} s)")
            t0 = time.monotonic()
            rc, timed_out = _run_command(stage, limit, log, self.env, self.cwd, self.running)
            res = Result(stage, "timeout" if timed_out else "ran", rc, time.monotonic() - t0, log)
        res.rows = self._rows(res)
        with self.lock:
            self.results[stage.key] = res
            self.write()
        states = ", ".join(f"{r['name']} {r['status']}" for r in res.rows)
        self.say(f"{stage.key}: {res.status} ({states})")
        return res

    def _rows(self, res):
        stage = res.stage
        try:
            rows = stage.rows(res) if stage.rows and res.status != "skipped" else None
        except Exception as e:  # a bug in a row function must not hide the other rows
            rows = [row(stage.section, n, "FAILED", f"reading its output: {e!r}")
                    for n in stage.names()]  # fmt: skip
        if res.status == "skipped":
            rows = [row(stage.section, n, "SKIPPED", res.why) for n in stage.names()]
        elif rows is None:  # default: one row from the exit status
            detail = "reused" if res.status == "reused" else ""
            rows = [row(stage.section, stage.title, "OK" if res.ok() else "FAILED",
                        detail if res.ok() else res.error())]  # fmt: skip
        got = {r["name"] for r in rows}
        for n in stage.names():
            if n not in got:
                why = res.error() if not res.ok() else "not in the stage's output"
                rows.append(row(stage.section, n, "FAILED", why))
        for r in rows:
            r.update(stage=stage.key, seconds=round(res.seconds, 1))
        return rows

    def run(self, phases):
        """Run ``phases`` (list of lists of streams); returns {key: Result}."""
        every = [st for streams in phases for stream in streams for st in stream]
        self.planned, started = {st.key for st in every}, []
        self.order = {st.key: i for i, st in enumerate(every)}
        try:
            for streams in phases:
                done = [threading.Event() for _ in streams]
                started += done
                for stream, event in zip(streams, done):
                    threading.Thread(target=self._stream, args=(stream, event)).start()
                for event in done:
                    event.wait()
        except KeyboardInterrupt:  # stop the commands; the stages left become SKIPPED rows
            self.stop_all()
            for event in started:  # (a join interrupted by the signal may not wait again)
                event.wait()
        for stage in every:
            if stage.key not in self.results:
                self.run_stage(stage)
        return self.results

    def _stream(self, stages, done):
        try:
            for stage in stages:
                # a stage needing one of another stream waits for it (same or earlier phase)
                while any(k in self.planned and k not in self.results for k in stage.needs):
                    time.sleep(0.2)
                self.run_stage(stage)
        finally:
            done.set()

    def stop_all(self):
        """Stop every running command and start no other (the check was interrupted)."""
        self.stopped = True
        for proc in list(self.running):
            stop_group(proc)

    def all_rows(self):
        """Every row so far, by section, then in the order of the plan."""
        rows = [r for res in self.results.values() for r in res.rows]
        sections = list(SECTIONS)
        return sorted(rows, key=lambda r: (sections.index(r["section"]), self.order[r["stage"]]))

    def write(self):
        """Rewrite gpu_check.json, gpu_check.txt and gpu_check_logs.tar.gz in ``out_dir``."""
        result = dict(self.header, wall_s=round(self.elapsed(), 1), budget_s=self.budget_s)
        result["rows"] = self.all_rows()
        result["stages"] = {
            k: {"status": r.status, "rc": r.rc, "seconds": round(r.seconds, 1),
                "command": " ".join(map(str, r.stage.argv)), "why": r.why}
            for k, r in self.results.items()
        }  # fmt: skip
        result.update(self.extra())
        _atomic_text(os.path.join(self.out_dir, "gpu_check.json"), json.dumps(result, indent=2))
        _atomic_text(os.path.join(self.out_dir, "gpu_check.txt"), format_table(result) + "\n")
        tmp = os.path.join(self.out_dir, ".gpu_check_logs.tar.gz.tmp")
        with tarfile.open(tmp, "w:gz") as tar:
            tar.add(self.log_dir, arcname="logs")
        os.replace(tmp, os.path.join(self.out_dir, "gpu_check_logs.tar.gz"))


def _atomic_text(path, text):
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def format_table(result):
    """The printed table of a gpu_check.json dict: a header line, then one block per section
    (smoke and setup: status, row, detail; headline: also value, target and shortfall)."""
    lines = [
        f"gpu_check: {result.get('device_name', '?')} ({result.get('mode', '?')}), "
        f"torch {result.get('torch', '?')}, {result.get('date', '?')}, "
        f"{result.get('wall_s', 0):.0f} s of a {result.get('budget_s', 0):.0f} s budget"
    ]
    rows = result.get("rows", [])
    for section, title in SECTIONS.items():
        block = [r for r in rows if r["section"] == section]
        if not block:
            continue
        lines.append(f"-- {title}")
        if section == "headline":
            lines.append(f"   {'':7s} {'row':44s} {'value':30s} {'target':24s} shortfall")
        for r in block:
            if section == "headline" and r["status"] == "OK":
                lines.append(
                    f"   {r['status']:7s} {r['name'][:44]:44s} {r['value'][:30]:30s} "
                    f"{r['target'][:24]:24s} {r['shortfall']}"
                    + (f"  ({r['detail']})" if r["detail"] else "")
                )
            else:
                lines.append(f"   {r['status']:7s} {r['name'][:44]:44s} {r['detail']}")
    counts = {s: sum(r["status"] == s for r in rows) for s in ("OK", "FAILED", "SKIPPED")}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines)


def python_env(site, repo, extra=None):
    """The environment of the stages: ``site`` (offline-installed wheels) and ``repo`` first on
    PYTHONPATH, unbuffered output, plus ``extra``."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(extra or {}))
    parts = [p for p in (site, repo, os.environ.get("PYTHONPATH", "")) if p]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env.setdefault("PY", sys.executable)
    return env
