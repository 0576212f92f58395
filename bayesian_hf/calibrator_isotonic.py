"""Isotonic calibration [``isotonic``]: a monotone step map of each class probability (docs/design.md §10.1)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .calibration_base import (
    ArrayLike,
    Calibrator,
    _binary_or_ovr,
    _class_scores,
    _err,
    _floats,
    _list_of_float_lists,
    _logits,
    _ovr_classes,
    register_calibrator,
)

__all__ = ["IsotonicCalibration"]


def _check_thresholds(x: np.ndarray, yv: np.ndarray, key: str, what: str) -> None:
    if x.shape != yv.shape or x.shape[0] < 1:
        raise _err(what, f"{key}: x and y threshold lists must be non-empty and of equal length")
    if np.any(np.diff(x) < 0) or np.any(np.diff(yv) < 0):
        raise _err(what, f"{key}: thresholds must be non-decreasing")
    if np.any(yv < 0) or np.any(yv > 1):
        raise _err(what, f"{key}: y thresholds must lie in [0, 1]")


@register_calibrator
class IsotonicCalibration(Calibrator):
    """Isotonic regression of the label indicator on the class probability.

    Fit with scikit-learn's ``IsotonicRegression`` (non-decreasing, outputs clipped to [0, 1]), but
    only its threshold arrays are kept; ``transform`` is ``np.interp(p, x_thresholds, y_thresholds)``
    (constant beyond the ends), which is non-decreasing by construction.  Binary: on ``p(class 1)``;
    ``C > 2``: one-vs-rest per class then renormalised (rows mapped to all zeros become uniform).
    The step map can output exactly 0, which costs a large (clipped) NLL on a held-out miss:
    :func:`~bayesian_hf.calibration_selection.select_calibrator` accounts for that.
    """

    method = "isotonic"

    def __init__(self) -> None:
        super().__init__()
        self.x_thresholds: list[list[float]] = []
        self.y_thresholds: list[list[float]] = []

    def _fit(self, z: np.ndarray, y: np.ndarray) -> None:
        try:  # applying a fitted calibrator needs only numpy (transformers ignores imports inside try)
            from sklearn.isotonic import IsotonicRegression
        except ImportError as err:  # pragma: no cover
            raise ImportError("fitting isotonic calibration needs scikit-learn (pip install scikit-learn)") from err

        s = _class_scores(z)
        self.x_thresholds, self.y_thresholds = [], []
        for j, c in enumerate(_ovr_classes(z.shape[1])):
            ir = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
            ir.fit(s[:, j], (y == c).astype(np.float64))
            self.x_thresholds.append(_floats(ir.X_thresholds_))
            self.y_thresholds.append(_floats(np.clip(ir.y_thresholds_, 0.0, 1.0)))

    def calibrated_scores(self, logits: ArrayLike) -> np.ndarray:
        """Per-class isotonic outputs before renormalisation: ``(N, 1)`` binary, ``(N, C)`` otherwise."""
        if self.num_classes is None:
            raise RuntimeError("IsotonicCalibration is not fitted; call fit() first")
        z = _logits(logits)
        if z.shape[1] != self.num_classes:
            raise ValueError(f"fit on {self.num_classes} classes but got {z.shape[1]}")
        s = _class_scores(z)
        return np.stack(
            [np.interp(s[:, j], np.asarray(xt), np.asarray(yt))
             for j, (xt, yt) in enumerate(zip(self.x_thresholds, self.y_thresholds))],
            axis=1,
        )

    def _transform(self, z: np.ndarray) -> np.ndarray:
        return _binary_or_ovr(self.calibrated_scores(z), z.shape[1] == 2)

    def _params(self) -> dict[str, Any]:
        return {"x_thresholds": [list(x) for x in self.x_thresholds],
                "y_thresholds": [list(v) for v in self.y_thresholds]}

    def _from_params(self, d: Mapping[str, Any], num_classes: int) -> None:
        k = len(_ovr_classes(num_classes))
        xs = _list_of_float_lists(d, "x_thresholds", self.method, k)
        ys = _list_of_float_lists(d, "y_thresholds", self.method, k)
        for i, (x, yv) in enumerate(zip(xs, ys)):
            _check_thresholds(x, yv, f"thresholds[{i}]", self.method)
        self.x_thresholds = [_floats(x) for x in xs]
        self.y_thresholds = [_floats(yv) for yv in ys]
