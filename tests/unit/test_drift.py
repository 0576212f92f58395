"""bayesian_hf.drift: the reference sketch (bins, subsample, JSON with validation), the bounded window and the
drift statistics (PSI, KS, Wasserstein, label shift, alert)."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

from bayesian_hf.drift import (
    MAX_SUBSAMPLE,
    SIGNALS,
    DriftWindow,
    ReferenceSketch,
    SignalSketch,
    build_sketch,
    drift_statistics,
    psi,
    record_signals,
    signals_from_outputs,
)


def draw(n: int, seed: int, shift: float = 0.0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Signals like a served model's: skewed confidences, small epistemic, a point mass of zero order dispersion
    (one-sentence texts), integer lengths; ``shift`` moves every signal by about one standard deviation."""
    rng = np.random.default_rng(seed)
    signals = {
        "confidence": np.clip(rng.beta(8, 2, n) + 0.1 * shift, 0.5, 1.0),
        "epistemic": rng.gamma(2.0, 0.02, n) * (1 + shift),
        "aleatoric": rng.gamma(3.0, 0.1, n) + 0.15 * shift,
        "order_dispersion": np.where(rng.random(n) < 0.3, 0.0, rng.exponential(1e-3 * (1 + shift), n)),
        "length": rng.poisson(150 + 40 * shift, n).astype(float),
    }
    labels = (rng.random(n) < 0.4 + 0.2 * shift).astype(np.int64)
    return signals, labels


@pytest.fixture(scope="module")
def sketch() -> ReferenceSketch:
    signals, labels = draw(5000, seed=0)
    return ReferenceSketch.from_arrays(signals, labels, num_labels=2, true_labels=labels)


def window_arrays(n: int, seed: int, shift: float = 0.0) -> dict[str, np.ndarray]:
    signals, labels = draw(n, seed, shift)
    return {**signals, "label": labels}


# ------------------------------------------------------------------------------------------------- sketch
def test_sketch_bins_and_subsample(sketch):
    assert sketch.num_samples == 5000 and sketch.num_labels == 2 and set(sketch.signals) == set(SIGNALS)
    for name, signal in sketch.signals.items():
        assert signal.sample.size == MAX_SUBSAMPLE and (np.diff(signal.sample) >= 0).all()
        assert (np.diff(signal.edges) > 0).all() and signal.shares.size == signal.edges.size + 1
        assert signal.shares.sum() == pytest.approx(1.0) and signal.shares.min() >= 0.05, name  # no slivers
    assert sketch.signals["confidence"].edges.size == 9  # 10 quantile bins of a continuous signal
    dispersion = sketch.signals["order_dispersion"]
    assert dispersion.shares[0] == pytest.approx(0.3, abs=0.03)  # the point mass at 0 is one bin
    assert sketch.label_shares.sum() == pytest.approx(1.0) and sketch.confusion.sum() == pytest.approx(1.0)


def test_a_constant_signal_keeps_an_empty_bin_above_it():
    constant = SignalSketch.fit(np.zeros(50))
    assert constant.edges.tolist() == [0.0] and constant.shares.tolist() == [1.0, 0.0]
    assert SignalSketch.fit(np.arange(5.0), num_bins=1).edges.size == 0


def test_build_sketch_from_collect_outputs():
    rng = np.random.default_rng(1)
    n = 400
    logits = rng.normal(size=(n, 3))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    calibrated = probs ** 0.5 / (probs ** 0.5).sum(1, keepdims=True)
    outputs = {"logits": logits, "probs": probs, "calibrated_probs": calibrated, "epistemic": rng.random(n) * 0.1,
               "aleatoric": rng.random(n), "total": rng.random(n), "order_dispersion": rng.random(n) * 1e-3,
               "num_units": rng.integers(1, 6, n)}
    lengths = rng.integers(20, 300, n)
    sketch = build_sketch(outputs, lengths, labels=rng.integers(0, 3, n))
    assert sketch.num_labels == 3 and sketch.num_samples == n and sketch.confusion.shape == (3, 3)
    assert sketch.signals["confidence"].mean == pytest.approx(calibrated.max(1).mean())  # calibrated, not raw
    assert sketch.label_shares.tolist() == pytest.approx((np.bincount(calibrated.argmax(1), minlength=3) / n).tolist())
    assert sketch.signals["length"].mean == pytest.approx(lengths.mean())
    raw = build_sketch({k: v for k, v in outputs.items() if k != "calibrated_probs"}, lengths)
    assert raw.signals["confidence"].mean == pytest.approx(probs.max(1).mean()) and raw.confusion is None
    with pytest.raises(ValueError, match="length has 399 values"):
        build_sketch(outputs, lengths[:-1])
    with pytest.raises(ValueError, match="missing"):
        build_sketch({k: v for k, v in outputs.items() if k != "epistemic"}, lengths)
    with pytest.raises(ValueError, match="non-finite"):
        build_sketch({**outputs, "aleatoric": np.full(n, np.nan)}, lengths)
    with pytest.raises(ValueError, match="true_labels"):
        build_sketch(outputs, lengths, labels=np.full(n, 3))


