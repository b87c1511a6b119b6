"""The table rows of the one-call check (benchmarks/gpu_check.py), read from what each stage
wrote: the benchmarks' JSON, the runs' output files and logs. Each ``*_rows`` factory returns a
``f(result) -> list of rows`` for a :class:`check_runner.Stage`; the rows it cannot find are
listed as FAILED by the runner. Standard library only."""

import json
import os
import re

from check_runner import row
from targets import DETECTION_TARGET, E2E_MAX_DATA_WAIT, E2E_TARGET, STEP32_TARGET

TINY_NOTE = "tiny CPU run: not compared"


def load_json(path):
    """The JSON at ``path``, or None when it is missing or unreadable."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def at_least(value, target, unit):
    """Shortfall text of a higher-is-better number."""
    if value >= target:
        return "met"
    return f"missed by {target - value:,.0f} {unit} ({100 * (target - value) / target:.0f}%)"


def at_most(value, target, unit):
    """Shortfall text of a lower-is-better number."""
    if value <= target:
        return "met"
    return f"missed by {value - target:.3f} {unit} ({100 * (value - target) / target:.0f}% over)"


def _measured(path, names):
    """(the JSON at ``path``, [(benchmark row name, table row name, benchmark row)]) for the
    rows of ``names`` (benchmark row name -> table row name) that the JSON holds."""
    result = load_json(path) or {"rows": {}}
    rows = result["rows"]
    return result, [(b, name, rows[b]) for b, name in names.items() if b in rows]


def _bench_failure(r):
    """The failure message of a benchmark row, or None when it measured."""
    for key in ("failed", "unsupported", "error"):
        if key in r:
            return f"{key}: {r[key]}"
    return None


def _named(names):
    def wrap(factory):
        factory.names = names
        return factory

    return wrap


E2E_NAMES = {
    "device eager": "end to end, device pipeline, eager",
    "device compiled": "end to end, device pipeline, compiled",
}


E2E_COMPILE = "compile time, end to end (first step)"


@_named(
    tuple(E2E_NAMES.values()) + (E2E_COMPILE, "pretrain device eager", "pretrain device compiled")
)
def e2e_rows(path, tiny):
    """Headline rows (pairs/s, data wait against the target; the compiled row's first step
    beyond the eager one's) and smoke rows of the ``device eager`` / ``device compiled`` rows
    of pretrain_e2e.py."""

    def rows(res):
        (result, found), out = _measured(path, E2E_NAMES), []
        for bench_name, name, r in found:
            failure = _bench_failure(r)
            out.append(row("smoke", f"pretrain {bench_name}", "FAILED" if failure else "OK",
                           failure or f"batch {r['batch']}"))  # fmt: skip
            if failure:
                out.append(row("headline", name, "FAILED", failure))
                continue
            wait = r.get("data_wait_pct", float("nan"))
            short = TINY_NOTE
            if not tiny:
                short = at_least(r["pairs_per_s"], E2E_TARGET, "pairs/s")
                if not wait < E2E_MAX_DATA_WAIT:
                    short += f"; data wait {wait:.1f}% not < {E2E_MAX_DATA_WAIT:.0f}%"
            out.append(row(
                "headline", name, "OK", value=f"{r['pairs_per_s']:,.0f} pairs/s, wait {wait:.1f}%",
                target=f">= {E2E_TARGET:,.0f}, wait < {E2E_MAX_DATA_WAIT:.0f}%", shortfall=short,
                detail=f"batch {r['batch']}, first step {r.get('first_step_s', 0):.0f} s, "
                f"peak {r['peak_mem_gib']:.1f} GiB",
            ))  # fmt: skip
        firsts = [result["rows"].get(n, {}).get("first_step_s") for n in E2E_NAMES]
        if None not in firsts:  # the compile stages ran first: their cache is usually warm
            out.append(row("headline", E2E_COMPILE, "OK", value=f"{firsts[1] - firsts[0]:.0f} s",
                           detail=f"first step {firsts[1]:.1f} s compiled, {firsts[0]:.1f} s "
                           "eager; compile cache filled by the compile stages"))  # fmt: skip
        return out

    return rows


SMOKE_PIPELINES = ("pil eager", "pil compiled", "batched eager", "batched compiled")


@_named(tuple(f"pretrain {n}" for n in SMOKE_PIPELINES))
def e2e_smoke_rows(path):
    """Smoke rows ``pretrain {pil, batched} {eager, compiled}`` of a pretrain_e2e.py JSON."""

    def rows(res):
        out = []
        for _, name, r in _measured(path, {n: f"pretrain {n}" for n in SMOKE_PIPELINES})[1]:
            failure = _bench_failure(r)
            detail = failure or f"{r['pairs_per_s']:,.0f} pairs/s at batch {r['batch']}"
            out.append(row("smoke", name, "FAILED" if failure else "OK", detail))
        return out

    return rows


STEP_NAMES = {
    "step/optimized": "training step, eager",
    "step/optimized (reduce-overhead)": "training step, reduce-overhead",
    "data/device-decode": "JPEG batch decode (nvJPEG on CUDA)",
    "data/device": "device pipeline views",
}
SYNCS = "host syncs per DeviceInput.views"


@_named(tuple(STEP_NAMES.values()) + (SYNCS,))
def step_rows(path, tiny):
    """Headline rows of pretrain_step.py: the step at per-GPU batch 32 (eager and
    reduce-overhead) against its target, the decode and views rates, the host syncs."""

    def rows(res):
        (result, found), out = _measured(path, STEP_NAMES), []
        for _, name, r in found:
            if "first_steps_s" in r:  # a step row
                first = sum(r["first_steps_s"])
                out.append(row(
                    "headline", name, "OK", value=f"{r['images_per_s']:,.0f} pairs/s",
                    target=f">= {STEP32_TARGET:,.0f}",
                    shortfall=TINY_NOTE if tiny else at_least(r["images_per_s"], STEP32_TARGET,
                                                              "pairs/s"),
                    detail=f"batch {result['args']['batch']}, {r['amp']}, warm-up steps "
                    f"{first:.1f} s, peak {r['peak_mem_mib'] / 1024:.1f} GiB",
                ))  # fmt: skip
            else:
                out.append(row("headline", name, "OK", value=f"{r['images_per_s']:,.0f} images/s",
                               detail=f"batch {r['batch']}, {r['images']} JPEGs"))  # fmt: skip
        syncs = result.get("device_views_host_syncs")
        if syncs is not None:
            out.append(row("headline", SYNCS, "OK", value=str(syncs), target="0",
                           shortfall="met" if syncs == 0 else f"{syncs} too many"))  # fmt: skip
        elif tiny:
            out.append(row("headline", SYNCS, "OK", value="n/a", detail="counted on CUDA only"))
        return out

    return rows


def warm_rows(path, mode, tiny):
    """The headline row "compile time, SOLVER.COMPILE <mode>" of a pretrain_step.py run with
    a few steps: the warm-up steps' time beyond that of as many ordinary steps."""
    bench_name, name = f"step/optimized ({mode})", f"compile time, SOLVER.COMPILE {mode}"

    def rows(res):
        r = ((load_json(path) or {}).get("rows") or {}).get(bench_name)
        if r is None:
            return []
        first = r["first_steps_s"]
        extra = sum(first) - len(first) * r["sec_per_step"]
        return [row("headline", name, "OK", value=f"{extra:.0f} s",
                    detail=f"warm-up steps {first} s, then {r['sec_per_step']:.3f} s/step, "
                    "side by side with the untimed stages"
                    + (", eager backend" if tiny else ""))]  # fmt: skip

    return rows


DET_NAMES = {"amp": "Faster R-CNN step, AMP", "fp32": "Faster R-CNN step, fp32"}


@_named(tuple(DET_NAMES.values()))
def detection_rows(path, tiny):
    """Headline rows of detection_speed.py: s/iter and peak memory per variant against the
    target."""

    def rows(res):
        (result, found), out = _measured(path, DET_NAMES), []
        for _, name, r in found:
            failure = _bench_failure(r)
            if failure:
                out.append(row("headline", name, "FAILED", failure))
                continue
            out.append(row(
                "headline", name, "OK", value=f"{r['s_per_iter']:.3f} s/iter, "
                f"{r['max_mem_gib']:.1f} GiB", target=f"<= {DETECTION_TARGET} s/iter",
                shortfall=TINY_NOTE if tiny else at_most(r["s_per_iter"], DETECTION_TARGET,
                                                         "s/iter"),
                detail=f"batch {result['args']['batch']}, {os.path.basename(result['config'])}",
            ))  # fmt: skip
        return out

    return rows


class chain_rows:  # noqa: N801  (used like the other row factories)
    """Rows of the public commands run one after another: pretraining stopped after one epoch
    and resumed (with the kNN monitor), conversion, detection, trials, linear evaluation, demo.
    ``pretrain_out``/``runs``: where the stages write."""

    PRETRAIN = "pretrain CLI: 1 epoch, then stop"
    RESUME = "pretrain CLI: resume for epoch 2"
    KNN = "kNN monitor (TEST.KNN_PERIOD 1)"
    CONVERT = "convert to a detectron2 .pkl"
    DETECT = "detection from the converted weights"
    TRIALS = "detection.trials: 2 short trials"
    LINEAR = "linear evaluation, cached features"
    DEMO = "demo --preset smoke"

    def __init__(self, pretrain_out, runs):
        self.pretrain_out, self.runs = pretrain_out, runs

    def _ckpt(self, epoch):
        return os.path.exists(os.path.join(self.pretrain_out, f"checkpoint_{epoch:04d}.pth"))

    def pretrain(self, res):
        """OK when epoch 1 was saved and epoch 2 was not started."""
        if not res.ok():
            return None
        ok = self._ckpt(1) and not self._ckpt(2)
        why = "stopped after epoch 1" if ok else "expected checkpoint_0001.pth only"
        return [row("smoke", self.PRETRAIN, "OK" if ok else "FAILED", why)]

    def resume(self, res):
        """The resume row (it resumed and saved epoch 2) and the kNN monitor row (a kNN
        top-1 logged after each of the two epochs, one per run)."""
        if not res.ok():
            return None
        text = res.log_text()
        ok = "Resumed from" in text and self._ckpt(2)
        out = [
            row(
                "smoke",
                self.RESUME,
                "OK" if ok else "FAILED",
                "epoch 2 saved" if ok else "no 'Resumed from' line or no checkpoint_0002",
            )
        ]
        first = os.path.join(os.path.dirname(res.log), "pretrain.log")
        with open(first, errors="replace") as f:
            text = f.read() + text
        knn = re.findall(r"Epoch (\d+): kNN top-1 ([\d.]+)%", text)
        ok = sorted({e for e, _ in knn}) == ["1", "2"]
        detail = ", ".join(f"epoch {e}: {v}%" for e, v in knn) or "no kNN line in the logs"
        out.append(row("smoke", self.KNN, "OK" if ok else "FAILED", detail))
        return out  # fmt: skip

    def detect(self, res):
        """OK with final_metrics.json holding AP50 and a precise-BN pass in the log."""
        if not res.ok():
            return None
        metrics = load_json(os.path.join(self.runs, "detect", "final_metrics.json")) or {}
        ap50 = metrics.get("results", {}).get("bbox", {}).get("AP50")
        precise = "precise-BN" in res.log_text()
        ok = ap50 is not None and precise
        why = (
            f"AP50 {ap50:.1f} (meaningless at this size)"
            if ok
            else (
                "no precise-BN pass in the log"
                if ap50 is not None
                else "no AP50 in final_metrics.json"
            )
        )
        return [row("smoke", self.DETECT, "OK" if ok else "FAILED", why)]  # fmt: skip

    def trials(self, res):
        """OK when summary.json counts both trials finished."""
        if not res.ok():
            return None
        summary = load_json(os.path.join(self.runs, "trials", "summary.json")) or {}
        ok = summary.get("num_finished") == 2
        why = "2 trials finished" if ok else f"summary.json: {summary.get('num_finished')} finished"
        return [row("smoke", self.TRIALS, "OK" if ok else "FAILED", why)]

    def linear(self, res):
        """OK when results.json holds a top-1."""
        if not res.ok():
            return None
        result = load_json(os.path.join(self.runs, "linear", "results.json")) or {}
        ok = "top1" in result
        why = f"top-1 {result['top1']:.3f}" if ok else "no top1 in results.json"
        return [row("smoke", self.LINEAR, "OK" if ok else "FAILED", why)]

    def demo(self, res):
        """OK when the demo wrote report.json."""
        if not res.ok():
            return None
        ok = os.path.exists(os.path.join(self.runs, "demo", "report.json"))
        return [row("smoke", self.DEMO, "OK" if ok else "FAILED",
                    "report.json written" if ok else "no report.json")]  # fmt: skip
