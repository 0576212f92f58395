"""Denial of service within the default limits (issue 11, items 1, 2 and 4): bodies of a million tiny items are
refused before per-item validation while /health stays fast; the work of a request is bounded, split into passes
that interleave with other requests and stop when the caller has gone; slow clients are dropped."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import httpx
import pytest
from _server_limits import GuardedServer, free_port, json_body, make_tiny_folder, read_until_closed  # noqa: E402

from bayesian_hf.serving import ServeSettings  # noqa: E402
from bayesian_hf.serving.metrics import sample_value  # noqa: E402

HEALTH_BOUND_S = 1.0  # generous: the CI machine has 2 shared cores; the old code took 15-19 s


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, minilm_path):
    return make_tiny_folder(tmp_path_factory.mktemp("dos"), minilm_path)


@pytest.fixture(scope="module")
def server(tiny_folder):
    # the default limits (max_texts 64, max_text_bytes 10000, body 3.9 MB), short header/body deadlines
    settings = ServeSettings(model=tiny_folder, port=free_port(), torch_threads=1, header_timeout_s=1.0,
                             body_timeout_s=1.5, max_pass_work=4096)
    with GuardedServer(settings) as srv:
        yield srv


class HealthProbe:
    """Polls /health from a thread and records the slowest answer."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=60) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                assert client.get(self.url + "/health").status_code == 200
                self.latencies.append(time.perf_counter() - started)
                time.sleep(0.01)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(60)


# -------------------------------------------------------------------------------------------- item 1
@pytest.mark.parametrize("item", [b'""', b"0"], ids=["empty-strings", "integers"])
def test_a_body_of_a_million_items_is_refused_fast_and_health_stays_fast(server, item):
    limit = server.state.settings.body_limit
    count = (limit - 64) // (len(item) + 1)
    body = b'{"texts": [' + b",".join([item] * count) + b"]}"
    assert len(body) <= limit and count > 10**6
    with HealthProbe(server.url) as probe:
        time.sleep(0.05)
        started = time.perf_counter()
        resp = httpx.post(server.url + "/batch-predict", content=body, headers={"Content-Type": "application/json"},
                          timeout=60)
        elapsed = time.perf_counter() - started
        time.sleep(0.05)
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "too_many_texts", resp.text[:300]
    assert elapsed < 2.0, elapsed
    assert probe.latencies and max(probe.latencies) < HEALTH_BOUND_S, max(probe.latencies)


def test_texts_over_the_limit_are_counted_before_validation(server):
    """65 invalid items: the count is the error, not 65 per-item validation errors."""
    resp = httpx.post(server.url + "/batch-predict", json={"texts": [None] * 65}, timeout=30)
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "too_many_texts"


# -------------------------------------------------------------------------------------------- item 2
def test_a_request_over_the_work_budget_is_refused_before_inference(server):
    text = " ".join(f"Sentence {i} is here." for i in range(60))  # ~128 tokens after truncation, 12+ units
    passes = server.state.batcher.forward_passes
    started = time.perf_counter()
    resp = httpx.post(server.url + "/batch-predict", json={"texts": [text] * 64, "num_orderings": 64}, timeout=60)
    error = resp.json()["error"]
    assert resp.status_code == 413 and error["code"] == "work_too_large", resp.text
    assert str(server.state.settings.max_request_work) in error["message"]
    assert time.perf_counter() - started < 5 and server.state.batcher.forward_passes == passes


def test_a_large_request_runs_in_passes_and_short_requests_are_served_in_between(server, monkeypatch):
    text = " ".join(f"Sentence {i} is here." for i in range(60))
    state = server.state
    passes = state.batcher.forward_passes
    done: dict[str, float] = {}
    infer = state.batcher._infer

    def slow_infer(texts, params):  # a tiny model's pass takes ~ms: without this the whole large request can
        time.sleep(0.15)            # finish before the short one is even parsed on a loaded CI machine
        return infer(texts, params)

    monkeypatch.setattr(state.batcher, "_infer", slow_infer)
    # the slowed passes make the measured rate low: on a loaded machine load shedding (429 overloaded, tested on
    # its own) would refuse the short request, which is not what this test is about
    monkeypatch.setattr(state.batcher, "max_queue_delay_s", None)

    def big():
        r = httpx.post(server.url + "/batch-predict", json={"texts": [text] * 24, "num_orderings": 8}, timeout=60)
        assert r.status_code == 200 and r.json()["count"] == 24, r.text
        done["big"] = time.perf_counter()

    thread = threading.Thread(target=big)
    thread.start()
    deadline = time.monotonic() + 30
    while state.batcher.forward_passes == passes and time.monotonic() < deadline:
        time.sleep(0.002)
    short = httpx.post(server.url + "/predict", json={"text": "Short and sweet."}, timeout=60)
    done["short"] = time.perf_counter()
    thread.join(60)
    assert short.status_code == 200
    # 24 texts x 128 tokens x 8 orderings = 24576 token-orderings; 4096 per pass: 4 texts a pass, 6 passes
    assert state.batcher.forward_passes - passes >= 7
    assert done["short"] < done["big"], "the short request waited for the whole large one"


