"""Classification, calibration and uncertainty metrics (docs/design.md §13.1).

Vectorised numpy, with ``scipy.special.softmax``, ``scipy.stats.rankdata`` and ``sklearn.metrics`` (F1, average
precision).  Inputs may be numpy arrays, lists or torch tensors (converted by :func:`to_numpy`).  Conventions used
throughout:

* ``probs``: ``(N, C)`` predictive probabilities, rows summing to 1 (checked to 1e-2, loose enough for bf16/fp16 outputs, so that
  passing logits by mistake fails loudly instead of producing plausible garbage);
* ``labels``: ``(N,)`` integer class ids in ``[0, C)``;
* "confidence" is the max probability, "uncertainty" any score where higher means less sure;
* all metrics return Python ``float``; undefined ranking metrics (only one class of outcome
  present) return ``float("nan")`` rather than raising, so an evaluation loop never crashes on a
  perfect (or perfectly wrong) model.

This file travels with the weights for ``trust_remote_code`` loading (the calibrators import it), so it imports
only numpy and scipy at the top.  One cohesive thing over ~400 lines: the metric functions and the input
validation they share.  The reliability-diagram PNG is ``plotting.py``; ``compute_metrics`` for
``transformers.Trainer`` and ``evaluate_module_path()`` (the local ``evaluate`` module wrapping
:func:`classification_metrics`) are ``metrics_integration.py``; all three still resolve as ``metrics.X``.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import scipy.special

__all__ = [
    "to_numpy",
    "softmax",
    "expected_calibration_error",
    "adaptive_calibration_error",
    "maximum_calibration_error",
    "brier_score",
    "negative_log_likelihood",
    "accuracy",
    "f1",
    "error_detection_auroc",
    "error_detection_auprc",
    "risk_coverage_curve",
    "aurc",
    "ood_auroc",
    "reliability_diagram_data",
    "plot_reliability_diagram",
    "classification_metrics",
    "compute_metrics",
    "make_compute_metrics",
    "evaluate_module_path",
    "NLL_EPS",
    "CLASSIFICATION_METRIC_KEYS",
    "LOWER_IS_BETTER",
]

#: Probabilities are clipped at this value before taking logs (NLL of a zero-probability label
#: is ``-log(1e-12) ~= 27.6`` nats instead of infinity).
NLL_EPS: float = 1e-12

#: Keys returned by :func:`classification_metrics` (and therefore by :func:`compute_metrics`).
CLASSIFICATION_METRIC_KEYS: tuple[str, ...] = (
    "accuracy",
    "f1",
    "nll",
    "brier",
    "ece",
    "adaptive_ece",
    "mce",
    "auroc_error",
    "auprc_error",
    "aurc",
)

#: Metrics for which lower is better (the training loss and the errors among :data:`CLASSIFICATION_METRIC_KEYS`).
LOWER_IS_BETTER: tuple[str, ...] = ("loss", "nll", "brier", "ece", "adaptive_ece", "mce", "aurc")

ArrayLike = Any  # numpy array, torch tensor, or nested sequence


# ----------------------------------------------------------------------------------------------
# conversion / validation helpers
# ----------------------------------------------------------------------------------------------
def to_numpy(x: ArrayLike, dtype: Any = None) -> np.ndarray:
    """Convert a numpy array, torch tensor (any device/dtype, incl. bf16) or sequence to numpy.

    torch is never imported here: tensors are recognised by duck typing (``.detach``).
    """
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        t = x.detach().cpu()
        if getattr(t, "is_floating_point", lambda: False)():
            t = t.double()  # bf16/fp16 have no numpy equivalent; float64 is exact for both
        x = t.numpy()
    arr = np.asarray(x)
    return arr.astype(dtype, copy=False) if dtype is not None else arr


def softmax(logits: ArrayLike, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax in float64 (``scipy.special.softmax``; ``-inf`` logits, i.e. log 0, give
    probability 0)."""
    return scipy.special.softmax(to_numpy(logits, np.float64), axis=axis)


