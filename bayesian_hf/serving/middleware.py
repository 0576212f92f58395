"""``ServiceMiddleware``, a pure ASGI middleware: request id, metrics, API key / JWT check (401/403) and rate limit
(429) on the protected endpoints *before the body is read*, the media type (415), and the body size limit (413)
and deadline (408) while it is read."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from fastapi.responses import Response
from starlette.datastructures import MutableHeaders

from .auth import AuthError
from .errors import CLIENT_CLOSED, ApiError, BodyTooLarge, error_response
from .jwt_auth import REQUIRED_SCOPES
from .state import ServiceState

logger = logging.getLogger("bayesian_hf.serving")

PROTECTED_PATHS = frozenset({"/predict", "/batch-predict", "/model-info", "/drift"})
KNOWN_PATHS = frozenset(
    {"/predict", "/batch-predict", "/model-info", "/drift", "/health", "/ready", "/metrics", "/docs", "/redoc",
     "/openapi.json", "/docs/oauth2-redirect"}
)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


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