def test_the_rest_of_a_request_is_dropped_when_its_caller_is_gone():
    from bayesian_hf.serving.batching import MicroBatcher, PredictParams

    calls: list[list[str]] = []

    def slow_infer(texts, params):
        calls.append(list(texts))
        time.sleep(0.05)
        return [{"text": t} for t in texts]

    params = PredictParams.make(4, {}, False)

    async def scenario():
        batcher = MicroBatcher(slow_infer, max_batch=64, max_wait_ms=0, max_pass_work=2 * 100 * 4)
        await batcher.start()
        texts = [f"t{i}" for i in range(20)]
        with pytest.raises(asyncio.TimeoutError):  # 10 passes of 2 texts; the caller leaves during the 2nd
            await asyncio.wait_for(batcher.submit(texts, params, tokens=[100] * 20, units=[3] * 20), 0.08)
        await asyncio.sleep(0.2)
        ok = await batcher.submit(["after"], params, tokens=[10], units=[1])
        await batcher.close()
        return ok

    ok = asyncio.run(scenario())
    assert ok == [{"text": "after"}]
    assert [len(c) for c in calls[:-1]] == [2] * len(calls[:-1]) and len(calls) <= 3 + 1, calls


def test_abort_answers_queued_and_running_requests_at_once():
    from bayesian_hf.serving.batching import BatcherClosed, MicroBatcher, PredictParams

    release = threading.Event()

    def blocked_infer(texts, params):
        release.wait(10)
        return [{"text": t} for t in texts]

    params = PredictParams.make(4, {}, False)

    async def scenario():
        batcher = MicroBatcher(blocked_infer, max_batch=1, max_wait_ms=0)
        await batcher.start()
        jobs = [asyncio.ensure_future(batcher.submit([f"t{i}"], params)) for i in range(5)]
        await asyncio.sleep(0.1)  # t0 is running, the others queued
        started = time.perf_counter()
        assert batcher.abort() == 5
        results = await asyncio.gather(*jobs, return_exceptions=True)
        elapsed = time.perf_counter() - started
        release.set()
        await batcher.close()
        return results, elapsed

    results, elapsed = asyncio.run(scenario())
    assert all(isinstance(r, BatcherClosed) for r in results) and elapsed < 1


# -------------------------------------------------------------------------------------------- item 4
def test_slow_headers_get_408_and_are_closed(server):
    started = time.monotonic()
    sockets = []
    for _ in range(20):
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")  # never finishes the headers
        sockets.append(sock)
    answers = [read_until_closed(sock, 10) for sock in sockets]
    elapsed = time.monotonic() - started
    for sock in sockets:
        sock.close()
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers[0][:200]
    assert json_body(answers[0])["error"]["code"] == "request_timeout"
    assert elapsed < 1.0 + 3.0, elapsed


def test_a_silent_connection_and_a_slow_keep_alive_request_are_closed(server):
    with socket.create_connection(("127.0.0.1", server.port)) as sock:  # sends nothing at all
        assert read_until_closed(sock, 10).startswith(b"HTTP/1.1 408")
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)
        sock.sendall(b"GET /heal")  # a second request that trickles
        started = time.monotonic()
        answer = read_until_closed(sock, 10)
    assert answer.startswith(b"HTTP/1.1 200") and b"408 Request Timeout" in answer
    assert time.monotonic() - started < 3


