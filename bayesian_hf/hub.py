"""Artifacts that travel with a model: the model card (with real metrics and a reliability diagram) and the push
of a complete model folder to the Hub in one commit."""

from __future__ import annotations

import contextlib
import fnmatch
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

from .metrics import plot_reliability_diagram
from .modeling_bayesian_expectation import RELIABILITY_PNG as RELIABILITY_DIAGRAM
from .modeling_bayesian_expectation import RISK_COVERAGE_PNG
from .folder_integrity import is_transient_name, portable_name, temp_name
from .resources import packaged_file

TEMPLATE = "model_card_template.md"  # in model_cards/, see resources.packaged_file
REQUIRED_FILES = ("config.json", "model.safetensors", "modeling_bayesian_expectation.py", "configuration_bayesian_expectation.py")
UNSAFE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".joblib", ".ckpt")
# training leftovers in an output folder that are never pushed (Trainer checkpoints hold torch pickles)
IGNORED_FOLDERS = ("checkpoint-*", "runs", ".cache")
# never pushed either: hidden entries (staging/aside folders of a save killed half-way, temp files) and the
# calibrators an earlier save or a posterior refit replaced
IGNORED_NAMES = (".*", "*.tmp", "*.bak", "*.stale")
CARD_METRICS = ("accuracy", "f1", "nll", "brier", "ece", "adaptive_ece", "mce", "auroc_error", "aurc")


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
    with _atomic_file(save_directory / RELIABILITY_DIAGRAM) as tmp:
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
        for key in ("ece", "mce", "nll", "brier", "accuracy"):
            if f"{key}_before" in fit and f"{key}_after" in fit:
                table[key] = (float(fit[f"{key}_before"]), float(fit[f"{key}_after"]))
        if calibration.conformal is not None:
            conformal = f"{calibration.conformal.score.upper()} at coverage {1 - calibration.conformal.alpha:.2f}"
    risk_rows, thresholds, risk_png = [], None, None
    if calibration is not None and calibration.metadata.get("risk_coverage"):
        from .risk_control import plot_risk_coverage

        risk_rows = list(calibration.metadata["risk_coverage"])
        thresholds = calibration.metadata.get("decision_thresholds")
        with _atomic_file(save_directory / RISK_COVERAGE_PNG) as tmp:
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
        max_length=min(config.max_position_embeddings, 512),
    )
    with _atomic_file(save_directory / "README.md") as tmp:
        card.save(tmp)
    return card


@contextlib.contextmanager
def _atomic_file(path: Path) -> Iterator[str]:
    """A temporary path next to ``path`` (hidden, ``.tmp``: never pushed) that replaces ``path`` in one
    ``os.replace`` when the block ends; removed on failure. A process killed mid-write leaves the old file."""
    tmp = path.parent / temp_name(path.name)
    try:
        yield str(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def check_model_folder(folder: str | os.PathLike) -> list[str]:
    """The files to push; raises `ValueError` if a required file is missing or a pickle-based file is present."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a model folder")
    names = sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and not any(fnmatch.fnmatch(p.relative_to(folder).parts[0], pat) for pat in IGNORED_FOLDERS)
        and not any(fnmatch.fnmatch(part, pat) or is_transient_name(part)
                    for part in p.relative_to(folder).parts for pat in IGNORED_NAMES)
    )
    missing = [f for f in REQUIRED_FILES if f not in names]
    if missing:
        raise ValueError(f"{folder} is missing {missing}; save it with save_pretrained first")
    unsafe = [n for n in names if n.endswith(UNSAFE_SUFFIXES)]
    if unsafe:
        raise ValueError(f"refusing to push pickle-based files {unsafe}: artifacts must be JSON or safetensors")
    return names


def push_model_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload Bayesian-expectation model with calibrator and model card",
) -> str:
    """Push weights, config, tokenizer, calibrator, model card, reliability diagram and modeling code in ONE
    commit; returns the commit URL."""
    names = check_model_folder(folder)
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message=commit_message,
                             allow_patterns=names)
    return str(getattr(info, "commit_url", info))
