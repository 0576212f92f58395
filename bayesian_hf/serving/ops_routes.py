"""The operations endpoints: ``/health`` (liveness), ``/ready`` (readiness), ``/model-info``, ``/drift`` and
``/metrics`` (Prometheus)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from .api_docs import ERRORS, PROTECTED
from .schemas import DriftReport, HealthResponse, ModelInfo, ReadyResponse
from .state import ServiceState

logger = logging.getLogger("bayesian_hf.serving")


def add_ops_routes(app: FastAPI, state: ServiceState) -> None:
    """``GET /health``, ``/ready``, ``/model-info``, ``/drift`` and ``/metrics``."""

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

    @app.get("/model-info", response_model=ModelInfo, response_model_exclude_none=True, dependencies=PROTECTED,
             responses={k: ERRORS[k] for k in (401, 403, 429, 503)}, summary="Model, labels, calibrator, metrics")
    async def model_info() -> Any:
        state.require_ready()
        report = await state.drift_report()
        stats = report.get("statistics") or {}
        drift = {k: report.get(k) for k in ("enabled", "alert", "psi_threshold", "window_size", "window_samples")}
        drift.update(max_psi=stats.get("max_psi"), drifted_signals=stats.get("drifted_signals"))
        return {**state.info, "drift": drift}

    @app.get("/drift", response_model=DriftReport, response_model_exclude_none=True, dependencies=PROTECTED,
             responses={k: ERRORS[k] for k in (401, 403, 429, 503)},
             summary="Drift of the recent predictions from the calibration data")
    async def drift() -> Any:
        """Per signal (confidence, epistemic, aleatoric, order_dispersion, length): PSI, KS statistic and p-value,
        Wasserstein distance; predicted-label shift; `alert` when some PSI exceeds the threshold with at least
        `min_samples` predictions in the window. `{"enabled": false, "reason"}` when the model has no
        drift_reference."""
        state.require_ready()
        return await state.drift_report()

    @app.get("/metrics", response_class=Response, summary="Prometheus metrics", dependencies=PROTECTED,
             responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
    async def metrics() -> Response:
        if state.drift_window is not None:
            try:
                await state.drift_statistics()
            except Exception:  # stale drift gauges must not cost the other metrics
                logger.exception("could not compute the drift statistics")
        return Response(state.metrics.render(), media_type=state.metrics.content_type)
