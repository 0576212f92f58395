"""Property tests of bayesian_hf.risk_control: the finite-sample guarantee of the accept threshold, checked by
simulation against a known error process, and structural properties (monotonicity, bounds, JSON) with hypothesis.

The guarantee: with probability >= 1 - delta over the calibration sample, the error rate among the predictions
accepted on new data is <= target_risk.  Over many independent calibration draws, the share of draws whose
threshold violates the target on a large fresh sample must therefore be at most delta, up to the binomial noise
of the number of draws (3 standard errors).  Seeds are fixed: a failure is a regression, not bad luck.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bayesian_hf import risk_control as RC

DRAWS = 300
N_CAL = 500
N_FRESH = 400_000

# known error processes: confidence c ~ U(0.5, 1), correct ~ Bernoulli(g(c))
PROCESSES = {
    "calibrated": lambda c: c,
    "underconfident": lambda c: c**0.3,  # errors concentrated at low confidence: high coverage is reachable
    "overconfident": lambda c: 0.5 + 0.9 * (c - 0.5),  # at least 5 % errors even at confidence 1
}


class _Fresh:
    """A large fresh sample from the same process; realised error rate among predictions with confidence >= t."""

    def __init__(self, g, rng: np.random.Generator) -> None:
        c = rng.uniform(0.5, 1.0, N_FRESH)
        wrong = rng.random(N_FRESH) >= g(c)
        order = np.argsort(-c)
        self.neg_sorted = -c[order]
        self.cum_errors = np.cumsum(wrong[order])

    def risk(self, t: float) -> float | None:
        k = int(np.searchsorted(self.neg_sorted, -t, side="right"))  # how many have confidence >= t
        return float(self.cum_errors[k - 1] / k) if k else None


def _naive_threshold(c: np.ndarray, correct: np.ndarray, target: float) -> float:
    """The plug-in rule (lowest threshold whose EMPIRICAL risk is within the target): no guarantee."""
    order = np.argsort(-c)
    risk = np.cumsum(~correct[order]) / np.arange(1, c.size + 1)
    ok = np.flatnonzero(risk <= target)
    return float(c[order][ok[-1]]) if ok.size else RC.ACCEPT_NOTHING


@pytest.mark.parametrize(
    ("process", "target", "delta", "min_feasible"),
    [("calibrated", 0.10, 0.10, 0.6), ("underconfident", 0.05, 0.20, 0.6), ("overconfident", 0.12, 0.10, 0.3)],
)
def test_accept_threshold_controls_the_risk_over_calibration_draws(process, target, delta, min_feasible) -> None:
    g = PROCESSES[process]
    rng = np.random.default_rng(12345)
    fresh = _Fresh(g, rng)
    violations = naive_violations = feasible = 0
    for _ in range(DRAWS):
        c = rng.uniform(0.5, 1.0, N_CAL)
        correct = rng.random(N_CAL) < g(c)
        r = RC.choose_accept_threshold(c, correct, target, delta=delta)
        if r["feasible"]:
            feasible += 1
            realised = fresh.risk(r["threshold"])
            violations += realised is not None and realised > target
        else:  # accepting nothing never violates the target
            assert r["threshold"] > 1.0 and r["coverage"] == 0.0
        naive = fresh.risk(_naive_threshold(c, correct, target))
        naive_violations += naive is not None and naive > target
    tolerance = delta + 3 * math.sqrt(delta * (1 - delta) / DRAWS)
    assert violations / DRAWS <= tolerance, (violations, feasible)
    # not vacuous: the procedure does accept something in most draws, and the check can see a violation
    assert feasible / DRAWS >= min_feasible, feasible
    assert naive_violations / DRAWS > tolerance, naive_violations


def test_review_budget_holds_over_calibration_draws() -> None:
    """The share of fresh traffic sent to review stays within the budget in >= 1 - delta of the draws."""
    g, budget, delta = PROCESSES["calibrated"], 0.15, 0.1
    rng = np.random.default_rng(7)
    fresh = rng.uniform(0.5, 1.0, N_FRESH)
    violations = 0
    for _ in range(DRAWS):
        c = rng.uniform(0.5, 1.0, N_CAL)
        correct = rng.random(N_CAL) < g(c)
        t_a = RC.choose_accept_threshold(c, correct, 0.1, delta=delta)["threshold"]
        r = RC.choose_review_threshold(c, correct, t_a, review_budget=budget, delta=delta)
        share = np.mean((fresh < t_a) & (fresh >= r["threshold"]))
        violations += share > budget
    assert violations / DRAWS <= delta + 3 * math.sqrt(delta * (1 - delta) / DRAWS)


# ------------------------------------------------------------------------------------------------ hypothesis
FAST = settings(max_examples=40, deadline=None, derandomize=True)


def _sample(seed: int, n: int, power: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    c = np.round(rng.uniform(0.34, 1.0, n), 3)  # rounding makes ties
    return c, rng.random(n) < c**power


@FAST
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(30, 600), power=st.floats(0.2, 2.0),
       delta=st.sampled_from([0.05, 0.1, 0.2]))
def test_threshold_monotone_in_target_and_bound_within_target(seed, n, power, delta) -> None:
    c, correct = _sample(seed, n, power)
    previous = math.inf
    for target in (0.02, 0.05, 0.1, 0.2, 0.35, 0.5):
        r = RC.choose_accept_threshold(c, correct, target, delta=delta)
        json.dumps(r, allow_nan=False)
        assert r["threshold"] <= previous
        previous = r["threshold"]
        accepted = c >= r["threshold"]
        assert r["num_accepted"] == accepted.sum()
        if r["feasible"]:
            assert r["empirical_risk"] <= r["risk_upper_bound"] <= target
            assert r["empirical_risk"] == pytest.approx(1 - correct[accepted].mean())
        else:
            assert not accepted.any() and r["threshold"] == RC.ACCEPT_NOTHING


@FAST
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(30, 600), power=st.floats(0.2, 2.0),
       review=st.floats(0.1, 0.6), budget=st.floats(0.02, 0.6))
def test_review_threshold_below_accept_and_within_its_criteria(seed, n, power, review, budget) -> None:
    c, correct = _sample(seed, n, power)
    t_a = RC.choose_accept_threshold(c, correct, 0.1)["threshold"]
    for kwargs in ({"review_target_risk": review}, {"review_budget": budget},
                   {"review_target_risk": review, "review_budget": budget}):
        r = RC.choose_review_threshold(c, correct, t_a, **kwargs)
        json.dumps(r, allow_nan=False)
        assert r["threshold"] <= min(t_a, 1.0)
        band = (c < t_a) & (c >= r["threshold"])
        assert r["num_reviewed"] == band.sum()
        if r["feasible"] and "review_budget" in kwargs:
            assert r["review_share_upper_bound"] <= budget
        if r["feasible"] and r["criterion"] == "target_risk" and band.any():
            assert r["risk_upper_bound"] <= review
