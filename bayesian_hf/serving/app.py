"""The FastAPI app: ``create_app(settings)``.

Request path, outermost first:

1. ``CORSMiddleware`` (only when origins are configured) answers browser preflights.
2. ``ServiceMiddleware`` (pure ASGI): request id, metrics, API key check (401/403) and rate limit (429) on the
   protected endpoints *before the body is read*, and the body size limit (413).
3. FastAPI: strict pydantic validation (422), then the endpoint, which checks the per-text byte limit and the
   text count (413), resolves defaults and waits — at most ``request_timeout_s`` (504) — for the micro-batcher.

Every error is JSON ``{"error": {"code", "message", "details"?, "request_id"}}``; unexpected exceptions are logged
with their traceback server-side and answered with a generic 500 that carries no exception text.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import hashlib
import logging
import math
import os
import platform
import random
import re
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPBearer
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..drift import DEFAULT_MIN_SAMPLES, DriftWindow, ReferenceSketch, drift_statistics, record_signals
from .auth import AuthError
from .batching import BatcherClosed, MicroBatcher, Overloaded, PredictParams
from .limits_guard import (
    BodyLimitError,
    BodyLimits,
    measure_texts,
    parse_json_body,
    request_work,
    work_lower_bound,
)
from .jwt_auth import REQUIRED_SCOPES, Authenticator
from .metrics import ServiceMetrics, observe_shadow
from .rate_limit import RateLimiter
from .schemas import (
    BatchPredictRequest,
    BatchPredictResponse,
    CalibrationInfo,
    CardMetric,
    DriftReport,
    ErrorResponse,
    HealthResponse,
    ModelInfo,
    Prediction,
    PredictOptions,
    PredictRequest,
    ReadyResponse,
)
from .settings import ServeSettings

logger = logging.getLogger("bayesian_hf.serving")

PROTECTED_PATHS = frozenset({"/predict", "/batch-predict", "/model-info", "/drift"})
KNOWN_PATHS = frozenset(
    {"/predict", "/batch-predict", "/model-info", "/drift", "/health", "/ready", "/metrics", "/docs", "/redoc",
     "/openapi.json", "/docs/oauth2-redirect"}
)
PREDICTION_FIELDS = tuple(Prediction.model_fields)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 408: "request_timeout", 413: "payload_too_large",
                 415: "unsupported_media_type", 422: "validation_error", 429: "rate_limited",
                 499: "client_closed_request", 500: "internal_error", 503: "unavailable", 504: "timeout"}
CLIENT_CLOSED = 499  # the client went away before the answer (nginx's code); counted apart from errors

Loader = Callable[[ServeSettings], tuple[Any, Any]]


class ApiError(StarletteHTTPException):
    """An error with a machine-readable ``code``; rendered as the JSON error body."""

    def __init__(self, status_code: int, code: str, message: str, *, details: list[dict] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code=status_code, detail=message, headers=headers)
        self.code = code
        self.message = message
        self.details = details


def error_response(request_id: str | None, status: int, code: str, message: str, *,
                   details: list[dict] | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message, "request_id": request_id}
    if details:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)


# ---------------------------------------------------------------------------------------------------- loading
def load_model(settings: ServeSettings) -> tuple[Any, Any]:
    """The default loader: the model (with its calibration.json) and its tokenizer, ready for inference, through
    `bayesian_hf.backends.load_for_inference` (PyTorch or ONNX Runtime per ``settings.backend``)."""
    from ..backends import load_for_inference

    return load_for_inference(settings.model, backend=settings.backend, device=settings.device,
                              compile=settings.compile, torch_threads=settings.torch_threads)


def _card_metrics(model_path: str) -> list[dict[str, Any]] | None:
    """Metrics of the model card's ``model-index`` (README.md in the model folder), or ``None``."""
    readme = os.path.join(model_path, "README.md")
    if not os.path.isfile(readme):
        return None
    try:
        from huggingface_hub import ModelCard

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


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def build_model_info(settings: ServeSettings, model: Any) -> dict[str, Any]:
    import torch
    import transformers

    from .. import __version__

    config = model.config
    local = os.path.isdir(settings.model)
    config_dict = _json_safe(config.to_dict())
    for key in ("_name_or_path", "name_or_path", "base_model_name_or_path"):  # no server file paths
        if isinstance(config_dict.get(key), str) and os.path.isabs(config_dict[key]):
            config_dict[key] = os.path.basename(os.path.normpath(config_dict[key]))
    calibration = getattr(model, "calibration", None)
    if calibration is not None:
        meta = calibration.metadata
        calib = CalibrationInfo(
            calibrated=True, method=calibration.calibrator.method,
            fit_metrics=_json_safe(meta.get("fit_metrics")), num_samples=meta.get("num_samples"),
            conformal=_json_safe(calibration.conformal.to_dict()) if calibration.conformal is not None else None,
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
    from ..pipelines import default_thresholds, validate_thresholds

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


# ------------------------------------------------------------------------------------------------------ state
class ServiceState:
    """What the endpoints share: settings, metrics, auth, rate limiter, batcher and the loaded model."""

    def __init__(self, settings: ServeSettings, loader: Loader) -> None:
        self.settings = settings
        self.loader = loader
        self.metrics = ServiceMetrics()
        self.auth = Authenticator.from_settings(settings)  # API keys and/or JWTs; None: no auth
        self.limiter = (RateLimiter(settings.rate_limit, settings.rate_limit_storage, registry=self.metrics.registry)
                        if settings.rate_limit else None)
        self.batcher = MicroBatcher(self.infer, max_batch=settings.max_batch, max_wait_ms=settings.max_wait_ms,
                                    max_pass_work=settings.max_pass_work,
                                    max_queue_delay_s=settings.max_queue_delay_s, metrics=self.metrics)
        self.model: Any = None
        self.tokenizer: Any = None
        self.info: dict[str, Any] | None = None
        self.status = "loading"
        self.detail: str | None = None
        self.drift_sketch: ReferenceSketch | None = None
        self.drift_window: DriftWindow | None = None
        self.drift_reason: str | None = "the model is not loaded"
        self.drift_min_samples = min(DEFAULT_MIN_SAMPLES, settings.drift_window)
        self._drift_cache: tuple[int, dict[str, Any]] | None = None
        self.shadow: tuple[Any, Any] | None = None
        self._shadow_busy = threading.Lock()
        self._shadow_random = random.Random()
        self._label_ids: dict[str, int] = {}
        self._measure_tokenizer: Any = None
        self.measure_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bayesian-hf-measure")

    def infer(self, texts: list[str], params: PredictParams) -> list[dict[str, Any]]:
        """One forward pass (runs in the batcher's worker thread)."""
        from ..pipelines import predict

        return predict(self.model, self.tokenizer, texts, num_orderings=params.num_orderings,
                       thresholds=dict(params.thresholds), max_length=self.settings.max_length,
                       return_cot=params.return_cot, max_num_orderings=self.settings.max_num_orderings)

    @property
    def max_length(self) -> int:
        """Token limit per text, as ``predict`` applies it."""
        return self.settings.max_length or min(int(self.model.config.max_position_embeddings), 512)

    def measure(self, texts: list[str], num_orderings: int) -> tuple[list[int], list[int], list[int]] | int:
        """Tokens, units and content tokens per text, with the tokenisation ``predict`` runs; or, for a request
        whose work is over ``max_request_work`` even by a lower bound computed without the tokenizer, that bound.
        Runs in the one measuring thread, on a copy of the tokenizer: a fast tokenizer is not thread-safe (its
        padding and truncation state is changed by each call), and the inference thread uses the original."""
        bound = work_lower_bound(texts, num_orderings, max_length=self.max_length,
                                 segmentation=self.model.config.unit_segmentation)
        if bound > self.settings.max_request_work:
            return bound
        if self._measure_tokenizer is None:
            self._measure_tokenizer = copy.deepcopy(self.tokenizer)
        return measure_texts(self._measure_tokenizer, texts, max_length=self.max_length,
                             segmentation=self.model.config.unit_segmentation)

    def begin_shutdown(self) -> None:
        """SIGTERM/SIGINT: refuse new predictions (503), and past ``graceful_timeout_s`` (less a margin for the
        answers to be written) fail whatever is still queued or running with a JSON 503, so every in-flight
        request is answered before uvicorn's own deadline cancels it."""
        if self.status == "stopping":
            return
        self.status = "stopping"
        self.metrics.model_ready.set(0)
        delay = max(0.0, self.settings.graceful_timeout_s - min(0.5, self.settings.graceful_timeout_s / 4))

        def expire() -> None:
            failed = self.batcher.abort()
            if failed:
                logger.warning("graceful timeout: answered %d queued or running request(s) with 503", failed)

        asyncio.get_running_loop().call_later(delay, expire)

    async def load(self) -> None:
        try:
            model, tokenizer = await asyncio.to_thread(self.loader, self.settings)
            effective_thresholds(self.settings, model)  # flags + stored thresholds must agree (review <= accept)
            info = await asyncio.to_thread(build_model_info, self.settings, model)
            sketch, reason = await asyncio.to_thread(load_drift_reference, model)
            shadow = None
            if self.settings.shadow_model:
                shadow = await asyncio.to_thread(
                    self.loader, dataclasses.replace(self.settings, model=self.settings.shadow_model, shadow_model=None))
                if [str(v) for _, v in sorted(shadow[0].config.id2label.items())] != \
                        [str(v) for _, v in sorted(model.config.id2label.items())]:
                    raise ValueError("the shadow model's labels differ from the served model's")
        except Exception as err:
            logger.exception("failed to load model %s", self.settings.model)
            self.status = "failed"
            # /ready needs no key: no exception text (it may hold paths or file contents), only its type and a
            # message the loader marked as public (``err.public_detail``)
            public = getattr(err, "public_detail", None)
            self.detail = (f"the model could not be loaded ({type(err).__name__}"
                           f"{': ' + str(public)[:200] if isinstance(public, str) else ''}); see the server log")
            return
        self.model, self.tokenizer, self.info = model, tokenizer, info
        self.shadow = shadow
        self._label_ids = {str(name): int(i) for i, name in model.config.id2label.items()}
        self.drift_sketch, self.drift_reason = sketch, reason
        if sketch is not None:
            self.drift_window = DriftWindow(self.settings.drift_window, signals=tuple(sketch.signals))
            self.metrics.drift_enabled.set(1)
        if self.status == "loading":
            self.status = "ready"
        self.metrics.model_ready.set(1)
        calibrator = info["calibration"].get("method") or "none"
        self.metrics.model_info.labels(model=info["model_id"], version=info["versions"]["bayesian_hf"],
                                       calibrator=calibrator).set(1)
        logger.info("model %s ready (labels %s, calibrator %s, drift monitoring %s)", info["model_id"], info["labels"],
                    calibrator, "on" if sketch is not None else f"off: {reason}")

    # --------------------------------------------------------------------------------------------- shadow
    def maybe_shadow(self, texts: list[str], records: list[dict[str, Any]], params: PredictParams) -> None:
        """With probability ``shadow_fraction``, classify the same texts with the shadow model in a background
        thread, after the response; at most one shadow batch runs at a time (a busy shadow skips, never queues),
        so the shadow can neither delay responses nor pile up work."""
        if self.shadow is None or self._shadow_random.random() >= self.settings.shadow_fraction:
            return
        if not self._shadow_busy.acquire(blocking=False):
            self.metrics.shadow_skipped.inc()
            return
        shadow_model, shadow_tokenizer = self.shadow

        def work() -> None:
            from ..pipelines import predict

            try:
                shadow_records = predict(shadow_model, shadow_tokenizer, texts, num_orderings=params.num_orderings,
                                         thresholds=dict(params.thresholds), max_length=self.settings.max_length)
                observe_shadow(self.metrics, records, shadow_records)
            except Exception:  # the shadow never affects the service
                self.metrics.shadow_errors.inc()
                logger.warning("shadow model failed", exc_info=True)
            finally:
                self._shadow_busy.release()

        threading.Thread(target=work, name="shadow-model", daemon=True).start()

    # ---------------------------------------------------------------------------------------------- drift
    def observe_drift(self, texts: list[str], records: list[dict[str, Any]]) -> None:
        """Append the served predictions to the drift window: a few numbers each, no statistics here."""
        window = self.drift_window
        if window is None:
            return
        for text, record in zip(texts, records):
            try:
                window.append(record_signals(record, text), self._label_ids[str(record["label"])])
            except (KeyError, TypeError, ValueError):  # a record without the signals: skip it, never fail a request
                window.skipped += 1

    async def drift_statistics(self) -> dict[str, Any] | None:
        """The drift statistics of the current window (recomputed, off the event loop, only when predictions
        arrived since the last call) and the drift gauges updated from them; ``None`` when monitoring is off."""
        window, sketch = self.drift_window, self.drift_sketch
        if window is None or sketch is None:
            return None
        seen = window.total_seen
        if self._drift_cache is not None and self._drift_cache[0] == seen:
            return self._drift_cache[1]
        snapshot = window.arrays()
        stats = await asyncio.to_thread(drift_statistics, sketch, snapshot,
                                        psi_threshold=self.settings.drift_psi_threshold,
                                        min_samples=self.drift_min_samples)
        self._drift_cache = (seen, stats)
        self.metrics.observe_drift(stats)
        return stats

    async def drift_report(self) -> dict[str, Any]:
        stats = await self.drift_statistics()
        if stats is None or self.drift_window is None or self.drift_sketch is None:
            return {"enabled": False, "reason": self.drift_reason, "alert": False,
                    "psi_threshold": self.settings.drift_psi_threshold}
        return {"enabled": True, "alert": stats["alert"], "psi_threshold": self.settings.drift_psi_threshold,
                "min_samples": self.drift_min_samples, "window_size": self.drift_window.max_size,
                "window_samples": stats["num_samples"], "total_observed": self.drift_window.total_seen,
                "length_unit": self.drift_sketch.length_unit, "statistics": stats}

    def require_ready(self) -> None:
        if self.status == "stopping":
            raise ApiError(503, "shutting_down", "the service is shutting down", headers={"Retry-After": "5"})
        if self.status != "ready":
            message = "the model is still loading" if self.status == "loading" else "the model failed to load"
            raise ApiError(503, "not_ready", message, headers={"Retry-After": "1"})


# ------------------------------------------------------------------------------------------------- middleware
class BodyTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, "body_too_large", f"request body exceeds {limit} bytes")


