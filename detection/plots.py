r"""Figures and comparison tables of trial summaries (``summary.json`` from ``detection.trials``).

    python -m detection.plots trials output/voc_moco/summary.json --out output/voc_moco/trials.png
    python -m detection.plots compare rand/summary.json sup/summary.json moco/summary.json \
        --labels "random init" supervised "MoCo v2" --out output/compare

``compare`` writes ``<out>.md`` (mean ± sample std per metric, one row per summary) and
``<out>.png`` (bars with std error bars). Figures are made by :mod:`common.plotting` (Agg, no
display; matplotlib is imported when a figure is drawn, so the trial runner imports this module
without loading it).
"""

import argparse
import logging
import os

from common.plotting import new_figure, save_png

from .summary import METRICS, load_summary

logger = logging.getLogger("detection.plots")


def plot_trials(summary, path):
    """Per-trial AP50 / AP / AP75 of one summary (x: trial and its seed; failed trials have a
    tick but no point), with the mean (line), ± std (band) and the reference (dashed) when
    present. Writes a PNG to ``path`` and returns ``path``."""
    fig, axes = new_figure(10, 3.6, 1, len(METRICS))
    axes = axes[0]
    finished = [t for t in summary["trials"] if t.get("status") == "finished"]
    ref = summary.get("reference")
    for ax, m in zip(axes, METRICS):
        ax.plot([t["trial"] for t in finished], [t[m] for t in finished], "o", label="trial")
        if m in summary["mean"]:
            mean, std = summary["mean"][m], summary["std"][m] or 0.0
            ax.axhline(mean, color="C1", label="mean")
            ax.axhspan(mean - std, mean + std, color="C1", alpha=0.2, label="± std")
        if ref:
            ax.axhline(ref[m], color="k", linestyle="--", label=f"reference ({ref['name']})")
        ax.set_xticks(
            [t["trial"] for t in summary["trials"]],
            [f"{t['trial']}\n{t['seed']}" for t in summary["trials"]],
        )
        ax.set(title=m, xlabel="trial / seed")
    axes[0].set_ylabel("test-set AP (%)")
    # below the panels, so it never hides a point
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=4)
    return save_png(fig, path)


def _label_of(path):
    return os.path.basename(os.path.dirname(os.path.abspath(path))) or path


def compare_markdown(summaries, labels):
    """A markdown table with one row per summary: n finished and mean ± std of each metric.
    Returns the text; the std is each summary's own (sample std, ddof=1)."""
    lines = [
        "| model | n | " + " | ".join(METRICS) + " |",
        "| --- | --- |" + " --- |" * len(METRICS),
    ]
    for label, s in zip(labels, summaries):
        cells = []
        for m in METRICS:
            if m not in s["mean"]:
                cells.append("-")
                continue
            std = s["std"][m]
            cells.append(
                f"{s['mean'][m]:.2f} ± {std:.2f}" if std is not None else f"{s['mean'][m]:.2f}"
            )
        lines.append(f"| {label} | {s['num_finished']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nmean ± sample std (ddof=1) over each model's finished trials.\n"


def plot_compare(summaries, labels, path):
    """Grouped bars (one group per metric, one bar per summary) of the means with std error
    bars. Writes a PNG to ``path`` and returns ``path``."""
    fig, axes = new_figure(2.2 + 1.6 * len(METRICS) * max(1, len(labels)) / 2, 3.6)
    ax = axes[0, 0]
    width = 0.8 / max(1, len(labels))
    for i, (label, s) in enumerate(zip(labels, summaries)):
        xs = [j + (i - (len(labels) - 1) / 2) * width for j in range(len(METRICS))]
        means = [s["mean"].get(m, 0.0) for m in METRICS]
        stds = [(s["std"].get(m) or 0.0) for m in METRICS]
        ax.bar(xs, means, width, yerr=stds, capsize=3, label=f"{label} (n={s['num_finished']})")
    ax.set_xticks(range(len(METRICS)), METRICS)
    ax.set_ylabel("test-set AP (%), mean ± std")
    fig.legend(loc="outside lower center", ncols=min(len(labels), 4))  # never over a bar
    return save_png(fig, path)


def main(argv=None):
    """Command-line entry point: ``trials SUMMARY [--out PNG]`` or ``compare SUMMARY...
    [--labels ...] --out PREFIX``. Returns 0."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("trials", help="per-trial figure of one summary")
    t.add_argument("summary")
    t.add_argument("--out", help="PNG path (default: trials.png next to the summary)")
    c = sub.add_parser("compare", help="table and bar chart of several summaries")
    c.add_argument("summaries", nargs="+")
    c.add_argument("--labels", nargs="+", help="one per summary (default: folder names)")
    c.add_argument("--out", required=True, help="output prefix: <out>.md and <out>.png")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "trials":
        out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.summary)), "trials.png")
        logger.info("wrote %s", plot_trials(load_summary(args.summary), out))
        return 0
    labels = args.labels or [_label_of(s) for s in args.summaries]
    if len(labels) != len(args.summaries):
        p.error(f"{len(args.summaries)} summaries but {len(labels)} labels")
    summaries = [load_summary(s) for s in args.summaries]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    text = compare_markdown(summaries, labels)
    with open(args.out + ".md", "w") as f:
        f.write(text)
    plot_compare(summaries, labels, args.out + ".png")
    logger.info("%s\nwrote %s.md and %s.png", text, args.out, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
