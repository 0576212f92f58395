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


def test_the_decision_mix_uses_the_models_stored_thresholds(tiny_trained_model):
    """`bayesian-hf compare` reports the decisions each model would make when served: at the thresholds its
    calibration stores (`fit_model_calibration(target_risk=...)`), like `predict` and the pipeline -- here a target
    that was infeasible, so nothing may be accepted -- not at the package defaults."""
    from bayesian_hf.calibration import IdentityCalibrator, LoadedCalibration
    from bayesian_hf.comparison import run_model
    from bayesian_hf.pipelines import predict
    from bayesian_hf.risk_control import ACCEPT_NOTHING

    model, tokenizer, _ = tiny_trained_model
    identity = IdentityCalibrator().fit(np.array([[2.0, -2.0], [-2.0, 2.0]]), np.array([0, 1]))
    texts = ["Fine.", "Great food. Slow service.", "Awful. Never again."] * 4
    previous = model.calibration
    try:
        model.set_calibration(LoadedCalibration(identity, None, {"decision_thresholds": {"accept": 0.0, "review": 0.0}}))
        assert run_model(model, tokenizer, texts)["decision_mix"]["accept"] == 1.0
        model.set_calibration(LoadedCalibration(identity, None, {
            "decision_thresholds": {"accept": ACCEPT_NOTHING, "review": 0.0}}))
        assert {r["decision"] for r in predict(model, tokenizer, texts)} == {"review"}
        assert run_model(model, tokenizer, texts)["decision_mix"] == {"accept": 0.0, "review": 1.0, "escalate": 0.0}
    finally:
        model.set_calibration(previous)
