"""`inference`: the one batch-prediction path (predict, collect_outputs and the pipeline all run through it)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import tiny_config

from bayesian_hf import BayesianExpectationForSequenceClassification
from bayesian_hf.inference import OUTPUT_KEYS, PER_TEXT_OUTPUTS, collect_outputs, predict_outputs
from bayesian_hf.modeling_bayesian_expectation import BayesianSequenceClassifierOutput
from bayesian_hf.pipelines import predict

TEXTS = ["Good. Bad. Fine.", "Fine.", "A longer text. With three sentences. And more words in it.", "Ok. Sure."]


@pytest.fixture(scope="module")
def model_and_tokenizer(minilm_tokenizer):
    tok = minilm_tokenizer
    torch.manual_seed(0)
    config = tiny_config(vocab_size=tok.vocab_size, pad_token_id=tok.pad_token_id, cls_token_id=tok.cls_token_id,
                         sep_token_id=tok.sep_token_id, sentence_end_token_ids=[tok.convert_tokens_to_ids(".")],
                         num_labels=2)
    return BayesianExpectationForSequenceClassification(config).eval(), tok


def test_output_keys_come_from_the_output_dataclass():
    names = [f.name for f in dataclasses.fields(BayesianSequenceClassifierOutput)]
    assert OUTPUT_KEYS == ("logits", "probs", "calibrated_probs", "epistemic", "aleatoric", "total",
                           "order_dispersion", "num_units")
    assert set(OUTPUT_KEYS) <= set(PER_TEXT_OUTPUTS) <= set(names)
    assert [n for n in names if n in OUTPUT_KEYS] == list(OUTPUT_KEYS)  # the dataclass's order


def test_length_sorted_batches_come_back_in_input_order(model_and_tokenizer):
    model, tok = model_and_tokenizer
    whole, truncated = predict_outputs(model, tok, TEXTS, max_length=12)
    batched, batched_truncated = predict_outputs(model, tok, TEXTS, batch_size=3, max_length=12)
    assert batched_truncated == truncated and truncated[2] and not truncated[1]
    assert set(batched) == set(whole) == set(OUTPUT_KEYS) - {"calibrated_probs"}
    for name in whole:
        torch.testing.assert_close(batched[name], whole[name], rtol=1e-5, atol=1e-6)
    assert whole["num_units"].tolist() == [3, 1, 3, 2]


def test_predict_and_collect_outputs_agree(model_and_tokenizer):
    model, tok = model_and_tokenizer
    arrays = collect_outputs(model, tok, TEXTS, batch_size=2, progress=False)
    assert all(a.dtype == np.float32 for a in arrays.values())
    records = predict(model, tok, TEXTS)
    np.testing.assert_allclose([r["probabilities"]["LABEL_1"] for r in records], arrays["probs"][:, 1], rtol=1e-5)
    np.testing.assert_allclose([r["uncertainty"]["total"] for r in records], arrays["total"], rtol=1e-5, atol=1e-7)
    assert [r["num_units"] for r in records] == arrays["num_units"].astype(int).tolist()
