"""The FastAPI app: ``create_app(settings)`` puts the service together from its parts.

Request path, outermost first:

1. ``CORSMiddleware`` (only when origins are configured) answers browser preflights.
2. ``ServiceMiddleware`` (pure ASGI, ``middleware.py``): request id, metrics, API key check (401/403) and rate
   limit (429) on the protected endpoints *before the body is read*, and the body size limit (413).
3. FastAPI: ``GuardedRoute`` (``guarded_route.py``) parses the JSON body with bounds, strict pydantic validation
   (422), then the endpoint (``predict_routes.py``, ``ops_routes.py``), which checks the per-text byte limit and
   the text count (413), resolves defaults and waits -- at most ``request_timeout_s`` (504) -- for the
   micro-batcher.

What the endpoints share is a :class:`~.state.ServiceState` (``app.state.service``); the model is loaded by
``loading.py``. Every error is JSON ``{"error": {"code", "message", "details"?, "request_id"}}`` (``errors.py``);
unexpected exceptions are logged with their traceback server-side and answered with a generic 500 that carries no
exception text.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from ..version import __version__
from .api_docs import DESCRIPTION
from .errors import install_error_handlers
from .guarded_route import GuardedRoute
from .loading import load_model
from .middleware import ServiceMiddleware
from .ops_routes import add_ops_routes
from .predict_routes import add_predict_routes
from .settings import ServeSettings
from .state import Loader, ServiceState

__all__ = ["Loader", "ServiceState", "create_app", "load_model"]

logger = logging.getLogger("bayesian_hf.serving")


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


    app = FastAPI(title="bayesian-hf", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                  docs_url="/docs" if settings.enable_docs else None, redoc_url=None, openapi_url="/openapi.json")
    app.router.route_class = GuardedRoute  # bounded JSON parsing before validation
    app.state.service = state
    install_error_handlers(app)
    add_predict_routes(app, state)
    add_ops_routes(app, state)
    app.add_middleware(ServiceMiddleware, state=state)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"], max_age=600,
        )
    return app