def _labels(labels: ArrayLike, n: int | None = None, num_classes: int | None = None) -> np.ndarray:
    y = to_numpy(labels)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D (N,), got shape {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.number) or not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise ValueError("labels must be integer class ids")
    y = y.astype(np.int64)
    if n is not None and y.shape[0] != n:
        raise ValueError(f"labels has {y.shape[0]} entries but probs has {n} rows")
    if num_classes is not None and y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got range [{y.min()}, {y.max()}]")
    return y


def class_matrix(values: ArrayLike, name: str) -> np.ndarray:
    """``values`` as a float64 ``(N, C)`` array with ``N >= 1`` and ``C >= 2`` (``ValueError`` naming ``name``)."""
    a = to_numpy(values, np.float64)
    if a.ndim != 2 or a.shape[1] < 2:
        raise ValueError(f"{name} must have shape (N, C) with C >= 2, got {a.shape}")
    if a.shape[0] == 0:
        raise ValueError(f"{name} is empty (N = 0)")
    return a


def _probs(probs: ArrayLike) -> np.ndarray:
    """Validate ``(N, C)`` probabilities (C >= 2, finite, rows sum to 1 within 1e-2); float64."""
    p = class_matrix(probs, "probs")
    if not np.all(np.isfinite(p)):
        raise ValueError("probs contains NaN or infinite values")
    if np.any(p < -1e-9) or np.any(np.abs(p.sum(axis=1) - 1.0) > 1e-2):
        raise ValueError(
            "probs rows must be non-negative and sum to 1; if these are logits, pass "
            "softmax(logits) (bayesian_hf.metrics.softmax) instead"
        )
    return np.clip(p, 0.0, 1.0)


