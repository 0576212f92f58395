"""The metrics plugged into other libraries: ``compute_metrics`` for ``transformers.Trainer`` and the folder of the
local ``evaluate`` module wrapping :func:`bayesian_hf.metrics.classification_metrics` (the Hub's metric scripts are
unreachable offline, a local path is not).

Kept out of ``metrics.py``, which travels with the weights for ``trust_remote_code`` loading; the three names
still resolve as ``bayesian_hf.metrics.X``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from .metrics import classification_metrics, softmax, to_numpy

__all__ = ["compute_metrics", "evaluate_module_path", "make_compute_metrics"]


def _unpack_eval_pred(eval_pred: Any) -> tuple[Any, Any]:
    if hasattr(eval_pred, "predictions") and hasattr(eval_pred, "label_ids"):
        return eval_pred.predictions, eval_pred.label_ids
    if isinstance(eval_pred, (tuple, list)) and len(eval_pred) >= 2:
        return eval_pred[0], eval_pred[1]
    raise TypeError(
        "compute_metrics expects a transformers.EvalPrediction or a (predictions, labels) tuple, "
        f"got {type(eval_pred).__name__}"
    )


def make_compute_metrics(
    uncertainty_index: int | None = None, n_bins: int = 15
) -> Callable[[Any], dict[str, float]]:
    """Build a ``Trainer`` ``compute_metrics`` function.

    ``predictions`` may be a logits array ``(N, C)`` or a tuple whose first element is the logits
    (log predictive probabilities count as logits); probabilities are ``softmax(logits)``.  If
    ``uncertainty_index`` is given, ``predictions[uncertainty_index]`` (shape ``(N,)``) is used as
    the uncertainty score for error detection / AURC instead of ``1 - max prob``.
    """

    def _compute(eval_pred: Any) -> dict[str, float]:
        preds, label_ids = _unpack_eval_pred(eval_pred)
        if isinstance(label_ids, tuple):  # several label_names: the class labels come first
            label_ids = label_ids[0]
        uncertainty = None
        if isinstance(preds, (tuple, list)):
            if uncertainty_index is not None:
                uncertainty = to_numpy(preds[uncertainty_index], np.float64).reshape(-1)
            preds = preds[0]
        elif uncertainty_index is not None:
            raise ValueError("uncertainty_index given but predictions is a single array, not a tuple")
        logits = to_numpy(preds, np.float64)
        if logits.ndim != 2:
            raise ValueError(f"logits must have shape (N, C), got {logits.shape}")
        if np.any(np.isnan(logits)) or np.any(logits == np.inf):
            raise ValueError("logits contain NaN or +inf")
        return classification_metrics(softmax(logits), label_ids, uncertainty, n_bins)

    return _compute


_default_compute_metrics = make_compute_metrics()


def compute_metrics(eval_pred: Any) -> dict[str, float]:
    """``transformers.Trainer(compute_metrics=compute_metrics)``: :func:`classification_metrics` on softmax(logits).

    Accepts an ``EvalPrediction`` or a plain ``(predictions, labels)`` tuple; ``predictions`` is
    logits ``(N, C)`` or a tuple whose first element is logits (further elements are ignored; see
    :func:`make_compute_metrics` to use one of them as the uncertainty score).
    """
    return _default_compute_metrics(eval_pred)


def evaluate_module_path() -> str:
    """Folder of the local ``evaluate`` module: ``evaluate.load(evaluate_module_path())`` works offline."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "evaluate_metrics", "uncertainty_metrics")

