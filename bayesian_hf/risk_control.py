"""Decision thresholds chosen for a target risk, with a finite-sample guarantee (Learn-then-Test).

The pipeline routes a prediction to ``accept`` when its calibrated confidence reaches the accept threshold (and,
with a conformal predictor, its set holds one label), to ``review`` when it reaches the review threshold, and to
``escalate`` otherwise.  This module picks those thresholds from labelled held-out data so that a *stated* error
rate holds on new data, not just on the sample:

* :func:`choose_accept_threshold` -- Learn-then-Test (Angelopoulos et al., 2021) with fixed-sequence testing.
  Candidate thresholds are walked from high confidence down (from the candidate most likely to pass if the
  confidences are calibrated: a label-free choice); at each one the one-sided Clopper-Pearson
  upper bound (level ``1 - delta``) of the error rate among the calibration predictions it accepts is compared
  with ``target_risk``; the walk stops at the first bound above the target and the lowest threshold before the
  stop is chosen.  Each bound is a valid p-value test of "the risk at this threshold exceeds the target", and
  testing them in a fixed order until the first failure controls the family-wise error at ``delta`` without a
  Bonferroni split.  **Guarantee:** with probability at least ``1 - delta`` over the calibration sample, the
  error rate among the predictions accepted on new data exchangeable with it is at most ``target_risk``.
* :func:`choose_review_threshold` -- the review threshold below the accept threshold, either for a second (larger)
  target risk on the predictions sent to review (the band between the two thresholds), or for a review budget
  (the share of all traffic sent to review).
* :func:`risk_coverage_table` / :func:`plot_risk_coverage` -- the error rate (with its upper bound) among the
  most confident predictions at a few coverages: what a target risk costs in automation.

Only numpy (and scipy for the beta quantiles) is needed.  Every result is plain JSON (no NaN).  One cohesive
thing past 400 lines: the accept and review choosers, the table and :func:`decision_thresholds` share one set of
bound, scan and fixed-sequence helpers, which a split would scatter.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .metrics import risk_coverage_curve, to_numpy

__all__ = [
    "ACCEPT_NOTHING",
    "MAX_GRID",
    "DEFAULT_COVERAGES",
    "clopper_pearson_upper",
    "choose_accept_threshold",
    "choose_review_threshold",
    "risk_coverage_table",
    "plot_risk_coverage",
    "decision_thresholds",
]

#: The accept threshold stored when no threshold meets the target: above any confidence (confidences are <= 1),
#: so nothing is accepted.  ``pipelines.validate_thresholds`` accepts it as the ``accept`` threshold.
ACCEPT_NOTHING: float = 1.0 + 1e-9

#: Most candidate thresholds in the default grid (unique confidence quantiles).
MAX_GRID: int = 200

DEFAULT_COVERAGES: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

ArrayLike = Any


# ---------------------------------------------------------------------------------------------- validation
def _probability(value: Any, name: str) -> float:
    """A real number strictly between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
    v = float(value)
    if not (math.isfinite(v) and 0.0 < v < 1.0):
        raise ValueError(f"{name} must be in (0, 1) (exclusive), got {value!r}")
    return v


