"""Unit tests for bayesian_hf.metrics (hand-computed cases, synthetic calibration, Trainer/evaluate glue)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bayesian_hf import metrics as M


def _sample_labels(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """Draw one label per row from the categorical distribution in that row."""
    u = rng.random(probs.shape[0])[:, None]
    return np.minimum((u > np.cumsum(probs, axis=1)).sum(axis=1), probs.shape[1] - 1)


# Four binary examples: confidences 0.9, 0.9, 0.7, 0.7 (away from bin edges); the second is wrong.
P4 = np.array([[0.1, 0.9], [0.9, 0.1], [0.3, 0.7], [0.7, 0.3]])
Y4 = np.array([1, 1, 1, 0])


# ------------------------------------------------------------------------------------- hand cases
def test_ece_mce_hand_computed() -> None:
    # bin around 0.9: accuracy 1/2, confidence 0.9 -> gap 0.4; bin around 0.7: accuracy 1, gap 0.3
    assert M.expected_calibration_error(P4, Y4) == pytest.approx(0.5 * 0.4 + 0.5 * 0.3, abs=1e-12)
    assert M.maximum_calibration_error(P4, Y4) == pytest.approx(0.4, abs=1e-12)
    # one bin: |mean acc - mean conf| = |0.75 - 0.8|
    assert M.expected_calibration_error(P4, Y4, n_bins=1) == pytest.approx(0.05, abs=1e-12)


def test_adaptive_ece_hand_computed() -> None:
    conf = np.array([0.55, 0.6, 0.8, 0.95])
    probs = np.stack([conf, 1 - conf], axis=1)
    labels = np.array([0, 1, 0, 0])  # correct, wrong, correct, correct
    # 2 equal-mass bins: {0.55, 0.6} acc 0.5 conf 0.575; {0.8, 0.95} acc 1 conf 0.875
    expected = 0.5 * abs(0.5 - 0.575) + 0.5 * abs(1.0 - 0.875)
    assert M.adaptive_calibration_error(probs, labels, n_bins=2) == pytest.approx(expected, abs=1e-12)
    # equal-width ECE with 2 bins puts everything in (0.5, 1] -> differs
    assert M.expected_calibration_error(probs, labels, n_bins=2) == pytest.approx(abs(0.75 - 0.725), abs=1e-12)


def test_brier_nll_accuracy_hand_computed() -> None:
    # per-example sum_c (p_c - y_c)^2: 0.02, 1.62, 0.18, 0.18
    assert M.brier_score(P4, Y4) == pytest.approx((0.02 + 1.62 + 0.18 + 0.18) / 4, abs=1e-12)
    expected_nll = -(math.log(0.9) + math.log(0.1) + math.log(0.7) + math.log(0.7)) / 4
    assert M.negative_log_likelihood(P4, Y4) == pytest.approx(expected_nll, abs=1e-12)
    assert M.accuracy(P4, Y4) == 0.75
    # three-class Brier: p = (0.5, 0.3, 0.2), y = 2 -> 0.25 + 0.09 + 0.64
    assert M.brier_score([[0.5, 0.3, 0.2]], [2]) == pytest.approx(0.98, abs=1e-12)


def test_nll_clips_zero_probability() -> None:
    nll = M.negative_log_likelihood([[1.0, 0.0]], [1])
    assert nll == pytest.approx(-math.log(M.NLL_EPS))
    assert math.isfinite(nll)


def test_f1_binary_and_macro_match_sklearn() -> None:
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    for c in (2, 3, 5):
        p = rng.dirichlet(np.ones(c), size=200)
        y = rng.integers(0, c, size=200)
        avg = "binary" if c == 2 else "macro"
        assert M.f1(p, y) == pytest.approx(f1_score(y, p.argmax(1), average=avg), abs=1e-12)
    # binary F1 is of class 1: predicting class 0 everywhere scores 0 even at 90% accuracy
    p = np.tile([0.8, 0.2], (10, 1))
    y = np.array([0] * 9 + [1])
    assert M.accuracy(p, y) == 0.9
    assert M.f1(p, y) == 0.0


def test_rejects_logits_and_bad_labels() -> None:
    with pytest.raises(ValueError, match="softmax"):
        M.expected_calibration_error([[2.0, -1.0]], [0])
    with pytest.raises(ValueError, match="labels"):
        M.brier_score(P4, [0, 1, 2, 0])
    with pytest.raises(ValueError):
        M.accuracy(P4, Y4[:3])


def test_accepts_torch_tensors() -> None:
    torch = pytest.importorskip("torch")
    ref = M.classification_metrics(P4, Y4)
    out = M.classification_metrics(torch.tensor(P4, dtype=torch.float64), torch.tensor(Y4))
    assert out == ref
    out16 = M.expected_calibration_error(torch.tensor(P4, dtype=torch.bfloat16), torch.tensor(Y4))
    assert out16 == pytest.approx(ref["ece"], abs=1e-2)


# ---------------------------------------------------------------------------- synthetic calibration
def test_calibrated_model_has_small_ece_overconfident_has_large() -> None:
    rng = np.random.default_rng(1)
    n, c = 20000, 4
    logits = rng.normal(size=(n, c)) * 2.0
    probs = M.softmax(logits)
    labels = _sample_labels(rng, probs)  # labels drawn from the model's own probabilities
    ece_cal = M.expected_calibration_error(probs, labels)
    ece_over = M.expected_calibration_error(M.softmax(4.0 * logits), labels)
    assert ece_cal < 0.02
    assert ece_over > 0.15
    assert M.adaptive_calibration_error(probs, labels) < 0.02
    assert M.adaptive_calibration_error(M.softmax(4.0 * logits), labels) > 0.15
    # proper scores prefer the calibrated model
    assert M.negative_log_likelihood(probs, labels) < M.negative_log_likelihood(M.softmax(4.0 * logits), labels)
    assert M.brier_score(probs, labels) < M.brier_score(M.softmax(4.0 * logits), labels)


# --------------------------------------------------------------------------------- error detection
def test_error_detection_perfect_separation_and_degenerate() -> None:
    correct = np.array([True, True, False, True, False])
    u = np.array([0.1, 0.2, 0.9, 0.3, 0.8])
    assert M.error_detection_auroc(u, correct) == 1.0
    assert M.error_detection_auprc(u, correct) == 1.0
    assert M.error_detection_auroc(-u, correct) == 0.0
    assert M.error_detection_auroc(np.zeros(5), correct) == 0.5  # ties count one half
    for degenerate in (np.ones(5, bool), np.zeros(5, bool)):
        assert math.isnan(M.error_detection_auroc(u, degenerate))
        assert math.isnan(M.error_detection_auprc(u, degenerate))


def test_ranking_metrics_match_sklearn_with_ties() -> None:
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(2)
    u = rng.integers(0, 6, size=300).astype(float)  # many ties
    correct = rng.random(300) < 0.7
    assert M.error_detection_auroc(u, correct) == pytest.approx(roc_auc_score(~correct, u), abs=1e-12)
    assert M.error_detection_auprc(u, correct) == pytest.approx(average_precision_score(~correct, u), abs=1e-12)


def test_ood_auroc() -> None:
    assert M.ood_auroc([0.1, 0.2, 0.3], [0.5, 0.6]) == 1.0
    assert M.ood_auroc([0.5, 0.6], [0.1, 0.2, 0.3]) == 0.0
    assert M.ood_auroc([0.1, 0.5], [0.3]) == 0.5
    assert math.isnan(M.ood_auroc([], [0.3]))


# ----------------------------------------------------------------------------- selective prediction
def test_risk_coverage_curve_hand_computed() -> None:
    conf = np.array([0.9, 0.5, 0.8, 0.6])
    correct = np.array([True, False, False, True])
    cov, risk = M.risk_coverage_curve(conf, correct)
    np.testing.assert_allclose(cov, [0.25, 0.5, 0.75, 1.0])
    # order 0.9 (ok), 0.8 (err), 0.6 (ok), 0.5 (err)
    np.testing.assert_allclose(risk, [0.0, 0.5, 1 / 3, 0.5])
    assert M.aurc(conf, correct) == pytest.approx(np.mean([0.0, 0.5, 1 / 3, 0.5]))


def test_risk_coverage_ties_do_not_depend_on_input_order() -> None:
    conf = np.array([0.5, 0.5, 0.5, 0.9])
    correct = np.array([False, True, True, True])
    perm = np.array([2, 3, 1, 0])
    _, r1 = M.risk_coverage_curve(conf, correct)
    _, r2 = M.risk_coverage_curve(conf[perm], correct[perm])
    np.testing.assert_allclose(r1, r2)
    # constant confidence: every coverage has the overall error rate
    _, r = M.risk_coverage_curve(np.zeros(4), correct)
    np.testing.assert_allclose(r, 0.25)


def test_aurc_perfect_ranking_beats_random() -> None:
    rng = np.random.default_rng(3)
    correct = rng.random(2000) < 0.8
    perfect = correct.astype(float) + 0.01 * rng.random(2000)  # every correct above every error
    random_conf = rng.random(2000)
    a_perfect, a_random = M.aurc(perfect, correct), M.aurc(random_conf, correct)
    assert a_perfect < a_random
    assert a_random == pytest.approx(1 - correct.mean(), abs=0.03)
    # worst ranking is worse still
    assert M.aurc(-perfect, correct) > a_random


# ------------------------------------------------------------------------------ reliability diagram
def test_reliability_diagram_data_is_consistent_and_json() -> None:
    rng = np.random.default_rng(4)
    probs = rng.dirichlet(np.ones(3), size=500)
    labels = rng.integers(0, 3, size=500)
    d = M.reliability_diagram_data(probs, labels, n_bins=10)
    json.dumps(d, allow_nan=False)  # strict JSON
    assert len(d["bin_edges"]) == 11
    assert len(d["bin_confidence"]) == len(d["bin_accuracy"]) == len(d["bin_count"]) == 10
    assert sum(d["bin_count"]) == 500
    assert d["ece"] == pytest.approx(M.expected_calibration_error(probs, labels, n_bins=10))
    # with 3 classes confidence >= 1/3, so the lowest bins are empty -> None
    assert d["bin_count"][0] == 0 and d["bin_accuracy"][0] is None
    ne = [i for i, c in enumerate(d["bin_count"]) if c]
    recomputed = sum(d["bin_count"][i] / 500 * abs(d["bin_accuracy"][i] - d["bin_confidence"][i]) for i in ne)
    assert recomputed == pytest.approx(d["ece"])


def test_plot_reliability_diagram_writes_valid_png(tmp_path) -> None:
    import matplotlib.image as mpimg

    rng = np.random.default_rng(5)
    probs = rng.dirichlet(np.ones(2), size=300)
    labels = rng.integers(0, 2, size=300)
    out = M.plot_reliability_diagram(probs, labels, tmp_path / "sub" / "rel.png", title="test")
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(out)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert img.std() > 0  # not a blank canvas


# ----------------------------------------------------------------------------------------- bundles
def test_classification_metrics_keys_and_uncertainty() -> None:
    rng = np.random.default_rng(6)
    probs = rng.dirichlet(np.ones(3), size=200)
    labels = rng.integers(0, 3, size=200)
    out = M.classification_metrics(probs, labels)
    assert tuple(out) == M.CLASSIFICATION_METRIC_KEYS
    assert all(isinstance(v, float) for v in out.values())
    assert out["auroc_error"] == pytest.approx(M.error_detection_auroc(1 - probs.max(1), probs.argmax(1) == labels))
    correct = probs.argmax(1) == labels
    oracle = (~correct).astype(float)
    out2 = M.classification_metrics(probs, labels, uncertainty=oracle)
    assert out2["auroc_error"] == 1.0
    assert out2["aurc"] < out["aurc"]


def test_compute_metrics_accepts_arrays_tuples_and_evalprediction() -> None:
    from transformers import EvalPrediction

    rng = np.random.default_rng(7)
    probs = rng.dirichlet(np.ones(3), size=64)
    probs[0] = [1.0, 0.0, 0.0]  # log 0 = -inf must be handled
    labels = rng.integers(0, 3, size=64)
    with np.errstate(divide="ignore"):
        logits = np.log(probs).astype(np.float32)  # model convention: logits = log predictive probs
    ref = M.classification_metrics(M.softmax(logits), labels)
    extra = rng.random(64).astype(np.float32)
    for preds in (logits, (logits,), (logits, extra, probs)):
        for ep in (EvalPrediction(predictions=preds, label_ids=labels), (preds, labels)):
            out = M.compute_metrics(ep)
            assert out == ref
    assert M.classification_metrics(probs, labels)["accuracy"] == ref["accuracy"]
    # shifting logits by a per-row constant (unnormalised logits) changes nothing
    shifted = M.compute_metrics((logits + 3.0, labels))
    for k in ref:
        assert shifted[k] == pytest.approx(ref[k], abs=1e-6)
    # an extra array can serve as the uncertainty score
    cm = M.make_compute_metrics(uncertainty_index=1)
    out = cm(EvalPrediction(predictions=(logits, extra), label_ids=labels))
    assert out["auroc_error"] == pytest.approx(M.error_detection_auroc(extra, M.softmax(logits).argmax(1) == labels))
    with pytest.raises(TypeError):
        M.compute_metrics(logits)


def test_local_evaluate_module_matches_metrics(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    evaluate = pytest.importorskip("evaluate")
    rng = np.random.default_rng(8)
    probs = rng.dirichlet(np.ones(3) * 0.5, size=120)
    labels = rng.integers(0, 3, size=120)
    u = rng.random(120)
    module = evaluate.load(M.evaluate_module_path(), cache_dir=str(tmp_path), keep_in_memory=True)
    out = module.compute(predictions=probs.tolist(), references=labels.tolist())
    assert out == M.classification_metrics(probs, labels)
    out_u = module.compute(predictions=probs.tolist(), references=labels.tolist(), uncertainty=u.tolist(), n_bins=10)
    assert out_u == M.classification_metrics(probs, labels, uncertainty=u, n_bins=10)
    with np.errstate(divide="ignore"):
        out_l = module.compute(predictions=np.log(probs).tolist(), references=labels.tolist(), from_logits=True)
    for k, v in M.classification_metrics(probs, labels).items():
        assert out_l[k] == pytest.approx(v, abs=1e-9)
    # the file also loads by its own path
    module2 = evaluate.load(M.evaluate_module_path() + "/uncertainty_metrics.py", cache_dir=str(tmp_path))
    assert module2.compute(predictions=probs.tolist(), references=labels.tolist()) == out
