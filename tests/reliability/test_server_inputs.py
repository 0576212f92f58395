"""Server input handling (issue 11, items 3, 11, 12, 14): texts with nothing to tokenise, non-UTF-8 bodies,
duplicate keys, a malformed Content-Length, client disconnects in /metrics, /ready without exception text, /docs
off by default, API keys in the query string kept out of the access log, and num_orderings from the model config
clamped like every other source."""

from __future__ import annotations

import json
import logging
import socket
import time

import httpx
import pytest
from _server_limits import GuardedServer, free_port, json_body, make_tiny_folder, raw_exchange  # noqa: E402

from bayesian_hf.serving import ServeSettings  # noqa: E402
from bayesian_hf.serving.metrics import sample_value  # noqa: E402

NOTHING_TO_TOKENISE = ["\x00\x01", "\u200b\u200b", "\x07 \x08", "\ufeff", "\u200d\u2060"]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, minilm_path):
    return make_tiny_folder(tmp_path_factory.mktemp("inputs"), minilm_path)


@pytest.fixture(scope="module")
def server(tiny_folder):
    settings = ServeSettings(model=tiny_folder, port=free_port(), torch_threads=1, max_texts=8, max_text_bytes=2000)
    with GuardedServer(settings) as srv:
        yield srv


def post_raw(url: str, path: str, raw: bytes, content_type: str = "application/json") -> httpx.Response:
    return httpx.post(url + path, content=raw, headers={"Content-Type": content_type}, timeout=30)


