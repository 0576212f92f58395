"""The per-key rate limit of the service, on the maintained `limits <https://limits.readthedocs.io>`_ library (the
one SlowAPI and Flask-Limiter build on).

Strategy: a **moving window** — at most ``requests`` accepted requests in any window of ``period_s`` seconds, per
identity (``key:<key id>`` for an authenticated client, ``ip:<address>`` otherwise). It is exact (no double burst
at a window edge as with fixed windows); a refused request gets ``Retry-After`` = seconds until the oldest request
in its window leaves it, rounded up.

Storage (``rate_limit_storage``, a ``limits`` storage URI):

- ``memory://`` (default): per process. Each replica of a deployment then has its own budget, so N replicas
  accept up to N times the limit.
- ``redis://[:password@]host:port[/db]`` (also ``rediss://``, ``redis+sentinel://``, ``redis+cluster://``,
  ``valkey://``): one budget shared by every replica that points at the same server.

When the shared storage cannot be reached (connection refused, timeout), the limiter **fails over to a
per-process in-memory window** for ``retry_storage_s`` seconds, then tries the storage again: requests are still
limited (per replica, as with ``memory://``) rather than refused with 503 or let through unlimited. Each failure is
logged (a warning when the storage goes down, an info line when it is back) and counted in
``bayesian_hf_rate_limit_storage_errors_total``; ``bayesian_hf_rate_limit_storage_up`` is 0 while it is down.

The limiter is called from the event loop: with Redis, each limited request costs one round trip (a Lua script),
bounded by ``storage_timeout_s`` when the server is slow, and an unreachable server is tried at most once per
``retry_storage_s``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import urllib.parse
from typing import Any

from .settings import SHARED_SCHEMES, STORAGE_SCHEMES, RateLimit, validate_storage_uri  # noqa: F401 (re-exported)

logger = logging.getLogger(__name__)

NAMESPACE = "bayesian_hf"


def redact_uri(uri: str) -> str:
    """The URI without its password (for logs and errors)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def limit_item(limit: RateLimit) -> Any:
    """The ``limits`` item of a :class:`RateLimit` (``requests`` per ``period_s`` whole seconds)."""
    from limits import RateLimitItemPerHour, RateLimitItemPerMinute, RateLimitItemPerSecond

    period = float(limit.period_s)
    if period == 3600:
        return RateLimitItemPerHour(limit.requests)
    if period == 60:
        return RateLimitItemPerMinute(limit.requests)
    if period < 1 or not period.is_integer():
        raise ValueError(f"rate limit period must be a whole number of seconds, got {limit.period_s!r}")
    return RateLimitItemPerSecond(limit.requests, int(period))


