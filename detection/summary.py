"""Aggregation of multi-seed detection results: mean ± sample std and a published reference.

A trial record is a dict ``{"trial": int, "seed": int, "status": "finished" | "failed",
"AP50": float, "AP": float, "AP75": float, ...}`` (metrics absent or None when failed); runs
with masks (Mask R-CNN, COCOEvaluator's ``segm`` results) also hold ``mask_AP50``, ``mask_AP``
and ``mask_AP75``, which the summary then reports after the box metrics. The std is the sample
standard deviation (ddof=1, the n-1 estimator), as papers report over 5 trials.
"""

import csv
import io
import json
import math
import os

from common.io import atomic_write

METRICS = ("AP50", "AP", "AP75")  # box AP (detectron2's "bbox" results)
MASK_METRICS = ("mask_AP50", "mask_AP", "mask_AP75")  # mask AP ("segm" results), when present
# The per-trial results file that detection.train_net writes into OUTPUT_DIR.
FINAL_METRICS = "final_metrics.json"
STD_KIND = "sample std (ddof=1)"

# Published VOC07+12 -> VOC07 test results of Faster R-CNN R50-C4 (24k iterations), the means
# of 5 trials, keyed by the name `--reference` takes.
REFERENCES = {
    "mocov2_200ep": {
        "AP50": 82.4,
        "AP": 57.0,
        "AP75": 63.6,
        "source": "MoCo v2 report (arXiv 2003.04297), Table 1, case (d): MLP, aug+, cos, 200 ep",
    },
    "mocov2_800ep": {
        "AP50": 82.5,
        "AP": 57.4,
        "AP75": 64.0,
        "source": "MoCo v2 report (arXiv 2003.04297), Table 1, case (e): 800 ep",
    },
    "mocov1_200ep": {
        "AP50": 81.5,
        "AP": 55.9,
        "AP75": 62.6,
        "source": "MoCo v2 report (arXiv 2003.04297), Table 1, MoCo v1 200 ep",
    },
    "supervised": {
        "AP50": 81.3,
        "AP": 53.5,
        "AP75": 58.8,
        "source": "MoCo v2 report (arXiv 2003.04297), Table 1, ImageNet supervised",
    },
}


def mean_std(values):
    """Return (mean, sample std with ddof=1) of a sequence of numbers.

    Args:
        values (Sequence[float]): at least one value.

    Returns:
        tuple[float, float | None]: the std is None for a single value (undefined with ddof=1).
    """
    n = len(values)
    if n == 0:
        raise ValueError("mean_std needs at least one value")
    mean = sum(values) / n
    if n == 1:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def summary_metrics(records):
    """The metric keys a summary of ``records`` reports: :data:`METRICS`, then
    :data:`MASK_METRICS` when every finished trial holds them (and one finished at least)."""
    finished = [r for r in records if r.get("status") == "finished"]
    has_masks = finished and all(r.get(m) is not None for r in finished for m in MASK_METRICS)
    return METRICS + MASK_METRICS if has_masks else METRICS


def aggregate(records, reference=None):
    """Summarise trial records.

    Args:
        records (list[dict]): trial records (see the module docstring), any order.
        reference (str or None): a key of :data:`REFERENCES` to compare the means with.

    Returns:
        dict: ``{"trials": records sorted by trial, "num_trials", "num_finished", "failed":
        [trial indices], "mean": {metric: float}, "std": {metric: float | None},
        "std_kind": STD_KIND, "reference": None | {"name", "source", metric: value,
        "delta": {metric: mean - value}}}``. Means are over finished trials only; with none
        finished, "mean" and "std" are empty.
    """
    trials = sorted(records, key=lambda r: r["trial"])
    finished = [r for r in trials if r.get("status") == "finished"]
    mean, std = {}, {}
    if finished:
        for m in summary_metrics(trials):
            mean[m], std[m] = mean_std([float(r[m]) for r in finished])
    ref = None
    if reference:
        if reference not in REFERENCES:
            raise KeyError(f"unknown reference {reference!r}; choose from {sorted(REFERENCES)}")
        ref = {"name": reference, **REFERENCES[reference]}
        ref["delta"] = {m: mean[m] - ref[m] for m in mean if m in ref}
    return {
        "trials": trials,
        "num_trials": len(trials),
        "num_finished": len(finished),
        "failed": [r["trial"] for r in trials if r.get("status") != "finished"],
        "mean": mean,
        "std": std,
        "std_kind": STD_KIND,
        "reference": ref,
    }


