"""Request and response models (pydantic v2). Requests are strict (no ``"5"`` for 5, no ``"yes"`` for true) and
forbid unknown fields, so a typo such as ``return_cott`` is a 422 instead of being silently ignored."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from ..inference import MAX_NUM_ORDERINGS

MAX_NUM_ORDERINGS_SCHEMA = MAX_NUM_ORDERINGS  # absolute bound; the server's --max-num-orderings (default 64) is checked too


def _check_text(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("empty_text", "text must not be empty or whitespace only")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PydanticCustomError("invalid_unicode", "text is not valid Unicode (it contains a lone surrogate)") from None
    return value


Text = Annotated[
    str,
    Field(description="A text to classify: not empty, not only whitespace; at most the server's max_text_bytes "
                      "UTF-8 bytes (413 above it).", examples=["The pasta was superb. Service was slow."]),
    AfterValidator(_check_text),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class Thresholds(_Strict):
    """Decision thresholds on the (calibrated) confidence; missing ones take the server defaults."""

    accept: float | None = Field(None, ge=0.0, le=1.0, description="confidence at or above which the decision is "
                                 "'accept' (the conformal prediction set, if any, is returned beside the decision)")
    review: float | None = Field(None, ge=0.0, le=1.0, description="confidence at or above which the decision is "
                                 "'review'; below it, 'escalate'. Must not exceed accept.")

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if self.accept is not None and self.review is not None and self.review > self.accept:
            raise PydanticCustomError("threshold_order", "thresholds.review must not exceed thresholds.accept")
        return self


class PredictOptions(_Strict):
    return_uncertainty: bool = Field(True, description="include uncertainty {epistemic, aleatoric, total} and "
                                     "order_dispersion")
    return_cot: bool = Field(False, description="add the optimal chain-of-thought length diagnostic with its inputs")
    num_orderings: int | None = Field(None, ge=1, le=MAX_NUM_ORDERINGS_SCHEMA,
                                      description="orderings averaged per text (default: the server's / model's); "
                                      "at most the server's max_num_orderings")
    thresholds: Thresholds | None = None


class PredictRequest(PredictOptions):
    text: Text


class BatchPredictRequest(PredictOptions):
    texts: list[Text] = Field(..., min_length=1, description="texts to classify; at most the server's max_texts "
                              "(413 above it)")


class Uncertainty(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epistemic: float = Field(description="mutual information (nats): order-induced / evidence-limited part")
    aleatoric: float = Field(description="expected entropy (nats): noise in the evidence itself")
    total: float = Field(description="entropy of the predictive mean (nats) = epistemic + aleatoric")


class CoTDiagnostic(BaseModel):
    model_config = ConfigDict(extra="forbid")
    optimal_length: float
    n: float
    alpha: float
    entropy_bits: float
    bits_gap: float
    epsilon: float


class Prediction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str
    score: float = Field(description="confidence of the label: calibrated when the model has a calibrator")
    calibrated: bool
    probabilities: dict[str, float]
    uncertainty: Uncertainty | None = None
    order_dispersion: float | None = Field(None, description="variance of the prediction across orderings")
    num_units: int = Field(description="exchangeable units (sentences) found in the text")
    decision: Literal["accept", "review", "escalate"]
    prediction_set: list[str] | None = Field(None, description="conformal prediction set (when the model has one)")
    truncated: bool = Field(False, description="the text was longer than the model's token limit and was cut")
    cot: CoTDiagnostic | None = None


class BatchPredictResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")
    results: list[Prediction]
    count: int
    total_time_ms: float = Field(description="server time for the whole request (queueing + inference)")


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyResponse(BaseModel):
    status: Literal["ready", "loading", "failed", "stopping"]
    model: str | None = None
    detail: str | None = None


class CardMetric(BaseModel):
    task: str | None = None
    dataset: str | None = None
    split: str | None = None
    type: str
    name: str | None = None
    value: Any = None


class CalibrationInfo(BaseModel):
    calibrated: bool
    method: str | None = None
    fit_metrics: dict[str, Any] | None = None
    num_samples: int | None = None
    conformal: dict[str, Any] | None = None


class DriftSignalStats(BaseModel):
    psi: float | None = Field(None, description="population stability index on the reference quantile bins")
    ks_statistic: float | None = Field(None, description="two-sample Kolmogorov-Smirnov statistic (max CDF gap)")
    ks_pvalue: float | None = None
    wasserstein: float | None = Field(None, description="Wasserstein-1 distance, in the signal's unit")
    wasserstein_scaled: float | None = Field(None, description="wasserstein / the reference standard deviation")
    window_mean: float | None = None
    reference_mean: float | None = None


class BBSEEstimate(BaseModel):
    label_weights: list[float] = Field(description="estimated p_window(y) / p_reference(y) per label")
    reference_true_shares: list[float]
    estimated_true_shares: list[float]
    total_variation: float


class LabelShift(BaseModel):
    total_variation: float | None = Field(None, description="half the L1 distance between predicted-label shares")
    psi: float | None = None
    window_shares: list[float] | None = None
    reference_shares: list[float]
    unknown_labels: int = 0
    bbse: BBSEEstimate | None = Field(None, description="black-box shift estimate of the true-label shares (when "
                                      "the reference has the joint predicted/true label shares)")


class DriftStatistics(BaseModel):
    num_samples: int
    reference_samples: int
    psi_threshold: float
    min_samples: int
    enough_samples: bool
    signals: dict[str, DriftSignalStats]
    label_shift: LabelShift
    psi: dict[str, float] = Field(description="PSI by signal, 'label' for the predicted labels")
    max_psi: float | None = None
    drifted_signals: list[str]
    alert: bool


class DriftReport(BaseModel):
    enabled: bool = Field(description="false when the model's calibration has no drift_reference")
    reason: str | None = Field(None, description="why drift monitoring is off")
    alert: bool = False
    psi_threshold: float
    min_samples: int | None = None
    window_size: int | None = Field(None, description="capacity of the rolling window (--drift-window)")
    window_samples: int | None = Field(None, description="predictions in the window now")
    total_observed: int | None = Field(None, description="predictions observed since the model was loaded")
    length_unit: str | None = None
    statistics: DriftStatistics | None = None


class DriftInfo(BaseModel):
    enabled: bool
    alert: bool = False
    psi_threshold: float
    window_size: int | None = None
    window_samples: int | None = None
    max_psi: float | None = None
    drifted_signals: list[str] | None = None


class ModelInfo(BaseModel):
    model_id: str
    model_type: str
    versions: dict[str, str]
    labels: list[str]
    num_labels: int
    num_orderings: int
    config: dict[str, Any]
    calibration: CalibrationInfo
    card_metrics: list[CardMetric] | None = None
    weights_sha256: str | None = None
    device: str
    serving: dict[str, Any]
    drift: DriftInfo | None = None


class ErrorDetail(BaseModel):
    loc: list[str | int] = Field(default_factory=list)
    msg: str
    type: str


class ErrorBody(BaseModel):
    code: str = Field(description="machine-readable: validation_error, invalid_json, text_too_large, too_many_texts, "
                      "body_too_large, work_too_large, request_timeout, missing_api_key, invalid_api_key, "
                      "rate_limited, overloaded, timeout, not_ready, shutting_down, not_found, method_not_allowed, "
                      "internal_error, ...")
    message: str
    details: list[ErrorDetail] | None = None
    request_id: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
