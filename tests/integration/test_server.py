"""End-to-end tests of the HTTP service: real uvicorn servers on 127.0.0.1 (background threads, and one
``bayesian-hf serve`` subprocess) with a tiny trained and calibrated model, called with httpx."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from _server_helpers import (  # noqa: E402
    ThreadServer,
    free_port,
    make_tiny_served_model,
    start_cli_server,
    wait_until_ready,
)

from bayesian_hf.serving import ServeSettings  # noqa: E402
from bayesian_hf.serving.metrics import sample_value  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
KEY_A = "test-key-aaaaaaaaaaaaaaaaaaaa"
KEY_B = "test-key-bbbbbbbbbbbbbbbbbbbb"
ORIGIN = "https://app.example.com"
LEAK_MARKERS = ("Traceback", 'File "', "RuntimeError", "site-packages", "secret-detail")


# ------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """1 torch thread while these tests run (the servers in this process share it): the CI machine has 2 shared
    cores, and 2 intra-op threads contending with other processes are many times slower. Restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def served_model(tmp_path_factory, minilm_path):
    """The tiny model, trained, calibrated and saved once per session."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return make_tiny_served_model(tmp_path_factory.mktemp("served"), minilm_path)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def key_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("keys") / "api_keys.txt"
    path.write_text(f"# service keys\n{KEY_A}\n\n{KEY_B}   # second client\n")
    path.chmod(0o600)
    return str(path)


def settings_for(served_model, **overrides) -> ServeSettings:
    values = dict(model=served_model["path"], port=free_port(), torch_threads=1, graceful_timeout_s=10)
    values.update(overrides)
    return ServeSettings(**values)


@pytest.fixture(scope="module")
def server(served_model, key_file):
    settings = settings_for(served_model, api_key_file=key_file, max_batch=16, max_wait_ms=50, max_texts=8,
                            max_text_bytes=2000, max_num_orderings=16, cors_origins=(ORIGIN,))
    with ThreadServer(settings) as srv:
        yield srv


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, headers={"X-API-Key": KEY_A}, timeout=60) as c:
        yield c


def metrics_text(url: str) -> str:
    # with authentication configured, /metrics needs a credential with the admin scope (API keys hold every scope)
    resp = httpx.get(url + "/metrics", headers={"X-API-Key": KEY_A}, timeout=30)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    return resp.text


def assert_error(resp: httpx.Response, status: int, code: str | None = None) -> dict:
    """A JSON error body with a code and a message, the request id, and no server internals."""
    assert resp.status_code == status, resp.text
    for marker in LEAK_MARKERS:
        assert marker not in resp.text
    body = resp.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert error["request_id"] == resp.headers["x-request-id"]
    if code is not None:
        assert error["code"] == code, error
    return error


def check_prediction(record: dict, labels=("negative", "positive"), uncertainty=True) -> None:
    assert record["label"] in labels
    assert record["calibrated"] is True
    assert set(record["probabilities"]) == set(labels)
    assert math.isclose(sum(record["probabilities"].values()), 1.0, abs_tol=1e-5)
    assert record["score"] == pytest.approx(max(record["probabilities"].values()))
    assert record["decision"] in ("accept", "review", "escalate")
    assert set(record["prediction_set"]) <= set(labels)
    assert record["truncated"] is False
    assert record["num_units"] >= 1
    if uncertainty:
        u = record["uncertainty"]
        assert u["epistemic"] >= 0 and u["aleatoric"] >= 0
        assert u["total"] == pytest.approx(u["epistemic"] + u["aleatoric"], abs=1e-5)
        assert record["order_dispersion"] >= 0
    else:
        assert "uncertainty" not in record and "order_dispersion" not in record


# ------------------------------------------------------------------------------------------------ endpoints
def test_the_tiny_model_was_trained(served_model):
    assert served_model["calibrator"] in ("none", "temperature", "platt", "isotonic", "histogram")
    assert 0.0 <= served_model["accuracy"] <= 1.0


def test_health_ready_docs_and_openapi(server):
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    ready = httpx.get(server.url + "/ready")
    assert ready.status_code == 200 and ready.json() == {"status": "ready", "model": "model"}
    assert httpx.get(server.url + "/docs").status_code == 404  # Swagger UI (CDN scripts) only with --enable-docs
    served = httpx.get(server.url + "/openapi.json").json()
    assert {"/predict", "/batch-predict", "/health", "/ready", "/model-info", "/metrics"} <= set(served["paths"])
    committed = json.loads((REPO / "docs" / "openapi.json").read_text())
    assert committed == served, "docs/openapi.json is stale: run python scripts/export_openapi.py"


def test_predict_matches_the_in_process_pipeline(client, served_model):
    from transformers import AutoTokenizer

    from bayesian_hf import BayesianExpectationForSequenceClassification, predict

    text = served_model["test_texts"][0]
    resp = client.post("/predict", json={"text": text})
    assert resp.status_code == 200, resp.text
    record = resp.json()
    check_prediction(record)
    model = BayesianExpectationForSequenceClassification.from_pretrained(served_model["path"])
    tokenizer = AutoTokenizer.from_pretrained(served_model["path"])
    expected = predict(model, tokenizer, [text])[0]
    assert record["label"] == expected["label"] and record["decision"] == expected["decision"]
    assert record["score"] == pytest.approx(expected["score"], abs=1e-6)
    assert record["uncertainty"] == pytest.approx(expected["uncertainty"], abs=1e-6)
    assert record["prediction_set"] == expected["prediction_set"]


def test_predict_options(client, served_model):
    from bayesian_hf.pipelines import decide

    text = served_model["test_texts"][1]
    plain = client.post("/predict", json={"text": text, "return_uncertainty": False}).json()
    check_prediction(plain, uncertainty=False)
    assert "cot" not in plain

    cot = client.post("/predict", json={"text": text, "return_cot": True}).json()
    check_prediction(cot)
    assert set(cot["cot"]) == {"optimal_length", "n", "alpha", "entropy_bits", "bits_gap", "epsilon"}
    assert cot["cot"]["n"] == cot["num_units"] and cot["cot"]["optimal_length"] > 0
    assert cot["cot"]["entropy_bits"] == pytest.approx(cot["uncertainty"]["total"] / math.log(2), rel=1e-4)

    single = client.post("/predict", json={"text": text, "num_orderings": 1}).json()
    assert single["order_dispersion"] == pytest.approx(0.0, abs=1e-12)
    many = client.post("/predict", json={"text": text, "num_orderings": 12}).json()
    assert many["num_units"] >= 2 and many["order_dispersion"] > 0

    for thresholds in ({"accept": 1.0, "review": 1.0}, {"accept": 0.0, "review": 0.0}, {"review": 0.55}):
        record = client.post("/predict", json={"text": text, "thresholds": thresholds}).json()
        merged = {"accept": 0.9, "review": 0.6, **thresholds}
        assert record["decision"] == decide(record["score"], merged)  # the set is returned, not required
    assert client.post("/predict", json={"text": text, "thresholds": {"accept": 1.0, "review": 1.0}}).json()[
        "decision"] == "escalate"


def test_batch_predict_one_result_per_text_in_order(client, served_model):
    texts = served_model["test_texts"][:5]
    resp = client.post("/batch-predict", json={"texts": texts, "return_cot": True})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"results", "count", "total_time_ms"}
    assert body["count"] == len(texts) == len(body["results"]) and body["total_time_ms"] > 0
    for text, record in zip(texts, body["results"]):
        check_prediction(record)
        alone = client.post("/predict", json={"text": text, "return_cot": True}).json()
        assert record["score"] == pytest.approx(alone["score"], abs=1e-6)  # batch-independent results
        assert record["uncertainty"] == pytest.approx(alone["uncertainty"], abs=1e-6)
        assert record["cot"] == pytest.approx(alone["cot"], rel=1e-5)


def test_model_info(client, served_model):
    resp = client.get("/model-info")
    assert resp.status_code == 200, resp.text
    info = resp.json()
    assert info["model_type"] == "bayesian-expectation" and info["model_id"] == "model"
    assert info["labels"] == ["negative", "positive"] and info["num_labels"] == 2 and info["num_orderings"] == 4
    assert info["versions"]["bayesian_hf"] and info["versions"]["transformers"] and info["versions"]["torch"]
    assert info["config"]["hidden_size"] == 32 and info["config"]["bayesian_layers"] == [0]
    calibration = info["calibration"]
    assert calibration["calibrated"] is True and calibration["method"] == served_model["calibrator"]
    assert calibration["conformal"]["alpha"] == 0.1 and calibration["conformal"]["score"] == "lac"
    assert calibration["num_samples"] == 120 and "ece_after" in calibration["fit_metrics"]
    metrics = {m["type"]: m for m in info["card_metrics"]}
    assert metrics["accuracy"]["value"] == pytest.approx(served_model["accuracy"], abs=1e-3)
    assert metrics["accuracy"]["dataset"] == "exchangeable-reviews" and metrics["accuracy"]["split"] == "test"
    assert len(info["weights_sha256"]) == 64
    assert info["serving"]["max_texts"] == 8 and info["serving"]["auth_required"] is True
    assert str(Path(served_model["path"]).parent) not in resp.text  # no server file paths
    assert KEY_A not in resp.text


def test_metrics_report_requests_latency_batches_decisions_and_uncertainty(client, server, served_model):
    for text in served_model["test_texts"][:3]:
        assert client.post("/predict", json={"text": text}).status_code == 200
    assert client.post("/predict", json={"text": " "}).status_code == 422
    text = metrics_text(server.url)
    assert sample_value(text, "bayesian_hf_requests_total", {"endpoint": "/predict", "status": "200"}) >= 3
    assert sample_value(text, "bayesian_hf_requests_total", {"endpoint": "/predict", "status": "422"}) >= 1
    assert sample_value(text, "bayesian_hf_request_duration_seconds_count", {"endpoint": "/predict"}) >= 4
    assert 'bayesian_hf_request_duration_seconds_bucket{endpoint="/predict",le="0.05"}' in text
    assert sample_value(text, "bayesian_hf_forward_passes_total") >= 1
    assert sample_value(text, "bayesian_hf_batch_size_texts_count") == sample_value(text, "bayesian_hf_forward_passes_total")
    decisions = sum(sample_value(text, "bayesian_hf_predictions_total", {"decision": d})
                    for d in ("accept", "review", "escalate"))
    assert decisions >= 3
    for kind in ("epistemic", "aleatoric", "total"):
        assert sample_value(text, "bayesian_hf_uncertainty_nats_count", {"kind": kind}) >= 3
    assert sample_value(text, "bayesian_hf_confidence_count") >= 3
    assert sample_value(text, "bayesian_hf_model_ready") == 1
    assert sample_value(text, "bayesian_hf_model_info", {"model": "model"}) == 1
    assert KEY_A not in text


def test_concurrent_requests_share_forward_passes(served_model, key_file):
    """N concurrent /predict calls are answered by fewer forward passes (visible in /metrics). The server waits up
    to 400 ms for company so the check holds on a loaded 2-core CI machine too."""
    texts = served_model["test_texts"][10:22]
    with ThreadServer(settings_for(served_model, api_key_file=key_file, max_batch=32, max_wait_ms=400)) as server:
        _check_concurrent_requests_share_forward_passes(server, texts)


def _check_concurrent_requests_share_forward_passes(server, texts):
    before = metrics_text(server.url)

    async def fire():
        async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {KEY_A}"},
                                     timeout=60) as c:
            return await asyncio.gather(*(c.post("/predict", json={"text": t}) for t in texts))

    responses = asyncio.run(fire())
    assert [r.status_code for r in responses] == [200] * len(texts)
    after = metrics_text(server.url)
    passes = sample_value(after, "bayesian_hf_forward_passes_total") - sample_value(before, "bayesian_hf_forward_passes_total")
    batched = sample_value(after, "bayesian_hf_batch_size_texts_sum") - sample_value(before, "bayesian_hf_batch_size_texts_sum")
    assert batched == len(texts)
    assert 1 <= passes <= len(texts) // 2, f"{len(texts)} concurrent requests took {passes} forward passes"
    requests = sample_value(after, "bayesian_hf_batch_requests_sum") - sample_value(before, "bayesian_hf_batch_requests_sum")
    assert requests == len(texts)  # every request went through a shared pass
    for text, resp in zip(texts, responses):  # and each got its own answer
        alone = httpx.post(server.url + "/predict", json={"text": text}, headers={"X-API-Key": KEY_A}, timeout=60)
        # float32 rounding differs with the padding of the batch a text shared; answers of different texts differ
        # by far more than this
        assert resp.json()["score"] == pytest.approx(alone.json()["score"], abs=1e-4)


# ------------------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    "path, body, field",
    [
        ("/predict", {"text": ""}, ["body", "text"]),
        ("/predict", {"text": " \n\t "}, ["body", "text"]),
        ("/predict", {}, ["body", "text"]),
        ("/predict", {"text": 123}, ["body", "text"]),
        ("/predict", {"text": ["a"]}, ["body", "text"]),
        ("/predict", {"text": "fine", "return_cot": "yes"}, ["body", "return_cot"]),
        ("/predict", {"text": "fine", "return_uncertainty": 1}, ["body", "return_uncertainty"]),
        ("/predict", {"text": "fine", "num_orderings": "4"}, ["body", "num_orderings"]),
        ("/predict", {"text": "fine", "num_orderings": 2.5}, ["body", "num_orderings"]),
        ("/predict", {"text": "fine", "num_orderings": 0}, ["body", "num_orderings"]),
        ("/predict", {"text": "fine", "num_orderings": 17}, ["body", "num_orderings"]),  # over --max-num-orderings
        ("/predict", {"text": "fine", "num_orderings": 10**30}, ["body", "num_orderings"]),
        ("/predict", {"text": "fine", "thresholds": {"accept": "high"}}, ["body", "thresholds", "accept"]),
        ("/predict", {"text": "fine", "thresholds": {"accept": 1.5}}, ["body", "thresholds", "accept"]),
        ("/predict", {"text": "fine", "thresholds": {"accept": 0.5, "review": 0.8}}, ["body", "thresholds"]),
        ("/predict", {"text": "fine", "thresholds": {"review": 0.95}}, ["body", "thresholds"]),  # > default accept
        ("/predict", {"text": "fine", "thresholds": {"reject": 0.1}}, ["body", "thresholds", "reject"]),
        ("/predict", {"text": "fine", "thresholds": [0.9, 0.6]}, ["body", "thresholds"]),
        ("/predict", {"text": "fine", "temperature": 2}, ["body", "temperature"]),
        ("/predict", {"texts": ["fine"]}, ["body", "texts"]),
        ("/batch-predict", {"texts": []}, ["body", "texts"]),
        ("/batch-predict", {"texts": "fine"}, ["body", "texts"]),
        ("/batch-predict", {"texts": ["fine", ""]}, ["body", "texts", 1]),
        ("/batch-predict", {"texts": ["fine", None]}, ["body", "texts", 1]),
        ("/batch-predict", {"text": "fine"}, ["body", "texts"]),
        ("/predict", [{"text": "fine"}], ["body"]),
        ("/predict", "fine", ["body"]),
        ("/predict", None, ["body"]),
    ],
)
def test_invalid_bodies_are_422_with_the_field(client, path, body, field):
    resp = client.post(path, content=json.dumps(body), headers={"Content-Type": "application/json"})
    error = assert_error(resp, 422, "validation_error")
    assert any(d["loc"][: len(field)] == field for d in error["details"]), error


@pytest.mark.parametrize("raw", [b"{not json", b'{"text": "a",}', b"", b'{"text": "\xff\xfe"}', b"\x00\x01"])
def test_malformed_json_is_422(client, raw):
    resp = client.post("/predict", content=raw, headers={"Content-Type": "application/json"})
    assert resp.status_code == 422
    assert assert_error(resp, 422)["code"] in ("invalid_json", "validation_error")


def test_lone_surrogate_and_nan_are_rejected(client):
    for raw in (b'{"text": "ok \\ud800 ok"}', b'{"text": "ok", "thresholds": {"accept": NaN}}',
                b'{"text": "ok", "thresholds": {"accept": Infinity}}'):
        assert_error(client.post("/predict", content=raw, headers={"Content-Type": "application/json"}), 422)


def test_non_json_content_type_is_415(client):
    resp = client.post("/predict", content=b"text=hello", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_error(resp, 415, "unsupported_media_type")
    assert_error(client.post("/predict", content=b'{"text": "a"}', headers={"Content-Type": ""}), 415)


def test_size_limits_are_413(client, server):
    # the per-text limit counts UTF-8 bytes, not characters: 700 * 3 bytes > 2000 with only 700 characters
    error = assert_error(client.post("/predict", json={"text": "\u20ac" * 700}), 413, "text_too_large")
    assert error["details"][0]["loc"] == ["body", "text"]
    assert client.post("/predict", json={"text": "\u20ac" * 600 + "."}).status_code == 200  # 1801 bytes
    error = assert_error(client.post("/batch-predict", json={"texts": ["ok.", "x" * 2001]}), 413, "text_too_large")
    assert error["details"][0]["loc"] == ["body", "texts", 1]
    assert_error(client.post("/batch-predict", json={"texts": ["ok."] * 9}), 413, "too_many_texts")
    limit = server.app.state.service.settings.body_limit
    big = json.dumps({"text": "a" * (limit + 10)})
    assert_error(client.post("/predict", content=big, headers={"Content-Type": "application/json"}), 413,
                 "body_too_large")

    def chunks():  # no Content-Length: the limit is enforced while reading
        yield b'{"text": "'
        for _ in range(limit // 4096 + 2):
            yield b"a" * 4096
        yield b'"}'

    resp = client.post("/predict", content=chunks(), headers={"Content-Type": "application/json"})
    assert_error(resp, 413, "body_too_large")


def test_unknown_paths_and_methods_are_json_errors(client):
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/predict"), 405, "method_not_allowed")
    assert_error(client.delete("/batch-predict"), 405, "method_not_allowed")


# ------------------------------------------------------------------------------------------------------- auth
def test_api_keys(server, served_model):
    text = served_model["test_texts"][2]
    url = server.url
    error = assert_error(httpx.post(url + "/predict", json={"text": text}), 401, "missing_api_key")
    assert "API key" in error["message"]
    assert httpx.post(url + "/predict", json={"text": text}).headers["www-authenticate"].startswith("Bearer")
    assert_error(httpx.post(url + "/predict", json={"text": text}, headers={"X-API-Key": KEY_A + "x"}), 403,
                 "invalid_api_key")
    assert_error(httpx.post(url + "/predict", json={"text": text}, headers={"Authorization": "Bearer wrong"}), 403)
    assert_error(httpx.post(url + "/predict", json={"text": text}, headers={"Authorization": f"Basic {KEY_A}"}), 401)
    assert_error(httpx.get(url + "/model-info"), 401)
    assert_error(httpx.post(url + "/batch-predict", json={"texts": [text]}, headers={"X-API-Key": "k"}), 403)
    # the key is checked before the body: a bad body without a key is 401, not 422
    assert_error(httpx.post(url + "/predict", content=b"{oops", headers={"Content-Type": "application/json"}), 401)
    for headers in ({"X-API-Key": KEY_A}, {"X-API-Key": KEY_B}, {"Authorization": f"Bearer {KEY_B}"},
                    {"authorization": f"bearer {KEY_A}"}):
        assert httpx.post(url + "/predict", json={"text": text}, headers=headers, timeout=60).status_code == 200
    for path in ("/health", "/ready"):  # probes need no key
        assert httpx.get(url + path).status_code == 200
    assert_error(httpx.get(url + "/metrics"), 401, "missing_api_key")  # scraping does, when keys are configured
    assert httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {KEY_B}"}).status_code == 200


def test_cors(server, served_model):
    preflight = httpx.options(server.url + "/predict", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-api-key, content-type"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in preflight.headers["access-control-allow-methods"]
    resp = httpx.post(server.url + "/predict", json={"text": served_model["test_texts"][3]},
                      headers={"Origin": ORIGIN, "X-API-Key": KEY_A}, timeout=60)
    assert resp.status_code == 200 and resp.headers["access-control-allow-origin"] == ORIGIN
    denied = httpx.options(server.url + "/predict", headers={
        "Origin": "https://evil.example.org", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in denied.headers
    unauth = httpx.post(server.url + "/predict", json={"text": "x"}, headers={"Origin": ORIGIN})
    assert unauth.status_code == 401 and unauth.headers["access-control-allow-origin"] == ORIGIN


def test_internal_errors_are_generic_500s(server, client, served_model, caplog):
    state = server.app.state.service
    original = state.batcher._infer

    def broken(texts, params):
        raise RuntimeError("secret-detail: /etc/shadow could not be parsed")

    state.batcher._infer = broken
    try:
        with caplog.at_level("ERROR", logger="bayesian_hf.serving"):
            resp = client.post("/predict", json={"text": served_model["test_texts"][4]})
        error = assert_error(resp, 500, "internal_error")
        assert error["message"] == "internal server error"
        assert "secret-detail" in caplog.text  # logged server-side, with the request's traceback
    finally:
        state.batcher._infer = original

    original_ready = state.require_ready

    def exploding():
        raise KeyError("secret-detail")

    state.require_ready = exploding  # an error outside the batcher reaches the catch-all handler
    try:
        assert_error(client.post("/predict", json={"text": "fine"}), 500, "internal_error")
    finally:
        state.require_ready = original_ready
    assert client.post("/predict", json={"text": served_model["test_texts"][4]}).status_code == 200


def test_request_id_is_echoed(client):
    resp = client.get("/health", headers={"X-Request-ID": "trace-123"})
    assert resp.headers["x-request-id"] == "trace-123"
    weird = client.get("/health", headers={"X-Request-ID": "bad id\twith spaces"})
    assert weird.headers["x-request-id"] != "bad id\twith spaces" and len(weird.headers["x-request-id"]) == 32


# --------------------------------------------------------------------------------- servers of their own
def test_rate_limit_per_key_with_retry_after(served_model, key_file):
    settings = settings_for(served_model, api_key_file=key_file, rate_limit="3/minute", max_wait_ms=1)
    with ThreadServer(settings) as srv:
        body = {"text": served_model["test_texts"][5]}
        codes = [httpx.post(srv.url + "/predict", json=body, headers={"X-API-Key": KEY_A}, timeout=60).status_code
                 for _ in range(3)]
        assert codes == [200, 200, 200]
        limited = httpx.post(srv.url + "/predict", json=body, headers={"X-API-Key": KEY_A})
        error = assert_error(limited, 429, "rate_limited")
        assert "3/minute" in error["message"]
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert_error(httpx.get(srv.url + "/model-info", headers={"X-API-Key": KEY_A}), 429)
        # another key has its own bucket; probes are not limited
        assert httpx.post(srv.url + "/predict", json=body, headers={"X-API-Key": KEY_B}, timeout=60).status_code == 200
        assert httpx.get(srv.url + "/health").status_code == 200
        # wrong keys spend the client address's bucket: guessing keys is rate limited too
        wrong = [httpx.post(srv.url + "/predict", json=body, headers={"X-API-Key": "x" * 20}).status_code
                 for _ in range(4)]
        assert wrong == [403, 403, 403, 429]
        text = metrics_text(srv.url)
        assert sample_value(text, "bayesian_hf_rate_limited_total") == 3
        assert sample_value(text, "bayesian_hf_requests_total", {"endpoint": "/predict", "status": "429"}) == 2


def test_request_timeout_is_504(served_model):
    # the oldest request waits up to 2 s for company: past the 0.3 s deadline, unless the batch fills up
    settings = settings_for(served_model, request_timeout_s=0.3, max_wait_ms=2000, max_batch=4)
    with ThreadServer(settings) as srv:
        started = time.monotonic()
        error = assert_error(httpx.post(srv.url + "/predict", json={"text": "Slow. Very slow."}, timeout=30), 504,
                             "timeout")
        assert "0.3" in error["message"] and time.monotonic() - started < 1.9
        full = httpx.post(srv.url + "/batch-predict", json={"texts": served_model["test_texts"][:4]}, timeout=30)
        assert full.status_code == 200 and full.json()["count"] == 4  # a full batch does not wait
        assert httpx.get(srv.url + "/health").status_code == 200
        assert sample_value(metrics_text(srv.url), "bayesian_hf_request_timeouts_total") == 1


def test_ready_reflects_loading_and_failure(served_model):
    from bayesian_hf.serving.app import load_model

    release = threading.Event()

    def slow_loader(settings):
        release.wait(30)
        return load_model(settings)

    with ThreadServer(settings_for(served_model), loader=slow_loader, wait_ready=False) as srv:
        assert httpx.get(srv.url + "/health").status_code == 200
        loading = httpx.get(srv.url + "/ready")
        assert loading.status_code == 503 and loading.json()["status"] == "loading"
        assert_error(httpx.post(srv.url + "/predict", json={"text": "fine"}), 503, "not_ready")
        assert httpx.post(srv.url + "/predict", json={"text": "fine"}).headers["retry-after"] == "1"
        assert_error(httpx.get(srv.url + "/model-info"), 503, "not_ready")
        assert sample_value(metrics_text(srv.url), "bayesian_hf_model_ready") == 0
        release.set()
        wait_until_ready(srv.url, timeout=60)
        assert httpx.post(srv.url + "/predict", json={"text": "fine."}, timeout=60).status_code == 200

    def failing_loader(settings):
        raise OSError("no such model folder")

    with ThreadServer(settings_for(served_model), loader=failing_loader, wait_ready=False) as srv:
        deadline = time.monotonic() + 30
        while httpx.get(srv.url + "/ready").json()["status"] == "loading" and time.monotonic() < deadline:
            time.sleep(0.05)
        failed = httpx.get(srv.url + "/ready")
        assert failed.status_code == 503 and failed.json()["status"] == "failed"
        assert "OSError" in failed.json()["detail"]  # the type only: exception text stays in the server log
        assert "no such model folder" not in failed.text
        assert_error(httpx.post(srv.url + "/predict", json={"text": "fine"}), 503, "not_ready")


def test_graceful_shutdown_finishes_in_flight_requests(served_model):
    settings = settings_for(served_model, max_wait_ms=1500)  # a lone request waits 1.5 s in the queue
    srv = ThreadServer(settings)
    results: dict = {}

    def call():
        results["resp"] = httpx.post(srv.url + "/predict", json={"text": served_model["test_texts"][6]}, timeout=60)

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 10
    while srv.app.state.service.batcher._queued_texts == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert srv.app.state.service.batcher._queued_texts == 1  # in flight when the shutdown starts
    srv.stop()  # uvicorn's SIGTERM handler
    caller.join(30)
    assert results["resp"].status_code == 200
    check_prediction(results["resp"].json())
    with pytest.raises(httpx.ConnectError):
        httpx.get(srv.url + "/health", timeout=2)


def test_cli_serve_with_env_settings_and_sigterm(served_model, key_file, tmp_path):
    """``bayesian-hf serve`` in a subprocess: settings from flags and BAYESIAN_HF_* variables, then SIGTERM
    while a request is queued: the request is answered and the process exits."""
    port = free_port()
    log = tmp_path / "serve.log"
    proc = start_cli_server(
        served_model["path"], port, "--torch-threads", "1", "--max-texts", "3", "--graceful-timeout", "20",
        env={"BAYESIAN_HF_API_KEY_FILE": key_file, "BAYESIAN_HF_MAX_WAIT_MS": "1500",
             "BAYESIAN_HF_MAX_TEXTS": "50"},  # the flag wins over the variable
        log_path=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, timeout=120, process=proc)
        headers = {"X-API-Key": KEY_A}
        info = httpx.get(url + "/model-info", headers=headers, timeout=30).json()
        assert info["serving"]["max_texts"] == 3 and info["serving"]["max_wait_ms"] == 1500
        assert httpx.post(url + "/predict", json={"text": "fine"}).status_code == 401
        results: dict = {}

        def call():
            results["resp"] = httpx.post(url + "/predict", json={"text": served_model["test_texts"][7]},
                                         headers=headers, timeout=60)

        caller = threading.Thread(target=call)
        caller.start()
        deadline = time.monotonic() + 10
        while "queue_depth" not in results and time.monotonic() < deadline:
            if sample_value(metrics_text(url), "bayesian_hf_queue_depth_texts") >= 1:
                results["queue_depth"] = True
            time.sleep(0.02)
        assert results.get("queue_depth"), "the request never reached the queue"
        proc.send_signal(signal.SIGTERM)
        caller.join(60)
        assert results["resp"].status_code == 200
        check_prediction(results["resp"].json())
        assert proc.wait(60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    output = log.read_text()
    assert "Shutting down" in output and "bayesian-hf service stopped" in output
    assert KEY_A not in output and KEY_B not in output
    assert "Traceback" not in output


def test_bad_settings_fail_at_start(tmp_path, served_model):
    from bayesian_hf.cli import main

    empty = tmp_path / "empty_keys"
    empty.write_text("# nothing\n")
    assert main(["serve", "--model", served_model["path"], "--api-key-file", str(empty)]) == 2
    short = tmp_path / "short_keys"
    short.write_text("abc\n")
    assert main(["serve", "--model", served_model["path"], "--api-key-file", str(short)]) == 2
    assert main(["serve", "--model", str(tmp_path / "missing")]) == 2
    assert main(["serve", "--model", served_model["path"], "--rate-limit", "often"]) == 2
    assert main(["serve", "--model", served_model["path"], "--accept-threshold", "0.9", "--review-threshold", "0.95"]) == 2
    env = {"BAYESIAN_HF_MAX_BATCH": "lots"}
    with pytest.raises(ValueError, match="BAYESIAN_HF_MAX_BATCH"):
        ServeSettings.from_sources({"model": "m"}, env)
    assert os.environ.get("BAYESIAN_HF_MAX_BATCH") is None


# ------------------------------------------------------------------------------------ the micro-batcher alone
class FakeModel:
    """An ``infer`` that records its calls and echoes its inputs."""

    def __init__(self, fail_on: str | None = None, delay: float = 0.0) -> None:
        self.calls: list[tuple[list[str], object]] = []
        self.fail_on = fail_on
        self.delay = delay

    def __call__(self, texts, params):
        self.calls.append((list(texts), params))
        time.sleep(self.delay)
        if self.fail_on in texts:
            raise ValueError("cannot classify")
        return [{"text": t, "k": params.num_orderings} for t in texts]


def run_async(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_batcher_groups_by_parameters_and_keeps_order():
    from bayesian_hf.serving.batching import MicroBatcher, PredictParams

    fake = FakeModel()
    a = PredictParams.make(4, {"accept": 0.9, "review": 0.6}, False)
    b = PredictParams.make(8, {"accept": 0.9, "review": 0.6}, False)

    async def scenario():
        batcher = MicroBatcher(fake, max_batch=16, max_wait_ms=100)
        await batcher.start()
        jobs = [(["a1"], a), (["b1", "b2"], b), (["a2", "a3", "a4"], a), (["b3"], b), (["a5"], a)]
        results = await asyncio.gather(*(batcher.submit(texts, params) for texts, params in jobs))
        await batcher.close()
        return jobs, results

    jobs, results = run_async(scenario())
    for (texts, params), records in zip(jobs, results):
        assert [r["text"] for r in records] == texts and {r["k"] for r in records} == {params.num_orderings}
    assert [(texts, params.num_orderings) for texts, params in fake.calls] == [
        (["a1", "a2", "a3", "a4", "a5"], 4), (["b1", "b2", "b3"], 8)]  # one forward pass per parameter set


def test_batcher_max_batch_and_oversized_requests():
    from bayesian_hf.serving.batching import MicroBatcher, PredictParams

    fake = FakeModel()
    p = PredictParams.make(None, {}, False)

    async def scenario():
        batcher = MicroBatcher(fake, max_batch=4, max_wait_ms=50)
        await batcher.start()
        big = [f"t{i}" for i in range(10)]
        out = await asyncio.gather(batcher.submit(big, p), batcher.submit(["x", "y", "z"], p), batcher.submit(["w"], p))
        await batcher.close()
        return big, out

    big, (first, second, third) = run_async(scenario())
    assert [r["text"] for r in first] == big and [r["text"] for r in second] == ["x", "y", "z"]
    assert [r["text"] for r in third] == ["w"]
    # a chunk of the big one, then x, y, z, w (queued meanwhile), then the rest of the big one
    assert [texts for texts, _ in fake.calls] == [big[:4], ["x", "y", "z", "w"], big[4:8], big[8:]]


def test_batcher_drops_abandoned_requests_and_survives_errors():
    from bayesian_hf.serving.batching import BatcherClosed, MicroBatcher, PredictParams

    fake = FakeModel(fail_on="boom")
    p = PredictParams.make(None, {}, False)

    async def scenario():
        batcher = MicroBatcher(fake, max_batch=8, max_wait_ms=200)
        await batcher.start()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(batcher.submit(["abandoned"], p), 0.05)  # the caller gives up while queued
        with pytest.raises(ValueError, match="cannot classify"):
            await batcher.submit(["boom"], p)
        ok = await batcher.submit(["fine"], p)
        queued = asyncio.ensure_future(batcher.submit(["last"], p))
        await asyncio.sleep(0.01)
        await batcher.close()  # finishes what is queued ...
        with pytest.raises(BatcherClosed):  # ... and takes nothing new
            await batcher.submit(["late"], p)
        return ok, await queued

    ok, last = run_async(scenario())
    assert ok[0]["text"] == "fine" and last[0]["text"] == "last"
    seen = [t for texts, _ in fake.calls for t in texts]
    assert "abandoned" not in seen and "late" not in seen