def error_of(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    return body["error"]


# ------------------------------------------------------------------------------------------- item 12
@pytest.mark.parametrize("text", NOTHING_TO_TOKENISE)
def test_text_with_nothing_to_tokenise_is_422_like_empty_text(server, text):
    error = error_of(httpx.post(server.url + "/predict", json={"text": text}, timeout=30), 422)
    assert error["code"] == "validation_error"
    assert error["details"][0]["loc"] == ["body", "text"] and error["details"][0]["type"] == "empty_text"
    error = error_of(httpx.post(server.url + "/batch-predict", json={"texts": ["A fine day.", text]}, timeout=30), 422)
    assert error["details"][0]["loc"] == ["body", "texts", 1]


def test_predict_and_pipeline_refuse_text_with_nothing_to_tokenise(tiny_folder):
    from transformers import AutoTokenizer, pipeline

    from bayesian_hf import BayesianExpectationForSequenceClassification
    from bayesian_hf.pipelines import predict

    model = BayesianExpectationForSequenceClassification.from_pretrained(tiny_folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_folder)
    with pytest.raises(ValueError, match="nothing to classify"):
        predict(model, tokenizer, ["A fine day.", "\u200b\x00"])
    pipe = pipeline("uncertainty-classification", model=model, tokenizer=tokenizer)
    with pytest.raises(ValueError, match="nothing to classify"):
        pipe("\x00\x01")
    assert predict(model, tokenizer, ["A fine day."])[0]["num_units"] == 1


@pytest.mark.parametrize("raw", [
    '{"text": "A fine day."}'.encode("utf-16"),          # with a BOM
    '{"text": "A fine day."}'.encode("utf-16-le"),       # without
    '{"text": "A fine day."}'.encode("utf-32"),
    b'\xef\xbb\xbf{"text": "A fine day."}',              # UTF-8 with a BOM
    b'{"text": "caf\xe9"}',                              # Latin-1
])
def test_non_utf8_bodies_are_422(server, raw):
    error = error_of(post_raw(server.url, "/predict", raw), 422)
    assert error["code"] == "invalid_json"


@pytest.mark.parametrize("raw,loc", [
    (b'{"text": "A fine day.", "text": "A bad day."}', ["body", "text"]),
    (b'{"text": "A fine day.", "thresholds": {"accept": 0.9, "accept": 0.1}}', ["body", "thresholds", "accept"]),
    (b'{"texts": ["A."], "num_orderings": 2, "num_orderings": 4}', ["body", "num_orderings"]),
])
def test_duplicate_json_keys_are_422(server, raw, loc):
    path = "/batch-predict" if b"texts" in raw else "/predict"
    error = error_of(post_raw(server.url, path, raw), 422)
    assert error["code"] == "invalid_json" and error["details"][0]["loc"] == loc
    assert "duplicate key" in error["details"][0]["msg"]


@pytest.mark.parametrize("length", [b"abc", b"-5", b"1, 2", b"0x10"])
def test_bad_content_length_is_a_json_400(server, length):
    raw = raw_exchange(server.port, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Content-Length: " + length + b"\r\n\r\n{}")
    assert raw.startswith(b"HTTP/1.1 400"), raw[:200]
    assert b"application/json" in raw.split(b"\r\n\r\n")[0].lower()
    assert json_body(raw)["error"]["code"] == "bad_request"


def test_client_disconnect_is_not_counted_as_422(server):
    before = httpx.get(server.url + "/metrics").text
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"text\": \"half")
        time.sleep(0.3)
    deadline = time.monotonic() + 10
    labels = {"endpoint": "/predict", "status": "499"}
    while time.monotonic() < deadline:
        after = httpx.get(server.url + "/metrics").text
        if sample_value(after, "bayesian_hf_requests_total", labels) > sample_value(before, "bayesian_hf_requests_total",
                                                                                     labels):
            break
        time.sleep(0.05)
    name = "bayesian_hf_requests_total"
    assert sample_value(after, name, labels) == sample_value(before, name, labels) + 1
    for status in ("422", "400", "500"):
        assert sample_value(after, name, {"endpoint": "/predict", "status": status}) == \
            sample_value(before, name, {"endpoint": "/predict", "status": status})


# ------------------------------------------------------------------------------------------- item 11
def test_ready_does_not_leak_exception_text_or_paths(tiny_folder):
    secret_path = "/srv/private/models/secret-model-7f3a/config.json"

    def failing_loader(settings):
        raise OSError(f"Permission denied: {secret_path} (token=hf_abcdef)")

    settings = ServeSettings(model=tiny_folder, port=free_port())
    with GuardedServer(settings, loader=failing_loader, wait_ready=False) as srv:
        deadline = time.monotonic() + 30
        while httpx.get(srv.url + "/ready").json()["status"] == "loading" and time.monotonic() < deadline:
            time.sleep(0.05)
        ready = httpx.get(srv.url + "/ready")
    assert ready.status_code == 503 and ready.json()["status"] == "failed"
    detail = ready.json()["detail"]
    assert "OSError" in detail and "server log" in detail
    for leaked in ("/srv", "secret-model", "Permission denied", "hf_abcdef", tiny_folder):
        assert leaked not in ready.text


# ------------------------------------------------------------------------------------------- item 14
def test_docs_are_off_by_default_and_openapi_is_served(server, tiny_folder):
    assert error_of(httpx.get(server.url + "/docs"), 404)["code"] == "not_found"
    assert "/predict" in httpx.get(server.url + "/openapi.json").json()["paths"]
    settings = ServeSettings(model=tiny_folder, port=free_port(), enable_docs=True)
    with GuardedServer(settings, wait_ready=False) as srv:
        assert "swagger" in httpx.get(srv.url + "/docs").text.lower()


def test_api_key_in_the_query_string_is_not_written_to_the_access_log(tiny_folder):
    key = "query-key-5ecret-aaaaaaaaaaaaaaaa"
    settings = ServeSettings(model=tiny_folder, port=free_port())
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # what any handler of uvicorn's access logger would write
    with GuardedServer(settings, wait_ready=False, access_log=True, log_level="info") as srv:
        access = logging.getLogger("uvicorn.access")
        access.addHandler(handler)
        try:
            httpx.get(srv.url + f"/health?api_key={key}&x=1")
            httpx.post(srv.url + f"/predict?key={key}", json={"text": "fine."})
            time.sleep(0.2)
        finally:
            access.removeHandler(handler)
    lines = [r.getMessage() for r in records]
    assert any("/health?[redacted]" in line for line in lines), lines
    assert all(key not in line for line in lines)


# -------------------------------------------------------------------------------------------- item 3
def test_num_orderings_from_the_model_config_is_clamped(tmp_path, minilm_path):
    """A config asking for 10**6 orderings must not allocate them: predict, the pipeline and the server clamp it
    to their limit like a requested value."""
    from transformers import AutoTokenizer, pipeline

    from bayesian_hf import BayesianExpectationForSequenceClassification
    from bayesian_hf.pipelines import MAX_NUM_ORDERINGS, predict

    folder = make_tiny_folder(tmp_path, minilm_path, num_orderings=10**6)
    model = BayesianExpectationForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    seen = []
    original = model.forward

    def spy(*args, **kwargs):
        seen.append(kwargs.get("num_orderings"))
        return original(*args, **kwargs)

    model.forward = spy
    text = "One. Two. Three. Four. Five. Six. Seven. Eight."  # 8! orderings exist: k is not capped by the units
    predict(model, tokenizer, [text])
    pipeline("uncertainty-classification", model=model, tokenizer=tokenizer)(text)
    assert seen == [MAX_NUM_ORDERINGS, MAX_NUM_ORDERINGS]
    with pytest.raises(ValueError, match="exceeds the limit"):
        predict(model, tokenizer, [text], num_orderings=MAX_NUM_ORDERINGS + 1)

    settings = ServeSettings(model=folder, port=free_port(), torch_threads=1, max_num_orderings=8)
    with GuardedServer(settings) as srv:
        resp = httpx.post(srv.url + "/predict", json={"text": text}, timeout=60)
        assert resp.status_code == 200, resp.text
        assert httpx.get(srv.url + "/model-info").json()["num_orderings"] == 8
        batches = srv.state.batcher
        assert batches.forward_passes == 1


def test_oversized_integers_and_deep_nesting_are_422(server):
    for raw in (b'{"text": "a", "num_orderings": 1' + b"0" * 5000 + b"}",
                b'{"text": "a", "thresholds": ' + b"[" * 5000 + b"]" * 5000 + b"}"):
        error = error_of(post_raw(server.url, "/predict", raw), 422)
        assert error["code"] in ("invalid_json", "validation_error")
    assert httpx.get(server.url + "/health").status_code == 200


def test_parse_json_body_matches_json_loads_on_valid_bodies():
    from bayesian_hf.serving.limits_guard import BodyLimits, parse_json_body

    bodies = [{"text": "é \" \\ \n \u2028 😀", "num_orderings": 4, "thresholds": {"accept": 0.9, "review": 0.5}},
              {"texts": ["a", "b", "c"], "return_cot": True, "return_uncertainty": False, "x": [1, -2.5e3, None]},
              [], {}, "s", 0, None]
    for body in bodies:
        raw = json.dumps(body, ensure_ascii=False).encode()
        assert parse_json_body(raw, BodyLimits(8, 1000)) == json.loads(raw)
        raw = json.dumps(body, indent=2).encode()
        assert parse_json_body(raw, BodyLimits(8, 1000)) == json.loads(raw)


def test_the_work_estimate_is_exact_and_its_lower_bound_is_one(minilm_path):
    """measure_texts tokenises only a prefix when that fills the token limit: the counts must equal those of the
    whole texts; work_lower_bound (no tokenizer) must never exceed the measured work."""
    import random

    from transformers import AutoTokenizer

    from bayesian_hf.serving.limits_guard import measure_texts, request_work, work_lower_bound

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    rng = random.Random(0)
    words = ["good", "bad", "x" * 99, "Ünïcødé", "漢字テスト", "a.", "b!", "end.", "\u200b", "[SEP]", "co-op", "1,000.5"]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 2500)))[:10000] for _ in range(60)]
    for max_length in (32, 128, 512):
        exact = measure_texts(tokenizer, texts, max_length=max_length, segmentation="sentence", chars_per_token=10**9)
        assert measure_texts(tokenizer, texts, max_length=max_length, segmentation="sentence") == exact
        for k in (1, 8, 64):
            for i, text in enumerate(texts):
                bound = work_lower_bound([text], k, max_length=max_length, segmentation="sentence")
                assert bound <= request_work([exact[0][i]], [exact[1][i]], k), (max_length, k, text[:60])
