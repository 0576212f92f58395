"""Diagnostics: optimal chain-of-thought length (docs/design.md §13.3) and positional bias (docs/design.md §13.2)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_batch, tiny_config

from bayesian_hf import BayesianExpectationForSequenceClassification
from bayesian_hf.diagnostics import optimal_cot_length, positional_bias


def test_optimal_cot_length_formula_and_validation():
    d = optimal_cot_length(n=16, alpha=2.0, entropy_bits=0.5, bits_gap=4.0, epsilon=0.01)
    assert d.optimal_length == pytest.approx(math.sqrt(16 * 2.0 / (0.5 * 4.0)) * math.log2(100))
    assert d.to_dict()["n"] == 16
    # grows like sqrt(n)
    ratio = optimal_cot_length(64, 1, 1, 1, 0.1).optimal_length / optimal_cot_length(16, 1, 1, 1, 0.1).optimal_length
    assert ratio == pytest.approx(2.0)
    for bad in ({"n": 0}, {"alpha": -1}, {"entropy_bits": float("nan")}, {"bits_gap": 0}, {"epsilon": 1.0}, {"epsilon": 0}):
        args = {"n": 4, "alpha": 1.0, "entropy_bits": 1.0, "bits_gap": 1.0, "epsilon": 0.1, **bad}
        with pytest.raises(ValueError, match=next(iter(bad))):
            optimal_cot_length(**args)


def _model():
    torch.manual_seed(0)
    model = BayesianExpectationForSequenceClassification(tiny_config(num_labels=2)).double().eval()
    with torch.no_grad():
        model.classifier.weight.normal_(0.0, 2.0)
    return model


def test_positional_bias_is_zero_without_position_embeddings_and_not_otherwise():
    batch = make_batch([[3, 2, 4], [2, 2, 2, 2], [2, 3, 2, 2, 2]], seed=4)
    model = _model()
    real = positional_bias(model, batch["input_ids"], batch["attention_mask"], batch["unit_ids"], num_orderings=8)
    assert len(real["bias"]) == 8 and len(real["spectrum"]) == 5 and real["num_examples"] == 3
    assert max(abs(b) for b in real["bias"]) > 1e-6
    with torch.no_grad():
        model.bert.embeddings.position_embeddings.weight.zero_()
    flat = positional_bias(model, batch["input_ids"], batch["attention_mask"], batch["unit_ids"], num_orderings=8)
    assert max(abs(b) for b in flat["bias"]) < 1e-12  # every realization equals the expectation


def test_positional_bias_needs_several_units():
    batch = make_batch([[4], [5]])
    with pytest.raises(ValueError, match="at least 2 units"):
        positional_bias(_model(), batch["input_ids"], batch["attention_mask"], batch["unit_ids"])
