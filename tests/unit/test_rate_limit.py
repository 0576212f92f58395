"""The rate limiter on the `limits` library: the moving window, Retry-After, identities, settings, and the
per-process fallback when the shared storage cannot be reached (a closed port: no Redis server needed here; the
real-Redis tests are in tests/integration/test_rate_limit_redis.py)."""

from __future__ import annotations

import argparse
import logging
import socket
import time

import pytest

pytest.importorskip("limits", reason="the rate limiter needs the 'limits' package (pip install 'bayesian-hf[serve]')")

from prometheus_client import CollectorRegistry  # noqa: E402

from bayesian_hf.serving.metrics import sample_value  # noqa: E402
from bayesian_hf.serving.rate_limit import RateLimiter, limit_item, redact_uri, validate_storage_uri  # noqa: E402
from bayesian_hf.serving.settings import RateLimit, ServeSettings, add_serve_arguments, parse_rate_limit  # noqa: E402


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_window_refuses_past_the_limit_with_retry_after():
    limiter = RateLimiter(parse_rate_limit("3/minute"))
    assert not limiter.shared
    assert [limiter.acquire("key:a") for _ in range(3)] == [(True, 0)] * 3
    ok, retry_after = limiter.acquire("key:a")
    assert not ok and 59 <= retry_after <= 60  # the oldest request leaves the window in ~60 s
    assert limiter.acquire("key:b") == (True, 0)  # identities are independent
    assert limiter.acquire("ip:127.0.0.1") == (True, 0)


def test_moving_window_frees_a_slot_after_the_period():
    limiter = RateLimiter(RateLimit(2, 1.0))
    assert [limiter.acquire("k")[0] for _ in range(3)] == [True, True, False]
    time.sleep(1.05)
    assert [limiter.acquire("k")[0] for _ in range(3)] == [True, True, False]


def test_refused_requests_do_not_spend_the_budget():
    limiter = RateLimiter(RateLimit(1, 1.0))
    assert limiter.acquire("k")[0]
    for _ in range(5):
        assert limiter.acquire("k") == (False, 1)
    time.sleep(1.05)
    assert limiter.acquire("k") == (True, 0)


def test_memory_limiters_do_not_share_a_budget():
    limit = parse_rate_limit("1/minute")
    first, second = RateLimiter(limit), RateLimiter(limit)
    assert first.acquire("k")[0] and second.acquire("k")[0]
    assert not first.acquire("k")[0] and not second.acquire("k")[0]


def test_limit_items():
    assert str(limit_item(parse_rate_limit("5/hour"))) == "5 per 1 hour"
    assert str(limit_item(parse_rate_limit("600/minute"))) == "600 per 1 minute"
    assert str(limit_item(parse_rate_limit("20/second"))) == "20 per 1 second"
    assert str(limit_item(RateLimit(7, 30.0))) == "7 per 30 second"
    with pytest.raises(ValueError, match="whole number of seconds"):
        limit_item(RateLimit(7, 2.5))


def test_storage_uri_validation_and_settings():
    assert validate_storage_uri(" redis://cache:6379/1 ") == "redis://cache:6379/1"
    for bad in ("mongodb://x", "redis", "localhost:6379", ""):
        with pytest.raises(ValueError, match="rate_limit_storage"):
            validate_storage_uri(bad)
    assert ServeSettings().rate_limit_storage == "memory://"
    env = {"BAYESIAN_HF_RATE_LIMIT_STORAGE": "redis://redis:6379/0"}
    assert ServeSettings.from_sources({}, env).rate_limit_storage == "redis://redis:6379/0"
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args(["--rate-limit-storage", "rediss://cache:6380"])
    assert ServeSettings.from_sources({"rate_limit_storage": args.rate_limit_storage}, env).rate_limit_storage \
        == "rediss://cache:6380"  # the flag wins over the variable
    with pytest.raises(ValueError, match="rate_limit_storage must be"):
        ServeSettings.from_sources({}, {"BAYESIAN_HF_RATE_LIMIT_STORAGE": "memcached://x:11211"})


def test_redact_uri_hides_the_password():
    assert redact_uri("redis://:s3cret@cache:6379/0") == "redis://:***@cache:6379/0"
    assert redact_uri("redis://user:s3cret@cache/0") == "redis://user:***@cache/0"
    assert redact_uri("redis://cache:6379") == "redis://cache:6379"


def test_unreachable_storage_fails_over_to_a_per_process_window(caplog):
    registry = CollectorRegistry()
    uri = f"redis://:hunter2-password@127.0.0.1:{closed_port()}/0"
    limiter = RateLimiter(RateLimit(2, 60.0), uri, registry=registry, retry_storage_s=60)
    assert limiter.shared and not limiter.check_storage()
    with caplog.at_level(logging.WARNING, logger="bayesian_hf.serving.rate_limit"):
        results = [limiter.acquire("key:a") for _ in range(3)]
    # still limited (per process) rather than refused with 503 or let through unlimited
    assert [r[0] for r in results] == [True, True, False] and 59 <= results[2][1] <= 60
    assert limiter.storage_down
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "unreachable" in warnings[0] and "hunter2" not in caplog.text
    # the storage is not tried again until retry_storage_s has passed: one error for three requests
    assert sample_value(_text(registry), "bayesian_hf_rate_limit_storage_errors_total") == 1
    assert sample_value(_text(registry), "bayesian_hf_rate_limit_storage_up") == 0


def test_unreachable_storage_is_retried_after_the_interval():
    registry = CollectorRegistry()
    limiter = RateLimiter(RateLimit(100, 60.0), f"redis://127.0.0.1:{closed_port()}", registry=registry,
                          retry_storage_s=0.1)
    limiter.acquire("k")
    limiter.acquire("k")  # within the interval: fallback only
    time.sleep(0.15)
    limiter.acquire("k")  # tried again, fails again
    assert sample_value(_text(registry), "bayesian_hf_rate_limit_storage_errors_total") == 2


def test_bad_arguments():
    with pytest.raises(ValueError, match="retry_storage_s"):
        RateLimiter(RateLimit(1, 1.0), retry_storage_s=-1)
    with pytest.raises(ValueError, match="storage_timeout_s"):
        RateLimiter(RateLimit(1, 1.0), storage_timeout_s=0)


def _text(registry) -> str:
    from prometheus_client import generate_latest

    return generate_latest(registry).decode()
