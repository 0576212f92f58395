"""The service's shared state: settings, metrics, authentication, rate limiter, micro-batcher, the loaded model
(loaded in the background, :meth:`ServiceState.load`), the shadow model, the drift window and the shutdown."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..drift import DEFAULT_MIN_SAMPLES, DriftWindow, drift_statistics
from ..drift_reference import ReferenceSketch, record_signals
from ..inference import token_limit
from ..pipelines import predict
from .batching import MicroBatcher, PredictParams
from .errors import ApiError
from .jwt_auth import Authenticator
from .limits_guard import measure_texts, work_lower_bound
from .loading import build_model_info, effective_thresholds, load_drift_reference
from .metrics import ServiceMetrics, observe_shadow
from .rate_limit import RateLimiter
from .settings import ServeSettings

logger = logging.getLogger("bayesian_hf.serving")

Loader = Callable[[ServeSettings], tuple[Any, Any]]


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
        return predict(self.model, self.tokenizer, texts, num_orderings=params.num_orderings,
                       thresholds=dict(params.thresholds), max_length=self.settings.max_length,
                       return_cot=params.return_cot, max_num_orderings=self.settings.max_num_orderings)

    @property
    def max_length(self) -> int:
        """Token limit per text, as ``predict`` applies it."""
        return token_limit(self.model.config, self.settings.max_length)

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
