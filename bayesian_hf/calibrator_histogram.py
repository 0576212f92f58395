"""Histogram binning [``histogram``]: each class probability mapped to its bin's smoothed frequency
(docs/design.md §10.1)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .calibration_base import (
    Calibrator,
    _binary_or_ovr,
    _class_scores,
    _err,
    _float_list,
    _floats,
    _get,
    _list_of_float_lists,
    _ovr_classes,
    register_calibrator,
)

__all__ = ["HistogramBinning"]


@register_calibrator
class HistogramBinning(Calibrator):
    """Histogram binning (Zadrozny & Elkan 2001), one-vs-rest, equal-width bins.

    Each class probability ``p_c`` falls in one of ``n_bins`` equal-width bins on [0, 1] (bins are
    ``(lo, hi]``, the first ``[0, hi]``, as in :func:`bayesian_hf.metrics.expected_calibration_error`);
    the bin's value is the smoothed frequency of the class among fit examples in that bin,
    ``(positives + centre) / (count + 1)``: one pseudo-observation at the bin centre, so empty bins
    map to their centre (identity-like) and sparse bins are shrunk towards it.  Equal-width (not
    equal-mass) bins keep the stored edges identical for every class and easy to read.  Binary: on
    ``p(class 1)``; ``C > 2``: per class then renormalised.
    """

    method = "histogram"

    def __init__(self, n_bins: int = 15) -> None:
        super().__init__()
        if int(n_bins) < 1:
            raise ValueError(f"n_bins must be >= 1, got {n_bins}")
        self.n_bins = int(n_bins)
        self.bin_edges: list[float] = _floats(np.linspace(0.0, 1.0, self.n_bins + 1))
        self.bin_values: list[list[float]] = []

    def _bins(self, s: np.ndarray) -> np.ndarray:
        edges = np.asarray(self.bin_edges)
        return np.searchsorted(edges[1:-1], s, side="left")

    def _fit(self, z: np.ndarray, y: np.ndarray) -> None:
        s = _class_scores(z)
        edges = np.asarray(self.bin_edges)
        centres = (edges[:-1] + edges[1:]) / 2
        self.bin_values = []
        for j, c in enumerate(_ovr_classes(z.shape[1])):
            idx = self._bins(s[:, j])
            count = np.bincount(idx, minlength=self.n_bins).astype(np.float64)
            pos = np.bincount(idx, weights=(y == c).astype(np.float64), minlength=self.n_bins)
            self.bin_values.append(_floats((pos + centres) / (count + 1.0)))

    def _transform(self, z: np.ndarray) -> np.ndarray:
        s = _class_scores(z)
        vals = np.asarray(self.bin_values)  # (k, n_bins)
        q = np.stack([vals[j][self._bins(s[:, j])] for j in range(vals.shape[0])], axis=1)
        return _binary_or_ovr(q, z.shape[1] == 2)

    def _params(self) -> dict[str, Any]:
        return {"bin_edges": list(self.bin_edges), "bin_values": [list(v) for v in self.bin_values]}

    def _from_params(self, d: Mapping[str, Any], num_classes: int) -> None:
        edges = _float_list(_get(d, "bin_edges", self.method), "bin_edges", self.method)
        if edges.shape[0] < 2 or np.any(np.diff(edges) <= 0):
            raise _err(self.method, "field 'bin_edges' must be >= 2 strictly increasing numbers")
        vals = _list_of_float_lists(d, "bin_values", self.method, len(_ovr_classes(num_classes)))
        for i, v in enumerate(vals):
            if v.shape[0] != edges.shape[0] - 1 or np.any(v < 0) or np.any(v > 1):
                raise _err(self.method, f"bin_values[{i}] must have {edges.shape[0] - 1} entries in [0, 1]")
        self.n_bins = int(edges.shape[0] - 1)
        self.bin_edges = _floats(edges)
        self.bin_values = [_floats(v) for v in vals]