def test_slow_body_gets_a_json_408(server):
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"text\": ")
        started = time.monotonic()
        for _ in range(3):  # a byte now and then: progress, but the whole body is late
            time.sleep(0.4)
            sock.sendall(b" ")
        answer = read_until_closed(sock, 10)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert json_body(answer)["error"]["code"] == "request_timeout"
    assert time.monotonic() - started < 1.5 + 2
    text = httpx.get(server.url + "/metrics").text
    assert sample_value(text, "bayesian_hf_requests_total", {"endpoint": "/predict", "status": "408"}) >= 1


def test_connections_over_the_cap_get_503(tiny_folder):
    settings = ServeSettings(model=tiny_folder, port=free_port(), max_connections=4, header_timeout_s=5)
    with GuardedServer(settings, wait_ready=False) as srv:
        idle = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(4)]
        time.sleep(0.2)
        try:
            resp = httpx.get(srv.url + "/health", timeout=10)
            assert resp.status_code == 503
        finally:
            for sock in idle:
                sock.close()
        time.sleep(0.2)
        assert httpx.get(srv.url + "/health", timeout=10).status_code == 200


def test_requests_past_the_queue_delay_are_refused_as_overloaded_not_timed_out():
    """At twice the capacity the queue would grow until requests time out (504); with a measured rate the
    batcher refuses what cannot start within max_queue_delay_s, at once."""
    from bayesian_hf.serving.batching import MicroBatcher, Overloaded, PredictParams

    def infer(texts, params):  # 1000 token-orderings per text, 10 ms per text: 100k token-orderings per second
        time.sleep(0.01 * len(texts))
        return [{"text": t} for t in texts]

    params = PredictParams.make(1, {}, False)

    async def scenario():
        batcher = MicroBatcher(infer, max_batch=4, max_wait_ms=0, max_queue_delay_s=0.5)
        await batcher.start()
        await batcher.submit(["warm"] * 4, params, tokens=[1000] * 4, units=[1] * 4)  # measures the rate
        assert 50_000 < batcher.work_per_second < 200_000
        jobs, refused = [], []
        for i in range(40):  # 40 x 0.04 s of work offered at once: about 0.5 s of it fits the bound
            try:
                jobs.append(asyncio.ensure_future(batcher.submit(["x"] * 4, params, tokens=[1000] * 4,
                                                                 units=[1] * 4)))
                await asyncio.sleep(0)
            except Overloaded as err:
                refused.append(err)
        done = await asyncio.gather(*jobs, return_exceptions=True)
        await batcher.close()
        return done, refused

    done, refused = asyncio.run(scenario())
    accepted = [d for d in done if not isinstance(d, Exception)]
    overloaded = refused + [d for d in done if isinstance(d, Overloaded)]
    assert len(accepted) + len(overloaded) == 40
    assert 5 <= len(accepted) <= 25 and overloaded and overloaded[0].retry_after_s >= 1


def test_measuring_and_inference_never_share_a_tokenizer_state(tiny_folder):
    """The work estimate tokenises (unpadded) in its thread while the inference thread tokenises (padded): with one
    shared fast tokenizer, whose padding state each call changes, passes failed with 'expected sequence of length
    ...' (500s seen in the soak test). The estimate must use its own copy."""
    from transformers import AutoTokenizer

    from bayesian_hf import BayesianExpectationForSequenceClassification
    from bayesian_hf.orderings import tokenize_with_units
    from bayesian_hf.serving.app import ServiceState

    state = ServiceState(ServeSettings(model=tiny_folder), loader=lambda s: None)
    state.model = BayesianExpectationForSequenceClassification.from_pretrained(tiny_folder)
    state.tokenizer = AutoTokenizer.from_pretrained(tiny_folder)
    texts = [" ".join(["Word."] * n) for n in (1, 3, 7, 15, 31)] * 4
    errors: list[str] = []

    def infer_side() -> None:
        for _ in range(200):
            try:
                enc = tokenize_with_units(state.tokenizer, texts, max_length=128)
                assert enc["input_ids"].shape[0] == len(texts)
            except Exception as err:  # noqa: BLE001 -- collected and asserted below
                errors.append(repr(err))

    def measure_side() -> None:
        for _ in range(200):
            try:
                assert len(state.measure(texts, 4)[0]) == len(texts)
            except Exception as err:  # noqa: BLE001
                errors.append(repr(err))

    threads = [threading.Thread(target=infer_side), threading.Thread(target=measure_side)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