class RateLimiter:
    """A moving-window limit per identity, in memory or in a shared (Redis) storage.

    Args:
        limit: requests per period, e.g. ``parse_rate_limit("600/minute")``.
        storage_uri: ``"memory://"`` or a Redis URI (see the module docstring).
        registry: a ``prometheus_client`` registry for the storage metrics (``None``: not exported).
        retry_storage_s: after a storage failure, how long the in-memory fallback is used before retrying.
        storage_timeout_s: connect and read timeout of one storage call.
    """

    def __init__(self, limit: RateLimit, storage_uri: str = "memory://", *, registry: Any = None,
                 retry_storage_s: float = 5.0, storage_timeout_s: float = 0.25) -> None:
        from limits.errors import StorageError
        from limits.storage import MemoryStorage, storage_from_string
        from limits.strategies import MovingWindowRateLimiter

        if not math.isfinite(retry_storage_s) or retry_storage_s < 0:
            raise ValueError(f"retry_storage_s must be >= 0, got {retry_storage_s!r}")
        if not math.isfinite(storage_timeout_s) or storage_timeout_s <= 0:
            raise ValueError(f"storage_timeout_s must be > 0, got {storage_timeout_s!r}")
        self.limit = limit
        self.item = limit_item(limit)
        self.storage_uri = validate_storage_uri(storage_uri)
        self.shared = urllib.parse.urlparse(self.storage_uri).scheme.lower() in SHARED_SCHEMES
        self.retry_storage_s = float(retry_storage_s)
        if self.shared:
            scheme = urllib.parse.urlparse(self.storage_uri).scheme.lower()
            options: dict[str, Any] = {"socket_timeout": storage_timeout_s, "socket_connect_timeout": storage_timeout_s}
            if scheme.startswith("redis") and not scheme.endswith(("sentinel", "cluster")):
                # one immediate retry (a dropped pooled connection), not redis-py's default three with backoff:
                # the call blocks the event loop
                from redis.backoff import NoBackoff
                from redis.retry import Retry

                options["retry"] = Retry(NoBackoff(), 1)
            try:
                storage = storage_from_string(self.storage_uri, wrap_exceptions=True, **options)
            except Exception as err:  # ConfigurationError: missing client library, bad URI
                raise ValueError(f"rate_limit_storage {redact_uri(self.storage_uri)}: {err} (the Redis storage needs "
                                 "the 'redis' package: pip install 'bayesian-hf[serve]')") from None
        else:
            storage = MemoryStorage()
        self._strategy = MovingWindowRateLimiter(storage)
        self._storage_errors = (StorageError, OSError)  # redis errors arrive wrapped in StorageError
        self._fallback = MovingWindowRateLimiter(MemoryStorage()) if self.shared else None
        logger.info("rate limit %s per identity (moving window), %s", limit,
                    f"shared through {redact_uri(self.storage_uri)}" if self.shared else "per process (memory://)")
        self._down_until = 0.0
        self._down = False
        self._lock = threading.Lock()
        self._errors = self._up = None
        if registry is not None:
            from prometheus_client import Counter, Gauge

            from .metrics import PREFIX

            self._errors = Counter(PREFIX + "rate_limit_storage_errors", "Rate-limit storage calls that failed "
                                   "(the per-process fallback window answered instead).", registry=registry)
            self._up = Gauge(PREFIX + "rate_limit_storage_up", "1 while the rate-limit storage answers, 0 while "
                             "the per-process fallback is used.", registry=registry)
            self._up.set(1)

    @property
    def storage_down(self) -> bool:
        """Whether the last call to the shared storage failed (the fallback is in use)."""
        return self._down

    def acquire(self, key: str) -> tuple[bool, int]:
        """Count one request of ``key``: ``(True, 0)``, or ``(False, retry_after_seconds)`` when its window is full."""
        if self._fallback is not None and time.monotonic() < self._down_until:
            return self._acquire(self._fallback, key)
        try:
            result = self._acquire(self._strategy, key)
        except self._storage_errors as err:
            if self._fallback is None:
                raise
            self._storage_failed(err)
            return self._acquire(self._fallback, key)
        if self._down:
            self._storage_back()
        return result

    def _acquire(self, strategy: Any, key: str) -> tuple[bool, int]:
        if strategy.hit(self.item, NAMESPACE, key):
            return True, 0
        reset_time = strategy.get_window_stats(self.item, NAMESPACE, key).reset_time
        return False, max(1, math.ceil(reset_time - time.time()))

    def _storage_failed(self, err: BaseException) -> None:
        cause = getattr(err, "storage_error", None) or err
        with self._lock:
            was_down, self._down = self._down, True
            self._down_until = time.monotonic() + self.retry_storage_s
        if self._errors is not None:
            self._errors.inc()
            self._up.set(0)
        log = logger.debug if was_down else logger.warning
        log("rate-limit storage %s unreachable (%s: %s); limiting per process for %g s before retrying",
            redact_uri(self.storage_uri), type(cause).__name__, str(cause)[:200], self.retry_storage_s)

    def _storage_back(self) -> None:
        with self._lock:
            self._down = False
        if self._up is not None:
            self._up.set(1)
        logger.info("rate-limit storage %s reachable again; the limit is shared again", redact_uri(self.storage_uri))

    def check_storage(self) -> bool:
        """Ping the storage (always ``True`` for ``memory://``)."""
        try:
            return bool(self._strategy.storage.check())
        except self._storage_errors:
            return False
