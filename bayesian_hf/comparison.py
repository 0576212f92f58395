"""A/B comparison of two model folders on the same labelled data, with paired bootstrap confidence intervals.

``bayesian-hf compare --model A --model B --data file.csv`` runs both models over the same texts (each with its
own calibrator, when it has one) and reports accuracy, NLL, ECE, AURC, the decision mix at each model's default
thresholds and the latency per text, side by side. Differences (B - A) get percentile intervals from a paired
bootstrap over examples (the same resampled examples for both models), and the verdict names the metrics whose
interval excludes 0.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .inference import collect_outputs
from .metrics import LOWER_IS_BETTER, aurc, expected_calibration_error, negative_log_likelihood
from .pipelines import format_predictions

#: metric -> True when larger is better
COMPARED_METRICS: dict[str, bool] = {m: m not in LOWER_IS_BETTER for m in ("accuracy", "nll", "ece", "aurc")}


def _metric(name: str, probs: np.ndarray, labels: np.ndarray) -> float:
    correct = probs.argmax(1) == labels
    if name == "accuracy":
        return float(correct.mean())
    if name == "nll":
        return negative_log_likelihood(probs, labels)
    if name == "ece":
        return expected_calibration_error(probs, labels)
    if name == "aurc":
        return aurc(probs.max(1), correct)
    raise ValueError(f"unknown metric {name!r}")


def paired_bootstrap(
    probs_a: np.ndarray, probs_b: np.ndarray, labels: np.ndarray, *, num_resamples: int = 1000, level: float = 0.95,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Per metric: value for A and B, difference B - A and its percentile interval over paired resamples."""
    probs_a, probs_b, labels = np.asarray(probs_a, float), np.asarray(probs_b, float), np.asarray(labels)
    n = labels.shape[0]
    if probs_a.shape != probs_b.shape or probs_a.shape[0] != n or n < 2:
        raise ValueError(f"need two (N, C) probability arrays and N labels with N >= 2, got {probs_a.shape}, "
                         f"{probs_b.shape}, {labels.shape}")
    if not 0 < level < 1 or num_resamples < 10:
        raise ValueError("level must be in (0, 1) and num_resamples >= 10")
    rng = np.random.default_rng(seed)
    index = rng.integers(0, n, size=(num_resamples, n))
    out: dict[str, dict[str, float]] = {}
    tail = (1 - level) / 2
    for name in COMPARED_METRICS:
        diffs = np.array([_metric(name, probs_b[i], labels[i]) - _metric(name, probs_a[i], labels[i]) for i in index])
        a, b = _metric(name, probs_a, labels), _metric(name, probs_b, labels)
        out[name] = {"a": a, "b": b, "difference": b - a, "low": float(np.quantile(diffs, tail)),
                     "high": float(np.quantile(diffs, 1 - tail))}
    return out


def verdict(intervals: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Which model each metric's interval favours; overall: one model better on some metric and worse on none."""
    better_b, better_a = [], []
    for name, larger_is_better in COMPARED_METRICS.items():
        cell = intervals[name]
        favours_b = cell["low"] > 0 if larger_is_better else cell["high"] < 0
        favours_a = cell["high"] < 0 if larger_is_better else cell["low"] > 0
        (better_b if favours_b else better_a if favours_a else []).append(name)
    if better_b and not better_a:
        summary = f"B is better ({', '.join(better_b)}; no metric significantly worse)"
    elif better_a and not better_b:
        summary = f"A is better ({', '.join(better_a)}; no metric significantly worse)"
    elif better_a and better_b:
        summary = f"mixed: B better on {', '.join(better_b)}, A better on {', '.join(better_a)}"
    else:
        summary = "no significant difference"
    return {"better_a": better_a, "better_b": better_b, "summary": summary}


def run_model(model: Any, tokenizer: Any, texts: Sequence[str], *, batch_size: int = 32) -> dict[str, Any]:
    """Calibrated probabilities (raw when no calibrator), decisions at the thresholds the model is served with (its
    calibration's stored ``decision_thresholds``, else the package defaults) and the
    wall time per text, through the one batch-prediction path (:func:`bayesian_hf.inference.collect_outputs`)."""
    start = time.perf_counter()
    out = collect_outputs(model, tokenizer, texts, batch_size=batch_size, progress=False)
    seconds = time.perf_counter() - start
    # the model's calibration: its conformal sets and its stored decision thresholds, as when it is served
    records = format_predictions(out, model.config.id2label, calibration=getattr(model, "calibration", None))
    decisions = [r["decision"] for r in records]
    probs = out.get("calibrated_probs", out["probs"]).astype(np.float64)
    return {
        "probs": probs / probs.sum(1, keepdims=True),
        "decision_mix": {d: decisions.count(d) / len(decisions) for d in ("accept", "review", "escalate")},
        "ms_per_text": 1000 * seconds / len(texts),
    }


def compare_models(
    model_a: Any, model_b: Any, tokenizer_a: Any, tokenizer_b: Any, texts: Sequence[str], labels: Sequence[int], *,
    num_resamples: int = 1000, seed: int = 0, batch_size: int = 32,
) -> dict[str, Any]:
    """Both models on the same labelled texts; JSON-safe report with intervals, decision mix and latency."""
    if [str(v) for _, v in sorted(model_a.config.id2label.items())] != [str(v) for _, v in sorted(model_b.config.id2label.items())]:
        raise ValueError(f"the models have different labels: {dict(model_a.config.id2label)} vs "
                         f"{dict(model_b.config.id2label)}")
    labels = np.asarray(labels)
    a = run_model(model_a, tokenizer_a, texts, batch_size=batch_size)
    b = run_model(model_b, tokenizer_b, texts, batch_size=batch_size)
    intervals = paired_bootstrap(a["probs"], b["probs"], labels, num_resamples=num_resamples, seed=seed)
    return {
        "num_examples": int(labels.shape[0]),
        "metrics": intervals,
        "decision_mix": {"a": a["decision_mix"], "b": b["decision_mix"]},
        "ms_per_text": {"a": a["ms_per_text"], "b": b["ms_per_text"]},
        "verdict": verdict(intervals),
    }


def render_comparison(report: dict[str, Any], name_a: str, name_b: str) -> str:
    lines = [f"A = {name_a}", f"B = {name_b}", f"{report['num_examples']} labelled examples; 95% paired bootstrap "
             "intervals of B - A", "", f"{'metric':10s} {'A':>9s} {'B':>9s} {'B - A':>9s}  interval"]
    for name, cell in report["metrics"].items():
        lines.append(f"{name:10s} {cell['a']:9.4f} {cell['b']:9.4f} {cell['difference']:+9.4f}  "
                     f"[{cell['low']:+.4f}, {cell['high']:+.4f}]")
    for side in ("a", "b"):
        mix = report["decision_mix"][side]
        lines.append(f"decisions {side.upper()}: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in mix.items())
                     + f"; {report['ms_per_text'][side]:.2f} ms/text")
    lines.append(f"verdict: {report['verdict']['summary']}")
    return "\n".join(lines)


__all__ = ["COMPARED_METRICS", "compare_models", "paired_bootstrap", "render_comparison", "run_model", "verdict"]
