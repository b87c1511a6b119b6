r"""Training curves of a pretraining run, drawn from its ``metrics.json`` into one PNG.

    python -m pretrain.plots output/moco_v2_200ep        # -> output/moco_v2_200ep/curves.png
    python -m pretrain.plots output/moco_v2_200ep --out figures/moco_v2_200ep.png

Four panels against the iteration: the InfoNCE loss (median of the last 20 iterations, as
logged), the kNN monitor's top-1 (when the run had one), the learning rate, and the speed
(pairs/s: one image gives one query/key pair) with the share of wall clock spent waiting for
data. A resumed run keeps each iteration once: a line whose iteration is not after the previous
line's replaces the lines it repeats (the resumed run's values win).
"""

import argparse
import json
import logging
import os
import sys

from common.plotting import new_figure, no_data, save_png

logger = logging.getLogger("pretrain.plots")
CURVES = "curves.png"  # default output, next to metrics.json
# series name -> metrics.json key (see pretrain.meter: speed keys are per logging window)
KEYS = {
    "loss": "loss",
    "knn_top1": "knn_top1",
    "lr": "lr",
    "pairs_per_s": "images_per_s",
    "data_wait_pct": "data_wait_pct",
}


NO_KNN = (
    "no kNN monitor in this run\n(it needs DATA.KNN_TRAIN,\nDATA.KNN_VAL and TEST.KNN_PERIOD > 0)"
)
MARKERS_UP_TO = 50  # points per series drawn with markers (a single point is visible too)


class MetricsError(ValueError):
    """``metrics.json`` is missing, empty or holds no pretraining metrics; the message names
    the file and what to do."""


def metrics_path(output_dir):
    """``output_dir/metrics.json``, or ``output_dir`` itself when it is a file."""
    return output_dir if os.path.isfile(output_dir) else os.path.join(output_dir, "metrics.json")


def read_metrics(path):
    """Return the records (dicts) of a ``metrics.json`` in iteration order, each iteration once.

    Lines that are not JSON objects with an ``iteration`` (e.g. cut by a kill mid-write) are
    skipped. A line whose iteration is not after the last kept one starts a resumed segment: the
    kept lines from that iteration on are dropped, so the resumed run's values replace them.

    Raises:
        MetricsError: the file is missing or holds no usable line.
    """
    try:
        with open(path) as f:
            lines = f.readlines()
    except FileNotFoundError:
        raise MetricsError(
            f"{path} does not exist: give the OUTPUT_DIR of a pretraining run "
            "(python -m pretrain.train_net ... OUTPUT_DIR <dir>), which writes metrics.json "
            "every LOG_PERIOD iterations"
        ) from None
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
            iteration = int(record["iteration"])
        except (ValueError, TypeError, KeyError):
            continue
        while kept and kept[-1]["iteration"] >= iteration:
            kept.pop()
        kept.append(record)
    if not kept:
        raise MetricsError(
            f"{path} holds no metrics yet ({len(lines)} line(s), none a JSON record with an "
            "iteration): the run writes its first line after LOG_PERIOD iterations; wait for "
            "it, or lower LOG_PERIOD"
        )
    return kept


def curve_series(records):
    """Return ``{name: (iterations, values)}`` for each name of :data:`KEYS`, from the records of
    :func:`read_metrics` that hold that key (lists, empty when no record does)."""
    series = {}
    for name, key in KEYS.items():
        points = [(r["iteration"], float(r[key])) for r in records if r.get(key) is not None]
        series[name] = ([p[0] for p in points], [p[1] for p in points])
    return series


def plot_curves(output_dir, out=None):
    """Draw the curves of the run in ``output_dir`` (or of a ``metrics.json`` path).

    Args:
        output_dir (str): a pretraining OUTPUT_DIR, or its metrics.json.
        out (str or None): PNG path; default ``curves.png`` next to metrics.json.

    Returns:
        dict: ``{"path": the PNG, "series": {name: (iterations, values)}}`` (what was plotted,
        from :func:`curve_series`).

    Raises:
        MetricsError: no usable metrics (see :func:`read_metrics`), or no ``loss`` (a detection
        run's metrics.json, for instance).
    """
    path = metrics_path(output_dir)
    series = curve_series(read_metrics(path))
    if not series["loss"][0]:  # every pretraining line has it; detection logs total_loss
        raise MetricsError(
            f"{path} has no 'loss' values: it is not a MoCo pretraining run's metrics "
            "(detection trials are plotted with python -m detection.plots)"
        )
    out = out or os.path.join(os.path.dirname(os.path.abspath(path)), CURVES)
    fig, axes = new_figure(10, 6.4, 2, 2)
    (loss_ax, knn_ax), (lr_ax, speed_ax) = axes
    _line(loss_ax, series["loss"], "loss (nats)", "InfoNCE loss (median of 20 iterations)")
    _line(knn_ax, series["knn_top1"], "top-1 (%)", "kNN monitor: weighted kNN top-1")
    if not series["knn_top1"][0]:
        no_data(knn_ax, NO_KNN)
    _line(lr_ax, series["lr"], "learning rate", "learning rate (at each logged iteration)")
    # each tick with its own exponent: an axis offset ("1e-5") would overlap the title
    lr_ax.yaxis.set_major_formatter(lambda value, _: f"{value:.3g}")
    _line(speed_ax, series["pairs_per_s"], "pairs/s", "speed (per logging window)", label="pairs/s")
    speed_ax.set_ylim(bottom=0)  # from zero, so window-to-window noise is not read as a trend
    wait_ax = speed_ax.twinx()
    its, pct = series["data_wait_pct"]
    marker = "s" if len(its) <= MARKERS_UP_TO else None
    wait_ax.plot(its, pct, color="C3", linestyle="--", marker=marker, label="waiting for data")
    wait_ax.set_ylabel("waiting for data (% of wall clock)")
    wait_ax.set_ylim(0, min(100.0, 1.2 * max(pct, default=0.0)) or 1.0)
    lines = speed_ax.get_lines() + wait_ax.get_lines()
    speed_ax.legend(lines, [ln.get_label() for ln in lines], fontsize="small", loc="lower right")
    fig.suptitle(os.path.dirname(os.path.abspath(path)), fontsize="medium")
    save_png(fig, out)
    return {"path": out, "series": series}


def _line(ax, points, ylabel, title, label=None):
    marker = "o" if len(points[0]) <= MARKERS_UP_TO else None
    ax.plot(*points, marker=marker, markersize=4, label=label)
    ax.set(xlabel="iteration", ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)


def main(argv=None):
    """Command-line entry point: ``OUTPUT_DIR [--out PNG]``. Returns 0; exits with a one-line
    message when the metrics cannot be plotted."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("output_dir", help="pretraining OUTPUT_DIR (or its metrics.json)")
    p.add_argument("--out", help=f"PNG path (default: {CURVES} next to metrics.json)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        result = plot_curves(args.output_dir, args.out)
    except MetricsError as e:
        raise SystemExit(f"pretrain.plots: {e}") from None
    logger.info("wrote %s", result["path"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
