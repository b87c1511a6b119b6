"""Figures without a display: one matplotlib set-up for every PNG the project draws.

matplotlib is imported inside :func:`new_figure`, not when this module is imported, so the
entry points that can draw (the trial runner, the demo, ``python -m pretrain.plots``) start
without loading it. A figure gets its own Agg canvas (``FigureCanvasAgg``) instead of going
through ``pyplot``: no display, no global backend or figure registry, safe in any thread.
PNGs are written with :func:`common.io.atomic_write`, so a kill never leaves half an image
next to a report that links it.
"""

from common.io import atomic_write

DPI = 100  # figures are sized in inches; 100 dpi keeps 10-inch figures readable on screen


def new_figure(width, height, nrows=1, ncols=1):
    """Return ``(figure, axes)``: a ``width`` x ``height`` inch figure with constrained layout
    (labels are never cut off) and an ``nrows`` x ``ncols`` numpy array of axes (always 2-D)."""
    # matplotlib costs ~0.3 s to import: only callers that draw pay for it
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def no_data(ax, text):
    """Write ``text`` in the middle of an empty ``ax`` (a panel whose data the run lacks)."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def save_png(fig, path):
    """Write ``fig`` to ``path`` as a PNG (atomically, the folder created if missing); returns
    ``path``."""
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=DPI))
    return path