def _fmt(value, signed=False):
    if value is None:
        return "-"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def format_markdown(summary, figure=None):
    """Render a summary from :func:`aggregate` as a markdown table (one row per trial, then
    mean ± std, the reference and the difference; box AP, then mask AP when the trials hold
    it), followed by ``figure`` (a PNG path relative to the markdown file) as an image when
    given. Returns the text."""
    metrics = summary_metrics(summary["trials"])
    header = [m.replace("mask_", "mask ") for m in metrics]
    lines = ["| trial | seed | status | " + " | ".join(header) + " |"]
    lines.append("| --- | --- | --- |" + " --- |" * len(metrics))
    for r in summary["trials"]:
        cells = [_fmt(r.get(m)) for m in metrics]
        lines.append(f"| {r['trial']} | {r['seed']} | {r['status']} | " + " | ".join(cells) + " |")
    if summary["mean"]:
        n = summary["num_finished"]
        cells = [f"{_fmt(summary['mean'][m])} ± {_fmt(summary['std'][m])}" for m in metrics]
        lines.append(f"| mean ± std (n={n}) | | | " + " | ".join(cells) + " |")
    ref = summary.get("reference")
    if ref:
        values = " | ".join(_fmt(ref.get(m)) for m in metrics)
        lines.append(f"| reference: {ref['name']} | | | {values} |")
        deltas = [_fmt(ref["delta"].get(m), signed=True) for m in metrics]
        lines.append("| mean - reference | | | " + " | ".join(deltas) + " |")
    notes = [f"std: {summary['std_kind']} over finished trials."]
    if ref:
        notes.append(f"Reference: {ref['source']}.")
    if summary["failed"]:
        notes.append(f"Failed trials (not in the mean): {summary['failed']}.")
    text = "\n".join(lines) + "\n\n" + " ".join(notes) + "\n"
    if figure:
        text += f"\n![AP50, AP and AP75 of each trial]({figure})\n"
    return text


def format_csv(summary):
    """Render a summary as CSV text: columns row, trial, seed, status and the metrics (box AP,
    then mask AP when the trials hold it); rows for each trial, then ``mean``, ``std``,
    ``reference`` and ``delta``. Returns the text."""
    metrics = summary_metrics(summary["trials"])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["row", "trial", "seed", "status", *metrics])
    for r in summary["trials"]:
        writer.writerow(["trial", r["trial"], r["seed"], r["status"], *(r.get(m) for m in metrics)])
    if summary["mean"]:
        writer.writerow(["mean", "", "", "", *(summary["mean"][m] for m in metrics)])
        writer.writerow(["std", "", "", summary["std_kind"], *(summary["std"][m] for m in metrics)])
    ref = summary.get("reference")
    if ref:
        writer.writerow(["reference", "", "", ref["name"], *(ref.get(m) for m in metrics)])
        writer.writerow(["delta", "", "", "", *(ref["delta"].get(m) for m in metrics)])
    return out.getvalue()


class EmptySummaryError(ValueError):
    """A summary without a single finished trial; it is not written, so it never replaces one
    that has results."""


def write_summary(out_dir, summary, figure=None):
    """Write ``summary.json``, ``summary.csv`` and ``summary.md`` into ``out_dir``, each
    atomically (``common.io.atomic_write``); summary.md shows ``figure`` (a PNG path, e.g. from
    ``detection.plots.plot_trials``) when given.

    Returns:
        dict[str, str]: paths by format ("json", "csv", "md").

    Raises:
        EmptySummaryError: when no trial of ``summary`` finished (nothing is written, an
            earlier summary in ``out_dir`` stays as it was).
    """
    paths = {ext: os.path.join(out_dir, f"summary.{ext}") for ext in ("json", "csv", "md")}
    if not summary.get("num_finished"):
        raise EmptySummaryError(
            f"no trial finished, so {paths['json']} (.csv, .md) was not written; a summary of an "
            "earlier run stays as it was. Fix the failures logged above and rerun to resume."
        )
    texts = {
        "json": json.dumps(summary, indent=2, sort_keys=True) + "\n",
        "csv": format_csv(summary),
        "md": format_markdown(summary, figure and os.path.relpath(figure, out_dir)),
    }
    for ext, path in paths.items():
        atomic_write(path, lambda f, text=texts[ext]: f.write(text), text=True)
    return paths


def load_summary(path):
    """Read a ``summary.json`` written by :func:`write_summary`; returns the dict."""
    with open(path) as f:
        return json.load(f)
