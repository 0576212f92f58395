"""Model-level workflows: fit and attach a calibrator, evaluate a model, check calibration drift.

`calibration.py` holds the numpy calibrators (and travels with the weights); this module runs the model through
:func:`bayesian_hf.inference.collect_outputs` (re-exported here, where callers have always imported it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .calibration import (
    ConformalPredictor,
    LoadedCalibration,
    calibration_summary,
    make_calibrator,
    select_calibrator,
)
from .data.splits import stratified_halves
from .drift_reference import build_sketch
from .inference import UNCERTAINTY_KEYS, collect_outputs
from .metrics import classification_metrics, expected_calibration_error
from .pipelines import DEFAULT_THRESHOLDS
from .risk_control import _probability, decision_thresholds, risk_coverage_table


def fit_model_calibration(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    labels: Sequence[int],
    *,
    methods: Sequence[str] = ("temperature", "platt", "isotonic", "histogram"),
    alpha: float = 0.1,
    conformal_score: str = "aps",
    seed: int = 0,
    batch_size: int = 32,
    num_orderings: int | None = None,
    target_risk: float | None = None,
    delta: float = 0.1,
    review_target_risk: float | None = None,
    review_budget: float | None = None,
) -> tuple[LoadedCalibration, dict[str, Any]]:
    """Fit a calibrator and a conformal predictor on a calibration split and attach them to ``model``.

    The split is halved (stratified, seeded): half A chooses the method by cross-fitted held-out NLL
    (`select_calibrator`, which keeps the least flexible method unless a more flexible one wins clearly) and
    fits it; half B, unseen by that fit, gives the honest before/after metrics and calibrates the conformal
    predictor on the calibrated probabilities.  The choice is checked on half B: if it raises half B's NLL
    above no calibration's, it falls back to temperature scaling when that beats no calibration on half B,
    else to the identity (``"none"``), refit on half A; ``selection["fallback"]`` records
    ``{"from", "to", "reason"}`` (``None`` when the choice held) in the report and the metadata.

    With ``target_risk``, decision thresholds are chosen on half B as well (calibrated confidences and
    correctness; see :mod:`bayesian_hf.risk_control`): ``accept`` such that, with probability >= ``1 - delta``,
    the error rate of what the pipeline accepts (confidence >= accept) is at most
    ``target_risk``; ``review`` for ``review_target_risk`` (the error rate of what is sent to review) and/or
    ``review_budget`` (the share of traffic sent to review), else ``min(0.6, accept)`` (the default review
    threshold).  The metadata then holds ``decision_thresholds`` (``accept``, ``review``, ``target_risk``,
    ``delta``, ``coverage``, ``risk_upper_bound``, ``feasible``, ...) and ``risk_coverage``
    (:func:`~bayesian_hf.risk_control.risk_coverage_table` of half B), and the report the full choices under
    ``"decision_thresholds"``.  An infeasible target stores ``accept`` = ``risk_control.ACCEPT_NOTHING``.
    """
    y = np.asarray(labels, dtype=np.int64)
    if len(y) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(y)} labels")
    if len(y) < 20:
        raise ValueError(f"need at least 20 calibration examples, got {len(y)}")
    if target_risk is not None:  # check before the (slow) forward passes
        target_risk = _probability(target_risk, "target_risk")
        delta = _probability(delta, "delta")
        if review_target_risk is not None and _probability(review_target_risk, "review_target_risk") < target_risk:
            raise ValueError(f"review_target_risk ({review_target_risk}) must not be below target_risk ({target_risk}): "
                             "the review band holds the less confident predictions")
        if review_budget is not None:
            _probability(review_budget, "review_budget")
    elif review_target_risk is not None or review_budget is not None:
        raise ValueError("review_target_risk / review_budget need target_risk (the accept threshold comes first)")
    model.set_calibration(None)
    outputs = collect_outputs(model, tokenizer, texts, batch_size=batch_size, num_orderings=num_orderings)
    logits = outputs["logits"]
    fit_idx, held_idx = stratified_halves(y, seed)
    calibrator, selection = select_calibrator(logits[fit_idx], y[fit_idx], methods=methods, seed=seed)
    summary = calibration_summary(logits[held_idx], y[held_idx], calibrator)
    selection["fallback"] = None
    if summary["nll_after"] > summary["nll_before"]:  # the choice hurts on data it never saw: do not ship it
        chosen = calibrator.method
        target = "none"
        reason = (
            f"{chosen} raised the NLL on the held-out half ({len(held_idx)} examples) from "
            f"{summary['nll_before']:.4f} to {summary['nll_after']:.4f}"
        )
        if chosen != "temperature":
            temperature = make_calibrator("temperature").fit(logits[fit_idx], y[fit_idx])
            t_nll = calibration_summary(logits[held_idx], y[held_idx], temperature)["nll_after"]
            if t_nll < summary["nll_before"]:
                target = "temperature"
                reason += f"; temperature scaling lowers it to {t_nll:.4f}"
        calibrator = make_calibrator(target).fit(logits[fit_idx], y[fit_idx])
        summary = calibration_summary(logits[held_idx], y[held_idx], calibrator)
        selection["fallback"] = {"from": chosen, "to": target, "reason": reason}
        selection["chosen"] = target
    held_probs = calibrator.transform(logits[held_idx])
    conformal = ConformalPredictor(alpha=alpha, score=conformal_score).fit(held_probs, y[held_idx])
    fit_metrics = {k: v for k, v in summary.items() if isinstance(v, float) and math.isfinite(v)}
    decisions: dict[str, Any] = {}
    if target_risk is not None:
        decisions = decision_thresholds(  # no conformal eligibility: the pipeline accepts on confidence alone
            held_probs, y[held_idx], None, target_risk=target_risk, delta=delta,
            review_target_risk=review_target_risk, review_budget=review_budget,
            default_review=DEFAULT_THRESHOLDS["review"],
        )
    # the risk-coverage table of half B (unseen by the calibrator fit), always: the card shows it
    risk_coverage = decisions.get("risk_coverage") or risk_coverage_table(
        held_probs.max(1), held_probs.argmax(1) == y[held_idx], delta=delta)
    # the reference the drift monitor compares live traffic with: the calibrated outputs on the whole split
    drift_reference = build_sketch({**outputs, "calibrated_probs": calibrator.transform(logits)},
                                   [len(t) for t in texts], labels=y).to_dict()
    calibration = LoadedCalibration(
        calibrator=calibrator,
        conformal=conformal,
        metadata={
            "method": calibrator.method,
            "fit_metrics": fit_metrics,
            "num_samples": int(len(y)),
            "selection": {
                k: selection[k] for k in ("chosen", "heldout_nll", "heldout_ece", "n_folds", "seed", "margin_se", "fallback")
            },
            "risk_coverage": risk_coverage,
            "drift_reference": drift_reference,
            **({"decision_thresholds": decisions["decision_thresholds"]} if "decision_thresholds" in decisions else {}),
        },
    )
    model.set_calibration(calibration)
    report = {"selection": selection, "heldout": summary, "fit_examples": len(fit_idx), "heldout_examples": len(held_idx),
              "fallback": selection["fallback"]}
    report["risk_coverage"] = risk_coverage
    if decisions:
        report["decision_thresholds"] = {"accept": decisions["accept"], "review": decisions["review"]}
    return calibration, report


def evaluate_model(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    labels: Sequence[int],
    *,
    batch_size: int = 32,
    num_orderings: int | None = None,
) -> dict[str, float]:
    """`metrics.classification_metrics` of the model (calibrated probabilities when a calibrator is attached),
    with total uncertainty as the error-detection score, plus mean uncertainties."""
    out = collect_outputs(model, tokenizer, texts, batch_size=batch_size, num_orderings=num_orderings)
    probs = out.get("calibrated_probs", out["probs"])
    metrics = classification_metrics(probs, np.asarray(labels), uncertainty=out["total"])
    for name in UNCERTAINTY_KEYS:
        metrics[f"mean_{name}"] = float(out[name].mean())
    return metrics


def calibration_drift(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    labels: Sequence[int],
    *,
    tolerance: float = 0.03,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Compare the ECE of the calibrated model on recent labelled data with the ECE measured when the calibrator
    was fit; recommend recalibrating when it grew by more than ``tolerance``."""
    calibration = getattr(model, "calibration", None)
    if calibration is None:
        raise ValueError("the model has no calibrator attached; fit one with `bayesian-hf calibrate` first")
    fit_ece = calibration.metadata.get("fit_metrics", {}).get("ece_after")
    if fit_ece is None:
        raise ValueError("the calibrator's metadata has no fit ECE (fit_metrics.ece_after)")
    out = collect_outputs(model, tokenizer, texts, batch_size=batch_size)
    recent = expected_calibration_error(out["calibrated_probs"], np.asarray(labels))
    drift = recent - float(fit_ece)
    return {
        "recent_ece": recent,
        "fit_ece": float(fit_ece),
        "drift": drift,
        "tolerance": tolerance,
        "num_samples": len(labels),
        "recalibrate": bool(drift > tolerance),
        "recommendation": (
            f"ECE grew by {drift:.3f} (> {tolerance}): refit the calibrator on recent labelled data "
            "(bayesian-hf calibrate)"
            if drift > tolerance
            else f"ECE within {tolerance} of the fit value: no action needed"
        ),
    }