def _confidence(x: ArrayLike, name: str = "confidence") -> np.ndarray:
    c = to_numpy(x)
    if c.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of per-prediction confidences, got shape {c.shape}")
    if c.shape[0] == 0:
        raise ValueError(f"{name} is empty: need at least one calibration prediction")
    if c.dtype == bool or not np.issubdtype(c.dtype, np.number):
        raise ValueError(f"{name} must be numeric, got dtype {c.dtype}")
    c = c.astype(np.float64)
    if not np.all(np.isfinite(c)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if c.min() < 0.0 or c.max() > 1.0:
        raise ValueError(f"{name} must lie in [0, 1] (got values in [{c.min():.4g}, {c.max():.4g}]); pass the "
                         "calibrated max probability, not a logit")
    return c


def _mask(x: ArrayLike, name: str, n: int) -> np.ndarray:
    b = to_numpy(x)
    if b.ndim != 1 or b.shape[0] != n:
        raise ValueError(f"{name} must be a 1-D array with one entry per prediction ({n}), got shape {b.shape}")
    if b.dtype == bool:
        return b
    if not np.issubdtype(b.dtype, np.number):
        raise ValueError(f"{name} must be boolean or 0/1, got dtype {b.dtype}")
    if not np.all((b == 0) | (b == 1)):
        raise ValueError(f"{name} must be boolean or 0/1")
    return b.astype(bool)


def _grid(grid: ArrayLike | None, confidence: np.ndarray) -> np.ndarray:
    """Candidate thresholds, unique, from HIGH to LOW."""
    if grid is None:
        if confidence.size == 0:
            return np.zeros(0)
        values = np.unique(confidence)
        if values.size > MAX_GRID:  # quantiles that are data points (inverted CDF), so each is a real cut
            values = np.unique(np.quantile(confidence, np.linspace(0.0, 1.0, MAX_GRID), method="inverted_cdf"))
        return values[::-1].astype(np.float64)
    g = to_numpy(grid)
    if g.ndim != 1 or g.shape[0] == 0:
        raise ValueError(f"grid must be a non-empty 1-D array of thresholds, got shape {g.shape}")
    if g.dtype == bool or not np.issubdtype(g.dtype, np.number):
        raise ValueError(f"grid must be numeric, got dtype {g.dtype}")
    g = g.astype(np.float64)
    if not np.all(np.isfinite(g)) or g.min() < 0.0 or g.max() > 1.0:
        raise ValueError("grid thresholds must be finite and in [0, 1]")
    return np.unique(g)[::-1]


# ---------------------------------------------------------------------------------------------- bounds
def clopper_pearson_upper(errors: ArrayLike, n: ArrayLike, delta: float) -> np.ndarray:
    """One-sided Clopper-Pearson upper confidence bound (level ``1 - delta``) of a binomial rate.

    ``errors`` out of ``n`` (arrays broadcast together); ``beta.ppf(1 - delta, errors + 1, n - errors)``, and 1
    where ``n == 0`` (nothing observed, nothing certified) or ``errors == n``.
    """
    from scipy.stats import beta

    delta = _probability(delta, "delta")
    e, m = np.broadcast_arrays(np.asarray(errors, dtype=np.float64), np.asarray(n, dtype=np.float64))
    if np.any(e < 0) or np.any(e > m):
        raise ValueError("need 0 <= errors <= n")
    out = np.ones(e.shape, dtype=np.float64)
    ok = (m > 0) & (e < m)
    if np.any(ok):
        out[ok] = beta.ppf(1.0 - delta, e[ok] + 1.0, m[ok] - e[ok])
    return out


def _min_testable(target: float, delta: float) -> int:
    """Fewest predictions whose bound can reach ``target`` at all (zero errors): ``(1 - target)^n <= delta``."""
    return max(1, math.ceil(math.log(delta) / math.log1p(-target) - 1e-12))


def _max_passing_errors(counts: np.ndarray, target: float, delta: float) -> np.ndarray:
    """Most errors among ``k`` predictions whose upper bound is still <= ``target`` (-1: none).  By the
    Clopper-Pearson duality, ``bound(e, k) <= target`` iff ``P(Binomial(k, target) <= e) <= delta``."""
    from scipy.stats import binom

    k = np.asarray(counts, dtype=np.float64)
    e = binom.ppf(delta, k, target)
    e = np.where(binom.cdf(e, k, target) > delta, e - 1, e)
    return np.where(k > 0, e, -1).astype(np.int64)


def _start_index(counts: np.ndarray, conf_mass: np.ndarray, conf_var: np.ndarray, target: float, delta: float) -> int:
    """Where the fixed sequence starts: the candidate whose test is most likely to pass IF the confidences were
    calibrated (errors ~ Poisson-binomial with rates ``1 - confidence``, normal approximation).  It depends on the
    confidences only, never on the labels, so the guarantee is kept; starting at the very top of the grid (one or
    two predictions, whose bound is near 1) would stop the sequence at once."""
    from scipy.stats import norm

    e_max = _max_passing_errors(counts, target, delta)
    sd = np.sqrt(np.maximum(conf_var, 1e-12))
    p_pass = np.where(e_max >= 0, norm.cdf((e_max + 0.5 - conf_mass) / sd), 0.0)
    return int(np.argmax(p_pass))


def _fixed_sequence(bounds: np.ndarray, start: int, target: float) -> tuple[int | None, int]:
    """Test the candidates (ordered from the safest) from ``start`` on; return (index of the last bound <=
    target before the first failure, or None; the number of candidates tested)."""
    chosen, tested = None, 0
    for i in range(start, bounds.size):
        tested += 1
        if bounds[i] > target:
            break
        chosen = i
    return chosen, tested


def _counts_at(thresholds: np.ndarray, confidence: np.ndarray, *weights: np.ndarray) -> tuple[np.ndarray, ...]:
    """For each threshold t: (#predictions with confidence >= t, then the sum of each ``weights`` among them)."""
    order = np.argsort(confidence, kind="stable")
    c = confidence[order]
    idx = np.searchsorted(c, thresholds, side="left")
    out = [(c.size - idx).astype(np.int64)]
    for w in weights:
        f = w[order]
        suffix = np.concatenate((np.cumsum(f[::-1])[::-1], np.zeros(1, dtype=f.dtype)))  # sum over c[i:]
        out.append(suffix[idx])
    return tuple(out)


def _scan(thresholds: np.ndarray, confidence: np.ndarray, wrong: np.ndarray) -> tuple[np.ndarray, ...]:
    """counts, errors, expected errors and their variance under calibration, at each threshold."""
    q = 1.0 - confidence
    return _counts_at(thresholds, confidence, wrong.astype(np.int64), q, q * (1.0 - q))


def _maybe_float(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


# ---------------------------------------------------------------------------------------------- accept
def choose_accept_threshold(
    confidence: ArrayLike,
    correct: ArrayLike,
    target_risk: float,
    delta: float = 0.1,
    grid: ArrayLike | None = None,
    *,
    eligible: ArrayLike | None = None,
) -> dict[str, Any]:
    """The lowest confidence threshold whose accepted predictions have an error rate at most ``target_risk``,
    with probability at least ``1 - delta`` (Learn-then-Test, fixed-sequence testing, Clopper-Pearson bounds).

    ``confidence``: calibrated max probability of each calibration prediction (held-out data, never the data the
    calibrator was fit on); ``correct``: whether its label was right.  ``grid``: candidate thresholds in [0, 1]
    (default: the unique confidences, or at most :data:`MAX_GRID` unique confidence quantiles).  ``eligible``
    (optional mask): predictions that may be accepted at all -- e.g. those whose conformal set holds one label, as
    the pipeline requires; the others are never accepted but count in the coverage.

    Candidates are tested from the highest down; the walk stops at the first bound above the target.  It starts
    at the candidate most likely to pass if the confidences are calibrated (computed from the confidences alone,
    never the labels, so the guarantee holds): the topmost thresholds accept too few predictions for any bound to
    pass and would stop the walk at once.  Thresholds above the start are not tested; they would only have
    accepted less.

    Returns a JSON-safe dict: ``threshold`` (accept when confidence >= threshold), ``target_risk``, ``delta``,
    ``coverage`` (share of calibration predictions accepted), ``empirical_risk`` (their error rate; None when
    nothing is accepted), ``risk_upper_bound``, ``num_accepted``, ``num_samples``, ``feasible``, ``message``.
    When no threshold meets the target, ``feasible`` is False and ``threshold`` is :data:`ACCEPT_NOTHING`
    (above any confidence: nothing is accepted).
    """
    c = _confidence(confidence)
    ok = _mask(correct, "correct", c.shape[0])
    target = _probability(target_risk, "target_risk")
    delta = _probability(delta, "delta")
    elig = np.ones(c.shape[0], dtype=bool) if eligible is None else _mask(eligible, "eligible", c.shape[0])
    n = int(c.shape[0])
    thresholds = _grid(grid, c[elig])
    counts, errors, mass, var = _scan(thresholds, c[elig], ~ok[elig])
    bounds = clopper_pearson_upper(errors, counts, delta)
    start = _start_index(counts, mass, var, target, delta) if counts.size else 0
    chosen, tested = _fixed_sequence(bounds, start, target)
    result: dict[str, Any] = {
        "target_risk": target,
        "delta": delta,
        "num_samples": n,
        "num_candidates": int(thresholds.size),
        "num_tested": int(tested),
    }
    min_n = _min_testable(target, delta)
    if chosen is None:
        if counts.size == 0 or counts.max() < min_n:
            why = (f"too few {'eligible ' if eligible is not None else ''}calibration predictions: even with no error, "
                   f"at least {min_n} are needed to certify a risk of {target:g} at delta={delta:g}")
        else:
            best = int(np.argmin(bounds))
            why = (f"no threshold passed: the first tested (coverage {counts[start] / n:.3f}) has an error upper "
                   f"bound of {bounds[start]:.4f} > {target:g}; the smallest bound of any candidate is "
                   f"{bounds[best]:.4f} (coverage {counts[best] / n:.3f})")
        result.update(threshold=ACCEPT_NOTHING, coverage=0.0, empirical_risk=None, risk_upper_bound=None,
                      num_accepted=0, feasible=False,
                      message=f"target risk {target:g} is infeasible: {why}; nothing will be accepted automatically "
                              "(collect more calibration data, raise target_risk or delta, or improve the model)")
        return result
    k, e = int(counts[chosen]), int(errors[chosen])
    result.update(
        threshold=float(thresholds[chosen]),
        coverage=k / n,
        empirical_risk=e / k,
        risk_upper_bound=float(bounds[chosen]),
        num_accepted=k,
        feasible=True,
        message=(f"accept when confidence >= {thresholds[chosen]:.6g}: {k} of {n} calibration predictions "
                 f"({k / n:.1%}) accepted, {e} wrong; with probability >= {1 - delta:g} the error rate among "
                 f"accepted predictions is <= {target:g} (upper bound {bounds[chosen]:.4f})"),
    )
    return result


# ---------------------------------------------------------------------------------------------- review
def choose_review_threshold(
    confidence: ArrayLike,
    correct: ArrayLike,
    accept_threshold: float,
    *,
    review_target_risk: float | None = None,
    review_budget: float | None = None,
    delta: float = 0.1,
    grid: ArrayLike | None = None,
    accepted: ArrayLike | None = None,
) -> dict[str, Any]:
    """The review threshold ``t_r <= accept_threshold``: predictions not accepted with confidence >= ``t_r`` go to
    review, the rest escalate.  Two criteria (give one or both):

    * ``review_target_risk``: the error rate *of the predictions sent to review* (not accepted, confidence >=
      ``t_r``) is at most this, with probability >= ``1 - delta`` -- the lowest ``t_r`` found by the same
      fixed-sequence Clopper-Pearson walk as the accept threshold, over candidates from ``accept_threshold``
      down (same label-free start rule).  Below ``t_r``
      the model's label is too often wrong to be worth a review: escalate.  Usually larger than the accept
      target (reviewers correct what they see).
    * ``review_budget``: at most this share of ALL traffic is sent to review, with probability >= ``1 - delta``
      (a Clopper-Pearson bound on the share, same walk) -- the reviewers' capacity.

    With both, the higher of the two thresholds: the budget holds, and when the budget is the binding one the
    reviewed predictions are the most confident part of a band certified for the risk (the ``risk_upper_bound``
    reported for the narrower band itself can then be looser, having fewer predictions).  ``accepted`` is
    the mask of calibration predictions the accept rule takes (default ``confidence >= accept_threshold``).

    The accept threshold is itself estimated from the same sample, so the review guarantee holds given it
    (treat it as approximate); the accept guarantee is the rigorous one.

    Returns a JSON-safe dict: ``threshold``, ``accept_threshold``, ``criterion``, ``review_target_risk``,
    ``review_budget``, ``delta``, ``review_share`` (share of calibration predictions reviewed),
    ``review_share_upper_bound``, ``empirical_risk`` and ``risk_upper_bound`` of the reviewed ones (None when
    none), ``num_reviewed``, ``num_samples``, ``feasible``, ``message``.  When infeasible, ``threshold`` is
    ``min(accept_threshold, 1)``: nothing below the accept threshold is reviewed.
    """
    c = _confidence(confidence)
    n = int(c.shape[0])
    ok = _mask(correct, "correct", n)
    delta = _probability(delta, "delta")
    if isinstance(accept_threshold, bool) or not isinstance(accept_threshold, (int, float, np.integer, np.floating)):
        raise ValueError(f"accept_threshold must be a number, got {accept_threshold!r}")
    t_a = float(accept_threshold)
    if not (0.0 <= t_a <= 1.0 or t_a == ACCEPT_NOTHING):
        raise ValueError(f"accept_threshold must be in [0, 1] (or ACCEPT_NOTHING), got {accept_threshold!r}")
    if review_target_risk is None and review_budget is None:
        raise ValueError("give review_target_risk and/or review_budget")
    risk_target = None if review_target_risk is None else _probability(review_target_risk, "review_target_risk")
    budget = None if review_budget is None else _probability(review_budget, "review_budget")
    acc = (c >= t_a) if accepted is None else _mask(accepted, "accepted", n)
    rest = ~acc  # candidates for review
    cap = min(t_a, 1.0)
    thresholds = _grid(grid, c[rest])
    thresholds = np.concatenate(([cap], thresholds[thresholds < cap]))  # start at the accept threshold
    counts, errors, mass, var = _scan(thresholds, c[rest], ~ok[rest])
    picks: dict[str, int | None] = {}
    notes = []
    if risk_target is not None:
        bounds = clopper_pearson_upper(errors, counts, delta)
        start = _start_index(counts, mass, var, risk_target, delta)
        picks["target_risk"], _ = _fixed_sequence(bounds, start, risk_target)
        if picks["target_risk"] is None:
            notes.append(f"no review band has an error upper bound <= {risk_target:g}")
    if budget is not None:
        share_bounds = clopper_pearson_upper(counts, n, delta)
        picks["budget"], _ = _fixed_sequence(share_bounds, 0, budget)
        if picks["budget"] is None:
            notes.append(f"even the narrowest review band may exceed the budget {budget:g}")
    feasible = all(v is not None for v in picks.values())
    idx = min(v for v in picks.values()) if feasible else 0  # higher threshold = smaller index
    t_r = float(thresholds[idx]) if feasible else cap
    k = int(counts[idx]) if feasible else int(np.sum(rest & (c >= cap)))
    e = int(errors[idx]) if feasible else int(np.sum(rest & (c >= cap) & ~ok))
    risk_ub = float(clopper_pearson_upper(e, k, delta)[()]) if k else None
    criterion = "both" if len(picks) == 2 else next(iter(picks))
    message = (f"review when not accepted and confidence >= {t_r:.6g}: {k} of {n} calibration predictions "
               f"({k / n:.1%}) reviewed, {e} of them wrong")
    if not feasible:
        message = f"review criterion infeasible ({'; '.join(notes)}): review threshold set to the accept threshold; " + message
    return {
        "threshold": t_r,
        "accept_threshold": t_a,
        "criterion": criterion,
        "review_target_risk": risk_target,
        "review_budget": budget,
        "delta": delta,
        "review_share": k / n,
        "review_share_upper_bound": float(clopper_pearson_upper(k, n, delta)[()]),
        "empirical_risk": e / k if k else None,
        "risk_upper_bound": _maybe_float(risk_ub),
        "num_reviewed": k,
        "num_samples": n,
        "feasible": bool(feasible),
        "message": message,
    }


# ---------------------------------------------------------------------------------------------- report
def risk_coverage_table(
    confidence: ArrayLike,
    correct: ArrayLike,
    delta: float = 0.1,
    coverages: Sequence[float] = DEFAULT_COVERAGES,
) -> list[dict[str, Any]]:
    """Error rate among the most confident predictions at a few coverages, with its upper bound.

    For each requested coverage q: ``threshold`` = the confidence of the ``ceil(q N)``-th most confident
    prediction; the row describes the predictions with confidence >= threshold (ties can make ``coverage``, the
    share actually kept, larger than q): ``error`` (their error rate), ``upper_bound`` (its one-sided
    Clopper-Pearson bound at level ``1 - delta``, *pointwise*: each row on its own, unlike the accept threshold's
    guarantee over the whole walk), ``num_accepted`` and ``target_coverage`` (q).  Plain JSON.
    """
    c = _confidence(confidence)
    n = int(c.shape[0])
    ok = _mask(correct, "correct", n)
    delta = _probability(delta, "delta")
    qs = [float(q) for q in coverages]
    if not qs or any(not (math.isfinite(q) and 0.0 < q <= 1.0) for q in qs):
        raise ValueError(f"coverages must be a non-empty list of numbers in (0, 1], got {list(coverages)!r}")
    desc = np.sort(c)[::-1]
    thresholds = np.array([desc[min(n, max(1, math.ceil(q * n - 1e-9))) - 1] for q in qs])
    counts, errors = _counts_at(thresholds, c, (~ok).astype(np.int64))
    bounds = clopper_pearson_upper(errors, counts, delta)
    return [
        {"target_coverage": q, "coverage": int(k) / n, "threshold": float(t), "error": int(e) / int(k),
         "upper_bound": float(b), "num_accepted": int(k)}
        for q, t, k, e, b in zip(qs, thresholds, counts, errors, bounds)
    ]


def plot_risk_coverage(
    data: Sequence[Mapping[str, Any]] | tuple[ArrayLike, ArrayLike],
    path: str | os.PathLike[str],
    *,
    delta: float = 0.1,
    target_risk: float | None = None,
    title: str = "Risk-coverage",
) -> str:
    """PNG of error rate against coverage: ``data`` is a :func:`risk_coverage_table` (its rows: error and upper
    bound) or a ``(confidence, correct)`` pair (then also the full empirical curve of
    :func:`bayesian_hf.metrics.risk_coverage_curve` and the table at the default coverages).  ``target_risk``
    draws a horizontal line.  matplotlib's Agg canvas, no pyplot.  Returns the path written."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover
        raise ImportError("plotting needs matplotlib (pip install matplotlib)") from err

    curve = None
    if isinstance(data, tuple) and len(data) == 2 and not isinstance(data[0], Mapping):
        conf, correct = data
        c = _confidence(conf)
        table = risk_coverage_table(c, correct, delta=delta)
        curve = risk_coverage_curve(c, _mask(correct, "correct", c.shape[0]))
    else:
        table = list(data)
        if not table or not all(isinstance(r, Mapping) and {"coverage", "error", "upper_bound"} <= set(r) for r in table):
            raise ValueError("data must be a risk_coverage_table (rows with coverage, error, upper_bound) "
                             "or a (confidence, correct) pair")
    cov = np.array([float(r["coverage"]) for r in table])
    err = np.array([float(r["error"]) for r in table])
    ub = np.array([float(r["upper_bound"]) for r in table])
    order = np.argsort(cov, kind="stable")
    fig = Figure(figsize=(5.5, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    if curve is not None:
        ax.plot(curve[0], curve[1], color="tab:blue", linewidth=1, alpha=0.6, label="empirical risk (all coverages)")
    ax.plot(cov[order], err[order], "o-", color="tab:blue", label="error among accepted")
    ax.plot(cov[order], ub[order], "s--", color="tab:red", label=f"upper bound ({1 - delta:g}, pointwise)")
    if target_risk is not None:
        ax.axhline(float(target_risk), color="black", linestyle=":", linewidth=1, label=f"target risk {float(target_risk):g}")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, max(0.05, float(np.max(ub)) * 1.1))
    ax.set_xlabel("coverage (share accepted)")
    ax.set_ylabel("error rate among accepted")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    out = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, format="png")
    return out


def decision_thresholds(
    probs: ArrayLike,
    labels: ArrayLike,
    conformal: Any | None = None,
    *,
    target_risk: float,
    delta: float,
    review_target_risk: float | None = None,
    review_budget: float | None = None,
    default_review: float = 0.6,
) -> dict[str, Any]:
    """Accept/review thresholds and the risk-coverage table from held-out calibrated probabilities ``(N, C)`` and
    labels -- what ``evaluation.fit_model_calibration(target_risk=...)`` stores.

    With a ``conformal`` predictor only predictions whose set holds one label are eligible for ``accept`` (as in
    the pipeline's decision rule), so the guarantee is about what the pipeline accepts.  Without
    ``review_target_risk`` / ``review_budget`` the review threshold is ``min(default_review, accept)``.
    Returns plain JSON: ``decision_thresholds`` (the compact record for the calibration metadata),
    ``risk_coverage`` (:func:`risk_coverage_table` of the confidences), ``accept`` and ``review`` (the full
    results of :func:`choose_accept_threshold` / :func:`choose_review_threshold`, ``review`` None without a
    review criterion).
    """
    p = to_numpy(probs, np.float64)
    y = to_numpy(labels).reshape(-1)
    if p.ndim != 2 or p.shape[0] != y.shape[0]:
        raise ValueError(f"probs must be (N, C) with one label per row, got {p.shape} and {y.shape[0]} labels")
    confidence = p.max(axis=1)
    correct = p.argmax(axis=1) == y
    # the pipeline accepts only predictions whose conformal set holds one label: certify what it will accept
    eligible = conformal.predict_mask(p).sum(axis=1) == 1 if conformal is not None else None
    accept = choose_accept_threshold(confidence, correct, target_risk, delta, eligible=eligible)
    t_a = accept["threshold"]
    review = None
    if review_target_risk is not None or review_budget is not None:
        accepted = confidence >= t_a if eligible is None else eligible & (confidence >= t_a)
        review = choose_review_threshold(confidence, correct, t_a, review_target_risk=review_target_risk,
                                         review_budget=review_budget, delta=delta, accepted=accepted)
        t_r = review["threshold"]
    else:
        t_r = min(float(default_review), t_a)
    stored = {
        "accept": t_a,
        "review": t_r,
        "target_risk": target_risk,
        "delta": delta,
        "coverage": accept["coverage"],
        "empirical_risk": accept["empirical_risk"],
        "risk_upper_bound": accept["risk_upper_bound"],
        "feasible": accept["feasible"],
        "requires_single_label_set": eligible is not None,
        "review_criterion": review["criterion"] if review is not None else "default",
        "review_target_risk": review_target_risk,
        "review_budget": review_budget,
        "review_share": review["review_share"] if review is not None else None,
        "review_risk_upper_bound": review["risk_upper_bound"] if review is not None else None,
        "review_feasible": review["feasible"] if review is not None else None,
        "num_samples": accept["num_samples"],
        "message": accept["message"],
    }
    return {"decision_thresholds": stored, "risk_coverage": risk_coverage_table(confidence, correct, delta=delta),
            "accept": accept, "review": review}

