"""ONNX fp32 parity with PyTorch on the real MiniLM (converted with from_bert, with a Laplace posterior)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")


@pytest.mark.slow
def test_minilm_onnx_fp32_matches_pytorch(tmp_path, minilm_path, minilm_tokenizer):
    from conftest import fit_random_posterior

    from bayesian_hf import BayesianExpectationForSequenceClassification
    from bayesian_hf.backends import load_for_inference
    from bayesian_hf.onnx_export import export_onnx
    from bayesian_hf.pipelines import predict

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = BayesianExpectationForSequenceClassification.from_bert(minilm_path, num_labels=2)
        fit_random_posterior(model, num_examples=30)
        model.save_pretrained(tmp_path / "model")
        minilm_tokenizer.save_pretrained(tmp_path / "model")
        export_onnx(tmp_path / "model", tmp_path / "onnx")
        torch_model, tokenizer = load_for_inference(tmp_path / "model")
        onnx_model, _ = load_for_inference(tmp_path / "onnx")
        texts = [
            "Fine.",
            "The pasta was superb. Service was painfully slow! We will still come back.",
            "Great. Bad. Okay. Nice. Awful. Superb. Meh. Fine. Good. Poor. " * 3,
            "Lovely room with a view. The breakfast was cold.",
            "A long review of a stay. " * 40,  # truncated at 64 tokens
        ]
        for batch, max_length in ((texts, 64), (texts[1:2], 128), (texts[:3], 32)):
            expected = predict(torch_model, tokenizer, batch, max_length=max_length)
            got = predict(onnx_model, tokenizer, batch, max_length=max_length)
            for e, g in zip(expected, got):
                assert (g["label"], g["decision"], g["num_units"], g["truncated"]) == \
                    (e["label"], e["decision"], e["num_units"], e["truncated"])
                np.testing.assert_allclose(list(g["probabilities"].values()), list(e["probabilities"].values()),
                                           atol=1e-4, rtol=0)
                np.testing.assert_allclose(list(g["uncertainty"].values()), list(e["uncertainty"].values()),
                                           atol=1e-4, rtol=0)
                assert g["order_dispersion"] == pytest.approx(e["order_dispersion"], abs=1e-4)
    finally:
        torch.set_num_threads(threads)
