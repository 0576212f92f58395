"""Choosing a calibrator by cross-fitted held-out NLL, and before/after summaries (docs/design.md §10.2).

Not part of the ``trust_remote_code`` files: a loaded model only applies the calibrator it was saved with.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .calibration_base import ArrayLike, Calibrator, _check_known, _logits, make_calibrator
from .calibrators import BUILTIN_CALIBRATORS
from .metrics import (
    NLL_EPS,
    _labels,
    accuracy,
    brier_score,
    expected_calibration_error,
    maximum_calibration_error,
    negative_log_likelihood,
    softmax,
)

__all__ = ["CALIBRATION_SUMMARY_KEYS", "calibration_summary", "select_calibrator"]

_SUMMARY_METRICS = {"ece": expected_calibration_error, "mce": maximum_calibration_error,
                    "nll": negative_log_likelihood, "brier": brier_score, "accuracy": accuracy}
#: The metrics :func:`calibration_summary` reports before and after calibration, in table order.
CALIBRATION_SUMMARY_KEYS: tuple[str, ...] = tuple(_SUMMARY_METRICS)


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
        for name, metric in _SUMMARY_METRICS.items():
            out[f"{name}_{tag}"] = metric(p, y)
    out["num_samples"] = float(z.shape[0])
    return out


def _stratified_folds(y: np.ndarray, n_folds: int, seed: int) -> list[np.ndarray]:
    """Test-index arrays of a shuffled stratified K-fold split (deterministic given ``seed``).

    Each class is shuffled and dealt round-robin over folds, starting where the previous class
    stopped, so fold sizes differ by at most one and every fold has each class if it can.  Kept hand-written:
    scikit-learn's ``StratifiedKFold(shuffle=True)`` assigns other folds for the same seed (it draws with
    ``RandomState`` and allocates each class per fold otherwise), which would change the committed figures.
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
_FLEXIBILITY_ORDER: tuple[str, ...] = tuple(c.method for c in BUILTIN_CALIBRATORS)


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
        _check_known(m)
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
        heldout_ece[m] = expected_calibration_error(oof, y)
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
        "ece_after_in_sample": expected_calibration_error(best.transform(z), y),
        "errors": errors,
    }
    return best, report
