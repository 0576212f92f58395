"""`backends.load_for_inference`: backend choice, the torch path, and the torch.compile fallback."""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import tiny_config

from bayesian_hf import BayesianExpectationForSequenceClassification
from bayesian_hf.backends import EXPORT_MANIFEST, compile_model, load_for_inference, resolve_backend
from bayesian_hf.pipelines import predict


@pytest.fixture(scope="module")
def torch_folder(tmp_path_factory, minilm_tokenizer):
    tok = minilm_tokenizer
    torch.manual_seed(0)
    config = tiny_config(vocab_size=tok.vocab_size, pad_token_id=tok.pad_token_id, cls_token_id=tok.cls_token_id,
                         sep_token_id=tok.sep_token_id, sentence_end_token_ids=[tok.convert_tokens_to_ids(".")],
                         num_labels=2)
    folder = tmp_path_factory.mktemp("torch-model")
    BayesianExpectationForSequenceClassification(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_resolve_backend(torch_folder, tmp_path):
    assert resolve_backend(torch_folder) == "torch"
    assert resolve_backend(torch_folder, "torch") == "torch"
    with pytest.raises(ValueError, match="holds no ONNX export"):
        resolve_backend(torch_folder, "onnx")
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend(torch_folder, "tensorrt")
    (tmp_path / EXPORT_MANIFEST).write_text("{}")
    assert resolve_backend(tmp_path) == "onnx"
    assert resolve_backend("some-org/hub-model") == "torch"  # a Hub id is never an export


def test_torch_path_is_the_pipeline_model(torch_folder):
    model, tokenizer = load_for_inference(torch_folder, backend="auto", torch_threads=1)
    assert isinstance(model, BayesianExpectationForSequenceClassification)
    assert not model.training and model.compiled is False
    records = predict(model, tokenizer, ["Good. Bad.", "Fine."])
    assert [r["num_units"] for r in records] == [2, 1]


def test_compile_failure_falls_back_to_eager(torch_folder, monkeypatch, caplog):
    model, tokenizer = load_for_inference(torch_folder)
    expected = predict(model, tokenizer, ["Good. Bad. Okay."])

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", broken)
    with caplog.at_level(logging.WARNING, logger="bayesian_hf.backends"):
        compiled = compile_model(model)
    assert compiled.compiled is False
    assert "torch.compile failed" in caplog.text and "falling back to eager" in caplog.text
    assert predict(compiled, tokenizer, ["Good. Bad. Okay."]) == expected


def test_compile_errors_at_first_call_also_fall_back(torch_folder, monkeypatch, caplog):
    """Compilation is lazy: a compiler that fails only when the compiled function runs is caught at load time."""
    model, tokenizer = load_for_inference(torch_folder)

    def lazily_broken(fn, **kwargs):
        def run(*args, **kw):
            raise RuntimeError("inductor: C++ compile error")
        return run

    monkeypatch.setattr(torch, "compile", lazily_broken)
    with caplog.at_level(logging.WARNING, logger="bayesian_hf.backends"):
        compiled = compile_model(model)
    assert compiled.compiled is False and "C++ compile error" in caplog.text
    assert predict(compiled, tokenizer, ["Fine."])[0]["label"] in model.config.label2id
