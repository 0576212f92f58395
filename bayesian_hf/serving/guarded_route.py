"""Routes whose JSON body is parsed with the bounds of :mod:`~bayesian_hf.serving.limits_guard` before pydantic
validates it (``app.router.route_class = GuardedRoute``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect

from .errors import CLIENT_CLOSED, ApiError
from .limits_guard import BodyLimitError, BodyLimits, parse_json_body


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
