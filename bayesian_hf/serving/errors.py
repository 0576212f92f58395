"""The service's one error format: ``{"error": {"code", "message", "details"?, "request_id"}}``.

:class:`ApiError` is what endpoints and middleware raise; :func:`error_response` renders it;
:func:`install_error_handlers` makes FastAPI answer validation errors, HTTP errors and unexpected exceptions in that
format (an unexpected exception is logged with its traceback server-side and answered with a generic 500 that
carries no exception text).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger("bayesian_hf.serving")

_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 408: "request_timeout", 413: "payload_too_large",
                 415: "unsupported_media_type", 422: "validation_error", 429: "rate_limited",
                 499: "client_closed_request", 500: "internal_error", 503: "unavailable", 504: "timeout"}
CLIENT_CLOSED = 499  # the client went away before the answer (nginx's code); counted apart from errors


class ApiError(StarletteHTTPException):
    """An error with a machine-readable ``code``; rendered as the JSON error body."""

    def __init__(self, status_code: int, code: str, message: str, *, details: list[dict] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code=status_code, detail=message, headers=headers)
        self.code = code
        self.message = message
        self.details = details


class BodyTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, "body_too_large", f"request body exceeds {limit} bytes")


def error_response(request_id: str | None, status: int, code: str, message: str, *,
                   details: list[dict] | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message, "request_id": request_id}
    if details:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _validation_details(errors: list[dict]) -> list[dict]:
    details = []
    for err in errors[:50]:
        details.append({"loc": [p if isinstance(p, int) else str(p) for p in err.get("loc", ())],
                        "msg": str(err.get("msg", "invalid value"))[:300], "type": str(err.get("type", "value_error"))})
    return details


def _request_id(request: Request) -> str | None:
    """The id ``ServiceMiddleware`` gave the request."""
    return request.scope.get("state", {}).get("request_id")


def install_error_handlers(app: FastAPI) -> None:
    """Answer validation errors (422), HTTP errors and unexpected exceptions (500) with the JSON error body."""
    rid = _request_id

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
