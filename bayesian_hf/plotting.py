"""Plots of the metrics: the reliability diagram PNG (docs/design.md §13.1).

Kept out of ``metrics.py``, which travels with the weights for ``trust_remote_code`` loading: a saved model carries
no plotting code. ``bayesian_hf.metrics.plot_reliability_diagram`` still resolves here (``metrics.__getattr__``).
"""

from __future__ import annotations

import os

import numpy as np

from .metrics import ArrayLike, reliability_diagram_data

__all__ = ["plot_reliability_diagram"]


def plot_reliability_diagram(
    probs: ArrayLike,
    labels: ArrayLike,
    path: str | os.PathLike[str],
    n_bins: int = 15,
    title: str = "Reliability diagram",
) -> str:
    """Write a reliability diagram (accuracy vs confidence + confidence histogram) as a PNG.

    Uses matplotlib's Agg canvas directly (no pyplot, no display, no global backend change), so it
    is safe in servers and threads.  Parent folders are created.  Returns the path written.
    """
    try:  # optional: only plotting needs matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover
        raise ImportError("plotting a reliability diagram needs matplotlib (pip install matplotlib)") from err

    d = reliability_diagram_data(probs, labels, n_bins)
    edges = np.asarray(d["bin_edges"])
    centers = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    count = np.asarray(d["bin_count"], dtype=np.float64)
    ne = count > 0
    acc = np.array([v if v is not None else 0.0 for v in d["bin_accuracy"]])
    conf = np.array([v if v is not None else 0.0 for v in d["bin_confidence"]])

    fig = Figure(figsize=(5.0, 6.0), dpi=100)
    FigureCanvasAgg(fig)
    ax, axh = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
    ax.bar(centers[ne], acc[ne], width=width, edgecolor="black", color="tab:blue", alpha=0.8, label="accuracy")
    gap_bottom = np.minimum(acc, conf)[ne]
    ax.bar(
        centers[ne], np.abs(conf - acc)[ne], bottom=gap_bottom, width=width,
        edgecolor="tab:red", color="tab:red", alpha=0.3, hatch="//", label="gap",
    )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title}\nECE = {d['ece']:.4f}, MCE = {d['mce']:.4f}, N = {d['num_samples']}")
    ax.legend(loc="upper left", fontsize=8)
    axh.bar(centers, count / max(count.sum(), 1.0), width=width, edgecolor="black", color="tab:grey")
    axh.set_xlabel("confidence (max probability)")
    axh.set_ylabel("fraction")
    fig.tight_layout()
    out = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    fig.savefig(out, format="png")
    return out