def test_record_signals_match_the_output_signals():
    record = {"label": "b", "score": 0.8, "uncertainty": {"epistemic": 0.01, "aleatoric": 0.4, "total": 0.41},
              "order_dispersion": 1e-4, "num_units": 2}
    assert record_signals(record, "Nice. Bad!") == {"confidence": 0.8, "epistemic": 0.01, "aleatoric": 0.4,
                                                    "order_dispersion": 1e-4, "length": 10.0}
    signals, predicted = signals_from_outputs(
        {"probs": np.array([[0.2, 0.8]]), "epistemic": [0.01], "aleatoric": [0.4], "order_dispersion": [1e-4]}, [10])
    assert {k: float(v[0]) for k, v in signals.items()} == record_signals(record, "Nice. Bad!")
    assert predicted.tolist() == [1]


# --------------------------------------------------------------------------------------------------- JSON
def test_json_round_trip(sketch):
    doc = sketch.to_dict()
    text = json.dumps(doc, allow_nan=False)
    assert len(text) < 150_000  # bounded: at most 1000 values per signal
    back = ReferenceSketch.from_dict(json.loads(text))
    assert back.to_dict() == doc
    live = window_arrays(500, seed=3, shift=0.5)
    assert drift_statistics(back, live) == drift_statistics(sketch, live)


def _corrupt(doc: dict, path: tuple, value) -> dict:
    doc = copy.deepcopy(doc)
    target = doc
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


CORRUPTIONS = [
    ((), None, "must be a JSON object"),
    (("format",), "something-else", "format must be"),
    (("format_version",), 99, "format_version"),
    (("format_version",), True, "format_version"),
    (("num_samples",), 0, "num_samples"),
    (("num_samples",), KeyError, "missing fields"),
    (("length_unit",), "bytes", "length_unit"),
    (("surprise",), 1, "unknown fields"),
    (("signals",), {}, "non-empty"),
    (("signals", "colour"), {"edges": [], "shares": [1.0], "sample": [1.0], "mean": 1.0, "std": 0.0},
     "unknown signals"),
    (("signals", "length", "edges", 0), float("nan"), "must be finite"),
    (("signals", "length", "edges", 0), "12", "must be a number"),
    (("signals", "length", "edges", 1), -1e9, "strictly increasing"),
    (("signals", "length", "edges"), list(range(200)), "entries"),
    (("signals", "length", "shares", 0), 0.9, "summing to 1"),
    (("signals", "length", "shares", 0), -0.1, "summing to 1"),
    (("signals", "length", "shares"), [1.0], "len\\(edges\\) \\+ 1"),
    (("signals", "length", "sample"), [float(i) for i in range(MAX_SUBSAMPLE + 1)], "entries"),
    (("signals", "length", "sample"), [], "entries"),
    (("signals", "length", "sample"), [3.0, 1.0, 2.0], "sorted"),
    (("signals", "length", "std"), -1.0, "std"),
    (("signals", "length", "mean"), float("inf"), "finite"),
    (("signals", "length", "mean"), KeyError, "missing fields"),
    (("signals", "length"), [1, 2], "JSON object"),
    (("label_shares",), [0.5, 0.6], "summing to 1"),
    (("label_shares",), [], "entries"),
    (("confusion",), [[0.5, 0.5]], "confusion"),
    (("confusion",), [[0.7, 0.0], [0.0, 0.3]], "confusion"),
]


@pytest.mark.parametrize("path,value,message", CORRUPTIONS,
                         ids=[".".join(map(str, c[0])) or "root" for c in CORRUPTIONS])
def test_corrupt_documents_are_clear_value_errors(sketch, path, value, message):
    doc = value if path == () else _corrupt(sketch.to_dict(), path, value)
    with pytest.raises(ValueError, match=message):
        ReferenceSketch.from_dict(doc)


# ------------------------------------------------------------------------------------------------- window
def test_window_memory_is_bounded():
    window = DriftWindow(250)
    nbytes = window.nbytes
    signals, labels = draw(2500, seed=5)
    for i in range(2500):  # 10x max_size
        assert window.append({k: v[i] for k, v in signals.items()}, int(labels[i]))
        assert len(window) == min(i + 1, 250)
    assert len(window) == 250 and window.total_seen == 2500 and window.nbytes == nbytes == 250 * 6 * 8
    arrays = window.arrays()
    assert all(a.size == 250 for a in arrays.values())
    for name in SIGNALS:  # the last 250, oldest first
        np.testing.assert_array_equal(arrays[name], signals[name][-250:])
    np.testing.assert_array_equal(arrays["label"], labels[-250:])


