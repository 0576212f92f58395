"""Post-hoc calibration and conformal prediction sets (docs/design.md §10).

Calibrators map logits ``(N, C)`` to calibrated probabilities ``(N, C)``.  Log-probabilities
count as logits (softmax of log p is p), so the model's ``logits`` output, which is the log of
its predictive distribution, can be passed directly.  ``-inf`` entries (probability 0) are
allowed; NaN and ``+inf`` are rejected.

Every calibrator serialises to plain JSON (lists of floats) through ``to_dict`` /
``calibrator_from_dict``; nothing is ever pickled.  Python floats round-trip through JSON
exactly, so a reloaded calibrator reproduces ``transform`` bit for bit.  Artifacts are read
defensively: corrupt, truncated or mistyped files raise ``ValueError`` naming the bad field.

Methods (``method`` string in brackets):

* :class:`IdentityCalibrator` [``none``]: softmax only; the "do nothing" baseline.
* :class:`TemperatureScaling` [``temperature``]: ``softmax(z / T)``; ``T`` minimises NLL
  (1-D bounded Brent search over ``log T``).  Keeps the argmax, hence accuracy.
* :class:`PlattScaling` [``platt``]: logistic regression ``sigmoid(a * s + b)`` on the logit
  ``s`` of the class probability; binary: one ``(a, b)`` on the class-1 logit (= logit
  difference); ``C > 2``: one-vs-rest per class, then renormalised.
* :class:`IsotonicCalibration` [``isotonic``]: monotone non-decreasing step map of the class
  probability, stored as threshold arrays and applied with ``np.interp``; binary on ``p(class 1)``,
  one-vs-rest + renormalisation for ``C > 2``.
* :class:`HistogramBinning` [``histogram``]: equal-width bins on each class probability
  (one-vs-rest), each bin mapped to its smoothed empirical frequency.
* :class:`ConformalPredictor`: split-conformal prediction sets (LAC / APS) on *probabilities*.

:func:`select_calibrator` picks among them by cross-fitted held-out NLL, ``none`` included, keeping the
least flexible method unless a more flexible one wins by more than its standard error allows, so
calibration is not chosen when it hurts or when its gain is within noise.  :func:`save_calibration` / :func:`load_calibration`
write / read the JSON artifact stored next to the model weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np

# a relative import of a named module, so transformers copies metrics.py with this file for trust_remote_code
from .folder_integrity import temp_name
from .metrics import (
    NLL_EPS,
    _labels,
    _probs,
    _probs_labels,
    accuracy,
    brier_score,
    expected_calibration_error,
    maximum_calibration_error,
    negative_log_likelihood,
    softmax,
    to_numpy,
)

__all__ = [
    "Calibrator",
    "IdentityCalibrator",
    "TemperatureScaling",
    "PlattScaling",
    "IsotonicCalibration",
    "HistogramBinning",
    "ConformalPredictor",
    "register_calibrator",
    "calibrator_from_dict",
    "available_methods",
    "make_calibrator",
    "select_calibrator",
    "calibration_summary",
    "label_mapping_hash",
    "labels_hash",
    "MAX_CALIBRATION_BYTES",
    "save_calibration",
    "load_calibration",
    "LoadedCalibration",
    "CALIBRATION_FILENAME",
    "FORMAT_VERSION",
]

#: File name used when ``save_calibration`` / ``load_calibration`` are given a folder.
CALIBRATION_FILENAME = "calibration.json"
#: Version of the JSON artifact layout; bumped on incompatible changes.
FORMAT_VERSION = 1
_FORMAT_NAME = "bayesian_hf.calibration"

#: Class probabilities are clipped to ``[eps, 1 - eps]`` before taking their logit (Platt), so
#: probabilities of exactly 0/1 give finite features.
_PROB_EPS = 1e-12

logger = logging.getLogger(__name__)
ArrayLike = Any
C = TypeVar("C", bound="Calibrator")


# ----------------------------------------------------------------------------------------------
# validation helpers
# ----------------------------------------------------------------------------------------------
def _logits(logits: ArrayLike) -> np.ndarray:
    z = to_numpy(logits, np.float64)
    if z.ndim != 2 or z.shape[1] < 2:
        raise ValueError(f"logits must have shape (N, C) with C >= 2, got {z.shape}")
    if z.shape[0] == 0:
        raise ValueError("logits is empty (N = 0)")
    if np.any(np.isnan(z)) or np.any(z == np.inf):
        raise ValueError("logits contain NaN or +inf")
    if np.any(np.all(z == -np.inf, axis=1)):
        raise ValueError("a row of logits is all -inf")
    return z


def _log_softmax(z: np.ndarray) -> np.ndarray:
    m = z.max(axis=1, keepdims=True)
    s = z - m
    return s - np.log(np.sum(np.exp(s), axis=1, keepdims=True))


def _nll_from_logits(z: np.ndarray, y: np.ndarray) -> float:
    ls = _log_softmax(z)[np.arange(z.shape[0]), y]
    return float(-np.mean(np.maximum(ls, math.log(NLL_EPS))))


def _renormalise(q: np.ndarray) -> np.ndarray:
    """Row-normalise one-vs-rest scores; rows that are all zero become uniform."""
    s = q.sum(axis=1, keepdims=True)
    uniform = np.full_like(q, 1.0 / q.shape[1])
    return np.where(s > 0, q / np.where(s > 0, s, 1.0), uniform)


def _binary_or_ovr(p_scores: np.ndarray, binary: bool) -> np.ndarray:
    """Assemble probabilities from calibrated class-1 score (binary) or per-class OvR scores."""
    if binary:
        p1 = np.clip(p_scores[:, 0], 0.0, 1.0)
        return np.stack([1.0 - p1, p1], axis=1)
    return _renormalise(np.clip(p_scores, 0.0, 1.0))


def _err(cls: str, msg: str) -> ValueError:
    return ValueError(f"corrupt or invalid {cls} calibrator artifact: {msg}")


def _get(d: Mapping[str, Any], key: str, what: str) -> Any:
    if key not in d:
        raise _err(what, f"missing field {key!r}")
    return d[key]


def _int_field(d: Mapping[str, Any], key: str, what: str, minimum: int) -> int:
    v = _get(d, key, what)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise _err(what, f"field {key!r} must be an integer >= {minimum}, got {v!r}")
    return v


def _float_field(d: Mapping[str, Any], key: str, what: str) -> float:
    v = _get(d, key, what)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _err(what, f"field {key!r} must be a finite number, got {v!r}")
    return float(v)


def _float_list(v: Any, key: str, what: str, length: int | None = None) -> np.ndarray:
    if not isinstance(v, list) or not all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v
    ):
        raise _err(what, f"field {key!r} must be a list of finite numbers")
    if length is not None and len(v) != length:
        raise _err(what, f"field {key!r} must have {length} entries, got {len(v)}")
    return np.asarray(v, dtype=np.float64)


def _list_of_float_lists(d: Mapping[str, Any], key: str, what: str, n_lists: int) -> list[np.ndarray]:
    v = _get(d, key, what)
    if not isinstance(v, list) or len(v) != n_lists:
        raise _err(what, f"field {key!r} must be a list of {n_lists} lists")
    return [_float_list(x, f"{key}[{i}]", what) for i, x in enumerate(v)]


def _floats(a: np.ndarray) -> list[float]:
    return [float(x) for x in np.asarray(a, dtype=np.float64).reshape(-1)]


# ----------------------------------------------------------------------------------------------
# base class + registry
# ----------------------------------------------------------------------------------------------
_REGISTRY: dict[str, type[Calibrator]] = {}


def register_calibrator(cls: type[C]) -> type[C]:
    """Class decorator: make ``cls`` loadable by :func:`calibrator_from_dict` under ``cls.method``."""
    if not getattr(cls, "method", None):
        raise TypeError(f"{cls.__name__} must define a non-empty class attribute 'method'")
    _REGISTRY[cls.method] = cls
    return cls


def available_methods() -> tuple[str, ...]:
    """Names of the registered calibration methods."""
    return tuple(_REGISTRY)


class Calibrator:
    """Common interface: ``fit(logits, labels) -> self``, ``transform(logits) -> probs``, JSON I/O.

    Subclasses set ``method`` and implement ``_fit``, ``_transform``, ``_params`` and
    ``_from_params``; the base class does validation, the class-count check and the envelope.
    """

    method: ClassVar[str] = ""

    def __init__(self) -> None:
        self.num_classes: int | None = None

    # -- public API ---------------------------------------------------------------------------
    def fit(self: C, logits: ArrayLike, labels: ArrayLike) -> C:
        """Fit on logits ``(N, C)`` and integer labels ``(N,)``; returns ``self``."""
        z = _logits(logits)
        y = _labels(labels, z.shape[0], z.shape[1])
        self._fit(z, y)
        self.num_classes = int(z.shape[1])
        return self

    def transform(self, logits: ArrayLike) -> np.ndarray:
        """Calibrated probabilities ``(N, C)`` (float64, rows sum to 1) for logits ``(N, C)``."""
        if self.num_classes is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() first")
        z = _logits(logits)
        if z.shape[1] != self.num_classes:
            raise ValueError(
                f"{type(self).__name__} was fit on {self.num_classes} classes but got logits with "
                f"{z.shape[1]} classes"
            )
        return self._transform(z)

    def fit_transform(self, logits: ArrayLike, labels: ArrayLike) -> np.ndarray:
        """``fit`` then ``transform`` on the same logits."""
        return self.fit(logits, labels).transform(logits)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON parameters: ``{"method": ..., "num_classes": ..., <method parameters>}``."""
        if self.num_classes is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted; nothing to serialise")
        return {"method": self.method, "num_classes": self.num_classes, **self._params()}

    @classmethod
    def from_dict(cls: type[C], d: Mapping[str, Any]) -> C:
        """Rebuild from :meth:`to_dict` output; ``ValueError`` on missing or ill-typed fields."""
        if not isinstance(d, Mapping):
            raise _err(cls.method, f"expected a JSON object, got {type(d).__name__}")
        if d.get("method") != cls.method:
            raise _err(cls.method, f"field 'method' is {d.get('method')!r}, expected {cls.method!r}")
        obj = cls()
        num_classes = _int_field(d, "num_classes", cls.method, 2)
        obj._from_params(d, num_classes)
        obj.num_classes = num_classes
        return obj

    def __repr__(self) -> str:
        if self.num_classes is None:
            return f"{type(self).__name__}(unfitted)"
        return f"{type(self).__name__}(num_classes={self.num_classes})"

    # -- to implement -------------------------------------------------------------------------
    def _fit(self, z: np.ndarray, y: np.ndarray) -> None:
        raise NotImplementedError

    def _transform(self, z: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _params(self) -> dict[str, Any]:
        raise NotImplementedError

    def _from_params(self, d: Mapping[str, Any], num_classes: int) -> None:
        raise NotImplementedError


def calibrator_from_dict(d: Mapping[str, Any]) -> Calibrator:
    """Rebuild any registered calibrator from its ``to_dict`` output, dispatching on ``d["method"]``."""
    if not isinstance(d, Mapping):
        raise ValueError(f"calibrator artifact must be a JSON object, got {type(d).__name__}")
    method = d.get("method")
    if not isinstance(method, str):
        raise ValueError(f"calibrator artifact has no string field 'method' (got {method!r})")
    if method not in _REGISTRY:
        raise ValueError(
            f"unknown calibration method {method!r}; known methods: {sorted(_REGISTRY)}"
        )
    return _REGISTRY[method].from_dict(d)


def make_calibrator(method: str, **kwargs: Any) -> Calibrator:
    """Construct an unfitted calibrator by method name (``"none"``, ``"temperature"``, ...)."""
    if method not in _REGISTRY:
        raise ValueError(f"unknown calibration method {method!r}; known methods: {sorted(_REGISTRY)}")
    return _REGISTRY[method](**kwargs)


# ----------------------------------------------------------------------------------------------
# calibrators
# ----------------------------------------------------------------------------------------------
@register_calibrator
class IdentityCalibrator(Calibrator):
    """No calibration: ``softmax(logits)``.  The baseline every method must beat."""

    method = "none"

    def _fit(self, z: np.ndarray, y: np.ndarray) -> None:
        pass

    def _transform(self, z: np.ndarray) -> np.ndarray:
        return softmax(z)

    def _params(self) -> dict[str, Any]:
        return {}

    def _from_params(self, d: Mapping[str, Any], num_classes: int) -> None:
        pass


@register_calibrator
class TemperatureScaling(Calibrator):
    """``softmax(z / T)`` with ``T > 0`` minimising the NLL of the fit data.

    NLL is unimodal in ``log T`` (it is convex in ``1/T``), so a bounded Brent search over
    ``log T in [log_t_min, log_t_max]`` is deterministic and reliable.  If the optimum found
    is not better than ``T = 1`` on the fit data, ``T = 1`` is kept, so fitting never increases the
    fit-data NLL.  Dividing by a positive constant keeps the argmax, hence accuracy.
    """

    method = "temperature"

    def __init__(self, log_t_min: float = math.log(1e-2), log_t_max: float = math.log(1e3)) -> None:
        super().__init__()
        if not log_t_min < 0.0 < log_t_max:
            raise ValueError("need log_t_min < 0 < log_t_max")
        self.log_t_min, self.log_t_max = float(log_t_min), float(log_t_max)
        self.temperature: float = 1.0

    def _fit(self, z: np.ndarray, y: np.ndarray) -> None:
        try:  # fitting needs scipy; applying a fitted calibrator needs only numpy
            from scipy.optimize import minimize_scalar
        except ImportError as err:  # pragma: no cover
            raise ImportError("fitting temperature scaling needs scipy (pip install scipy)") from err

        def nll(log_t: float) -> float:
            return _nll_from_logits(z / math.exp(log_t), y)

        res = minimize_scalar(
            nll, bounds=(self.log_t_min, self.log_t_max), method="bounded", options={"xatol": 1e-8}
        )
        log_t = float(res.x)
        self.temperature = math.exp(log_t) if nll(log_t) < nll(0.0) else 1.0

    def _transform(self, z: np.ndarray) -> np.ndarray:
        return softmax(z / self.temperature)

    def _params(self) -> dict[str, Any]:
        return {"temperature": float(self.temperature)}

    def _from_params(self, d: Mapping[str, Any], num_classes: int) -> None:
        t = _float_field(d, "temperature", self.method)
        if t <= 0:
            raise _err(self.method, f"field 'temperature' must be > 0, got {t!r}")
        self.temperature = t


def _class_logit(p: np.ndarray) -> np.ndarray:
    """``log(p / (1 - p))`` with ``p`` clipped to ``[1e-12, 1 - 1e-12]`` (finite for p in {0, 1})."""
    pc = np.clip(p, _PROB_EPS, 1.0 - _PROB_EPS)
    return np.log(pc) - np.log1p(-pc)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


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
        g = _sigmoid(x) - tt
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

    def _features(self, z: np.ndarray) -> np.ndarray:
        p = softmax(z)
        return _class_logit(p[:, 1:2] if z.shape[1] == 2 else p)

    def _fit(self, z: np.ndarray, y: np.ndarray) -> None:
        s = self._features(z)
        classes = [1] if z.shape[1] == 2 else list(range(z.shape[1]))
        ab = [_fit_platt_1d(s[:, j], (y == c).astype(np.float64)) for j, c in enumerate(classes)]
        self.a = [a for a, _ in ab]
        self.b = [b for _, b in ab]

    def _transform(self, z: np.ndarray) -> np.ndarray:
        s = self._features(z)
        q = _sigmoid(s * np.asarray(self.a)[None, :] + np.asarray(self.b)[None, :])
        return _binary_or_ovr(q, z.shape[1] == 2)

    def _params(self) -> dict[str, Any]:
        return {"a": [float(v) for v in self.a], "b": [float(v) for v in self.b]}

    def _from_params(self, d: Mapping[str, Any], num_classes: int) -> None:
        k = 1 if num_classes == 2 else num_classes
        self.a = _floats(_float_list(_get(d, "a", self.method), "a", self.method, k))
        self.b = _floats(_float_list(_get(d, "b", self.method), "b", self.method, k))


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
    :func:`select_calibrator` accounts for that.
    """

    method = "isotonic"

    def __init__(self) -> None:
        super().__init__()
        self.x_thresholds: list[list[float]] = []
        self.y_thresholds: list[list[float]] = []

    @staticmethod
    def _scores(z: np.ndarray) -> np.ndarray:
        p = softmax(z)
        return p[:, 1:2] if z.shape[1] == 2 else p

    def _fit(self, z: np.ndarray, y: np.ndarray) -> None:
        try:
            from sklearn.isotonic import IsotonicRegression
        except ImportError as err:  # pragma: no cover
            raise ImportError("fitting isotonic calibration needs scikit-learn (pip install scikit-learn)") from err

        s = self._scores(z)
        classes = [1] if z.shape[1] == 2 else list(range(z.shape[1]))
        self.x_thresholds, self.y_thresholds = [], []
        for j, c in enumerate(classes):
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
        s = self._scores(z)
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
        k = 1 if num_classes == 2 else num_classes
        xs = _list_of_float_lists(d, "x_thresholds", self.method, k)
        ys = _list_of_float_lists(d, "y_thresholds", self.method, k)
        for i, (x, yv) in enumerate(zip(xs, ys)):
            _check_thresholds(x, yv, f"thresholds[{i}]", self.method)
        self.x_thresholds = [_floats(x) for x in xs]
        self.y_thresholds = [_floats(yv) for yv in ys]


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
        s = IsotonicCalibration._scores(z)
        classes = [1] if z.shape[1] == 2 else list(range(z.shape[1]))
        edges = np.asarray(self.bin_edges)
        centres = (edges[:-1] + edges[1:]) / 2
        self.bin_values = []
        for j, c in enumerate(classes):
            idx = self._bins(s[:, j])
            count = np.bincount(idx, minlength=self.n_bins).astype(np.float64)
            pos = np.bincount(idx, weights=(y == c).astype(np.float64), minlength=self.n_bins)
            self.bin_values.append(_floats((pos + centres) / (count + 1.0)))

    def _transform(self, z: np.ndarray) -> np.ndarray:
        s = IsotonicCalibration._scores(z)
        vals = np.asarray(self.bin_values)  # (k, n_bins)
        q = np.stack([vals[j][self._bins(s[:, j])] for j in range(vals.shape[0])], axis=1)
        return _binary_or_ovr(q, z.shape[1] == 2)

    def _params(self) -> dict[str, Any]:
        return {"bin_edges": list(self.bin_edges), "bin_values": [list(v) for v in self.bin_values]}

    def _from_params(self, d: Mapping[str, Any], num_classes: int) -> None:
        edges = _float_list(_get(d, "bin_edges", self.method), "bin_edges", self.method)
        if edges.shape[0] < 2 or np.any(np.diff(edges) <= 0):
            raise _err(self.method, "field 'bin_edges' must be >= 2 strictly increasing numbers")
        k = 1 if num_classes == 2 else num_classes
        vals = _list_of_float_lists(d, "bin_values", self.method, k)
        for i, v in enumerate(vals):
            if v.shape[0] != edges.shape[0] - 1 or np.any(v < 0) or np.any(v > 1):
                raise _err(self.method, f"bin_values[{i}] must have {edges.shape[0] - 1} entries in [0, 1]")
        self.n_bins = int(edges.shape[0] - 1)
        self.bin_edges = _floats(edges)
        self.bin_values = [_floats(v) for v in vals]


# ----------------------------------------------------------------------------------------------
# conformal prediction
# ----------------------------------------------------------------------------------------------
class ConformalPredictor:
    """Split-conformal prediction sets on top of *probabilities* (e.g. a calibrator's output).

    Fit on held-out calibration data ``(probs, labels)`` exchangeable with the test data; then for
    a new example the set contains the true label with probability ``>= 1 - alpha`` (marginally).

    Scores (non-conformity, higher = less conforming):

    * ``"lac"`` (least ambiguous set-valued classifier): ``s = 1 - p_y``; set
      ``{y : 1 - p_y <= qhat}``.  Smallest average sets; may be empty for hard inputs.
    * ``"aps"`` (adaptive prediction sets, deterministic / non-randomised): sort classes by
      probability descending (ties: lower class id first); ``s`` = total probability of the classes
      ranked up to and including ``y``.  The set is ``{y : s <= qhat}`` (the top classes whose
      cumulative probability stays within ``qhat``) plus the top-ranked class, so it is never
      empty; adding the top class only raises coverage.  Set sizes adapt to how spread the
      distribution is.  Without the randomisation of Romano et al. (2020) APS over-covers,
      markedly so with few classes (binary sets are often full when ``alpha`` is below the error
      rate); LAC gives smaller sets at the same guarantee.

    ``qhat`` is the ``ceil((n + 1)(1 - alpha)) / n`` empirical quantile of the ``n`` calibration
    scores, i.e. exactly the ``k = ceil((n + 1)(1 - alpha))``-th smallest score (the
    finite-sample-valid choice: coverage is between ``1 - alpha`` and ``1 - alpha + 1/(n + 1)``
    for continuous scores; note ``np.quantile(..., method="higher")`` at that level would pick the
    ``(k + 1)``-th and over-cover).  Fitting needs ``n >= (1 - alpha) / alpha`` so that ``k <= n``.
    """

    SCORES: ClassVar[tuple[str, ...]] = ("lac", "aps")

    def __init__(self, alpha: float = 0.1, score: str = "lac") -> None:
        if not (isinstance(alpha, (int, float)) and 0.0 < float(alpha) < 1.0):
            raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
        if score not in self.SCORES:
            raise ValueError(f"score must be one of {self.SCORES}, got {score!r}")
        self.alpha = float(alpha)
        self.score = score
        self.qhat: float | None = None
        self.num_classes: int | None = None
        self.n_calibration: int = 0

    # -- scores -------------------------------------------------------------------------------
    @staticmethod
    def _aps_cumulative(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cumulative mass per class in rank order: (inclusive, exclusive), (N, C) each.

        The exclusive mass is exactly 0.0 for the top-ranked class only.
        """
        order = np.argsort(-p, axis=1, kind="stable")
        ps = np.take_along_axis(p, order, axis=1)
        cum_sorted = np.cumsum(ps, axis=1)
        excl_sorted = np.concatenate((np.zeros_like(ps[:, :1]), cum_sorted[:, :-1]), axis=1)
        inclusive = np.empty_like(p)
        exclusive = np.empty_like(p)
        np.put_along_axis(inclusive, order, cum_sorted, axis=1)
        np.put_along_axis(exclusive, order, excl_sorted, axis=1)
        return inclusive, exclusive

    def nonconformity(self, probs: ArrayLike, labels: ArrayLike) -> np.ndarray:
        """Non-conformity score of each (example, label) pair, ``(N,)``."""
        p, y = _probs_labels(probs, labels)
        rows = np.arange(p.shape[0])
        if self.score == "lac":
            return 1.0 - p[rows, y]
        inclusive, _ = self._aps_cumulative(p)
        return inclusive[rows, y]

    # -- fit / predict --------------------------------------------------------------------------
    def fit(self, probs: ArrayLike, labels: ArrayLike) -> ConformalPredictor:
        """Compute ``qhat`` from calibration probabilities ``(n, C)`` and labels ``(n,)``."""
        s = self.nonconformity(probs, labels)
        n = s.shape[0]
        # the 1e-9 guards against float round-up, e.g. (n + 1) * (1 - 0.7) = 3.0000000000000004 for n = 9
        k = math.ceil((n + 1) * (1.0 - self.alpha) - 1e-9)
        if k > n:
            raise ValueError(
                f"conformal calibration needs at least {math.ceil((1 - self.alpha) / self.alpha)} "
                f"examples for alpha={self.alpha} (got {n})"
            )
        self.qhat = float(np.partition(s, k - 1)[k - 1])  # k-th smallest score
        self.num_classes = int(_probs(probs).shape[1])
        self.n_calibration = int(n)
        return self

    def predict_mask(self, probs: ArrayLike) -> np.ndarray:
        """Boolean membership mask ``(N, C)``: ``mask[i, c]`` is True iff class c is in set i."""
        if self.qhat is None or self.num_classes is None:
            raise RuntimeError("ConformalPredictor is not fitted; call fit() first")
        p = _probs(probs)
        if p.shape[1] != self.num_classes:
            raise ValueError(f"fit on {self.num_classes} classes but got probs with {p.shape[1]}")
        if self.score == "lac":
            return (1.0 - p) <= self.qhat
        inclusive, exclusive = self._aps_cumulative(p)
        return (inclusive <= self.qhat) | (exclusive == 0.0)  # exclusive == 0 <=> top-ranked class

    def predict_sets(self, probs: ArrayLike) -> list[list[int]]:
        """Prediction sets as lists of class ids (ascending) for probabilities ``(N, C)``."""
        mask = self.predict_mask(probs)
        return [np.flatnonzero(row).tolist() for row in mask]

    def evaluate(self, probs: ArrayLike, labels: ArrayLike) -> dict[str, float]:
        """Empirical ``coverage``, mean ``set_size`` and ``empty_fraction`` on labelled data."""
        mask = self.predict_mask(probs)
        y = _labels(labels, mask.shape[0], mask.shape[1])
        sizes = mask.sum(axis=1)
        return {
            "coverage": float(mask[np.arange(mask.shape[0]), y].mean()),
            "set_size": float(sizes.mean()),
            "empty_fraction": float((sizes == 0).mean()),
        }

    # -- JSON ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON parameters (``method`` is ``"conformal"``)."""
        if self.qhat is None:
            raise RuntimeError("ConformalPredictor is not fitted; nothing to serialise")
        return {
            "method": "conformal",
            "score": self.score,
            "alpha": self.alpha,
            "qhat": self.qhat,
            "num_classes": self.num_classes,
            "n_calibration": self.n_calibration,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConformalPredictor:
        """Rebuild from :meth:`to_dict` output; ``ValueError`` on missing or ill-typed fields."""
        what = "conformal"
        if not isinstance(d, Mapping):
            raise _err(what, f"expected a JSON object, got {type(d).__name__}")
        if d.get("method") != "conformal":
            raise _err(what, f"field 'method' is {d.get('method')!r}, expected 'conformal'")
        score = _get(d, "score", what)
        if score not in cls.SCORES:
            raise _err(what, f"field 'score' must be one of {cls.SCORES}, got {score!r}")
        alpha = _float_field(d, "alpha", what)
        if not 0.0 < alpha < 1.0:
            raise _err(what, f"field 'alpha' must be in (0, 1), got {alpha!r}")
        obj = cls(alpha=alpha, score=score)
        obj.qhat = _float_field(d, "qhat", what)
        if not 0.0 <= obj.qhat <= 1.0 + _QHAT_SLACK:
            raise _err(what, f"field 'qhat' must be in [0, 1] (a non-conformity score of probabilities), got {obj.qhat!r}")
        obj.num_classes = _int_field(d, "num_classes", what, 2)
        obj.n_calibration = _int_field(d, "n_calibration", what, 1)
        return obj

    def __repr__(self) -> str:
        return f"ConformalPredictor(score={self.score!r}, alpha={self.alpha}, qhat={self.qhat})"


# ----------------------------------------------------------------------------------------------
# selection and summaries
# ----------------------------------------------------------------------------------------------
def _ece_from_probs(p: np.ndarray, y: np.ndarray) -> float:
    return expected_calibration_error(p, y)


def calibration_summary(logits: ArrayLike, labels: ArrayLike, calibrator: Calibrator) -> dict[str, float]:
    """Before (softmax) / after (``calibrator.transform``) metrics on the given data.

    Keys: ``{ece, mce, nll, brier, accuracy}_{before, after}`` plus ``num_samples``; a flat
    ``dict[str, float]`` so it can go straight into ``save_calibration(fit_metrics=...)``.  Pass
    held-out data for an honest "after".
    """
    z = _logits(logits)
    y = _labels(labels, z.shape[0], z.shape[1])
    out: dict[str, float] = {}
    for tag, p in (("before", softmax(z)), ("after", calibrator.transform(z))):
        out[f"ece_{tag}"] = expected_calibration_error(p, y)
        out[f"mce_{tag}"] = maximum_calibration_error(p, y)
        out[f"nll_{tag}"] = negative_log_likelihood(p, y)
        out[f"brier_{tag}"] = brier_score(p, y)
        out[f"accuracy_{tag}"] = accuracy(p, y)
    out["num_samples"] = float(z.shape[0])
    return out


def _stratified_folds(y: np.ndarray, n_folds: int, seed: int) -> list[np.ndarray]:
    """Test-index arrays of a shuffled stratified K-fold split (deterministic given ``seed``).

    Each class is shuffled and dealt round-robin over folds, starting where the previous class
    stopped, so fold sizes differ by at most one and every fold has each class if it can.
    """
    rng = np.random.default_rng(seed)
    fold_of = np.empty(y.shape[0], dtype=np.int64)
    offset = 0
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(idx.shape[0])]
        fold_of[idx] = (offset + np.arange(idx.shape[0])) % n_folds
        offset = (offset + idx.shape[0]) % n_folds
    return [np.flatnonzero(fold_of == k) for k in range(n_folds)]


#: Flexibility order used by :func:`select_calibrator`: a later (more flexible, higher-variance) method has
#: to beat the current choice clearly to replace it.  Unknown (e.g. user-registered) methods come after these.
_FLEXIBILITY_ORDER: tuple[str, ...] = ("none", "temperature", "platt", "isotonic", "histogram")


def _order_by_flexibility(methods: Sequence[str]) -> list[str]:
    """``"none"`` first, then the known methods least to most flexible, then unknown ones in the given order."""
    given = [m for m in dict.fromkeys(methods) if m != "none"]
    known = [m for m in _FLEXIBILITY_ORDER[1:] if m in given]
    return ["none"] + known + [m for m in given if m not in _FLEXIBILITY_ORDER]


def _per_example_nll(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-example NLL in nats, probabilities clipped at ``NLL_EPS`` (same as ``negative_log_likelihood``)."""
    return -np.log(np.maximum(p[np.arange(p.shape[0]), y], NLL_EPS))


def _paired_improvement(loss_current: np.ndarray, loss_candidate: np.ndarray) -> tuple[float, float]:
    """Mean and standard error of the paired per-example differences ``current - candidate`` (> 0: candidate better)."""
    d = loss_current - loss_candidate
    se = float(np.std(d, ddof=1) / math.sqrt(d.shape[0])) if d.shape[0] > 1 else math.inf
    return float(np.mean(d)), se


def select_calibrator(
    logits: ArrayLike,
    labels: ArrayLike,
    methods: Sequence[str] = ("temperature", "platt", "isotonic", "histogram"),
    n_folds: int = 5,
    seed: int = 0,
    margin_se: float = 2.0,
) -> tuple[Calibrator, dict[str, Any]]:
    """Choose a calibration method by cross-fitted held-out NLL, preferring low-variance methods, and refit it on all data.

    Every candidate (``"none"`` is always added) gets out-of-fold predictions from a stratified
    ``n_folds``-fold split (fit on ``K - 1`` folds, predict the held-out one).  Candidates are then
    walked from least to most flexible (``none < temperature < platt < isotonic < histogram``, other
    methods after, in the given order), keeping a current choice that starts at ``"none"``: a candidate
    replaces it only if its per-example out-of-fold NLL is lower on average, by more than ``margin_se``
    standard errors of the paired differences (current minus candidate).  So a flexible method that
    wins by chance on a small calibration set, the usual failure of a plain argmin, is not chosen, and
    the choice is never worse than ``"none"`` on the cross-fitted NLL.  A method whose fit raises
    ``ValueError`` on some fold is not a candidate.  The chosen method is refit on all data.

    Parameters
    ----------
    margin_se:
        How many standard errors of the paired per-example NLL differences a more flexible method must
        win by (the mean difference must also be > 0).  ``0`` gives "any improvement", close to the plain
        argmin; larger values prefer simpler calibrators more strongly.  Default ``2.0``.

    Report (plain JSON): ``chosen``, ``candidates`` (in walk order), ``n_folds``, ``seed``,
    ``num_samples``, ``rule`` / ``margin_se``, ``heldout_nll`` (mean per-example out-of-fold NLL) /
    ``heldout_nll_per_fold`` / ``heldout_ece`` per method (ECE of the out-of-fold predictions),
    ``paired_improvement`` / ``paired_se`` / ``compared_to`` per method (the mean and standard error of
    the NLL improvement over the choice it was compared with; ``None`` for ``"none"`` and failed methods),
    ``ece_before`` / ``nll_before`` (uncalibrated, = method ``none``), ``ece_after`` / ``nll_after``
    (cross-fitted, chosen method), ``ece_after_in_sample`` and ``errors`` (per-method fit error messages).
    """
    z = _logits(logits)
    y = _labels(labels, z.shape[0], z.shape[1])
    n_folds = int(n_folds)
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}")
    if z.shape[0] < n_folds:
        raise ValueError(f"need at least n_folds={n_folds} examples, got {z.shape[0]}")
    margin_se = float(margin_se)
    if not math.isfinite(margin_se) or margin_se < 0:
        raise ValueError(f"margin_se must be a finite number >= 0, got {margin_se}")
    candidates = _order_by_flexibility(methods)
    for m in candidates:
        if m not in _REGISTRY:
            raise ValueError(f"unknown calibration method {m!r}; known methods: {sorted(_REGISTRY)}")
    folds = _stratified_folds(y, n_folds, seed)
    all_idx = np.arange(z.shape[0])

    per_fold: dict[str, list[float]] = {}
    losses: dict[str, np.ndarray] = {}
    heldout_ece: dict[str, float | None] = {}
    errors: dict[str, str] = {}
    for m in candidates:
        oof = np.zeros_like(z)
        try:
            for test in folds:
                train = np.setdiff1d(all_idx, test, assume_unique=True)
                oof[test] = make_calibrator(m).fit(z[train], y[train]).transform(z[test])
        except ValueError as e:  # a method that cannot be fit on some fold is not a candidate
            errors[m] = str(e)
            per_fold[m] = []
            heldout_ece[m] = None
            continue
        losses[m] = _per_example_nll(oof, y)
        per_fold[m] = [float(np.mean(losses[m][test])) for test in folds]
        heldout_ece[m] = _ece_from_probs(oof, y)
    heldout = {m: (float(np.mean(losses[m])) if m in losses else math.inf) for m in candidates}

    chosen = "none"
    improvement: dict[str, float | None] = {m: None for m in candidates}
    improvement_se: dict[str, float | None] = {m: None for m in candidates}
    compared_to: dict[str, str | None] = {m: None for m in candidates}
    for m in candidates[1:]:
        if m not in losses:
            continue
        imp, se = _paired_improvement(losses[chosen], losses[m])
        improvement[m], improvement_se[m], compared_to[m] = imp, se, chosen
        if imp > 0 and imp > margin_se * se:
            chosen = m
    best = make_calibrator(chosen).fit(z, y)
    report: dict[str, Any] = {
        "chosen": chosen,
        "candidates": candidates,
        "n_folds": n_folds,
        "seed": int(seed),
        "num_samples": int(z.shape[0]),
        "rule": (
            f"walk {' < '.join(candidates)} from 'none'; a method replaces the current choice if its mean "
            f"paired out-of-fold NLL improvement is > 0 and > {margin_se:g} x its standard error"
        ),
        "margin_se": margin_se,
        "heldout_nll": {m: (v if math.isfinite(v) else None) for m, v in heldout.items()},
        "heldout_nll_per_fold": per_fold,
        "heldout_ece": heldout_ece,
        "paired_improvement": improvement,
        "paired_se": improvement_se,
        "compared_to": compared_to,
        "nll_before": heldout["none"],
        "ece_before": heldout_ece["none"],
        "nll_after": heldout[chosen],
        "ece_after": heldout_ece[chosen],
        "ece_after_in_sample": _ece_from_probs(best.transform(z), y),
        "errors": errors,
    }
    return best, report


# ----------------------------------------------------------------------------------------------
# artifacts
# ----------------------------------------------------------------------------------------------
def _check_label2id(label2id: Mapping[Any, Any]) -> dict[str, int]:
    if not isinstance(label2id, Mapping) or not label2id:
        raise ValueError("label2id must be a non-empty mapping {label name: class id}")
    out: dict[str, int] = {}
    for k, v in label2id.items():
        if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(
                "label2id must map label names (str) to class ids (int); got "
                f"{k!r}: {v!r} (did you pass id2label?)"
            )
        out[k] = int(v)
    if sorted(out.values()) != list(range(len(out))):
        raise ValueError(f"label2id ids must be exactly 0..{len(out) - 1}, got {sorted(out.values())}")
    return out


def label_mapping_hash(label2id: Mapping[str, int]) -> str:
    """sha256 hex digest of the canonical JSON of ``label2id`` (sorted keys, no whitespace).

    Ties a calibration artifact to the label order it was fit with: a calibrator applied to a
    model whose classes are permuted would silently produce wrong probabilities.
    """
    canon = json.dumps(_check_label2id(label2id), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


def labels_hash(label2id: Mapping[str, int], id2label: Mapping[Any, str]) -> str:
    """sha256 hex digest of BOTH label maps (canonical JSON); ``ValueError`` unless ``id2label`` is exactly the
    inverse of ``label2id`` (a config whose two maps disagree silently swaps labels)."""
    labels = _check_label2id(label2id)
    names = _check_id2label(id2label)
    if {name: i for i, name in names.items()} != labels:
        raise ValueError(f"id2label {names} is not the inverse of label2id {labels}: the labels would be swapped; "
                         "fix config.json so both maps agree")
    canon = json.dumps({"label2id": labels, "id2label": {str(i): n for i, n in sorted(names.items())}},
                       sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


def _check_id2label(id2label: Mapping[Any, Any]) -> dict[int, str]:
    if not isinstance(id2label, Mapping) or not id2label:
        raise ValueError("id2label must be a non-empty mapping {class id: label name}")
    out: dict[int, str] = {}
    for k, v in id2label.items():
        try:
            i = int(k)
        except (TypeError, ValueError):
            raise ValueError(f"id2label keys must be class ids, got {k!r}") from None
        if isinstance(k, bool) or not isinstance(v, str) or i in out:
            raise ValueError(f"id2label must map distinct class ids to label names (str), got {k!r}: {v!r}")
        out[i] = v
    return out


#: ``calibration.json`` larger than this is refused before it is read (a real one is tens of KiB: the biggest
#: part, the drift reference sketch, is bounded by design)
MAX_CALIBRATION_BYTES = 4 * 1024 * 1024
#: ``qhat`` is a non-conformity score: ``1 - p`` (LAC) or a cumulative probability (APS), so in [0, 1] (plus the
#: rounding of a float cumulative sum)
_QHAT_SLACK = 1e-6


def _library_version() -> str:
    try:
        import bayesian_hf  # absent when this file was loaded as remote code

        v = getattr(bayesian_hf, "__version__", None)
        if isinstance(v, str) and v:
            return v
    except Exception:  # pragma: no cover - the package may be mid-import
        pass
    try:
        from importlib.metadata import version

        return version("bayesian-hf")
    except Exception:
        return "unknown"


def _resolve(path: str | os.PathLike[str]) -> str:
    p = os.fspath(path)
    return os.path.join(p, CALIBRATION_FILENAME) if os.path.isdir(p) else p


def save_calibration(
    path: str | os.PathLike[str],
    calibrator: Calibrator,
    *,
    label2id: Mapping[str, int],
    fit_metrics: Mapping[str, float],
    num_samples: int,
    conformal: ConformalPredictor | None = None,
    extra: Mapping[str, Any] | None = None,
    id2label: Mapping[Any, str] | None = None,
    weights_sha256: str | None = None,
) -> str:
    """Write the calibration artifact as JSON, atomically (temp file in the same folder + ``os.replace``).

    ``path`` is a file path, or an existing folder (then ``calibration.json`` inside it).  Fields:
    ``format``, ``format_version``, ``method``, ``parameters`` (``calibrator.to_dict()``),
    ``fit_metrics``, ``num_samples``, ``library_version``, ``label_hash``, ``label2id``,
    ``conformal`` (``to_dict()`` or null), plus the JSON-serialisable ``extra`` fields (e.g. the
    selection report).  With ``id2label`` the artifact also stores ``id2label`` and ``labels_hash`` (both maps,
    which must agree); with ``weights_sha256`` (see ``folder_integrity.weights_fingerprint``) it is bound to
    those weights and ``from_pretrained`` refuses it next to other weights.  Returns the path written.
    """
    if not isinstance(calibrator, Calibrator):
        raise TypeError(f"calibrator must be a Calibrator, got {type(calibrator).__name__}")
    labels = _check_label2id(label2id)
    params = calibrator.to_dict()
    if len(labels) != params["num_classes"]:
        raise ValueError(
            f"label2id has {len(labels)} labels but the calibrator was fit on {params['num_classes']} classes"
        )
    if conformal is not None and conformal.num_classes != params["num_classes"]:
        raise ValueError("conformal predictor and calibrator disagree on the number of classes")
    metrics_clean: dict[str, float | None] = {}
    for k, v in dict(fit_metrics).items():
        fv = float(v)
        metrics_clean[str(k)] = fv if math.isfinite(fv) else None  # strict JSON has no NaN
    doc = {
        "format": _FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "method": calibrator.method,
        "parameters": params,
        "fit_metrics": metrics_clean,
        "num_samples": int(num_samples),
        "library_version": _library_version(),
        "label_hash": label_mapping_hash(labels),
        "label2id": labels,
        "conformal": conformal.to_dict() if conformal is not None else None,
    }
    if id2label is not None:
        doc["labels_hash"] = labels_hash(labels, id2label)
        doc["id2label"] = {str(i): n for i, n in sorted(_check_id2label(id2label).items())}
    if weights_sha256 is not None:
        if not isinstance(weights_sha256, str) or len(weights_sha256) != 64:
            raise ValueError("weights_sha256 must be a sha256 hex digest")
        doc["weights_sha256"] = weights_sha256
    for key, value in dict(extra or {}).items():
        if key in doc:
            raise ValueError(f"extra field {key!r} would overwrite a calibration artifact field")
        doc[key] = value
    text = json.dumps(doc, indent=2, sort_keys=True, allow_nan=False) + "\n"
    out = _resolve(path)
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, temp_name(os.path.basename(out)))  # its owner's pid: removed if the writer is killed
    try:
        with open(tmp, "x", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return out


@dataclass(frozen=True)
class LoadedCalibration:
    """Result of :func:`load_calibration`."""

    calibrator: Calibrator
    conformal: ConformalPredictor | None
    metadata: dict[str, Any] = field(default_factory=dict)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name} is not allowed in a calibration artifact")


def load_calibration(
    path: str | os.PathLike[str],
    *,
    label2id: Mapping[str, int] | None = None,
    ignore_mismatch: bool = False,
    id2label: Mapping[Any, str] | None = None,
    weights_sha256: str | None = None,
) -> LoadedCalibration:
    """Read an artifact written by :func:`save_calibration` (file path or folder).

    Raises ``FileNotFoundError`` if absent and ``ValueError`` naming the file for everything else: a file over
    :data:`MAX_CALIBRATION_BYTES`, JSON that is corrupt, truncated, not UTF-8 or nested too deep, a field that is
    missing, ill-typed or out of range (``qhat`` outside [0, 1], ``decision_thresholds`` outside [0, 1], ...), or
    a binding that does not hold: ``label2id`` (and ``id2label``) given and their hash differs from the stored
    one, ``weights_sha256`` given and the artifact is bound to other weights (with ``ignore_mismatch=True`` these
    two only warn). An artifact without ``weights_sha256`` (written before the binding existed) loads with a
    warning. ``metadata`` holds every top-level field except ``parameters`` and ``conformal``.
    """
    p = _resolve(path)
    size = os.path.getsize(p)
    if size > MAX_CALIBRATION_BYTES:
        raise ValueError(f"calibration artifact {p} is {size} bytes, over the {MAX_CALIBRATION_BYTES}-byte limit "
                         "(a real one is tens of KiB): refusing to read it")
    try:
        return _load_calibration_document(p, label2id, ignore_mismatch, id2label, weights_sha256)
    except ValueError as err:
        if p in str(err):
            raise
        raise ValueError(f"calibration artifact {p}: {err}") from err
    except (RecursionError, UnicodeDecodeError, TypeError, KeyError, AttributeError, IndexError, OverflowError,
            MemoryError) as err:
        raise ValueError(f"calibration artifact {p} is corrupt ({type(err).__name__}: {err}); "
                         "re-run `bayesian-hf calibrate`") from err


def _check_metadata_ranges(doc: Mapping[str, Any], p: str) -> None:
    stored = doc.get("decision_thresholds")
    if stored is not None:
        if not isinstance(stored, Mapping):
            raise ValueError(f"calibration artifact {p}: 'decision_thresholds' must be an object")
        for key in ("accept", "review"):
            v = stored.get(key)
            if v is None and key not in stored:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0 + _QHAT_SLACK:
                raise ValueError(f"calibration artifact {p}: decision_thresholds[{key!r}] must be in [0, 1], got {v!r}")
        if isinstance(stored.get("accept"), (int, float)) and isinstance(stored.get("review"), (int, float)) \
                and stored["review"] > stored["accept"]:
            raise ValueError(f"calibration artifact {p}: decision_thresholds 'review' exceeds 'accept'")
    for key in ("risk_coverage",):
        if doc.get(key) is not None and not isinstance(doc[key], list):
            raise ValueError(f"calibration artifact {p}: {key!r} must be a list")
    if doc.get("drift_reference") is not None and not isinstance(doc["drift_reference"], Mapping):
        raise ValueError(f"calibration artifact {p}: 'drift_reference' must be an object")


def _load_calibration_document(
    p: str,
    label2id: Mapping[str, int] | None,
    ignore_mismatch: bool,
    id2label: Mapping[Any, str] | None,
    weights_sha256: str | None,
) -> LoadedCalibration:
    with open(p, encoding="utf-8") as f:
        text = f.read()
    try:
        doc = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise ValueError(f"calibration artifact {p} is not valid JSON (truncated or corrupt?): {e}") from e
    if not isinstance(doc, dict):
        raise ValueError(f"calibration artifact {p} must contain a JSON object")
    if doc.get("format") != _FORMAT_NAME:
        raise ValueError(f"{p} is not a bayesian_hf calibration artifact (format={doc.get('format')!r})")
    required = ("format_version", "method", "parameters", "fit_metrics", "num_samples", "library_version", "label_hash")
    missing = [k for k in required if k not in doc]
    if missing:
        raise ValueError(f"calibration artifact {p} is missing fields {missing}")
    fv = doc["format_version"]
    if isinstance(fv, bool) or not isinstance(fv, int) or fv < 1 or fv > FORMAT_VERSION:
        raise ValueError(
            f"calibration artifact {p} has format_version {fv!r}; this library reads versions 1..{FORMAT_VERSION}"
        )
    if not isinstance(doc["method"], str) or doc["method"] not in _REGISTRY:
        raise ValueError(f"calibration artifact {p}: unknown calibration method {doc['method']!r}; known methods: "
                         f"{sorted(_REGISTRY)}")
    if not isinstance(doc["parameters"], dict) or doc["parameters"].get("method") != doc["method"]:
        raise ValueError(f"calibration artifact {p}: 'parameters' must be an object whose method is {doc['method']!r}")
    if not isinstance(doc["fit_metrics"], dict):
        raise ValueError(f"calibration artifact {p}: 'fit_metrics' must be an object")
    ns = doc["num_samples"]
    if isinstance(ns, bool) or not isinstance(ns, int) or ns < 0:
        raise ValueError(f"calibration artifact {p}: 'num_samples' must be a non-negative integer, got {ns!r}")
    stored_hash = doc["label_hash"]
    if not isinstance(stored_hash, str) or len(stored_hash) != 64:
        raise ValueError(f"calibration artifact {p}: 'label_hash' must be a sha256 hex string")
    if doc.get("label2id") is not None and label_mapping_hash(doc["label2id"]) != stored_hash:
        raise ValueError(f"calibration artifact {p}: stored label2id does not match its label_hash (corrupt file)")
    stored_both = doc.get("labels_hash")
    if stored_both is not None:
        if not isinstance(stored_both, str) or doc.get("label2id") is None or doc.get("id2label") is None \
                or labels_hash(doc["label2id"], doc["id2label"]) != stored_both:
            raise ValueError(f"calibration artifact {p}: stored id2label/label2id do not match its labels_hash "
                             "(corrupt file)")
    stored_weights = doc.get("weights_sha256")
    if stored_weights is not None and (not isinstance(stored_weights, str) or len(stored_weights) != 64):
        raise ValueError(f"calibration artifact {p}: 'weights_sha256' must be a sha256 hex string")
    _check_metadata_ranges(doc, p)
    calibrator = calibrator_from_dict(doc["parameters"])
    conformal = ConformalPredictor.from_dict(doc["conformal"]) if doc.get("conformal") is not None else None
    if conformal is not None and conformal.num_classes != calibrator.num_classes:
        raise ValueError(f"calibration artifact {p}: conformal and calibrator disagree on the number of classes")
    if conformal is not None and not 0.0 <= float(conformal.qhat) <= 1.0 + _QHAT_SLACK:
        raise ValueError(f"calibration artifact {p}: conformal 'qhat' must be in [0, 1] (a non-conformity score of "
                         f"probabilities), got {conformal.qhat!r}")
    mismatches = []
    if label2id is not None:
        expected = label_mapping_hash(label2id)
        if expected != stored_hash:
            mismatches.append(
                f"calibration artifact {p} was fit with a different label mapping (label_hash "
                f"{stored_hash[:12]}..., model's label2id hashes to {expected[:12]}...); stored label2id: "
                f"{doc.get('label2id')}"
            )
        elif id2label is not None and stored_both is not None and labels_hash(label2id, id2label) != stored_both:
            mismatches.append(f"calibration artifact {p} was fit with a different id2label (stored: "
                              f"{doc.get('id2label')}, model: {dict(id2label)})")
    if weights_sha256 is not None:
        if stored_weights is None:
            logger.warning("calibration artifact %s is not bound to weights (written by an older version): it cannot "
                           "be checked against them; re-run `bayesian-hf calibrate` to bind it", p)
        elif stored_weights != weights_sha256:
            mismatches.append(
                f"calibration artifact {p} was fit on other weights (weights_sha256 {stored_weights[:12]}..., the "
                f"model's weights hash to {weights_sha256[:12]}...): re-run `bayesian-hf calibrate` on this model")
    for msg in mismatches:
        if not ignore_mismatch:
            raise ValueError(msg + "; pass ignore_mismatch=True (ignore_calibration_mismatch) to load anyway")
        warnings.warn(msg, UserWarning, stacklevel=3)
    metadata = {k: v for k, v in doc.items() if k not in ("parameters", "conformal")}
    return LoadedCalibration(calibrator=calibrator, conformal=conformal, metadata=metadata)