class ServiceMiddleware:
    """Request id, metrics, API keys, rate limit and the body limit, as a pure ASGI middleware."""

    def __init__(self, app: Any, state: ServiceState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = self.state
        started = time.perf_counter()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        given_id = headers.get("x-request-id", "")
        request_id = given_id if _REQUEST_ID.fullmatch(given_id) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        path = scope.get("path", "")
        endpoint = path if path in KNOWN_PATHS else "other"
        method = scope.get("method", "GET")
        status = [500]
        response_started = [False]

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                response_started[0] = True
                MutableHeaders(scope=message).append("X-Request-ID", request_id)
            await send(message)

        state.metrics.in_flight.inc()
        disconnected = [False]
        try:
            refusal = self._gate(scope, headers, path, method, request_id)
            if refusal is not None:
                await refusal(scope, receive, send_wrapper)
                return
            try:
                await self.app(scope, self._limited_receive(receive, disconnected), send_wrapper)
            except asyncio.CancelledError:
                # uvicorn cancels requests still running past its graceful-shutdown deadline: answer with the
                # documented JSON 503 instead of its plain-text 500
                if response_started[0] or disconnected[0]:
                    raise
                await error_response(request_id, 503, "shutting_down", "the service is shutting down",
                                     headers={"Retry-After": "5", "Connection": "close"})(scope, receive, send_wrapper)
            except Exception as exc:  # answered here, so the traceback is logged once and never sent
                logger.error("unhandled error in request %s", request_id, exc_info=(type(exc), exc, exc.__traceback__))
                if response_started[0]:
                    raise
                await error_response(request_id, 500, "internal_error", "internal server error")(
                    scope, receive, send_wrapper)
        finally:
            state.metrics.in_flight.dec()
            if disconnected[0] and (not response_started[0] or status[0] == CLIENT_CLOSED):
                status[0] = CLIENT_CLOSED  # the client left: not a server error, not a validation error
            state.metrics.observe_request(endpoint, method, status[0], time.perf_counter() - started)

    def _gate(self, scope: dict, headers: dict[str, str], path: str, method: str, request_id: str) -> Response | None:
        """Auth, rate limit and the declared body size, before anything is read."""
        state = self.state
        # /metrics needs credentials (scope admin) only when auth is configured; see jwt_auth.REQUIRED_SCOPES
        authenticated = path in PROTECTED_PATHS or (state.auth is not None and path in REQUIRED_SCOPES)
        if authenticated and method != "OPTIONS":
            client = (scope.get("client") or ("unknown", 0))[0]
            bucket = f"ip:{client}"
            if state.auth is not None:
                try:
                    bucket = state.auth.check(headers, path).id  # "key:<key id>" or "jwt:<subject digest>"
                except AuthError as err:
                    # failed attempts spend the client address's tokens, so keys cannot be guessed at full speed
                    if state.limiter is not None and err.code in ("invalid_api_key", "invalid_token"):
                        ok, retry_after = state.limiter.acquire(bucket)
                        if not ok:
                            state.metrics.rate_limited.inc()
                            return error_response(request_id, 429, "rate_limited", "too many failed API key "
                                                  f"attempts; retry after {retry_after} s",
                                                  headers={"Retry-After": str(retry_after)})
                    extra = getattr(err, "headers", None) or (
                        {"WWW-Authenticate": 'Bearer realm="bayesian-hf"'} if err.status == 401 else None)
                    return error_response(request_id, err.status, err.code, err.message, headers=extra)
            if state.limiter is not None and path in PROTECTED_PATHS:
                ok, retry_after = state.limiter.acquire(bucket)
                if not ok:
                    state.metrics.rate_limited.inc()
                    return error_response(request_id, 429, "rate_limited",
                                          f"rate limit of {state.settings.rate_limit} exceeded; retry after "
                                          f"{retry_after} s", headers={"Retry-After": str(retry_after)})
        if method == "POST" and path in PROTECTED_PATHS:
            media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
                return error_response(request_id, 415, "unsupported_media_type",
                                      "send the body as JSON with 'Content-Type: application/json'")
        declared = headers.get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                return error_response(request_id, 400, "bad_request", "invalid Content-Length header")
            if size > state.settings.body_limit:
                return error_response(request_id, 413, "body_too_large",
                                      f"request body exceeds {state.settings.body_limit} bytes")
        return None

    def _limited_receive(self, receive: Callable, disconnected: list[bool]) -> Callable:
        """``receive`` with the body limit (413), the body deadline (JSON 408 ``body_timeout_s`` after the first
        read: uvicorn has no body timeout) and a note when the client disconnected."""
        limit = self.state.settings.body_limit
        timeout = self.state.settings.body_timeout_s
        seen = [0]
        deadline: list[float | None] = [None]
        complete = [False]

        async def limited() -> dict:
            if complete[0]:  # the body is in: later reads only wait for a disconnect
                message = await receive()
            else:
                if deadline[0] is None:
                    deadline[0] = time.monotonic() + timeout
                try:
                    message = await asyncio.wait_for(receive(), max(deadline[0] - time.monotonic(), 0.001))
                except asyncio.TimeoutError:
                    raise ApiError(408, "request_timeout", f"the request body did not arrive within {timeout:g} s",
                                   headers={"Connection": "close"}) from None
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > limit:
                    raise BodyTooLarge(limit)
                complete[0] = not message.get("more_body", False)
            elif message["type"] == "http.disconnect":
                disconnected[0] = True
            return message

        return limited


# ----------------------------------------------------------------------------------------------- body parsing
class GuardedRequest(Request):
    """A request whose JSON body is parsed by :func:`~.limits_guard.parse_json_body`: strict UTF-8, no duplicate
    keys, and the number of texts, values, nesting and text sizes bounded while parsing, before pydantic sees it."""

    async def body(self) -> bytes:
        try:
            return await super().body()
        except ClientDisconnect:
            raise ApiError(CLIENT_CLOSED, "client_closed_request", "the client closed the connection") from None

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            settings = self.scope["app"].state.service.settings
            limits = BodyLimits(max_texts=settings.max_texts, max_text_bytes=settings.max_text_bytes)
            try:
                self._json = parse_json_body(body, limits)
            except BodyLimitError as err:
                code = "validation_error" if err.code == "validation_error" else err.code
                raise ApiError(err.status, code, err.message if err.status == 413 else
                               ("the request body is not valid JSON" if err.code == "invalid_json"
                                else "the request body is invalid"),
                               details=[{"loc": err.loc, "msg": err.message[:300], "type": err.code}]) from None
        return self._json


class GuardedRoute(APIRoute):
    """Routes whose handlers see a :class:`GuardedRequest`."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            return await handler(GuardedRequest(request.scope, request.receive))

        return guarded


# ------------------------------------------------------------------------------------------------- the app
DESCRIPTION = """Uncertainty-aware text classification with a Bayesian-in-expectation BERT.

Each prediction carries a (calibrated) confidence, probabilities, the uncertainty decomposed into epistemic and
aleatoric parts, the order dispersion, a routing decision (`accept` / `review` / `escalate`) and, when the model
has a conformal calibrator, a prediction set. Concurrent requests are micro-batched into shared forward passes.

When the model's calibration.json has a `drift_reference`, `/drift` compares the recent predictions (a rolling
window) with the calibration data: population stability index, Kolmogorov-Smirnov and Wasserstein per signal, label
shift, and an alert.

