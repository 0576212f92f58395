"""Decision thresholds for a target risk (bayesian_hf.risk_control) and how the pipeline and the calibration
artifact carry them."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from bayesian_hf import risk_control as RC
from bayesian_hf.calibration import ConformalPredictor, LoadedCalibration, load_calibration, save_calibration
from bayesian_hf.pipelines import DEFAULT_THRESHOLDS, decide, format_predictions, validate_thresholds


def _data(n: int = 500, seed: int = 0, power: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """confidence ~ U(0.5, 1), correct ~ Bernoulli(confidence ** power) (power 1: calibrated)."""
    rng = np.random.default_rng(seed)
    c = rng.uniform(0.5, 1.0, n)
    return c, rng.random(n) < c**power


# ------------------------------------------------------------------------------------------------ bounds
def test_clopper_pearson_upper_known_values() -> None:
    # zero errors: the bound solves (1 - u)^n = delta
    assert RC.clopper_pearson_upper(0, 50, 0.1)[()] == pytest.approx(1 - 0.1 ** (1 / 50), rel=1e-9)
    assert RC.clopper_pearson_upper(0, 0, 0.1)[()] == 1.0 and RC.clopper_pearson_upper(7, 7, 0.1)[()] == 1.0
    e, n = np.array([1, 5, 20]), np.array([100, 100, 100])
    ub = RC.clopper_pearson_upper(e, n, 0.05)
    assert np.all(ub > e / n) and np.all(np.diff(ub) > 0)
    assert np.all(RC.clopper_pearson_upper(e, n, 0.2) < ub)  # a larger delta gives a tighter bound
    with pytest.raises(ValueError, match="errors <= n"):
        RC.clopper_pearson_upper(3, 2, 0.1)


# ------------------------------------------------------------------------------------------------ validation
C_OK, Y_OK = _data(50)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"confidence": C_OK.reshape(5, 10)}, "1-D"),
        ({"confidence": np.array([])}, "empty"),
        ({"confidence": np.r_[C_OK[:-1], np.nan]}, "NaN"),
        ({"confidence": C_OK * 3}, r"\[0, 1\]"),
        ({"confidence": np.array(["a"] * 50)}, "numeric"),
        ({"correct": Y_OK[:-1]}, "one entry per prediction"),
        ({"correct": np.full(50, 2)}, "0/1"),
        ({"correct": np.array(["yes"] * 50)}, "boolean"),
        ({"target_risk": 0.0}, "target_risk"),
        ({"target_risk": 1.0}, "target_risk"),
        ({"target_risk": float("nan")}, "target_risk"),
        ({"target_risk": True}, "target_risk"),
        ({"target_risk": "0.1"}, "target_risk"),
        ({"delta": 0.0}, "delta"),
        ({"delta": 1.5}, "delta"),
        ({"grid": []}, "grid"),
        ({"grid": [0.5, 1.2]}, "grid"),
        ({"grid": [[0.5]]}, "grid"),
        ({"eligible": np.ones(3, bool)}, "eligible"),
    ],
)
def test_choose_accept_threshold_rejects_bad_inputs(kwargs, match) -> None:
    args = {"confidence": C_OK, "correct": Y_OK, "target_risk": 0.1, **kwargs}
    with pytest.raises(ValueError, match=match):
        RC.choose_accept_threshold(**args)


def test_other_functions_reject_bad_inputs() -> None:
    c, y = C_OK, Y_OK
    with pytest.raises(ValueError, match="review_target_risk and/or review_budget"):
        RC.choose_review_threshold(c, y, 0.9)
    with pytest.raises(ValueError, match="accept_threshold"):
        RC.choose_review_threshold(c, y, 1.5, review_budget=0.2)
    with pytest.raises(ValueError, match="review_budget"):
        RC.choose_review_threshold(c, y, 0.9, review_budget=0.0)
    with pytest.raises(ValueError, match="coverages"):
        RC.risk_coverage_table(c, y, coverages=(0.0, 0.5))
    with pytest.raises(ValueError, match="coverages"):
        RC.risk_coverage_table(c, y, coverages=())
    with pytest.raises(ValueError, match="risk_coverage_table"):
        RC.plot_risk_coverage([{"coverage": 0.5}], "/dev/null")


# ------------------------------------------------------------------------------------------------ accept
def test_accept_threshold_result_is_consistent_and_json_safe() -> None:
    c, y = _data(500)
    r = RC.choose_accept_threshold(c, y, 0.1, delta=0.1)
    json.dumps(r, allow_nan=False)
    assert r["feasible"] is True and 0.5 <= r["threshold"] <= 1.0
    accepted = c >= r["threshold"]
    assert r["num_accepted"] == accepted.sum() and r["coverage"] == pytest.approx(accepted.mean())
    assert r["empirical_risk"] == pytest.approx(1 - y[accepted].mean())
    assert r["empirical_risk"] <= r["risk_upper_bound"] <= 0.1
    assert r["risk_upper_bound"] == pytest.approx(
        RC.clopper_pearson_upper(int((~y[accepted]).sum()), int(accepted.sum()), 0.1)[()])
    assert {"threshold", "target_risk", "delta", "coverage", "empirical_risk", "risk_upper_bound", "num_samples",
            "feasible", "message"} <= set(r)


def test_accept_threshold_is_non_increasing_as_the_target_grows() -> None:
    for seed in range(5):
        c, y = _data(400, seed=seed)
        results = [RC.choose_accept_threshold(c, y, t, delta=0.1) for t in np.linspace(0.02, 0.45, 25)]
        thresholds = [r["threshold"] for r in results]
        coverages = [r["coverage"] for r in results]
        assert all(a >= b for a, b in zip(thresholds, thresholds[1:])), thresholds
        assert all(a <= b for a, b in zip(coverages, coverages[1:]))
        assert results[-1]["feasible"]


def test_an_explicit_grid_is_respected_and_a_larger_delta_is_never_stricter() -> None:
    c, y = _data(500, seed=3)
    grid = np.linspace(0.5, 1.0, 21)
    r = RC.choose_accept_threshold(c, y, 0.12, grid=grid)
    assert r["feasible"] and np.isclose(grid, r["threshold"]).any()
    assert RC.choose_accept_threshold(c, y, 0.12, delta=0.3, grid=grid)["threshold"] <= r["threshold"]


def test_infeasible_target_accepts_nothing() -> None:
    c, y = _data(300)
    r = RC.choose_accept_threshold(c, y, 0.001)  # needs > 2300 error-free predictions at delta 0.1
    assert r["feasible"] is False and r["threshold"] == RC.ACCEPT_NOTHING > 1.0
    assert r["coverage"] == 0.0 and r["num_accepted"] == 0 and r["empirical_risk"] is None
    assert "infeasible" in r["message"] and "too few" in r["message"]
    json.dumps(r, allow_nan=False)
    r = RC.choose_accept_threshold(c, np.zeros(300, bool), 0.2)  # always wrong
    assert r["feasible"] is False and "no threshold passed" in r["message"]
    assert not np.any(c >= r["threshold"])
    # the pipeline takes the stored value and then accepts nothing, not even confidence 1.0
    thresholds = validate_thresholds({"accept": r["threshold"], "review": 0.6})
    assert decide(1.0, thresholds) == "review" and decide(0.5, thresholds) == "escalate"


def test_ineligible_predictions_are_never_accepted_but_count_in_the_coverage() -> None:
    c, y = _data(600, seed=1)
    eligible = np.random.default_rng(5).random(600) < 0.7
    r = RC.choose_accept_threshold(c, y, 0.1, eligible=eligible)
    assert r["feasible"]
    accepted = eligible & (c >= r["threshold"])
    assert r["num_accepted"] == accepted.sum() and r["coverage"] == pytest.approx(accepted.sum() / 600)
    assert r["num_samples"] == 600


# ------------------------------------------------------------------------------------------------ review
def test_review_threshold_for_a_target_risk_and_a_budget() -> None:
    c, y = _data(2000, seed=2)
    t_a = RC.choose_accept_threshold(c, y, 0.05)["threshold"]
    by_risk = RC.choose_review_threshold(c, y, t_a, review_target_risk=0.3)
    assert by_risk["feasible"] and by_risk["threshold"] <= t_a and by_risk["criterion"] == "target_risk"
    band = (c < t_a) & (c >= by_risk["threshold"])
    assert by_risk["num_reviewed"] == band.sum() > 0
    assert by_risk["empirical_risk"] == pytest.approx(1 - y[band].mean())
    assert by_risk["risk_upper_bound"] <= 0.3
    by_budget = RC.choose_review_threshold(c, y, t_a, review_budget=0.1)
    assert by_budget["feasible"] and by_budget["review_share_upper_bound"] <= 0.1
    assert by_budget["review_share"] == pytest.approx(((c < t_a) & (c >= by_budget["threshold"])).mean())
    both = RC.choose_review_threshold(c, y, t_a, review_target_risk=0.3, review_budget=0.1)
    assert both["criterion"] == "both" and both["threshold"] == max(by_risk["threshold"], by_budget["threshold"])
    larger = RC.choose_review_threshold(c, y, t_a, review_budget=0.3)
    assert larger["threshold"] <= by_budget["threshold"]
    for r in (by_risk, by_budget, both):
        json.dumps(r, allow_nan=False)


def test_infeasible_review_target_reviews_nothing_below_accept() -> None:
    c, y = _data(300)
    t_a = RC.choose_accept_threshold(c, y, 0.1)["threshold"]
    r = RC.choose_review_threshold(c, y, t_a, review_target_risk=0.01)
    assert r["feasible"] is False and r["threshold"] == min(t_a, 1.0) and "infeasible" in r["message"]
    r = RC.choose_review_threshold(c, y, RC.ACCEPT_NOTHING, review_budget=0.5)  # nothing accepted
    assert r["threshold"] <= 1.0 and r["review_share_upper_bound"] <= 0.5


# ------------------------------------------------------------------------------------------------ report
def test_risk_coverage_table(tmp_path) -> None:
    c, y = _data(500, seed=4)
    table = RC.risk_coverage_table(c, y, delta=0.1)
    json.dumps(table, allow_nan=False)
    assert [r["target_coverage"] for r in table] == list(RC.DEFAULT_COVERAGES)
    assert table[-1]["coverage"] == 1.0 and table[-1]["error"] == pytest.approx(1 - y.mean())
    for row in table:
        kept = c >= row["threshold"]
        assert row["coverage"] == pytest.approx(kept.mean()) and row["coverage"] >= row["target_coverage"] - 1e-12
        assert row["error"] == pytest.approx(1 - y[kept].mean()) and row["error"] <= row["upper_bound"]
    assert all(a["threshold"] >= b["threshold"] for a, b in zip(table, table[1:]))
    for data, name in ((table, "table.png"), ((c, y), "arrays.png")):
        out = RC.plot_risk_coverage(data, tmp_path / "plots" / name, target_risk=0.1)
        assert open(out, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_decision_thresholds_certify_what_the_pipeline_accepts() -> None:
    rng = np.random.default_rng(7)
    c, ok = _data(800, seed=7)
    y = rng.integers(0, 2, 800)
    pred = np.where(ok, y, 1 - y)
    probs = np.zeros((800, 2))
    probs[np.arange(800), pred] = c
    probs[np.arange(800), 1 - pred] = 1 - c
    conformal = ConformalPredictor(alpha=0.1, score="lac").fit(probs, y)
    out = RC.decision_thresholds(probs, y, conformal, target_risk=0.1, delta=0.1, review_target_risk=0.3)
    json.dumps(out, allow_nan=False)
    d = out["decision_thresholds"]
    assert d["requires_single_label_set"] and d["review"] <= d["accept"] and d["feasible"]
    single = np.array([len(s) == 1 for s in conformal.predict_sets(probs)])
    decisions = np.array([decide(p.max(), d, 1 if s else 2) for p, s in zip(probs, single)])
    accepted = decisions == "accept"
    assert accepted.mean() == pytest.approx(d["coverage"])
    assert 1 - ok[accepted].mean() == pytest.approx(d["empirical_risk"])
    assert out["risk_coverage"] and out["accept"]["threshold"] == d["accept"]
    no_review = RC.decision_thresholds(probs, y, None, target_risk=0.1, delta=0.1)["decision_thresholds"]
    assert no_review["review"] == min(0.6, no_review["accept"]) and no_review["review_criterion"] == "default"


# ------------------------------------------------------------------------------------------------ pipeline
def _outputs(scores: list[float]) -> dict[str, np.ndarray]:
    p = np.array(scores)
    probs = np.stack([p, 1 - p], axis=1)
    n = len(scores)
    return {"probs": probs, "calibrated_probs": probs, "epistemic": np.zeros(n), "aleatoric": np.zeros(n),
            "total": np.zeros(n), "order_dispersion": np.zeros(n), "num_units": np.ones(n)}


def test_stored_thresholds_are_the_pipeline_defaults_and_calls_override_them() -> None:
    id2label = {0: "pos", 1: "neg"}
    outputs = _outputs([0.99, 0.8, 0.55])
    stored = SimpleNamespace(metadata={"decision_thresholds": {"accept": 0.75, "review": 0.54}}, conformal=None)
    assert [r["decision"] for r in format_predictions(outputs, id2label)] == ["accept", "review", "escalate"]
    assert [r["decision"] for r in format_predictions(outputs, id2label, calibration=stored)] == ["accept"] * 2 + ["review"]
    got = format_predictions(outputs, id2label, calibration=stored, thresholds={"accept": 0.95})
    assert [r["decision"] for r in got] == ["accept", "review", "review"]  # review still the stored 0.54
    nothing = SimpleNamespace(metadata={"decision_thresholds": {"accept": RC.ACCEPT_NOTHING, "review": 0.6}},
                              conformal=None)
    assert [r["decision"] for r in format_predictions(_outputs([1.0, 0.7]), id2label, calibration=nothing)] == [
        "review", "review"]
    assert [r["decision"] for r in format_predictions(outputs, id2label, calibration=SimpleNamespace(metadata={}))] == [
        "accept", "review", "escalate"]
    bad = SimpleNamespace(metadata={"decision_thresholds": {"accept": 0.5, "review": 0.7}}, conformal=None)
    with pytest.raises(ValueError, match="stored decision_thresholds are invalid"):
        format_predictions(outputs, id2label, calibration=bad)


def test_validate_thresholds_still_rejects_bad_values() -> None:
    assert validate_thresholds(None) == DEFAULT_THRESHOLDS
    assert validate_thresholds({"accept": RC.ACCEPT_NOTHING})["accept"] > 1
    for bad in ({"accept": 1.5}, {"review": RC.ACCEPT_NOTHING}, {"accept": True}, {"other": 0.5}):
        with pytest.raises(ValueError):
            validate_thresholds(bad)
    with pytest.raises(ValueError, match="must not exceed"):
        validate_thresholds({"review": 0.8}, defaults={"accept": 0.7, "review": 0.5})


# ------------------------------------------------------------------------------------------------ fit_model_calibration
class _StubModel:
    def __init__(self) -> None:
        self.calibration = None

    def set_calibration(self, calibration) -> None:
        self.calibration = calibration


def _meta_round_trip(calibration: LoadedCalibration, tmp_path) -> dict:
    """What save_calibration_file writes once it passes decision_thresholds and risk_coverage as extra fields."""
    meta = calibration.metadata
    path = save_calibration(tmp_path / "calibration.json", calibration.calibrator, label2id={"neg": 0, "pos": 1},
                            fit_metrics=meta["fit_metrics"], num_samples=meta["num_samples"],
                            conformal=calibration.conformal,
                            extra={k: v for k, v in meta.items()
                                   if k in ("selection", "fit_split", "decision_thresholds", "risk_coverage")})
    return load_calibration(path, label2id={"neg": 0, "pos": 1}).metadata


def test_fit_model_calibration_stores_thresholds_json_safe(monkeypatch, tmp_path) -> None:
    from bayesian_hf import evaluation as E

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 1200)
    z = np.stack([np.zeros(1200), (2 * y - 1) * rng.gamma(2.0, 1.5, 1200) + rng.normal(0, 1.5, 1200)], axis=1)
    zeros = np.zeros(1200)
    monkeypatch.setattr(E, "collect_outputs", lambda model, tok, texts, **kw: {
        "logits": z, "epistemic": zeros, "aleatoric": zeros, "order_dispersion": zeros})
    model = _StubModel()
    calibration, report = E.fit_model_calibration(model, None, ["t"] * 1200, list(y), alpha=0.1, target_risk=0.1,
                                                  delta=0.1, review_target_risk=0.3)
    json.dumps(report, allow_nan=False)
    d = calibration.metadata["decision_thresholds"]
    assert {"accept", "review", "target_risk", "delta", "coverage", "risk_upper_bound", "feasible"} <= set(d)
    assert d["target_risk"] == 0.1 and d["delta"] == 0.1 and d["review"] <= d["accept"] and d["num_samples"] == 600
    assert report["decision_thresholds"]["accept"]["threshold"] == d["accept"]
    assert calibration.metadata["risk_coverage"] == report["risk_coverage"] and len(report["risk_coverage"]) == 10
    loaded = _meta_round_trip(calibration, tmp_path)
    assert loaded["decision_thresholds"] == d and loaded["risk_coverage"] == calibration.metadata["risk_coverage"]
    # without a target nothing new is stored
    plain, plain_report = E.fit_model_calibration(model, None, ["t"] * 1200, list(y), alpha=0.1)
    assert "decision_thresholds" not in plain.metadata and "decision_thresholds" not in plain_report


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"target_risk": 1.0}, "target_risk"), ({"target_risk": 0.1, "delta": 0.0}, "delta"),
     ({"review_target_risk": 0.3}, "need target_risk"), ({"target_risk": 0.2, "review_target_risk": 0.1}, "below"),
     ({"target_risk": 0.1, "review_budget": 2.0}, "review_budget")],
)
def test_fit_model_calibration_checks_risk_arguments_before_running_the_model(kwargs, match) -> None:
    from bayesian_hf import evaluation as E

    class NoForward(_StubModel):
        def set_calibration(self, calibration) -> None:
            raise AssertionError("validation must come first")

    with pytest.raises(ValueError, match=match):
        E.fit_model_calibration(NoForward(), None, ["t"] * 40, [0, 1] * 20, **kwargs)


# ------------------------------------------------------------------------------------------------ the real model
@pytest.fixture(scope="module")
def calibrated_tiny(tiny_trained_model):
    from bayesian_hf.evaluation import fit_model_calibration

    model, tokenizer, data = tiny_trained_model
    before = model.calibration
    cal = data["calibration"]
    calibration, report = fit_model_calibration(model, tokenizer, cal["text"], cal["label"], alpha=0.2,
                                                target_risk=0.25, delta=0.2, review_target_risk=0.45)
    yield model, tokenizer, data, calibration, report
    model.set_calibration(before)


def test_tiny_model_thresholds_drive_predict_and_pipeline(calibrated_tiny, tmp_path) -> None:
    from transformers import pipeline

    from bayesian_hf import predict

    model, tokenizer, data, calibration, report = calibrated_tiny
    json.dumps(calibration.metadata, allow_nan=False)
    d = calibration.metadata["decision_thresholds"]
    assert d["review"] <= d["accept"] and (d["accept"] <= 1.0 or d["accept"] == RC.ACCEPT_NOTHING)
    assert d["feasible"] == (d["accept"] <= 1.0)
    texts = list(data["test"]["text"][:24])
    records = predict(model, tokenizer, texts, seed=0)
    for r in records:  # the pipeline accepts on confidence alone; the conformal set is returned beside it
        assert r["decision"] == decide(r["score"], d) and "prediction_set" in r
    overridden = predict(model, tokenizer, texts, seed=0, thresholds={"accept": 0.0, "review": 0.0})
    assert all(r["decision"] == "accept" for r in overridden)
    clf = pipeline("uncertainty-classification", model=model, tokenizer=tokenizer)
    assert [clf(t, seed=0)["decision"] for t in texts[:6]] == [r["decision"] for r in records[:6]]
    assert _meta_round_trip(calibration, tmp_path)["decision_thresholds"] == d


def test_tiny_model_thresholds_survive_save_pretrained(calibrated_tiny, tmp_path) -> None:
    from bayesian_hf import BayesianExpectationForSequenceClassification
    from bayesian_hf.pipelines import default_thresholds

    model, _, _, calibration, _ = calibrated_tiny
    model.save_pretrained(tmp_path)
    doc = json.loads((tmp_path / "calibration.json").read_text())
    assert doc["decision_thresholds"] == calibration.metadata["decision_thresholds"]
    assert doc["risk_coverage"] == calibration.metadata["risk_coverage"]
    reloaded = BayesianExpectationForSequenceClassification.from_pretrained(tmp_path)
    stored = calibration.metadata["decision_thresholds"]
    assert default_thresholds(reloaded) == {"accept": stored["accept"], "review": stored["review"]}
    assert not math.isnan(doc["decision_thresholds"]["delta"])
