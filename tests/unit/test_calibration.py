"""Unit tests for bayesian_hf.calibration: calibrators, conformal sets, selection, JSON artifacts."""

from __future__ import annotations

import inspect
import json
import os
import warnings

import numpy as np
import pytest

from bayesian_hf import calibration as C
from bayesian_hf import metrics as M

LABEL2ID = {"negative": 0, "neutral": 1, "positive": 2}


def _data(seed: int, n: int, c: int, scale: float = 2.0, sharpen: float = 1.0):
    """Well-specified logits z (labels ~ softmax(z)); returns (sharpen * z, labels)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, c)) * scale
    p = M.softmax(z)
    y = np.minimum((rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1), c - 1)
    return sharpen * z, y


# ------------------------------------------------------------------------------------ calibrators
def test_temperature_recovers_sharpening_and_keeps_argmax() -> None:
    z, y = _data(0, 4000, 3, sharpen=3.0)
    ts = C.TemperatureScaling().fit(z, y)
    assert ts.temperature == pytest.approx(3.0, rel=0.1)
    q = ts.transform(z)
    np.testing.assert_allclose(q.sum(1), 1.0)
    assert np.array_equal(q.argmax(1), z.argmax(1))
    assert M.negative_log_likelihood(q, y) < M.negative_log_likelihood(M.softmax(z), y) - 0.1
    # on a calibrated model the temperature stays near 1
    z1, y1 = _data(1, 4000, 3)
    assert C.TemperatureScaling().fit(z1, y1).temperature == pytest.approx(1.0, abs=0.1)


def test_temperature_accepts_log_probs_with_minus_inf() -> None:
    z, y = _data(2, 500, 3, sharpen=2.0)
    logp = np.log(M.softmax(z))
    logp[0, (y[0] + 1) % 3] = -np.inf
    ts = C.TemperatureScaling().fit(logp, y)
    q = ts.transform(logp)
    assert np.all(np.isfinite(q)) and q[0, (y[0] + 1) % 3] == 0.0


def test_platt_binary_recovers_logistic_distortion() -> None:
    rng = np.random.default_rng(3)
    s = rng.normal(size=20000) * 3.0
    y = (rng.random(20000) < 1 / (1 + np.exp(-(0.5 * s + 0.4)))).astype(int)  # true a=0.5, b=0.4
    z = np.stack([np.zeros_like(s), s], axis=1)
    pl = C.PlattScaling().fit(z, y)
    assert pl.a[0] == pytest.approx(0.5, abs=0.05)
    assert pl.b[0] == pytest.approx(0.4, abs=0.05)
    q = pl.transform(z)
    np.testing.assert_allclose(q[:, 1], 1 / (1 + np.exp(-(pl.a[0] * s + pl.b[0]))), rtol=1e-9)


def test_platt_and_histogram_multiclass_rows_sum_to_one_and_help() -> None:
    z, y = _data(4, 3000, 4, sharpen=3.0)
    base = M.negative_log_likelihood(M.softmax(z), y)
    for cal in (C.PlattScaling(), C.HistogramBinning(), C.IsotonicCalibration()):
        q = cal.fit(z, y).transform(z)
        assert q.shape == z.shape
        np.testing.assert_allclose(q.sum(1), 1.0, atol=1e-12)
        assert M.negative_log_likelihood(q, y) < base
        assert M.expected_calibration_error(q, y) < M.expected_calibration_error(M.softmax(z), y)


def test_isotonic_stores_thresholds_and_applies_interp() -> None:
    z, y = _data(5, 500, 2, sharpen=2.0)
    iso = C.IsotonicCalibration().fit(z, y)
    d = iso.to_dict()
    assert set(d) == {"method", "num_classes", "x_thresholds", "y_thresholds"}
    xt, yt = np.array(d["x_thresholds"][0]), np.array(d["y_thresholds"][0])
    assert np.all(np.diff(xt) >= 0) and np.all(np.diff(yt) >= 0)
    p1 = M.softmax(z)[:, 1]
    np.testing.assert_array_equal(iso.transform(z)[:, 1], np.interp(p1, xt, yt))


def test_histogram_binning_hand_computed() -> None:
    # class-1 probabilities 0.1, 0.15 (bin 0 of 2) and 0.8, 0.9, 0.95 (bin 1 of 2)
    p1 = np.array([0.1, 0.15, 0.8, 0.9, 0.95])
    z = np.log(np.stack([1 - p1, p1], axis=1))
    y = np.array([0, 1, 1, 1, 0])
    hb = C.HistogramBinning(n_bins=2).fit(z, y)
    # smoothed: (positives + centre) / (count + 1); centres 0.25 and 0.75
    np.testing.assert_allclose(hb.bin_values[0], [(1 + 0.25) / 3, (2 + 0.75) / 4])
    q = hb.transform(np.log([[0.6, 0.4], [0.3, 0.7]]))
    np.testing.assert_allclose(q[:, 1], [(1 + 0.25) / 3, (2 + 0.75) / 4])


def test_identity_is_softmax() -> None:
    z, y = _data(6, 50, 3)
    np.testing.assert_array_equal(C.IdentityCalibrator().fit(z, y).transform(z), M.softmax(z))


@pytest.mark.parametrize("method", ["none", "temperature", "platt", "isotonic", "histogram"])
def test_transform_validates_class_count_and_fit_state(method: str) -> None:
    z, y = _data(7, 200, 3)
    with pytest.raises(RuntimeError, match="not fitted"):
        C.make_calibrator(method).transform(z)
    cal = C.make_calibrator(method).fit(z, y)
    with pytest.raises(ValueError, match="3 classes"):
        cal.transform(np.zeros((4, 4)))
    with pytest.raises(ValueError):
        cal.transform(np.full((2, 3), np.nan))


def test_fit_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="labels"):
        C.TemperatureScaling().fit(np.zeros((3, 2)), [0, 1, 2])
    with pytest.raises(ValueError, match="shape"):
        C.TemperatureScaling().fit(np.zeros(3), [0, 1, 1])
    with pytest.raises(ValueError, match="unknown calibration method"):
        C.make_calibrator("beta")


# ------------------------------------------------------------------------------------ from_dict
def _fitted(method: str, c: int = 3):
    z, y = _data(8, 300, c, sharpen=2.0)
    return C.make_calibrator(method).fit(z, y), z


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d.update(method="beta_calibration"), "unknown calibration method"),
        (lambda d: d.pop("method"), "method"),
        (lambda d: d.pop("num_classes"), "num_classes"),
        (lambda d: d.update(num_classes="3"), "num_classes"),
        (lambda d: d.update(num_classes=True), "num_classes"),
    ],
)
def test_calibrator_from_dict_envelope_errors(mutate, match) -> None:
    cal, _ = _fitted("temperature")
    d = cal.to_dict()
    mutate(d)
    with pytest.raises(ValueError, match=match):
        C.calibrator_from_dict(d)


@pytest.mark.parametrize(
    "method, mutate, match",
    [
        ("temperature", lambda d: d.pop("temperature"), "temperature"),
        ("temperature", lambda d: d.update(temperature="1.5"), "temperature"),
        ("temperature", lambda d: d.update(temperature=-1.0), "temperature"),
        ("platt", lambda d: d.update(a=d["a"][:-1]), "'a'"),
        ("platt", lambda d: d.update(b=None), "'b'"),
        ("isotonic", lambda d: d["y_thresholds"][0].reverse(), "non-decreasing"),
        ("isotonic", lambda d: d["x_thresholds"].pop(), "x_thresholds"),
        ("isotonic", lambda d: d["y_thresholds"][1].append(0.5), "equal length"),
        ("histogram", lambda d: d.update(bin_edges=[0.0, 0.5, 0.4, 1.0]), "bin_edges"),
        ("histogram", lambda d: d["bin_values"][0].pop(), "bin_values"),
        ("histogram", lambda d: d["bin_values"][0].__setitem__(0, 1.5), "bin_values"),
    ],
)
def test_calibrator_from_dict_field_errors(method, mutate, match) -> None:
    cal, _ = _fitted(method)
    d = json.loads(json.dumps(cal.to_dict()))
    mutate(d)
    with pytest.raises(ValueError, match=match):
        C.calibrator_from_dict(d)


def test_calibrator_from_dict_rejects_non_mapping() -> None:
    with pytest.raises(ValueError, match="JSON object"):
        C.calibrator_from_dict([1, 2, 3])  # type: ignore[arg-type]


# -------------------------------------------------------------------------------------- conformal
def test_conformal_lac_hand_computed_quantile() -> None:
    # 9 calibration examples with true-class probabilities 0.95, 0.9, ..., 0.55 -> LAC scores
    # 0.05 .. 0.45; alpha = 0.2 -> k = ceil(10 * 0.8) = 8 -> qhat = 8th smallest = 0.40
    py = np.array([0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55])
    probs = np.stack([py, 1 - py], axis=1)
    cp = C.ConformalPredictor(alpha=0.2, score="lac").fit(probs, np.zeros(9, dtype=int))
    assert cp.qhat == pytest.approx(0.40)
    sets = cp.predict_sets([[0.7, 0.3], [0.5, 0.5], [0.35, 0.65], [0.1, 0.9]])
    assert sets == [[0], [], [1], [1]]  # include c iff p_c >= 1 - qhat = 0.6; LAC sets may be empty
    mask = cp.predict_mask([[0.7, 0.3], [0.5, 0.5]])
    assert mask.dtype == bool and mask.tolist() == [[True, False], [False, False]]
    loose = C.ConformalPredictor(alpha=0.5, score="lac").fit(probs, np.zeros(9, dtype=int))
    assert loose.qhat == pytest.approx(0.25)  # k = ceil(10 * 0.5) = 5 -> 5th smallest
    with pytest.raises(ValueError, match="at least"):
        C.ConformalPredictor(alpha=0.05).fit(probs, np.zeros(9, dtype=int))


def test_conformal_aps_scores_and_sets() -> None:
    cp = C.ConformalPredictor(alpha=0.2, score="aps")
    p = np.array([[0.5, 0.3, 0.2]])
    # ranks: class 0 (0.5), class 1 (0.8 cumulative), class 2 (1.0)
    np.testing.assert_allclose(cp.nonconformity(np.repeat(p, 3, 0), [0, 1, 2]), [0.5, 0.8, 1.0])
    cp.qhat, cp.num_classes = 0.85, 3
    assert cp.predict_sets(p) == [[0, 1]]
    cp.qhat = 0.3  # below the top class's mass: the top class is still included (never empty)
    assert cp.predict_sets(p) == [[0]]
    cp.qhat = 1.0
    assert cp.predict_sets([[0.2, 0.3, 0.5]]) == [[0, 1, 2]]


def test_conformal_coverage_and_roundtrip() -> None:
    z, y = _data(9, 6000, 5, sharpen=2.0)  # over-confident model: conformal still covers
    p = M.softmax(z)
    for score in ("lac", "aps"):
        cp = C.ConformalPredictor(alpha=0.1, score=score).fit(p[:3000], y[:3000])
        ev = cp.evaluate(p[3000:], y[3000:])
        # LAC is tight (<= 1 - alpha + 1/(n+1) in expectation); deterministic APS over-covers a bit
        assert 0.88 <= ev["coverage"] <= (0.93 if score == "lac" else 0.96)
        assert ev["set_size"] < 5
        cp2 = C.ConformalPredictor.from_dict(json.loads(json.dumps(cp.to_dict())))
        assert np.array_equal(cp2.predict_mask(p[3000:]), cp.predict_mask(p[3000:]))
    with pytest.raises(ValueError, match="score"):
        C.ConformalPredictor.from_dict({**cp.to_dict(), "score": "raps"})
    with pytest.raises(ValueError, match="qhat"):
        C.ConformalPredictor.from_dict({k: v for k, v in cp.to_dict().items() if k != "qhat"})
    with pytest.raises(ValueError):
        C.ConformalPredictor(alpha=1.5)


# ------------------------------------------------------------------------------ selection, summary
def test_select_calibrator_report_and_choice() -> None:
    z, y = _data(10, 1500, 3, sharpen=3.0)
    best, report = C.select_calibrator(z, y, n_folds=5, seed=0)
    json.dumps(report, allow_nan=False)
    assert report["candidates"][0] == "none"
    assert set(report["heldout_nll"]) == {"none", "temperature", "platt", "isotonic", "histogram"}
    assert all(len(v) == 5 for v in report["heldout_nll_per_fold"].values())
    assert report["candidates"] == ["none", "temperature", "platt", "isotonic", "histogram"]  # least -> most flexible
    assert report["margin_se"] == 2.0 and "standard error" in report["rule"]
    assert report["chosen"] != "none"
    # the walk: each accepted step beat the then-current choice by > margin_se standard errors
    assert report["paired_improvement"]["none"] is None and report["compared_to"]["temperature"] == "none"
    for m in report["candidates"][1:]:
        imp, se = report["paired_improvement"][m], report["paired_se"][m]
        if m == report["chosen"]:
            assert imp > 0 and imp > 2.0 * se
        ref = report["heldout_nll"][report["compared_to"][m]]
        assert imp == pytest.approx(ref - report["heldout_nll"][m], abs=1e-9)
    assert report["heldout_nll"][report["chosen"]] <= report["heldout_nll"]["none"]
    assert report["ece_after"] < report["ece_before"]
    assert report["nll_after"] < report["nll_before"]
    assert best.method == report["chosen"] and best.num_classes == 3
    # deterministic given the seed
    _, report2 = C.select_calibrator(z, y, n_folds=5, seed=0)
    assert report2 == report


def test_select_calibrator_keeps_none_on_calibrated_model_with_only_bad_options() -> None:
    # isotonic on a tiny, already calibrated set puts zero mass on some held-out labels: worse
    z, y = _data(11, 60, 4)
    best, report = C.select_calibrator(z, y, methods=("isotonic",), n_folds=3)
    assert report["heldout_nll"]["isotonic"] > report["heldout_nll"]["none"]
    assert best.method == "none"


def _binary_logit_data(seed: int, n: int, factor: float, scale: float = 1.5):
    """Binary data: labels ~ sigmoid(s), logits (0, factor * s); factor > 1 mildly over-confident."""
    rng = np.random.default_rng(seed)
    s = rng.normal(size=n) * scale
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-s))).astype(np.int64)
    return np.stack([np.zeros(n), factor * s], axis=1), y


def test_select_calibrator_small_n_does_not_pick_a_flexible_method_that_hurts() -> None:
    # 75 fit examples of a mildly over-confident binary model (the situation at small n): histogram
    # binning's cross-fitted NLL beats "none" on this sample by chance (its bins fit the sample's noise), but on
    # a large fresh sample from the same distribution it is far worse; the low-variance choice must be kept.
    z, y = _binary_logit_data(26, 75, factor=1.2)
    z_new, y_new = _binary_logit_data(10_026, 20_000, factor=1.2)
    best, report = C.select_calibrator(z, y, seed=0)
    json.dumps(report, allow_nan=False)
    fresh = {m: M.negative_log_likelihood(C.make_calibrator(m).fit(z, y).transform(z_new), y_new)
             for m in ("none", "temperature", "histogram")}
    assert fresh["histogram"] > fresh["none"] + 0.05  # the flexible method really hurts on this distribution
    chosen_fresh = M.negative_log_likelihood(best.transform(z_new), y_new)
    assert chosen_fresh <= min(fresh["none"], fresh["temperature"]) + 0.01
    assert report["chosen"] in ("none", "temperature")


def test_select_calibrator_flexibility_order_and_margin() -> None:
    z, y = _binary_logit_data(3, 120, factor=1.2)
    _, report = C.select_calibrator(z, y, methods=("histogram", "platt", "none", "temperature"), n_folds=3)
    assert report["candidates"] == ["none", "temperature", "platt", "histogram"]
    # margin_se=0 accepts any mean improvement: the result is never worse than the default's on held-out NLL
    _, loose = C.select_calibrator(z, y, n_folds=3, margin_se=0.0)
    assert loose["heldout_nll"][loose["chosen"]] <= report["heldout_nll"][report["chosen"]] + 1e-12
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="margin_se"):
            C.select_calibrator(z, y, margin_se=bad)


def _stub_outputs(z):
    """What `collect_outputs` returns, for a stubbed model: logits and zero uncertainties."""
    zeros = np.zeros(len(z))
    return {"logits": z, "epistemic": zeros, "aleatoric": zeros, "order_dispersion": zeros}


class _StubModel:
    """Just enough of a model for `fit_model_calibration` once `collect_outputs` is stubbed."""

    def __init__(self) -> None:
        self.calibration = None

    def set_calibration(self, calibration) -> None:
        self.calibration = calibration


def _fit_model_calibration_on(monkeypatch, z, y, force: str | None = None):
    from bayesian_hf import evaluation as E

    monkeypatch.setattr(E, "collect_outputs", lambda model, tok, texts, **kw: _stub_outputs(z))
    if force is not None:  # simulate a cross-fitted choice of `force` (the issue: histogram picked at n = 150)
        def forced(logits, labels, **kw):
            _, report = C.select_calibrator(logits, labels, **kw)
            return C.make_calibrator(force).fit(logits, labels), {**report, "chosen": force}

        monkeypatch.setattr(E, "select_calibrator", forced)
    model = _StubModel()
    calibration, report = E.fit_model_calibration(model, None, ["t"] * len(y), list(y), alpha=0.2)
    json.dumps(report, allow_nan=False)
    json.dumps(calibration.metadata, allow_nan=False)
    assert model.calibration is calibration
    assert report["selection"]["chosen"] == calibration.calibrator.method == calibration.metadata["method"]
    return calibration, report


def test_fit_model_calibration_falls_back_when_the_choice_hurts_on_the_held_out_half(monkeypatch) -> None:
    z, y = _binary_logit_data(26, 150, factor=1.2)
    calibration, report = _fit_model_calibration_on(monkeypatch, z, y, force="histogram")
    fb = report["fallback"]
    assert fb is not None and fb["from"] == "histogram" and fb["to"] in ("none", "temperature")
    assert "raised the NLL" in fb["reason"]
    assert calibration.metadata["selection"]["fallback"] == fb == report["selection"]["fallback"]
    assert report["heldout"]["nll_after"] <= report["heldout"]["nll_before"]  # never worse than no calibration


def test_fit_model_calibration_keeps_a_choice_that_helps(monkeypatch) -> None:
    z, y = _binary_logit_data(5, 600, factor=3.0)  # clearly over-confident, plenty of data
    calibration, report = _fit_model_calibration_on(monkeypatch, z, y)
    assert report["fallback"] is None and calibration.metadata["selection"]["fallback"] is None
    assert calibration.calibrator.method != "none"
    assert report["heldout"]["nll_after"] < report["heldout"]["nll_before"]


def test_stratified_folds_partition_and_balance() -> None:
    y = np.array([0] * 50 + [1] * 10 + [2] * 3)
    folds = C._stratified_folds(y, 5, seed=0)
    allidx = np.sort(np.concatenate(folds))
    np.testing.assert_array_equal(allidx, np.arange(63))
    assert max(len(f) for f in folds) - min(len(f) for f in folds) <= 1
    for f in folds:
        assert (y[f] == 1).sum() == 2


def test_calibration_summary() -> None:
    z, y = _data(12, 1000, 3, sharpen=3.0)
    ts = C.TemperatureScaling().fit(z, y)
    s = C.calibration_summary(z, y, ts)
    for k in ("ece", "mce", "nll", "brier", "accuracy"):
        assert isinstance(s[f"{k}_before"], float) and isinstance(s[f"{k}_after"], float)
    assert s["ece_before"] == pytest.approx(M.expected_calibration_error(M.softmax(z), y))
    assert s["nll_after"] < s["nll_before"] and s["ece_after"] < s["ece_before"]
    assert s["accuracy_after"] == s["accuracy_before"]
    assert s["num_samples"] == 1000


# -------------------------------------------------------------------------------------- artifacts
def _save(tmp_path, method="temperature", conformal=True, label2id=LABEL2ID):
    z, y = _data(13, 600, 3, sharpen=2.0)
    cal = C.make_calibrator(method).fit(z[:300], y[:300])
    cp = C.ConformalPredictor(0.1, "aps").fit(cal.transform(z[300:]), y[300:]) if conformal else None
    summary = C.calibration_summary(z[300:], y[300:], cal)
    path = C.save_calibration(
        tmp_path / "calibration.json", cal, label2id=label2id, fit_metrics=summary, num_samples=300, conformal=cp
    )
    return path, cal, cp, z


@pytest.mark.parametrize("method", ["none", "temperature", "platt", "isotonic", "histogram"])
def test_save_load_roundtrip(tmp_path, method) -> None:
    path, cal, cp, z = _save(tmp_path, method)
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)  # plain JSON
    for key in ("format_version", "method", "parameters", "fit_metrics", "num_samples",
                "library_version", "label_hash", "conformal"):
        assert key in doc
    assert doc["method"] == method and doc["num_samples"] == 300
    assert doc["label_hash"] == C.label_mapping_hash(LABEL2ID)
    assert doc["library_version"] != ""
    loaded = C.load_calibration(path, label2id=dict(reversed(list(LABEL2ID.items()))))
    assert np.array_equal(loaded.calibrator.transform(z), cal.transform(z))
    assert loaded.conformal is not None
    p = cal.transform(z)
    assert np.array_equal(loaded.conformal.predict_mask(p), cp.predict_mask(p))
    assert loaded.metadata["fit_metrics"]["ece_after"] == doc["fit_metrics"]["ece_after"]
    assert "parameters" not in loaded.metadata
    assert [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == []  # no temp file left


def test_save_into_folder_and_without_conformal(tmp_path) -> None:
    z, y = _data(14, 100, 3)
    cal = C.TemperatureScaling().fit(z, y)
    out = C.save_calibration(tmp_path, cal, label2id=LABEL2ID, fit_metrics={"ece": float("nan")}, num_samples=100)
    assert out == os.path.join(tmp_path, C.CALIBRATION_FILENAME)
    loaded = C.load_calibration(tmp_path)
    assert loaded.conformal is None
    assert loaded.metadata["fit_metrics"]["ece"] is None  # NaN stored as null: strict JSON


def test_saved_artifact_is_json_never_pickle(tmp_path) -> None:
    path, *_ = _save(tmp_path, "isotonic")
    raw = open(path, "rb").read()
    assert not raw.startswith(b"\x80")  # pickle protocol 2+ header
    json.loads(raw.decode("utf-8"), parse_constant=lambda c: pytest.fail(f"non-finite {c}"))
    src = inspect.getsource(C)
    for banned in ("import pickle", "joblib", "torch.save", "cloudpickle", "dill"):
        assert banned not in src


def test_load_truncated_json_raises_clear_error(tmp_path) -> None:
    path, *_ = _save(tmp_path)
    text = open(path, encoding="utf-8").read()
    with open(path, "w", encoding="utf-8") as f:
        f.write(text[: len(text) // 2])
    with pytest.raises(ValueError, match="not valid JSON"):
        C.load_calibration(path)


def test_load_unknown_method_and_missing_fields(tmp_path) -> None:
    path, *_ = _save(tmp_path)
    doc = json.load(open(path, encoding="utf-8"))
    bad = dict(doc, method="beta", parameters=dict(doc["parameters"], method="beta"))
    json.dump(bad, open(path, "w", encoding="utf-8"))
    with pytest.raises(ValueError, match="unknown calibration method 'beta'"):
        C.load_calibration(path)
    for field in ("label_hash", "parameters", "format_version"):
        json.dump({k: v for k, v in doc.items() if k != field}, open(path, "w", encoding="utf-8"))
        with pytest.raises(ValueError, match=field):
            C.load_calibration(path)
    json.dump(dict(doc, format_version=99), open(path, "w", encoding="utf-8"))
    with pytest.raises(ValueError, match="format_version"):
        C.load_calibration(path)
    json.dump([1, 2], open(path, "w", encoding="utf-8"))
    with pytest.raises(ValueError, match="JSON object"):
        C.load_calibration(path)
    open(path, "w").write(json.dumps(doc).replace('"alpha": 0.1', '"alpha": NaN'))
    with pytest.raises(ValueError, match="non-finite"):
        C.load_calibration(path)
    with pytest.raises(FileNotFoundError):
        C.load_calibration(tmp_path / "missing.json")


def test_load_label_mapping_mismatch(tmp_path) -> None:
    path, *_ = _save(tmp_path)
    swapped = {"negative": 2, "neutral": 1, "positive": 0}
    with pytest.raises(ValueError, match="different label mapping"):
        C.load_calibration(path, label2id=swapped)
    with pytest.warns(UserWarning, match="different label mapping"):
        loaded = C.load_calibration(path, label2id=swapped, ignore_mismatch=True)
    assert loaded.calibrator.num_classes == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        C.load_calibration(path, label2id=LABEL2ID)  # matching mapping: no warning
    # tampering with the stored mapping is detected too
    doc = json.load(open(path, encoding="utf-8"))
    doc["label2id"] = swapped
    json.dump(doc, open(path, "w", encoding="utf-8"))
    with pytest.raises(ValueError, match="label_hash"):
        C.load_calibration(path)


def test_save_validates_label2id(tmp_path) -> None:
    z, y = _data(15, 100, 3)
    cal = C.TemperatureScaling().fit(z, y)
    with pytest.raises(ValueError, match="id2label"):
        C.save_calibration(tmp_path / "c.json", cal, label2id={0: "a", 1: "b", 2: "c"}, fit_metrics={}, num_samples=1)
    with pytest.raises(ValueError, match="2 labels"):
        C.save_calibration(tmp_path / "c.json", cal, label2id={"a": 0, "b": 1}, fit_metrics={}, num_samples=1)
    assert not os.path.exists(tmp_path / "c.json")


def test_label_mapping_hash() -> None:
    h = C.label_mapping_hash(LABEL2ID)
    assert len(h) == 64 and int(h, 16) >= 0
    assert C.label_mapping_hash(dict(reversed(list(LABEL2ID.items())))) == h  # insertion order irrelevant
    assert C.label_mapping_hash({"negative": 1, "neutral": 0, "positive": 2}) != h
