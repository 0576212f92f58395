"""Uncertainty-aware text classification: the ``"uncertainty-classification"`` pipeline and the batched
``predict`` the HTTP service uses. Both run the model through :mod:`bayesian_hf.inference` (the one batch-prediction
path) and format results with :func:`format_predictions`, the one place that turns model outputs into
``label / score / probabilities / uncertainty / decision`` records.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers import Pipeline

from .diagnostics import optimal_cot_length
from .inference import (  # noqa: F401  (MAX_NUM_ORDERINGS, OUTPUT_KEYS, check_has_content: re-exported)
    MAX_NUM_ORDERINGS,
    OUTPUT_KEYS,
    check_has_content,
    check_num_orderings,
    encode,
    forward,
    predict_outputs,
    resolve_num_orderings,
)
from .metrics import to_numpy
from .risk_control import ACCEPT_NOTHING

#: Used when neither the call nor the model's calibration (its stored ``decision_thresholds``) gives thresholds.
DEFAULT_THRESHOLDS: dict[str, float] = {"accept": 0.9, "review": 0.6}
DEFAULT_COT_PARAMS: dict[str, float] = {"alpha": 1.0, "bits_gap": 1.0, "epsilon": 0.05}


def _check_threshold(key: str, value: Any) -> float:
    if key not in DEFAULT_THRESHOLDS:
        raise ValueError(f"unknown threshold {key!r}; expected {sorted(DEFAULT_THRESHOLDS)}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"threshold {key!r} must be a number in [0, 1], got {value!r}")
    v = float(value)
    if key == "accept" and v == ACCEPT_NOTHING:  # stored when a target risk was infeasible: accept nothing
        return v
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"threshold {key!r} must be a number in [0, 1], got {value!r}")
    return v


def validate_thresholds(
    thresholds: Mapping[str, float] | None, defaults: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Merge ``thresholds`` over ``defaults`` (default :data:`DEFAULT_THRESHOLDS`) and check
    ``0 <= review <= accept <= 1``.  ``accept`` may also be :data:`bayesian_hf.risk_control.ACCEPT_NOTHING`
    (1 + 1e-9, above any confidence): what a calibration stores when its target risk was infeasible."""
    merged = dict(DEFAULT_THRESHOLDS)
    for key, value in dict(defaults or {}).items():
        merged[key] = _check_threshold(key, value)
    for key, value in dict(thresholds or {}).items():
        merged[key] = _check_threshold(key, value)
    if merged["review"] > merged["accept"]:
        raise ValueError(f"threshold 'review' ({merged['review']}) must not exceed 'accept' ({merged['accept']})")
    return merged


def calibration_thresholds(calibration: Any | None) -> dict[str, float] | None:
    """The ``accept``/``review`` thresholds stored in a calibration's metadata (``decision_thresholds``, written
    by ``fit_model_calibration(target_risk=...)``), or None when it has none.  A malformed entry is an error."""
    metadata = getattr(calibration, "metadata", None) or {}
    stored = metadata.get("decision_thresholds")
    if stored is None:
        return None
    if not isinstance(stored, Mapping) or "accept" not in stored or "review" not in stored:
        raise ValueError("the calibration's decision_thresholds must be an object with 'accept' and 'review'")
    try:
        return validate_thresholds({"accept": stored["accept"], "review": stored["review"]})
    except ValueError as err:
        raise ValueError(f"the calibration's stored decision_thresholds are invalid: {err}") from None


def default_thresholds(model: Any) -> dict[str, float]:
    """The thresholds used when a call gives none: the model calibration's stored ``decision_thresholds`` when
    present, else :data:`DEFAULT_THRESHOLDS`."""
    stored = calibration_thresholds(getattr(model, "calibration", None))
    return stored if stored is not None else dict(DEFAULT_THRESHOLDS)


def decide(confidence: float, thresholds: Mapping[str, float], set_size: int | None = None) -> str:
    """``accept`` when the calibrated confidence reaches ``accept``, ``review`` when it reaches ``review``,
    otherwise ``escalate``. A caller may also pass ``set_size`` to require a one-label conformal set for
    ``accept``; the pipeline and the server do not: at the usual 90 % coverage the sets of a model below 90 %
    accuracy hold two labels for most inputs, which made ``accept`` unreachable (measured: 1.2 % of real test
    traffic), and the risk-controlled accept threshold already carries the error guarantee. The set is returned
    next to the decision."""
    if confidence >= thresholds["accept"] and (set_size is None or set_size == 1):
        return "accept"
    if confidence >= thresholds["review"]:
        return "review"
    return "escalate"