def test_window_extend_matches_append_and_skips_bad_values():
    signals, labels = draw(1000, seed=6)
    one, many = DriftWindow(300), DriftWindow(300)
    for i in range(1000):
        one.append({k: v[i] for k, v in signals.items()}, int(labels[i]))
    many.extend({k: v[:400] for k, v in signals.items()}, labels[:400])
    many.extend({k: v[400:] for k, v in signals.items()}, labels[400:])
    assert len(many) == 300 and many.total_seen == 1000
    for key, value in one.arrays().items():
        np.testing.assert_array_equal(value, many.arrays()[key])
    assert not one.append({**{k: 1.0 for k in SIGNALS}, "length": math.nan}, 0)
    assert not one.append({"confidence": 1.0}, 0)  # missing signals
    assert one.skipped == 2 and one.total_seen == 1000
    with pytest.raises(ValueError, match="max_size"):
        DriftWindow(0)


# --------------------------------------------------------------------------------------------- statistics
def test_no_drift_on_data_from_the_reference_distribution(sketch):
    stats = drift_statistics(sketch, window_arrays(2000, seed=11))
    json.dumps(stats, allow_nan=False)
    assert stats["num_samples"] == 2000 and stats["enough_samples"] is True
    for name, signal in stats["signals"].items():
        assert signal["psi"] < 0.05, name
        assert signal["ks_statistic"] < 0.05 and signal["ks_pvalue"] > 1e-3, name
        assert signal["wasserstein_scaled"] < 0.1, name
    assert stats["psi"]["label"] < 0.05 and stats["label_shift"]["total_variation"] < 0.05
    assert stats["alert"] is False and stats["drifted_signals"] == [] and stats["max_psi"] < 0.05


def test_shifted_data_raises_the_alert(sketch):
    stats = drift_statistics(sketch, window_arrays(2000, seed=12, shift=1.0))
    assert stats["alert"] is True
    for name in ("confidence", "epistemic", "aleatoric", "length"):
        signal = stats["signals"][name]
        assert signal["psi"] > 0.2 and signal["ks_pvalue"] < 1e-10 and signal["wasserstein_scaled"] > 0.3, name
        assert name in stats["drifted_signals"]
    assert stats["signals"]["length"]["wasserstein"] == pytest.approx(40, abs=3)  # the mean moved by 40 characters
    assert stats["label_shift"]["total_variation"] == pytest.approx(0.2, abs=0.03)
    # BBSE: predictions here equal the labels (identity confusion), so it recovers the new label shares
    bbse = stats["label_shift"]["bbse"]
    assert bbse["estimated_true_shares"][1] == pytest.approx(stats["label_shift"]["window_shares"][1])
    assert bbse["label_weights"][1] > 1 > bbse["label_weights"][0]
    # a threshold above every PSI: no alert
    assert drift_statistics(sketch, window_arrays(2000, seed=12, shift=1.0), psi_threshold=1e6)["alert"] is False


def test_no_alert_below_min_samples(sketch):
    few = drift_statistics(sketch, window_arrays(50, seed=13, shift=1.0))
    assert few["enough_samples"] is False and few["drifted_signals"] and few["alert"] is False
    assert drift_statistics(sketch, window_arrays(50, seed=13, shift=1.0), min_samples=50)["alert"] is True


def test_empty_window_and_window_input(sketch):
    empty = drift_statistics(sketch, DriftWindow(10))
    json.dumps(empty, allow_nan=False)
    assert empty["num_samples"] == 0 and empty["alert"] is False and empty["psi"] == {} and empty["max_psi"] is None
    assert empty["signals"]["length"]["psi"] is None and empty["label_shift"]["total_variation"] is None
    window = DriftWindow(800)
    live = window_arrays(1000, seed=14)
    window.extend(live, live["label"])
    assert drift_statistics(sketch, window) == drift_statistics(sketch, {k: v[-800:] for k, v in live.items()})
    with pytest.raises(ValueError, match="lacks"):
        drift_statistics(sketch, {"confidence": np.ones(3), "label": np.zeros(3, int)})
    with pytest.raises(ValueError, match="psi_threshold"):
        drift_statistics(sketch, window, psi_threshold=0.0)


def test_psi_values():
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert psi([0.5, 0.5], [0.6, 0.4]) == pytest.approx(0.1 * math.log(1.2) + 0.1 * math.log(0.5 / 0.4))
    assert math.isfinite(psi([1.0, 0.0], [0.0, 1.0])) and psi([1.0, 0.0], [0.0, 1.0]) > 10  # empty bins: epsilon
