"""The HTTP service: ``create_app(settings)`` builds a FastAPI app that serves uncertainty-aware predictions with
micro-batching, API keys, a per-key rate limit, request limits and Prometheus metrics. Start it with
``bayesian-hf serve --model PATH`` (see ``docs/serving.md``)."""

from .settings import RateLimit, ServeSettings, parse_rate_limit

__all__ = ["RateLimit", "ServeSettings", "create_app", "parse_rate_limit", "serve"]


def create_app(settings: ServeSettings, **kwargs):
    """See :func:`bayesian_hf.serving.app.create_app` (imported lazily: FastAPI is an optional dependency)."""
    from .app import create_app as _create_app

    return _create_app(settings, **kwargs)


def serve(settings: ServeSettings) -> None:
    """Run the service with uvicorn until SIGINT/SIGTERM; in-flight requests finish (up to graceful_timeout_s)."""
    import logging

    log = logging.getLogger("bayesian_hf")
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     [%(name)s] %(message)s"))
        log.addHandler(handler)
    log.setLevel(settings.log_level.upper() if settings.log_level != "trace" else "DEBUG")
    from .server import build_server

    app = create_app(settings)
    build_server(app, settings).run()  # uvicorn with header/body deadlines, connection cap, graceful 503s