def format_predictions(
    outputs: Mapping[str, Any],
    id2label: Mapping[int, str],
    *,
    conformal: Any | None = None,
    thresholds: Mapping[str, float] | None = None,
    truncated: Sequence[bool] | None = None,
    return_cot: bool = False,
    cot_params: Mapping[str, float] | None = None,
    calibration: Any | None = None,
    return_raw_probabilities: bool = False,
) -> list[dict[str, Any]]:
    """One record per example from model outputs (tensors or arrays with a leading batch dimension).

    ``return_raw_probabilities`` adds ``"raw_probabilities"``: the model's own (uncalibrated) predictive
    probabilities, next to ``"probabilities"`` (the calibrated ones when a calibrator is attached).

    ``calibration`` (the model's ``LoadedCalibration``, optional) supplies the default thresholds -- its stored
    ``decision_thresholds``, else :data:`DEFAULT_THRESHOLDS` -- and, when ``conformal`` is not given, the
    conformal predictor.  ``thresholds`` given here override the defaults key by key.
    """
    if conformal is None and calibration is not None:
        conformal = getattr(calibration, "conformal", None)
    thresholds = validate_thresholds(thresholds, calibration_thresholds(calibration))
    arrays = {k: to_numpy(v) for k, v in outputs.items() if v is not None}
    probs = arrays.get("calibrated_probs", arrays["probs"])
    calibrated = "calibrated_probs" in arrays
    sets = conformal.predict_sets(probs) if conformal is not None else None
    cot_params = {**DEFAULT_COT_PARAMS, **dict(cot_params or {})}
    records = []
    for i in range(probs.shape[0]):
        best = int(probs[i].argmax())
        confidence = float(probs[i, best])
        record: dict[str, Any] = {
            "label": id2label[best],
            "score": confidence,
            "calibrated": calibrated,
            "probabilities": {id2label[c]: float(p) for c, p in enumerate(probs[i])},
            **({"raw_probabilities": {id2label[c]: float(p) for c, p in enumerate(arrays["probs"][i])}}
               if return_raw_probabilities else {}),
            "uncertainty": {
                "epistemic": float(arrays["epistemic"][i]),
                "aleatoric": float(arrays["aleatoric"][i]),
                "total": float(arrays["total"][i]),
            },
            "order_dispersion": float(arrays["order_dispersion"][i]),
            "num_units": int(arrays["num_units"][i]),
        }
        if sets is not None:
            record["prediction_set"] = [id2label[c] for c in sets[i]]
        record["decision"] = decide(confidence, thresholds)
        if truncated is not None:
            record["truncated"] = bool(truncated[i])
        if return_cot:
            entropy_bits = max(float(arrays["total"][i]) / math.log(2), 1e-6)
            record["cot"] = optimal_cot_length(
                max(record["num_units"], 1), cot_params["alpha"], entropy_bits, cot_params["bits_gap"], cot_params["epsilon"]
            ).to_dict()
        records.append(record)
    return records


def predict(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    num_orderings: int | None = None,
    seed: int | None = None,
    thresholds: Mapping[str, float] | None = None,
    max_length: int | None = None,
    return_cot: bool = False,
    cot_params: Mapping[str, float] | None = None,
    max_num_orderings: int = MAX_NUM_ORDERINGS,
    return_raw_probabilities: bool = False,
) -> list[dict[str, Any]]:
    """Classify ``texts`` in ONE forward pass and return one record per text (see :func:`format_predictions`).

    ``seed`` replaces the model's ordering seed for this call; results never depend on the other texts.
    Texts longer than ``max_length`` are truncated and flagged ``"truncated": true``.  Without ``thresholds``
    (or for the keys it leaves out) the model calibration's stored ``decision_thresholds`` apply when present,
    else :data:`DEFAULT_THRESHOLDS`. ``num_orderings`` (default: the model config's) is at most
    ``max_num_orderings`` (see :func:`resolve_num_orderings`). A text with nothing to tokenise is a ``ValueError``.
    """
    if isinstance(texts, str) or not len(texts):
        raise ValueError("texts must be a non-empty list of strings")
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"text {i} is empty or not a string")
    thresholds = validate_thresholds(thresholds, default_thresholds(model))
    outputs, truncated = predict_outputs(model, tokenizer, texts, num_orderings=num_orderings, seed=seed,
                                         max_length=max_length, max_num_orderings=max_num_orderings,
                                         require_content=True)
    return _records(model, outputs, thresholds=thresholds, truncated=truncated, return_cot=return_cot,
                    cot_params=cot_params, return_raw_probabilities=return_raw_probabilities)


