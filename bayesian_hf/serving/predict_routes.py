"""The prediction endpoints, ``/predict`` and ``/batch-predict``, and the path a prediction request takes: readiness,
resolved defaults (422), the per-text byte limit and the text count (413), the work budget measured on the
tokenised texts (413), then at most ``request_timeout_s`` (504) in the micro-batcher."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from fastapi import FastAPI

from ..pipelines import validate_thresholds
from .api_docs import ERRORS, PROTECTED
from .batching import BatcherClosed, Overloaded, PredictParams
from .errors import ApiError
from .limits_guard import request_work
from .loading import effective_thresholds
from .schemas import BatchPredictRequest, BatchPredictResponse, Prediction, PredictOptions, PredictRequest
from .state import ServiceState

logger = logging.getLogger("bayesian_hf.serving")

PREDICTION_FIELDS = tuple(Prediction.model_fields)


def resolve(state: ServiceState, options: PredictOptions) -> PredictParams:
    """The request's ``num_orderings`` and thresholds over the defaults (flags, then the model's); 422 when out of
    bounds."""
    settings = state.settings
    # every source of k under --max-num-orderings: the request's (422 above), the flag's (checked at start),
    # the model config's (clamped)
    num_orderings = options.num_orderings or settings.num_orderings or min(
        int(state.model.config.num_orderings), settings.max_num_orderings)
    if options.num_orderings is not None and options.num_orderings > settings.max_num_orderings:
        raise ApiError(422, "validation_error", f"num_orderings must be at most {settings.max_num_orderings}",
                       details=[{"loc": ["body", "num_orderings"], "type": "less_than_equal",
                                 "msg": f"must be <= {settings.max_num_orderings}"}])
    merged = effective_thresholds(settings, state.model)
    if options.thresholds is not None:
        merged.update(options.thresholds.model_dump(exclude_none=True))
    try:
        thresholds = validate_thresholds(merged)
    except ValueError as err:
        raise ApiError(422, "validation_error", str(err),
                       details=[{"loc": ["body", "thresholds"], "type": "threshold_order", "msg": str(err)}]) from None
    return PredictParams.make(int(num_orderings), thresholds, options.return_cot)


def check_texts(state: ServiceState, texts: list[str], field: str) -> None:
    """413 for too many texts or a text over ``max_text_bytes``."""
    settings = state.settings
    if len(texts) > settings.max_texts:
        raise ApiError(413, "too_many_texts", f"{len(texts)} texts exceed the limit of {settings.max_texts}")
    for i, text in enumerate(texts):
        size = len(text.encode("utf-8"))
        if size > settings.max_text_bytes:
            loc = ["body", field] + ([i] if field == "texts" else [])
            raise ApiError(413, "text_too_large", f"text is {size} bytes; the limit is {settings.max_text_bytes}",
                           details=[{"loc": loc, "type": "text_too_large",
                                     "msg": f"at most {settings.max_text_bytes} UTF-8 bytes"}])


async def measure(state: ServiceState, texts: list[str], params: PredictParams,
                  field: str) -> tuple[list[int], list[int]]:
    """Tokens and units per text (tokenised in a worker thread); 422 for a text with nothing to classify,
    413 when the request's tokens x orderings exceed --max-request-work."""
    settings = state.settings
    measured = await asyncio.get_running_loop().run_in_executor(state.measure_executor, state.measure, texts,
                                                                 params.num_orderings or 1)
    if isinstance(measured, int):
        raise ApiError(413, "work_too_large", f"the request needs at least {measured} token-orderings (tokens x "
                       f"orderings per text); the limit is {settings.max_request_work}: send fewer or shorter "
                       "texts, or ask for fewer num_orderings")
    tokens, units, content = measured
    for i, n in enumerate(content):
        if n == 0:
            loc = ["body", field] + ([i] if field == "texts" else [])
            raise ApiError(422, "validation_error", "the request body is invalid",
                           details=[{"loc": loc, "type": "empty_text", "msg": "text has nothing to classify: no "
                                     "token besides the special ones (only control, NUL or zero-width "
                                     "characters?)"}])
    work = request_work(tokens, units, params.num_orderings or 1)
    if work > settings.max_request_work:
        raise ApiError(413, "work_too_large", f"the request needs {work} token-orderings (tokens x orderings "
                       f"per text); the limit is {settings.max_request_work}: send fewer or shorter texts, or "
                       "ask for fewer num_orderings")
    return tokens, units


async def run(state: ServiceState, texts: list[str], options: PredictOptions,
              field: str = "texts") -> list[dict[str, Any]]:
    """Predictions for ``texts`` through the micro-batcher, as the response items; then the metrics, the drift
    window and (maybe) the shadow model see them."""
    settings = state.settings
    state.require_ready()
    params = resolve(state, options)
    tokens, units = await measure(state, texts, params, field)
    state.require_ready()  # the service may have begun to stop meanwhile
    try:
        records = await asyncio.wait_for(state.batcher.submit(texts, params, tokens=tokens, units=units),
                                         settings.request_timeout_s)
    except asyncio.TimeoutError:
        state.metrics.timeouts.inc()
        raise ApiError(504, "timeout", f"the request took longer than {settings.request_timeout_s:g} s") from None
    except BatcherClosed:
        raise ApiError(503, "shutting_down", "the service is shutting down", headers={"Retry-After": "5"}) from None
    except Overloaded as err:
        state.metrics.overloaded.inc()
        raise ApiError(429, "overloaded", f"{err}; retry after {err.retry_after_s} s",
                       headers={"Retry-After": str(err.retry_after_s)}) from None
    except Exception as exc:
        logger.error("inference failed", exc_info=(type(exc), exc, exc.__traceback__))
        raise ApiError(500, "internal_error", "internal server error") from None
    state.metrics.observe_predictions(records)
    state.observe_drift(texts, records)
    state.maybe_shadow(texts, records, params)
    out = []
    for record in records:
        item = {k: record[k] for k in PREDICTION_FIELDS if k in record}
        if not options.return_uncertainty:
            item.pop("uncertainty", None)
            item.pop("order_dispersion", None)
        out.append(item)
    return out


def add_predict_routes(app: FastAPI, state: ServiceState) -> None:
    """``POST /predict`` and ``POST /batch-predict``."""

    @app.post("/predict", response_model=Prediction, response_model_exclude_none=True, responses=ERRORS,
              dependencies=PROTECTED, summary="Classify one text")
    async def predict_one(body: PredictRequest) -> Any:
        check_texts(state, [body.text], "text")
        return (await run(state, [body.text], body, "text"))[0]

    @app.post("/batch-predict", response_model=BatchPredictResponse, response_model_exclude_none=True,
              responses=ERRORS, dependencies=PROTECTED, summary="Classify several texts")
    async def predict_batch(body: BatchPredictRequest) -> Any:
        started = time.perf_counter()
        check_texts(state, body.texts, "texts")
        results = await run(state, body.texts, body)
        return {"results": results, "count": len(results), "total_time_ms": (time.perf_counter() - started) * 1000}
