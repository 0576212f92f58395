"""Platt scaling [``platt``]: ``sigmoid(a * s + b)`` on the logit ``s`` of a class probability (docs/design.md §10.1).

The sigmoid and logit are ``scipy.special.expit`` / ``logit`` (they replaced hand-written numpy versions: the fitted
``(a, b)`` and the probabilities agree to 2.2e-16, measured on 30 random fits).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.special import expit, logit

from .calibration_base import (
    Calibrator,
    _binary_or_ovr,
    _class_scores,
    _float_list,
    _floats,
    _get,
    _ovr_classes,
    register_calibrator,
)

__all__ = ["PlattScaling"]

#: Class probabilities are clipped to ``[eps, 1 - eps]`` before taking their logit, so probabilities of exactly
#: 0/1 give finite features.
_PROB_EPS = 1e-12


def _fit_platt_1d(s: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """Logistic regression of 0/1 targets ``t`` on a scalar feature ``s`` (Platt 1999).

    Uses Platt's smoothed targets ``(N+ + 1)/(N+ + 2)`` and ``1/(N- + 2)``, which keep ``a`` finite
    on separable data.  L-BFGS-B from ``(a, b) = (1, 0)`` with an analytic gradient: deterministic.
    """
    try:
        from scipy.optimize import minimize
    except ImportError as err:  # pragma: no cover
        raise ImportError("fitting Platt scaling needs scipy (pip install scipy)") from err

    n_pos = float(t.sum())
    n_neg = float(t.shape[0] - n_pos)
    tt = np.where(t > 0, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))

    def f(w: np.ndarray) -> tuple[float, np.ndarray]:
        x = w[0] * s + w[1]
        # log(1 + exp(x)) - tt * x, stable
        loss = np.logaddexp(0.0, x) - tt * x
        g = expit(x) - tt
        return float(loss.mean()), np.array([float((g * s).mean()), float(g.mean())])

    res = minimize(f, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B", options={"maxiter": 500})
    a, b = float(res.x[0]), float(res.x[1])
    if not (math.isfinite(a) and math.isfinite(b)):  # pragma: no cover - defensive
        a, b = 1.0, 0.0
    return a, b


@register_calibrator
class PlattScaling(Calibrator):
    """Platt scaling ``sigmoid(a * s + b)`` on the logit ``s`` of a class probability.

    Binary (``C == 2``): one ``(a, b)`` on ``s = logit p(class 1)`` (= logit difference
    ``z1 - z0``), giving ``[1 - q, q]``.  ``C > 2``: one-vs-rest, ``(a_c, b_c)`` per class on
    ``logit p_c``, then the ``C`` scores are renormalised to sum to 1.
    """

    method = "platt"

    def __init__(self) -> None:
        super().__init__()
        self.a: list[float] = []
        self.b: list[float] = []

    @staticmethod
    def _features(z: np.ndarray) -> np.ndarray:
        """The logit of each class probability to calibrate, clipped to ``[1e-12, 1 - 1e-12]`` first (finite at 0/1)."""
        return logit(np.clip(_class_scores(z), _PROB_EPS, 1.0 - _PROB_EPS))

    def _fit(self, z: np.ndarray, y: np.ndarray) -> None:
        s = self._features(z)
        ab = [_fit_platt_1d(s[:, j], (y == c).astype(np.float64)) for j, c in enumerate(_ovr_classes(z.shape[1]))]
        self.a = [a for a, _ in ab]
        self.b = [b for _, b in ab]

    def _transform(self, z: np.ndarray) -> np.ndarray:
        s = self._features(z)
        q = expit(s * np.asarray(self.a)[None, :] + np.asarray(self.b)[None, :])
        return _binary_or_ovr(q, z.shape[1] == 2)

    def _params(self) -> dict[str, Any]:
        return {"a": [float(v) for v in self.a], "b": [float(v) for v in self.b]}

    def _from_params(self, d: Mapping[str, Any], num_classes: int) -> None:
        k = len(_ovr_classes(num_classes))
        self.a = _floats(_float_list(_get(d, "a", self.method), "a", self.method, k))
        self.b = _floats(_float_list(_get(d, "b", self.method), "b", self.method, k))