def _probs_labels(probs: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``(N, C)`` probabilities and ``(N,)`` labels; return float64 / int64 arrays."""
    p = _probs(probs)
    return p, _labels(labels, p.shape[0], p.shape[1])


def _scores(x: ArrayLike, name: str) -> np.ndarray:
    s = to_numpy(x, np.float64).reshape(-1)
    if np.any(np.isnan(s)):
        raise ValueError(f"{name} contains NaN")
    return s


def _bool(x: ArrayLike, name: str, n: int) -> np.ndarray:
    b = to_numpy(x).reshape(-1)
    if b.shape[0] != n:
        raise ValueError(f"{name} has {b.shape[0]} entries, expected {n}")
    return b.astype(bool)


# ----------------------------------------------------------------------------------------------
# calibration error
# ----------------------------------------------------------------------------------------------
def _equal_width_bins(confidence: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Bin index in ``[0, n_bins)`` for each confidence; bins are ``(lo, hi]`` (first is ``[0, hi]``)."""
    if int(n_bins) < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    idx = np.searchsorted(edges[1:-1], confidence, side="left")
    return idx, edges


def _bin_stats(
    idx: np.ndarray, confidence: np.ndarray, correct: np.ndarray, n_bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin (count, mean confidence, accuracy); empty bins get 0 for the means."""
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    conf_sum = np.bincount(idx, weights=confidence, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=correct.astype(np.float64), minlength=n_bins)
    safe = np.maximum(count, 1.0)
    return count, conf_sum / safe, acc_sum / safe


def _conf_correct(probs: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p, y = _probs_labels(probs, labels)
    return p.max(axis=1), p.argmax(axis=1) == y


def expected_calibration_error(probs: ArrayLike, labels: ArrayLike, n_bins: int = 15) -> float:
    """Top-label ECE with ``n_bins`` equal-width confidence bins.

    ``sum_b (n_b / N) * |accuracy_b - mean confidence_b|`` where confidence is the max probability.
    """
    conf, correct = _conf_correct(probs, labels)
    idx, _ = _equal_width_bins(conf, n_bins)
    count, c, a = _bin_stats(idx, conf, correct, int(n_bins))
    return float(np.sum(count / conf.shape[0] * np.abs(a - c)))


def maximum_calibration_error(probs: ArrayLike, labels: ArrayLike, n_bins: int = 15) -> float:
    """Top-label MCE: the largest ``|accuracy_b - confidence_b|`` over non-empty equal-width bins."""
    conf, correct = _conf_correct(probs, labels)
    idx, _ = _equal_width_bins(conf, n_bins)
    count, c, a = _bin_stats(idx, conf, correct, int(n_bins))
    gaps = np.abs(a - c)[count > 0]
    return float(gaps.max()) if gaps.size else 0.0


def adaptive_calibration_error(probs: ArrayLike, labels: ArrayLike, n_bins: int = 15) -> float:
    """Top-label ECE with equal-mass bins (adaptive ECE).

    Examples are sorted by confidence (stable sort) and split into ``n_bins`` groups of sizes
    differing by at most one (``np.array_split``); ties may straddle a group boundary.  Less
    sensitive than equal-width ECE to most examples piling into the top bin.
    """
    if int(n_bins) < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    conf, correct = _conf_correct(probs, labels)
    n = conf.shape[0]
    order = np.argsort(conf, kind="stable")
    # group id of the k-th smallest element under np.array_split semantics
    sizes = np.array([len(s) for s in np.array_split(np.arange(n), int(n_bins))])
    group = np.repeat(np.arange(int(n_bins)), sizes)
    idx = np.empty(n, dtype=np.int64)
    idx[order] = group
    count, c, a = _bin_stats(idx, conf, correct, int(n_bins))
    return float(np.sum(count / n * np.abs(a - c)))


# ----------------------------------------------------------------------------------------------
# proper scores and classification metrics
# ----------------------------------------------------------------------------------------------
def brier_score(probs: ArrayLike, labels: ArrayLike) -> float:
    """Multi-class Brier score: mean over examples of ``sum_c (p_c - y_c)^2`` (range [0, 2])."""
    p, y = _probs_labels(probs, labels)
    onehot = np.zeros_like(p)
    onehot[np.arange(p.shape[0]), y] = 1.0
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def negative_log_likelihood(probs: ArrayLike, labels: ArrayLike) -> float:
    """Mean negative log-likelihood of the labels in nats, probabilities clipped at ``NLL_EPS``."""
    p, y = _probs_labels(probs, labels)
    return float(-np.mean(np.log(np.maximum(p[np.arange(p.shape[0]), y], NLL_EPS))))


def accuracy(probs: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of examples whose argmax class equals the label."""
    p, y = _probs_labels(probs, labels)
    return float(np.mean(p.argmax(axis=1) == y))


def f1(probs: ArrayLike, labels: ArrayLike) -> float:
    """F1 of the argmax predictions.

    * 2 classes (``C == 2``): binary F1 of the positive class 1, ``2TP / (2TP + FP + FN)``;
    * ``C > 2``: macro F1, the unweighted mean of per-class F1 over classes present in the labels
      or the predictions (scikit-learn's ``average="macro"`` convention).

    A class with ``2TP + FP + FN = 0`` has F1 0 (scikit-learn's ``zero_division=0``).
    """
    p, y = _probs_labels(probs, labels)
    average = "binary" if p.shape[1] == 2 else "macro"
    return float(_sklearn_metrics().f1_score(y, p.argmax(axis=1), average=average, zero_division=0))


# ----------------------------------------------------------------------------------------------
# ranking metrics: error detection, OOD detection
# ----------------------------------------------------------------------------------------------
def _sklearn_metrics() -> Any:
    """``sklearn.metrics``, imported on first use, in a ``try`` so that transformers' ``check_imports`` does not list
    it: this file travels with the weights (the calibrators import it), and loading a model needs neither
    scikit-learn nor its import time (measured +3.5 s after scipy.stats on the shared 2-core machine); only
    evaluation calls F1 and average precision."""
    try:
        import sklearn.metrics
    except ImportError as err:  # pragma: no cover
        raise ImportError("F1 and the ranking metrics need scikit-learn (pip install scikit-learn)") from err
    return sklearn.metrics


def _ranks(scores: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank (``scipy.stats.rankdata``; imported here, not at the top:
    scipy.stats adds 1.8 s to loading a model that never ranks, measured as for :func:`_sklearn_metrics`)."""
    from scipy.stats import rankdata

    return rankdata(scores, method="average")


def _auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney AUROC of ``scores`` for detecting ``positive``; ties count 1/2; NaN if degenerate.

    Kept as the rank-sum formula rather than ``sklearn.metrics.roc_auc_score``: that one rejects infinite scores
    and differs in the last bit (up to 1.1e-16, measured on 300 random cases), this one reproduces the committed
    figures exactly.
    """
    n_pos = int(positive.sum())
    n_neg = positive.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((_ranks(scores)[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """Average precision (step-wise area under the PR curve): ``sklearn.metrics.average_precision_score`` of the
    ranks of ``scores`` (the same value: it depends only on their order and ties; ranks keep infinite scores,
    which sklearn rejects, working); NaN when only one class of outcome is present."""
    n_pos = int(positive.sum())
    if n_pos == 0 or n_pos == positive.shape[0]:
        return float("nan")
    return float(_sklearn_metrics().average_precision_score(positive, _ranks(scores)))


def error_detection_auroc(uncertainty: ArrayLike, correct: ArrayLike) -> float:
    """AUROC of flagging *errors* by uncertainty (higher uncertainty should mean an error).

    1.0 = every error is more uncertain than every correct prediction, 0.5 = uninformative.
    Returns NaN when all predictions are correct or all are wrong (AUROC undefined).
    """
    u = _scores(uncertainty, "uncertainty")
    return _auroc(u, ~_bool(correct, "correct", u.shape[0]))


def error_detection_auprc(uncertainty: ArrayLike, correct: ArrayLike) -> float:
    """Average precision of flagging errors by uncertainty (errors are the positive class).

    Baseline is the error rate.  Returns NaN when all predictions are correct or all are wrong.
    """
    u = _scores(uncertainty, "uncertainty")
    return _average_precision(u, ~_bool(correct, "correct", u.shape[0]))


def ood_auroc(scores_in: ArrayLike, scores_out: ArrayLike) -> float:
    """AUROC of separating out-of-distribution from in-distribution inputs by a score (higher = more OOD).

    Returns NaN if either set is empty.
    """
    s_in, s_out = _scores(scores_in, "scores_in"), _scores(scores_out, "scores_out")
    scores = np.concatenate((s_in, s_out))
    positive = np.concatenate((np.zeros(s_in.shape[0], bool), np.ones(s_out.shape[0], bool)))
    return _auroc(scores, positive)


# ----------------------------------------------------------------------------------------------
# selective prediction
# ----------------------------------------------------------------------------------------------
def risk_coverage_curve(confidence: ArrayLike, correct: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Selective risk as a function of coverage when keeping the most confident predictions first.

    Returns ``(coverages, risks)``, each ``(N,)``: after sorting by confidence descending,
    ``coverages[k-1] = k / N`` and ``risks[k-1]`` = error rate among the top ``k``.  Tied
    confidences are handled by averaging over their random order (cumulative errors are linearly
    interpolated across a tie group), so the curve does not depend on the input order.
    """
    c = _scores(confidence, "confidence")
    n = c.shape[0]
    if n == 0:
        raise ValueError("risk_coverage_curve needs at least one example")
    err = (~_bool(correct, "correct", n)).astype(np.float64)
    order = np.argsort(-c, kind="stable")
    cs, es = c[order], err[order]
    boundary = np.concatenate(([True], cs[1:] != cs[:-1]))
    group = np.cumsum(boundary) - 1
    starts = np.flatnonzero(boundary)
    sizes = np.diff(np.concatenate((starts, [n])))
    group_err = np.add.reduceat(es, starts)
    err_before = np.concatenate(([0.0], np.cumsum(group_err)[:-1]))
    k = np.arange(1, n + 1, dtype=np.float64)
    within = k - starts[group]  # position inside the tie group, 1-based
    cum_err = err_before[group] + within * (group_err / sizes)[group]
    return k / n, cum_err / k


def aurc(confidence: ArrayLike, correct: ArrayLike) -> float:
    """Area under the risk-coverage curve (mean selective risk over coverages k/N); lower is better.

    A random ranking gives about the error rate; a perfect one gives the minimum possible.
    """
    _, risks = risk_coverage_curve(confidence, correct)
    return float(np.mean(risks))


# ----------------------------------------------------------------------------------------------
# reliability diagrams
# ----------------------------------------------------------------------------------------------
def reliability_diagram_data(probs: ArrayLike, labels: ArrayLike, n_bins: int = 15) -> dict[str, Any]:
    """Equal-width top-label reliability data, JSON-ready.

    Returns a dict of lists: ``bin_edges`` (n_bins + 1), ``bin_confidence``, ``bin_accuracy``
    (``None`` for empty bins) and ``bin_count`` (ints), plus scalars ``ece``, ``mce``,
    ``num_samples`` and ``n_bins``.
    """
    conf, correct = _conf_correct(probs, labels)
    idx, edges = _equal_width_bins(conf, n_bins)
    count, c, a = _bin_stats(idx, conf, correct, int(n_bins))
    nonempty = count > 0
    gaps = np.abs(a - c)
    return {
        "bin_edges": [float(e) for e in edges],
        "bin_confidence": [float(v) if ne else None for v, ne in zip(c, nonempty)],
        "bin_accuracy": [float(v) if ne else None for v, ne in zip(a, nonempty)],
        "bin_count": [int(v) for v in count],
        "ece": float(np.sum(count / conf.shape[0] * gaps)),
        "mce": float(gaps[nonempty].max()) if nonempty.any() else 0.0,
        "num_samples": int(conf.shape[0]),
        "n_bins": int(n_bins),
    }


# ----------------------------------------------------------------------------------------------
# the bundle
# ----------------------------------------------------------------------------------------------
def classification_metrics(
    probs: ArrayLike, labels: ArrayLike, uncertainty: ArrayLike | None = None, n_bins: int = 15
) -> dict[str, float]:
    """All headline metrics in one dict (keys: :data:`CLASSIFICATION_METRIC_KEYS`).

    ``uncertainty`` (higher = less sure, e.g. total or epistemic uncertainty) drives error
    detection and selective prediction; by default it is ``1 - max prob``.
    """
    p, y = _probs_labels(probs, labels)
    conf = p.max(axis=1)
    correct = p.argmax(axis=1) == y
    u = 1.0 - conf if uncertainty is None else _scores(uncertainty, "uncertainty")
    if u.shape[0] != p.shape[0]:
        raise ValueError(f"uncertainty has {u.shape[0]} entries but probs has {p.shape[0]} rows")
    return {
        "accuracy": float(np.mean(correct)),
        "f1": f1(p, y),
        "nll": negative_log_likelihood(p, y),
        "brier": brier_score(p, y),
        "ece": expected_calibration_error(p, y, n_bins),
        "adaptive_ece": adaptive_calibration_error(p, y, n_bins),
        "mce": maximum_calibration_error(p, y, n_bins),
        "auroc_error": error_detection_auroc(u, correct),
        "auprc_error": error_detection_auprc(u, correct),
        "aurc": aurc(-u, correct),
    }


#: Names this module still answers for, defined in modules that do not travel with the weights: resolved by
#: name on first use (``__getattr__``), not by ``from .x import``, which would make ``save_pretrained`` copy the
#: plotting and Trainer glue along with the model code.
_MOVED = {
    "plot_reliability_diagram": ".plotting",
    "compute_metrics": ".metrics_integration",
    "make_compute_metrics": ".metrics_integration",
    "evaluate_module_path": ".metrics_integration",
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        return getattr(importlib.import_module(_MOVED[name], __package__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
