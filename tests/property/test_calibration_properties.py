"""Property tests for calibration (docs/design.md §10) with hypothesis.

Data are generated from a seed drawn by hypothesis: logits ``z`` define a well-specified model
(labels ~ softmax(z)); sharpening (``factor * z`` with factor > 1) makes it over-confident.
Statistical properties (held-out NLL, coverage) use ``derandomize=True`` so a run is reproducible:
a failure is a real regression, not a one-in-a-thousand draw.
"""

from __future__ import annotations

import json
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bayesian_hf import calibration as C
from bayesian_hf import metrics as M

FAST = settings(max_examples=50, deadline=None, derandomize=True)
SLOW = settings(max_examples=40, deadline=None, derandomize=True)


def _model(seed: int, n: int, c: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, c)) * scale
    p = M.softmax(z)
    y = np.minimum((rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1), c - 1)
    return z, y


seeds = st.integers(0, 2**32 - 1)
classes = st.integers(2, 6)


@FAST
@given(seed=seeds, c=classes, scale=st.floats(1.0, 3.0), factor=st.floats(2.0, 5.0))
def test_temperature_keeps_accuracy_and_lowers_nll_when_overconfident(seed, c, scale, factor) -> None:
    z, y = _model(seed, 1600, c, scale)
    over = factor * z
    fit, test = slice(0, 800), slice(800, None)
    ts = C.TemperatureScaling().fit(over[fit], y[fit])
    assert ts.temperature > 1.0  # it detects over-confidence
    for part in (fit, test):
        before, after = M.softmax(over[part]), ts.transform(over[part])
        assert np.array_equal(after.argmax(1), before.argmax(1))
        assert M.accuracy(after, y[part]) == M.accuracy(before, y[part])
        assert M.negative_log_likelihood(after, y[part]) < M.negative_log_likelihood(before, y[part])


@FAST
@given(seed=seeds, c=classes, n=st.integers(20, 400), scale=st.floats(0.1, 4.0))
def test_temperature_never_raises_fit_nll(seed, c, n, scale) -> None:
    z, y = _model(seed, n, c, scale)
    ts = C.TemperatureScaling().fit(z, y)
    assert M.negative_log_likelihood(ts.transform(z), y) <= M.negative_log_likelihood(M.softmax(z), y) + 1e-12


@FAST
@given(seed=seeds, c=classes, n=st.integers(10, 400), factor=st.floats(0.3, 4.0))
def test_isotonic_is_monotone_in_the_score(seed, c, n, factor) -> None:
    z, y = _model(seed, n, c, 2.0)
    iso = C.IsotonicCalibration().fit(factor * z, y)
    rng = np.random.default_rng(seed ^ 0x5EED)
    probe = rng.normal(size=(500, c)) * 3.0
    scores = iso.calibrated_scores(probe)
    p = M.softmax(probe)
    cols = [1] if c == 2 else list(range(c))
    for j, col in enumerate(cols):
        order = np.argsort(p[:, col], kind="stable")
        assert np.all(np.diff(scores[order, j]) >= 0)
    if c == 2:  # binary: the calibrated probability of class 1 is monotone in p(class 1)
        q1 = iso.transform(probe)[:, 1]
        order = np.argsort(p[:, 1], kind="stable")
        assert np.all(np.diff(q1[order]) >= 0)


@SLOW
@given(
    seed=seeds,
    c=st.integers(2, 8),
    alpha=st.sampled_from([0.05, 0.1, 0.2, 0.3]),
    n_cal=st.integers(300, 1500),
    factor=st.floats(0.5, 3.0),
    score=st.sampled_from(["lac", "aps"]),
)
def test_conformal_sets_reach_coverage(seed, c, alpha, n_cal, factor, score) -> None:
    n_test = 2000
    z, y = _model(seed, n_cal + n_test, c, 2.0)
    probs = M.softmax(factor * z)  # mis-calibrated model: the guarantee must not depend on it
    cp = C.ConformalPredictor(alpha=alpha, score=score).fit(probs[:n_cal], y[:n_cal])
    ev = cp.evaluate(probs[n_cal:], y[n_cal:])
    # coverage given the calibration set is ~ Beta around 1 - alpha (sd ~ sqrt(a(1-a)/n_cal)), and
    # the test estimate adds binomial noise (sd ~ sqrt(a(1-a)/n_test))
    sd = math.sqrt(alpha * (1 - alpha) * (1 / n_test + 1 / n_cal))
    assert ev["coverage"] >= 1 - alpha - 3 * sd
    if score == "lac":  # and it is not trivially achieved with oversized sets
        assert ev["coverage"] <= 1 - alpha + 1 / (n_cal + 1) + 3 * sd
    else:
        assert ev["empty_fraction"] == 0.0
    sets = cp.predict_sets(probs[n_cal:])
    assert [len(s) for s in sets] == cp.predict_mask(probs[n_cal:]).sum(1).tolist()


@FAST
@given(
    seed=seeds,
    c=classes,
    n=st.integers(20, 300),
    method=st.sampled_from(["none", "temperature", "platt", "isotonic", "histogram"]),
)
def test_every_calibrator_roundtrips_json_bit_for_bit(seed, c, n, method) -> None:
    z, y = _model(seed, n, c, 2.5)
    cal = C.make_calibrator(method).fit(2.0 * z, y)
    d = json.loads(json.dumps(cal.to_dict(), allow_nan=False))
    cal2 = C.calibrator_from_dict(d)
    assert cal2.to_dict() == cal.to_dict()
    probe = np.random.default_rng(seed + 1).normal(size=(64, c)) * 4.0
    assert np.array_equal(cal2.transform(probe), cal.transform(probe))
    cp = C.ConformalPredictor(alpha=0.2, score="aps" if seed % 2 else "lac").fit(cal.transform(z), y)
    cp2 = C.ConformalPredictor.from_dict(json.loads(json.dumps(cp.to_dict(), allow_nan=False)))
    assert np.array_equal(cp2.predict_mask(cal.transform(probe)), cp.predict_mask(cal.transform(probe)))


@SLOW
@given(seed=seeds, c=st.integers(2, 4), n=st.integers(40, 300), factor=st.floats(0.3, 4.0))
def test_select_calibrator_never_picks_worse_than_none(seed, c, n, factor) -> None:
    z, y = _model(seed, n, c, 2.0)
    best, report = C.select_calibrator(factor * z, y, n_folds=3, seed=seed % 1000)
    nll = report["heldout_nll"]
    assert nll[report["chosen"]] is not None
    assert nll[report["chosen"]] <= nll["none"]
    # a more flexible method is chosen only when it beats the simpler choice by more than margin_se standard
    # errors of the paired per-example NLL differences (small-n protection against over-flexible calibrators)
    chosen = report["chosen"]
    if chosen != "none":
        assert report["paired_improvement"][chosen] > report["margin_se"] * report["paired_se"][chosen]
    assert best.method == report["chosen"]
