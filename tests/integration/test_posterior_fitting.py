"""The Laplace posterior fitted on data: plain BERT as the special case on the real MiniLM, epistemic growth off
distribution, confidence that neutral filler sentences do not buy, and `bayesian-hf fit-posterior`."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertForSequenceClassification

from bayesian_hf import BayesianExpectationForSequenceClassification, tokenize_with_units
from bayesian_hf.evaluation import collect_outputs
from bayesian_hf.posterior_fitting import fit_posterior

FILLERS = " The weather was mild that day. I went there on a Tuesday. It is located near the station."


@pytest.fixture(scope="module")
def fitted(tiny_trained_model):
    model, tokenizer, data = tiny_trained_model
    model = copy.deepcopy(model)
    report = fit_posterior(model, tokenizer, data["train"]["text"], validation_texts=data["validation"]["text"],
                           validation_labels=data["validation"]["label"], progress=False)
    return model, tokenizer, data, report


def test_plain_bert_classifier_is_the_special_case_on_real_minilm(minilm_path, tmp_path):
    """from_bert of a BERT classifier, one unit and one ordering, no posterior: BERT's probabilities (1e-5)."""
    torch.manual_seed(0)
    bert = BertForSequenceClassification.from_pretrained(minilm_path, num_labels=3).eval()
    with torch.no_grad():
        bert.classifier.weight.normal_(0.0, 0.5)
    bert.save_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    tokenizer.save_pretrained(tmp_path)
    ours = BayesianExpectationForSequenceClassification.from_bert(str(tmp_path), num_labels=3, unit_segmentation="none")
    texts = ["A short one.", "The food was great. The service was slow! We will not be back.", "Okay"]
    enc = tokenize_with_units(tokenizer, texts, segmentation="none")
    enc.pop("truncated")
    with torch.no_grad():
        expected = torch.softmax(bert(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits, -1)
        out = ours(**enc, num_orderings=1)
    torch.testing.assert_close(out.probs.float(), expected, rtol=0, atol=1e-5)
    assert float(expected.max()) > 0.5  # a head that asserts something, so the comparison is not trivial


def test_fit_reports_an_interior_prior_precision(fitted):
    model, _, _, report = fitted
    assert model.has_posterior
    assert report["method"] == "marglik" and report["num_examples"] == 640
    grid = report["prior_precisions"] if len(report["prior_precisions"]) > 1 else list(map(float, report["log_marginal_likelihood"]))
    assert min(grid) < report["prior_precision"] < max(grid)
    assert report["order_scale"] >= 0


def test_epistemic_grows_off_distribution(fitted):
    model, tokenizer, data, _ = fitted
    test = collect_outputs(model, tokenizer, data["test"]["text"], progress=False)
    ood = collect_outputs(model, tokenizer, data["ood"]["text"], progress=False)
    assert ood["epistemic"].mean() > test["epistemic"].mean()
    assert np.all(test["epistemic"] >= 0)
    # and the posterior does not move the accuracy of the classifier it wraps
    model_map = copy.deepcopy(model)
    model_map.reset_posterior()
    plain = collect_outputs(model_map, tokenizer, data["test"]["text"], progress=False)
    agree = (plain["probs"].argmax(-1) == test["probs"].argmax(-1)).mean()
    assert agree > 0.97


def test_neutral_filler_sentences_do_not_buy_confidence(fitted):
    """Confidence is not a function of the number of units: appending neutral sentences must not raise it by
    more than the content raises it above chance (the counting head fails this: every unit is a pseudo-count)."""
    model, tokenizer, data, _ = fitted
    texts = list(data["test"]["text"][:80])
    base = collect_outputs(model, tokenizer, texts, progress=False)["probs"].max(-1)
    padded = collect_outputs(model, tokenizer, [t + FILLERS for t in texts], progress=False)["probs"].max(-1)
    gain_from_fillers = float(np.mean(padded - base))
    gain_from_content = float(np.mean(base - 0.5))
    assert gain_from_fillers <= max(gain_from_content, 0.0) + 1e-6


def test_cli_fit_posterior_writes_the_posterior_and_retires_a_stale_calibrator(tiny_trained_model, tmp_path):
    from bayesian_hf.cli import main

    model, tokenizer, _ = tiny_trained_model
    model = copy.deepcopy(model)
    model.set_calibration(None)
    model.reset_posterior()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    (tmp_path / "calibration.json").write_text("{}", encoding="utf-8")
    assert main(["fit-posterior", "--model", str(tmp_path), "--max_examples", "200"]) == 0
    report = json.loads((tmp_path / "posterior_fit.json").read_text(encoding="utf-8"))
    assert report["num_examples"] == 200
    assert not (tmp_path / "calibration.json").exists() and (tmp_path / "calibration.json.stale").exists()
    reloaded = BayesianExpectationForSequenceClassification.from_pretrained(tmp_path)
    assert reloaded.has_posterior
    assert abs(float(reloaded.posterior.prior_precision) - report["prior_precision"]) < 1e-3 * report["prior_precision"]