When the server was started with an API key file, `/predict`, `/batch-predict`, `/model-info` and `/drift` need
`Authorization: Bearer <key>` or `X-API-Key: <key>` (401 without, 403 with a wrong key). When it was started with a
JWT key (`--jwt-secret-file`, `--jwt-public-key-file` or `--jwt-jwks-file`), `Authorization: Bearer <JWT>` is
accepted too: scope `predict` opens the prediction endpoints, scope `admin` opens `/model-info`, `/drift` and
`/metrics` (401 `invalid_token` for a bad token, 403 `insufficient_scope`); API keys hold every scope. With any
authentication configured, `/metrics` needs credentials too. Errors are JSON
`{"error": {"code", "message", "details", "request_id"}}`. See docs/serving.md.
"""

_ERRORS = {
    401: {"model": ErrorResponse, "description": "API key or token missing, or the token is invalid"},
    403: {"model": ErrorResponse, "description": "API key wrong, or the token lacks the scope"},
    408: {"model": ErrorResponse, "description": "the body did not arrive within the body timeout"},
    413: {"model": ErrorResponse, "description": "body, a text, the number of texts or the work (tokens x "
          "orderings) over the limit"},
    415: {"model": ErrorResponse, "description": "Content-Type is not application/json"},
    422: {"model": ErrorResponse, "description": "invalid JSON, wrong types, unknown fields, empty text"},
    429: {"model": ErrorResponse, "description": "rate limit exceeded, or the server is overloaded (code "
          "'overloaded'); see Retry-After"},
    500: {"model": ErrorResponse, "description": "internal error (no details are exposed)"},
    503: {"model": ErrorResponse, "description": "model not loaded yet, or shutting down"},
    504: {"model": ErrorResponse, "description": "request timeout"},
}

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="ApiKeyHeader")
_bearer = HTTPBearer(auto_error=False, scheme_name="BearerKey",
                     description="an API key, or a JWT with scope `predict` (/predict, /batch-predict) or `admin` "
                                 "(/model-info, /drift, /metrics)")


def _documented_security(api_key: str | None = Security(_api_key_header), bearer: Any = Security(_bearer)) -> None:
    """Declares the API key / JWT schemes in the OpenAPI document; they are checked by ServiceMiddleware."""


def _validation_details(errors: list[dict]) -> list[dict]:
    details = []
    for err in errors[:50]:
        details.append({"loc": [p if isinstance(p, int) else str(p) for p in err.get("loc", ())],
                        "msg": str(err.get("msg", "invalid value"))[:300], "type": str(err.get("type", "value_error"))})
    return details


def create_app(settings: ServeSettings, *, loader: Loader | None = None) -> FastAPI:
    """Build the service. The model is loaded in the background when the app starts (``/ready`` turns 200 then),
    not here, so ``create_app`` is cheap (``scripts/export_openapi.py`` uses it without a model)."""
    state = ServiceState(settings, loader or load_model)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await state.batcher.start()
        load_task = asyncio.get_running_loop().create_task(state.load(), name="bayesian-hf-load")
        try:
            yield
        finally:
            # uvicorn has stopped accepting connections and waited for in-flight requests; finish the queue
            state.status = "stopping"
            await state.batcher.close()
            state.measure_executor.shutdown(wait=False, cancel_futures=True)
            if not load_task.done():
                load_task.cancel()
            state.metrics.model_ready.set(0)
            logger.info("bayesian-hf service stopped")

    from .. import __version__

    app = FastAPI(title="bayesian-hf", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                  docs_url="/docs" if settings.enable_docs else None, redoc_url=None, openapi_url="/openapi.json")
    app.router.route_class = GuardedRoute  # bounded JSON parsing before validation
    app.state.service = state

    # ------------------------------------------------------------------------------------------ errors
    def rid(request: Request) -> str | None:
        return request.scope.get("state", {}).get("request_id")

    @app.exception_handler(RequestValidationError)
    async def _on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(rid(request), 422, "invalid_json", "the request body is not valid JSON",
                                  details=_validation_details(errors))
        return error_response(rid(request), 422, "validation_error", "the request body is invalid",
                              details=_validation_details(errors))

    @app.exception_handler(StarletteHTTPException)
    async def _on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc, ApiError):
            return error_response(rid(request), exc.status_code, exc.code, exc.message, details=exc.details,
                                  headers=exc.headers)
        if exc.status_code == 400 and request.method == "POST":  # FastAPI could not decode the body (not UTF-8)
            return error_response(rid(request), 422, "invalid_json", "the request body is not valid UTF-8 JSON")
        code = _STATUS_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) and exc.status_code < 500 else code.replace("_", " ")
        return error_response(rid(request), exc.status_code, code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _on_exception(request: Request, exc: Exception) -> JSONResponse:
        # a backstop: ServiceMiddleware answers errors of the app itself; this catches errors of the middleware
        logger.error("unhandled error in request %s", rid(request), exc_info=(type(exc), exc, exc.__traceback__))
        request_id = rid(request)
        return error_response(request_id, 500, "internal_error", "internal server error",
                              headers={"X-Request-ID": request_id} if request_id else None)

    # ---------------------------------------------------------------------------------------- helpers
    def resolve(options: PredictOptions) -> PredictParams:
        from ..pipelines import validate_thresholds

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

    def check_texts(texts: list[str], field: str) -> None:
        if len(texts) > settings.max_texts:
            raise ApiError(413, "too_many_texts", f"{len(texts)} texts exceed the limit of {settings.max_texts}")
        for i, text in enumerate(texts):
            size = len(text.encode("utf-8"))
            if size > settings.max_text_bytes:
                loc = ["body", field] + ([i] if field == "texts" else [])
                raise ApiError(413, "text_too_large", f"text is {size} bytes; the limit is {settings.max_text_bytes}",
                               details=[{"loc": loc, "type": "text_too_large",
                                         "msg": f"at most {settings.max_text_bytes} UTF-8 bytes"}])

    async def measure(texts: list[str], params: PredictParams, field: str) -> tuple[list[int], list[int]]:
        """Tokens and units per text (tokenised in a worker thread); 422 for a text with nothing to classify,
        413 when the request's tokens x orderings exceed --max-request-work."""
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

    async def run(texts: list[str], options: PredictOptions, field: str = "texts") -> list[dict[str, Any]]:
        state.require_ready()
        params = resolve(options)
        tokens, units = await measure(texts, params, field)
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

    # -------------------------------------------------------------------------------------- endpoints
    protected = [Security(_documented_security)]

    @app.post("/predict", response_model=Prediction, response_model_exclude_none=True, responses=_ERRORS,
              dependencies=protected, summary="Classify one text")
    async def predict_one(body: PredictRequest) -> Any:
        check_texts([body.text], "text")
        return (await run([body.text], body, "text"))[0]

    @app.post("/batch-predict", response_model=BatchPredictResponse, response_model_exclude_none=True,
              responses=_ERRORS, dependencies=protected, summary="Classify several texts")
    async def predict_batch(body: BatchPredictRequest) -> Any:
        started = time.perf_counter()
        check_texts(body.texts, "texts")
        results = await run(body.texts, body)
        return {"results": results, "count": len(results), "total_time_ms": (time.perf_counter() - started) * 1000}

    @app.get("/health", response_model=HealthResponse, summary="Liveness: the process answers")
    async def health() -> Any:
        return {"status": "ok"}

    @app.get("/ready", response_model=ReadyResponse, response_model_exclude_none=True,
             responses={503: {"model": ReadyResponse, "description": "loading, failed or stopping"}},
             summary="Readiness: the model is loaded")
    async def ready() -> Any:
        body = {"status": state.status, "model": state.info["model_id"] if state.info else None,
                "detail": state.detail}
        if state.status != "ready":
            return JSONResponse({k: v for k, v in body.items() if v is not None}, status_code=503,
                                headers={"Retry-After": "1"})
        return body

    @app.get("/model-info", response_model=ModelInfo, response_model_exclude_none=True, dependencies=protected,
             responses={k: _ERRORS[k] for k in (401, 403, 429, 503)}, summary="Model, labels, calibrator, metrics")
    async def model_info() -> Any:
        state.require_ready()
        report = await state.drift_report()
        stats = report.get("statistics") or {}
        drift = {k: report.get(k) for k in ("enabled", "alert", "psi_threshold", "window_size", "window_samples")}
        drift.update(max_psi=stats.get("max_psi"), drifted_signals=stats.get("drifted_signals"))
        return {**state.info, "drift": drift}

    @app.get("/drift", response_model=DriftReport, response_model_exclude_none=True, dependencies=protected,
             responses={k: _ERRORS[k] for k in (401, 403, 429, 503)},
             summary="Drift of the recent predictions from the calibration data")
    async def drift() -> Any:
        """Per signal (confidence, epistemic, aleatoric, order_dispersion, length): PSI, KS statistic and p-value,
        Wasserstein distance; predicted-label shift; `alert` when some PSI exceeds the threshold with at least
        `min_samples` predictions in the window. `{"enabled": false, "reason"}` when the model has no
        drift_reference."""
        state.require_ready()
        return await state.drift_report()

    @app.get("/metrics", response_class=Response, summary="Prometheus metrics", dependencies=protected,
             responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
    async def metrics() -> Response:
        if state.drift_window is not None:
            try:
                await state.drift_statistics()
            except Exception:  # stale drift gauges must not cost the other metrics
                logger.exception("could not compute the drift statistics")
        return Response(state.metrics.render(), media_type=state.metrics.content_type)

    app.add_middleware(ServiceMiddleware, state=state)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"], max_age=600,
        )
    return app

