"""What ``Trainer`` evaluates: the model outputs gathered per example (:data:`PREDICTION_KEYS`), their names
(:func:`split_predictions`), the ``compute_metrics`` built on :func:`bayesian_hf.metrics.classification_metrics`,
and the metric keys of the summary table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..inference import OUTPUT_KEYS
from ..metrics import CLASSIFICATION_METRIC_KEYS, classification_metrics, softmax, to_numpy

#: The model outputs ``BayesianTrainer`` hands to ``compute_metrics``, in this order: the prediction outputs
#: (:data:`bayesian_hf.inference.OUTPUT_KEYS`) but ``calibrated_probs``, which is appended when the model has a
#: calibrator attached. Gathering and :func:`split_predictions` use this one tuple, so positions always agree.
OPTIONAL_PREDICTION_KEYS: tuple[str, ...] = ("calibrated_probs",)
PREDICTION_KEYS: tuple[str, ...] = tuple(k for k in OUTPUT_KEYS if k not in OPTIONAL_PREDICTION_KEYS)

#: The per-example uncertainty outputs among :data:`PREDICTION_KEYS` (each is averaged into ``mean_<name>``).
UNCERTAINTY_KEYS: tuple[str, ...] = PREDICTION_KEYS[2:]

#: Columns of the final summary table: ``n``, the classification metrics but MCE and AUPRC, the mean uncertainties.
SUMMARY_COLUMNS: tuple[str, ...] = (
    "n",
    *(k for k in CLASSIFICATION_METRIC_KEYS if k not in ("mce", "auprc_error")),
    *(f"mean_{k}" for k in UNCERTAINTY_KEYS if k != "num_units"),
)


def select_prediction_outputs(outputs: Mapping[str, Any]) -> dict[str, Any]:
    """The :data:`PREDICTION_KEYS` (+ present optional keys) of a Bayesian model output, in a fixed order."""
    missing = [k for k in PREDICTION_KEYS if outputs.get(k) is None]
    if missing:
        raise ValueError(f"the model output lacks {missing}; is it a Bayesian-expectation model?")
    selected = {k: outputs[k] for k in PREDICTION_KEYS}
    selected.update({k: outputs[k] for k in OPTIONAL_PREDICTION_KEYS if outputs.get(k) is not None})
    return selected


def split_predictions(predictions: Any) -> dict[str, np.ndarray]:
    """Name the arrays of ``EvalPrediction.predictions``: the tuple :class:`BayesianTrainer` gathers from a
    Bayesian model (:data:`PREDICTION_KEYS`), or a single logits array from a plain classifier (then ``total``
    is the entropy of ``softmax(logits)``). ``probs`` is always ``softmax(logits)`` in float64."""
    if isinstance(predictions, (tuple, list)):
        names = PREDICTION_KEYS + OPTIONAL_PREDICTION_KEYS
        if len(predictions) not in (len(PREDICTION_KEYS), len(names)):
            raise ValueError(f"expected the arrays {names[:len(PREDICTION_KEYS)]} (+ {OPTIONAL_PREDICTION_KEYS}), "
                             f"got {len(predictions)}; evaluate Bayesian models with BayesianTrainer")
        out = {name: to_numpy(value) for name, value in zip(names, predictions)}
    else:
        out = {"logits": to_numpy(predictions)}
    logits = np.asarray(out["logits"], dtype=np.float64)
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (N, C), got {logits.shape}")
    probs = softmax(logits)
    out["probs"] = probs
    if "total" not in out:
        out["total"] = -np.sum(probs * np.log(np.clip(probs, 1e-12, 1.0)), axis=1)
    for name in UNCERTAINTY_KEYS:
        if name in out:
            out[name] = np.asarray(out[name], dtype=np.float64).reshape(-1)
            if out[name].shape[0] != logits.shape[0]:
                raise ValueError(f"{name} has {out[name].shape[0]} entries for {logits.shape[0]} examples")
    if "calibrated_probs" in out:
        calibrated = np.asarray(out["calibrated_probs"], dtype=np.float64)
        out["calibrated_probs"] = calibrated / calibrated.sum(axis=1, keepdims=True)
    return out


def make_bayesian_compute_metrics(uncertainty: str = "total", n_bins: int = 15):
    """A ``Trainer`` ``compute_metrics``: :func:`bayesian_hf.metrics.classification_metrics` (error detection and
    AURC scored by the ``uncertainty`` output, default the total predictive entropy) plus the mean of every
    uncertainty output (``mean_epistemic``, ``mean_aleatoric``, ``mean_total``, ``mean_order_dispersion``,
    ``mean_num_units``)."""

    def compute_metrics(eval_pred: Any) -> dict[str, float]:
        preds, labels = eval_pred.predictions, eval_pred.label_ids
        if isinstance(labels, (tuple, list)):
            labels = labels[0]
        out = split_predictions(preds)
        score = out.get(uncertainty, out["total"])
        metrics = classification_metrics(out["probs"], labels, uncertainty=score, n_bins=n_bins)
        for name in UNCERTAINTY_KEYS:
            if name in out:
                metrics[f"mean_{name}"] = float(np.mean(out[name]))
        if "calibrated_probs" in out:
            calibrated = classification_metrics(out["calibrated_probs"], labels, n_bins=n_bins)
            metrics.update({f"calibrated_{k}": v for k, v in calibrated.items()})
        return metrics

    return compute_metrics
