"""The model card (with real metrics, a reliability diagram and a risk-coverage plot) and the push of a complete
model folder to the Hub in one commit (``bayesian-hf push``).

The files a folder holds are named in ``model_files.py``; checking and uploading them is
``model_artifacts.py``, which ``model.push_to_hub`` uses too (both refuse pickles). This module is the part
that does not travel with the weights: it needs plotting and ``huggingface_hub.ModelCard``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .calibration_selection import CALIBRATION_SUMMARY_KEYS
from .folder_integrity import atomic_file, portable_name
from .inference import token_limit
from .metrics import CLASSIFICATION_METRIC_KEYS

# check_model_folder: the files to push; refuses pickles and incomplete folders
from .model_artifacts import model_folder_files as check_model_folder  # noqa: F401
from .model_artifacts import upload_model_folder
from .model_files import (  # noqa: F401  (re-exported: the names bayesian-hf push checks)
    CARD_FILE,
    IGNORED_FOLDERS,
    IGNORED_NAMES,
    REQUIRED_FILES,
    RISK_COVERAGE_PNG,
    UNSAFE_SUFFIXES,
)
from .model_files import RELIABILITY_PNG as RELIABILITY_DIAGRAM
from .plotting import plot_reliability_diagram
from .resources import packaged_file

TEMPLATE = "model_card_template.md"  # in model_cards/, see resources.packaged_file
CARD_METRICS = tuple(k for k in CLASSIFICATION_METRIC_KEYS if k != "auprc_error")


def write_model_card(
    save_directory: str | os.PathLike,
    model: Any,
    *,
    eval_metrics: Mapping[str, float],
    eval_probs: np.ndarray,
    eval_labels: np.ndarray,
    dataset_name: str,
    eval_split: str = "test",
    repo_id: str | None = None,
    template_path: str | os.PathLike | None = None,
) -> ModelCard:
    """Render `model_cards/model_card_template.md` into ``README.md`` with the measured metrics, the calibrator's
    before/after table and a reliability diagram (``reliability_diagram.png``) of ``eval_probs``."""
    save_directory = Path(save_directory)
    config = model.config
    calibration = getattr(model, "calibration", None)
    with atomic_file(save_directory / RELIABILITY_DIAGRAM) as tmp:
        plot_reliability_diagram(eval_probs, eval_labels, tmp, title=f"Reliability on {dataset_name} ({eval_split})")
    metrics = {k: float(eval_metrics[k]) for k in CARD_METRICS if k in eval_metrics and np.isfinite(eval_metrics[k])}
    name = repo_id or save_directory.name
    results = [
        EvalResult(task_type="text-classification", dataset_type=dataset_name, dataset_name=dataset_name,
                   dataset_split=eval_split, metric_type=key, metric_value=value, metric_name=key)
        for key, value in metrics.items()
    ]
    base_model = portable_name(getattr(config, "base_model_name_or_path", None))  # never an absolute local path
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="text-classification",
        base_model=base_model if base_model and not os.path.isabs(str(base_model)) else None,
        tags=["bayesian-hf", "uncertainty", "calibration", "text-classification", "custom_code"],
        datasets=[dataset_name],
        metrics=list(metrics),
        model_name=name,
        eval_results=results or None,
    )
    table: dict[str, tuple[float, float]] = {}
    conformal = None
    if calibration is not None:
        fit = calibration.metadata.get("fit_metrics", {})
        for key in CALIBRATION_SUMMARY_KEYS:
            if f"{key}_before" in fit and f"{key}_after" in fit:
                table[key] = (float(fit[f"{key}_before"]), float(fit[f"{key}_after"]))
        if calibration.conformal is not None:
            conformal = f"{calibration.conformal.score.upper()} at coverage {1 - calibration.conformal.alpha:.2f}"
    risk_rows, thresholds, risk_png = [], None, None
    if calibration is not None and calibration.metadata.get("risk_coverage"):
        from .risk_control import plot_risk_coverage

        risk_rows = list(calibration.metadata["risk_coverage"])
        thresholds = calibration.metadata.get("decision_thresholds")
        with atomic_file(save_directory / RISK_COVERAGE_PNG) as tmp:
            plot_risk_coverage(risk_rows, tmp, target_risk=(thresholds or {}).get("target_risk"),
                               title="Risk-coverage (held-out calibration half)")
        risk_png = RISK_COVERAGE_PNG
    card = ModelCard.from_template(
        card_data,
        template_path=str(template_path or packaged_file("model_cards", TEMPLATE)),
        model_name=name,
        repo_id=repo_id or "path/to/model",
        base_model=base_model or "a BERT checkpoint",
        unit_segmentation=config.unit_segmentation,
        num_orderings=config.num_orderings,
        bayesian_layers=config.bayesian_layers,
        eval_split=eval_split,
        dataset_name=dataset_name,
        eval_num_samples=int(len(eval_labels)),
        eval_metrics=metrics,
        calibration_method=calibration.calibrator.method if calibration is not None else "none (uncalibrated)",
        calibration_num_samples=calibration.metadata.get("num_samples", 0) if calibration is not None else 0,
        calibration_table=table,
        conformal=conformal,
        reliability_diagram=RELIABILITY_DIAGRAM,
        risk_rows=risk_rows,
        decision_thresholds=thresholds,
        risk_coverage_png=risk_png,
        max_length=token_limit(config),
    )
    with atomic_file(save_directory / CARD_FILE) as tmp:
        card.save(tmp)
    return card


def push_model_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload Bayesian-expectation model with calibrator and model card",
) -> str:
    """Push weights, config, tokenizer, calibrator, model card, reliability diagram and modeling code in ONE
    commit (`model_artifacts.upload_model_folder`: exactly the files `check_model_folder` lists); returns the
    commit URL."""
    return upload_model_folder(folder, repo_id, commit_message=commit_message, private=private, token=token)
