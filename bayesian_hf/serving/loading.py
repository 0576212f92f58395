"""What the service loads at start-up, in its loader thread: the model and tokenizer (:func:`load_model`), the
``/model-info`` document (:func:`build_model_info`), the request-default thresholds (:func:`effective_thresholds`)
and the drift reference (:func:`load_drift_reference`)."""

from __future__ import annotations

import hashlib
import logging
import os
import platform
from typing import Any

import torch
import transformers
from huggingface_hub import ModelCard

from ..backends import load_for_inference
from ..drift_reference import ReferenceSketch
from ..json_safe import json_safe
from ..pipelines import default_thresholds, validate_thresholds
from ..version import __version__
from .schemas import CalibrationInfo, CardMetric, ModelInfo
from .settings import ServeSettings

logger = logging.getLogger("bayesian_hf.serving")


def load_model(settings: ServeSettings) -> tuple[Any, Any]:
    """The default loader: the model (with its calibration.json) and its tokenizer, ready for inference, through
    `bayesian_hf.backends.load_for_inference` (PyTorch or ONNX Runtime per ``settings.backend``)."""
    return load_for_inference(settings.model, backend=settings.backend, device=settings.device,
                              compile=settings.compile, torch_threads=settings.torch_threads)


def _card_metrics(model_path: str) -> list[dict[str, Any]] | None:
    """Metrics of the model card's ``model-index`` (README.md in the model folder), or ``None``."""
    readme = os.path.join(model_path, "README.md")
    if not os.path.isfile(readme):
        return None
    try:
        data = ModelCard.load(readme, ignore_metadata_errors=True).data.to_dict()
    except Exception as err:  # a broken card must not stop the service
        logger.warning("could not read the model card %s: %s", readme, err)
        return None
    metrics: list[dict[str, Any]] = []
    for entry in data.get("model-index") or []:
        for result in (entry or {}).get("results") or []:
            task = (result.get("task") or {})
            dataset = (result.get("dataset") or {})
            for metric in result.get("metrics") or []:
                if not isinstance(metric, dict) or "type" not in metric:
                    continue
                metrics.append({
                    "task": task.get("type"), "dataset": dataset.get("name") or dataset.get("type"),
                    "split": dataset.get("split"), "type": str(metric["type"]), "name": metric.get("name"),
                    "value": metric.get("value"),
                })
    return metrics or None


def _sha256_file(path: str) -> str | None:
    if not os.path.isfile(path):
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_model_info(settings: ServeSettings, model: Any) -> dict[str, Any]:

    config = model.config
    local = os.path.isdir(settings.model)
    config_dict = json_safe(config.to_dict())
    for key in ("_name_or_path", "name_or_path", "base_model_name_or_path"):  # no server file paths
        if isinstance(config_dict.get(key), str) and os.path.isabs(config_dict[key]):
            config_dict[key] = os.path.basename(os.path.normpath(config_dict[key]))
    calibration = getattr(model, "calibration", None)
    if calibration is not None:
        meta = calibration.metadata
        calib = CalibrationInfo(
            calibrated=True, method=calibration.calibrator.method,
            fit_metrics=json_safe(meta.get("fit_metrics")), num_samples=meta.get("num_samples"),
            conformal=json_safe(calibration.conformal.to_dict()) if calibration.conformal is not None else None,
        )
    else:
        calib = CalibrationInfo(calibrated=False)
    labels = [config.id2label[i] for i in range(config.num_labels)]
    card = _card_metrics(settings.model) if local else None
    return ModelInfo(
        model_id=os.path.basename(os.path.normpath(settings.model)) if local else settings.model,
        model_type=config.model_type,
        versions={"bayesian_hf": __version__, "transformers": transformers.__version__, "torch": torch.__version__,
                  "python": platform.python_version()},
        labels=labels,
        num_labels=config.num_labels,
        num_orderings=settings.num_orderings or min(int(config.num_orderings), settings.max_num_orderings),
        config=config_dict,
        calibration=calib,
        card_metrics=[CardMetric(**m) for m in card] if card else None,
        weights_sha256=_sha256_file(os.path.join(settings.model, "model.safetensors")) if local else None,
        device=str(settings.device),
        serving={**settings.public_dict(), "default_thresholds": effective_thresholds(settings, model)},
    ).model_dump(mode="json", exclude_none=True)


def effective_thresholds(settings: ServeSettings, model: Any) -> dict[str, float]:
    """Request defaults: the flags / environment where set, else the model calibration's stored
    ``decision_thresholds`` (``bayesian-hf calibrate --target_risk``), else 0.9 / 0.6."""
    return validate_thresholds(settings.thresholds, defaults=default_thresholds(model))


def load_drift_reference(model: Any) -> tuple[ReferenceSketch | None, str | None]:
    """The model's drift reference (``calibration.metadata["drift_reference"]``), or ``None`` and why not. An
    invalid reference is logged and switches drift monitoring off; it never stops the service."""
    calibration = getattr(model, "calibration", None)
    if calibration is None:
        return None, "the model has no calibration.json, where the drift_reference is stored"
    doc = (calibration.metadata or {}).get("drift_reference")
    if doc is None:
        return None, "the model's calibration.json has no drift_reference"
    try:
        sketch = ReferenceSketch.from_dict(doc)
    except ValueError as err:
        logger.warning("ignoring the model's drift_reference: %s", err)
        return None, f"invalid drift_reference: {str(err)[:300]}"
    if sketch.num_labels != model.config.num_labels:
        logger.warning("ignoring the drift_reference: it has %d labels, the model %d", sketch.num_labels,
                       model.config.num_labels)
        return None, f"the drift_reference has {sketch.num_labels} labels, the model {model.config.num_labels}"
    import scipy.stats  # noqa: F401  (imported here, in the loader thread, not at the first /metrics scrape)

    return sketch, None