def _records(model: Any, outputs: Mapping[str, Any], **kwargs: Any) -> list[dict[str, Any]]:
    """:func:`format_predictions` with the model's labels and calibration (its conformal sets, stored thresholds)."""
    return format_predictions(outputs, model.config.id2label, calibration=getattr(model, "calibration", None),
                              **kwargs)


class UncertaintyClassificationPipeline(Pipeline):
    """``pipeline("uncertainty-classification", model=...)``: label, calibrated score, probabilities,
    uncertainty (epistemic / aleatoric / total), order dispersion, a decision and, with a conformal calibrator,
    a prediction set.

    Call parameters: ``num_orderings``, ``seed``, ``thresholds`` (``{"accept": 0.9, "review": 0.6}``; without
    them, the model calibration's stored ``decision_thresholds``, else those defaults),
    ``max_length``, ``return_cot``, ``cot_params``. Units come from the model config's segmentation; texts longer
    than ``max_length`` are flagged ``"truncated": true`` instead of being cut silently.
    """

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.tokenizer is not None:  # a tokenizer that is not the model's gives confident wrong answers
            from .folder_integrity import check_tokenizer_matches

            check_tokenizer_matches(self.model.config, self.tokenizer, source=getattr(self.model, "name_or_path", None))

    def _sanitize_parameters(
        self,
        num_orderings: int | None = None,
        seed: int | None = None,
        thresholds: Mapping[str, float] | None = None,
        max_length: int | None = None,
        return_cot: bool | None = None,
        cot_params: Mapping[str, float] | None = None,
        **kwargs: Any,
    ) -> tuple[dict, dict, dict]:
        if kwargs:
            raise ValueError(f"unknown uncertainty-classification parameters: {sorted(kwargs)}")
        preprocess = {"max_length": max_length} if max_length is not None else {}
        forward_params: dict[str, Any] = {}
        if num_orderings is not None:
            forward_params["num_orderings"] = check_num_orderings(num_orderings)
        if seed is not None:
            forward_params["seed"] = int(seed)
        post: dict[str, Any] = {}
        if thresholds is not None:  # checked now against the model's defaults, merged with them at each call
            validate_thresholds(thresholds, default_thresholds(self.model))
            post["thresholds"] = dict(thresholds)
        if return_cot is not None:
            post["return_cot"] = bool(return_cot)
        if cot_params is not None:
            post["cot_params"] = dict(cot_params)
        return preprocess, forward_params, post

    def preprocess(self, inputs: str, max_length: int | None = None) -> dict[str, torch.Tensor]:
        if not isinstance(inputs, str) or not inputs.strip():
            raise ValueError("uncertainty-classification needs a non-empty string")
        enc = encode(self.model, self.tokenizer, [inputs], max_length)
        check_has_content(enc["unit_ids"])
        return enc

    def _forward(self, model_inputs: dict[str, torch.Tensor], num_orderings: int | None = None, seed: int | None = None):
        truncated = model_inputs.pop("truncated")
        num_orderings = resolve_num_orderings(self.model, num_orderings)
        result = forward(self.model, model_inputs, num_orderings=num_orderings, seed=seed)
        result["truncated"] = truncated
        return result

    def postprocess(
        self,
        model_outputs: dict[str, torch.Tensor],
        thresholds: Mapping[str, float] | None = None,
        return_cot: bool = False,
        cot_params: Mapping[str, float] | None = None,
    ) -> dict[str, Any]:
        truncated = model_outputs.pop("truncated")
        return _records(self.model, model_outputs, thresholds=thresholds,
                        truncated=to_numpy(truncated).reshape(-1).tolist(), return_cot=return_cot,
                        cot_params=cot_params)[0]


def register_pipeline() -> None:
    """Register ``"uncertainty-classification"`` with ``transformers.pipeline`` (done on ``import bayesian_hf``)."""
    from transformers import AutoModelForSequenceClassification
    from transformers.pipelines import PIPELINE_REGISTRY

    if "uncertainty-classification" not in PIPELINE_REGISTRY.supported_tasks:
        PIPELINE_REGISTRY.register_pipeline(
            "uncertainty-classification",
            pipeline_class=UncertaintyClassificationPipeline,
            pt_model=AutoModelForSequenceClassification,
            type="text",
        )
