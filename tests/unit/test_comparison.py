"""Paired bootstrap comparison of two models' probabilities (bayesian_hf.comparison)."""

from __future__ import annotations

import numpy as np
import pytest

from bayesian_hf.comparison import paired_bootstrap, verdict


def _data(n=600, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    signal = np.where(labels == 1, 1.0, -1.0)
    return labels, signal, rng


def _probs(logit):
    p1 = 1 / (1 + np.exp(-logit))
    return np.stack([1 - p1, p1], 1)


def test_identical_models_show_no_difference():
    labels, signal, rng = _data()
    probs = _probs(signal * 0.8 + rng.normal(0, 1.5, len(labels)))
    report = paired_bootstrap(probs, probs.copy(), labels, num_resamples=200)
    for cell in report.values():
        assert cell["difference"] == 0 and cell["low"] == 0 and cell["high"] == 0
    assert verdict(report)["summary"] == "no significant difference"


def test_a_clearly_better_model_wins_on_accuracy_and_nll():
    rng = np.random.default_rng(3)
    z = rng.normal(0, 3.0, 2000)
    labels = (rng.random(2000) < 1 / (1 + np.exp(-z))).astype(int)
    strong = _probs(z)  # the true probabilities: calibrated and sharp
    weak = _probs(0.15 * z + rng.normal(0, 0.5, 2000))
    report = paired_bootstrap(weak, strong, labels, num_resamples=300, seed=1)
    v = verdict(report)
    assert {"accuracy", "nll"} <= set(v["better_b"]) and not v["better_a"]
    assert v["summary"].startswith("B is better")
    assert report["accuracy"]["low"] > 0 and report["nll"]["high"] < 0
    swapped = verdict(paired_bootstrap(strong, weak, labels, num_resamples=300, seed=1))
    assert swapped["summary"].startswith("A is better")


def test_bad_inputs_are_refused():
    labels, signal, _ = _data(10)
    probs = _probs(signal)
    with pytest.raises(ValueError):
        paired_bootstrap(probs, probs[:5], labels)
    with pytest.raises(ValueError):
        paired_bootstrap(probs, probs, labels, level=1.5)
