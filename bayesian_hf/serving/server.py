"""The uvicorn server of ``bayesian-hf serve``, with the connection-level limits uvicorn lacks.

- :class:`GuardedH11Protocol`: a header deadline (``header_timeout_s`` to send the request line and headers, from
  the connection's start and again after each keep-alive response; past it a JSON 408 and the connection is
  closed), and a JSON 400 instead of uvicorn's plain text for requests h11 cannot parse (a bad ``Content-Length``,
  headers over ``max_header_bytes``).
- :class:`GracefulServer`: on SIGTERM/SIGINT tells the app (:meth:`ServiceState.begin_shutdown`), which answers
  whatever is still queued or running with a JSON 503 just before ``graceful_timeout_s``, so the process exits
  within the timeout.
- :class:`RedactQueryFilter`: the access log never shows query-string values (a client may put an API key there).
- :func:`build_server`: ``uvicorn.Server`` with all of that and the connection cap (``limit_concurrency``), the
  keep-alive timeout and the header size limit from the settings.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from types import FrameType
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .settings import ServeSettings

logger = logging.getLogger("bayesian_hf.serving")


def _raw_json_response(status: int, reason: str, code: str, message: str) -> bytes:
    body = json.dumps({"error": {"code": code, "message": message, "request_id": None}}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n").encode("latin-1")
    return head + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header deadline and JSON 400 answers (see the module docstring)."""

    header_timeout_s: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _disarm_header_timer(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is being handled: its body deadline applies, not this one
        logger.info("closing a connection that sent no complete request headers within %g s", self.header_timeout_s)
        if self.conn.their_state is h11.SEND_BODY or self.conn.our_state is not h11.IDLE:
            self.transport.close()
            return
        self.transport.write(_raw_json_response(408, "Request Timeout", "request_timeout", "the request headers "
                                                f"did not arrive within {self.header_timeout_s:g} s"))
        self.transport.close()

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle and self.cycle is not None:  # a request's headers are complete
            self._disarm_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_timer()  # the next request on this keep-alive connection has the same deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        if self.conn.our_state is not h11.IDLE:
            self.transport.close()
            return
        self.transport.write(_raw_json_response(400, "Bad Request", "bad_request", "invalid HTTP request: a "
                                                "malformed request line, header or Content-Length, or headers "
                                                "over the size limit"))
        self.transport.close()


class RedactQueryFilter(logging.Filter):
    """Replaces the query string of access-log lines with ``?[redacted]`` (the API never reads the query, and a
    client may have put a key there)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0] + "?[redacted]", *args[3:])
        return True


_REDACT = RedactQueryFilter()


def install_access_log_redaction() -> None:
    """Add :class:`RedactQueryFilter` to uvicorn's access logger (once)."""
    access = logging.getLogger("uvicorn.access")
    if _REDACT not in access.filters:
        access.addFilter(_REDACT)


class GracefulServer(uvicorn.Server):
    """``uvicorn.Server`` that starts the app's shutdown (503 for new predictions, JSON 503 for the rest at the
    graceful deadline) as soon as the signal arrives."""

    def __init__(self, config: uvicorn.Config, state: Any = None) -> None:
        super().__init__(config)
        self.service_state = state
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self.service_state is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.service_state.begin_shutdown)


def protocol_for(settings: ServeSettings) -> type[H11Protocol]:
    """A :class:`GuardedH11Protocol` subclass carrying ``settings.header_timeout_s``."""
    return type("ServiceH11Protocol", (GuardedH11Protocol,), {"header_timeout_s": settings.header_timeout_s})


def build_server(app: Any, settings: ServeSettings, **overrides: Any) -> GracefulServer:
    """The uvicorn server for ``app`` (from :func:`~bayesian_hf.serving.app.create_app`) with the settings'
    connection limits. ``overrides`` go to ``uvicorn.Config`` (tests pass ``log_level``/``access_log``)."""
    install_access_log_redaction()
    options: dict[str, Any] = dict(
        host=settings.host, port=settings.port, log_level=settings.log_level, access_log=settings.access_log,
        timeout_graceful_shutdown=math.ceil(settings.graceful_timeout_s), server_header=False, lifespan="on",
        http=protocol_for(settings), timeout_keep_alive=settings.keep_alive_s,
        limit_concurrency=settings.max_connections, h11_max_incomplete_event_size=settings.max_header_bytes,
    )
    options.update(overrides)
    return GracefulServer(uvicorn.Config(app, **options), getattr(app.state, "service", None))
