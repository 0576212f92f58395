"""Calibrators that travel with the model: calibration.json, model card, pipeline(), Hub round trip, drift."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from transformers import pipeline

from bayesian_hf import BayesianExpectationForSequenceClassification, predict
from bayesian_hf.evaluation import calibration_drift, collect_outputs, evaluate_model, fit_model_calibration
from bayesian_hf.hub import check_model_folder, push_model_folder, write_model_card
from bayesian_hf.model_files import REMOTE_CODE_FILES

TEXTS = ["The pasta was superb. The waiter was rude! Great view.", "Awful room. Noisy street. Cold shower."]


@pytest.fixture(scope="module")
def calibrated_dir(tiny_trained_model, tmp_path_factory):
    """The tiny trained model with a calibrator fit on the embedded calibration split, saved with its card."""
    model, tokenizer, data = tiny_trained_model
    folder = tmp_path_factory.mktemp("calibrated")
    cal = data["calibration"]
    calibration, report = fit_model_calibration(model, tokenizer, cal["text"], cal["label"], alpha=0.2)
    test = data["test"]
    metrics = evaluate_model(model, tokenizer, test["text"], test["label"])
    outputs = collect_outputs(model, tokenizer, test["text"], progress=False)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_model_card(folder, model, eval_metrics=metrics, eval_probs=outputs["calibrated_probs"],
                     eval_labels=np.asarray(test["label"]), dataset_name="exchangeable-reviews", repo_id="user/tiny-bayes")
    return folder, model, tokenizer, metrics, report


def test_calibration_json_round_trip_and_no_pickle(calibrated_dir):
    folder, model, tokenizer, _, report = calibrated_dir
    doc = json.loads((folder / "calibration.json").read_text())
    assert doc["method"] == report["selection"]["chosen"]
    assert doc["num_samples"] > 0 and doc["conformal"] is not None and len(doc["label_hash"]) == 64
    names = check_model_folder(folder)
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pkl"))]
    for name in names:  # nothing in the folder unpickles: every file is text/JSON/safetensors/PNG
        head = (folder / name).read_bytes()[:2]
        assert head != b"\x80\x04" and head != b"\x80\x05", name
    reloaded = BayesianExpectationForSequenceClassification.from_pretrained(folder)
    assert reloaded.calibration is not None
    enc = dict(tokenizer(TEXTS, padding=True, return_tensors="pt"))
    enc.pop("token_type_ids")
    # the calibrator itself round-trips exactly: same parameters, same outputs on the same logits
    assert reloaded.calibration.calibrator.to_dict() == model.calibration.calibrator.to_dict()
    assert reloaded.calibration.conformal.to_dict() == model.calibration.conformal.to_dict()
    with torch.no_grad():
        a = model.eval()(**enc)
        b = reloaded(**enc)
    logits = a.logits.double().numpy()
    np.testing.assert_array_equal(model.calibration.calibrator.transform(logits),
                                  reloaded.calibration.calibrator.transform(logits))
    # the whole forward agrees to float32 rounding, not bit for bit: safetensors loads memory-mapped tensors that
    # are not 64-byte aligned, so the CPU kernels take other SIMD paths (measured: 3e-8 on calibrated_probs)
    torch.testing.assert_close(a.calibrated_probs, b.calibrated_probs, rtol=0, atol=1e-6)


def test_missing_corrupt_and_mismatched_calibrators(calibrated_dir, tmp_path, caplog):
    folder, model, _, _, _ = calibrated_dir
    bare = tmp_path / "bare"
    model.save_pretrained(bare)
    (bare / "calibration.json").unlink()
    loaded = BayesianExpectationForSequenceClassification.from_pretrained(bare)
    assert loaded.calibration is None
    corrupt = tmp_path / "corrupt"
    model.save_pretrained(corrupt)
    text = (corrupt / "calibration.json").read_text()
    (corrupt / "calibration.json").write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match="not valid JSON"):
        BayesianExpectationForSequenceClassification.from_pretrained(corrupt)
    mismatched = tmp_path / "mismatched"
    model.save_pretrained(mismatched)
    config = json.loads((mismatched / "config.json").read_text())
    config["id2label"] = {"0": "bad", "1": "good"}
    config["label2id"] = {"bad": 0, "good": 1}
    (mismatched / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="different label mapping"):
        BayesianExpectationForSequenceClassification.from_pretrained(mismatched)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        ignored = BayesianExpectationForSequenceClassification.from_pretrained(mismatched, ignore_calibration_mismatch=True)
    assert ignored.calibration is not None


def test_pipeline_returns_calibrated_scores_sets_and_decisions(calibrated_dir):
    folder, model, tokenizer, _, _ = calibrated_dir
    clf = pipeline("uncertainty-classification", model=str(folder))
    results = clf(TEXTS + ["Fine."], seed=1, num_orderings=4)
    direct = predict(model, tokenizer, TEXTS + ["Fine."], seed=1, num_orderings=4)
    for got, want in zip(results, direct):
        assert got["label"] == want["label"]
        assert got["score"] == pytest.approx(want["score"], abs=1e-6)
        assert got["calibrated"] is True and "prediction_set" in got
        assert set(got["uncertainty"]) == {"epistemic", "aleatoric", "total"}
        assert got["decision"] in {"accept", "review", "escalate"}
        assert got["score"] == pytest.approx(max(got["probabilities"].values()))
    strict = clf(TEXTS[0], thresholds={"accept": 1.0, "review": 1.0})
    lenient = clf(TEXTS[0], thresholds={"accept": 0.0, "review": 0.0})
    assert strict["decision"] == "escalate"
    assert lenient["decision"] in {"accept", "review"}  # review only if the conformal set has several labels
    long = clf("Great food. " * 200, max_length=32)
    assert long["truncated"] is True
    with pytest.raises(ValueError, match="threshold"):
        clf(TEXTS[0], thresholds={"accept": 0.5, "review": 0.9})
    with pytest.raises(ValueError, match="num_orderings"):
        clf(TEXTS[0], num_orderings=0)
    plain = pipeline("text-classification", model=str(folder))
    assert plain(TEXTS[0])[0]["label"] in model.config.label2id


def test_model_card_metadata_has_the_measured_metrics(calibrated_dir):
    folder, _, _, metrics, report = calibrated_dir
    card = ModelCard.load(folder / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "text-classification"
    assert "bayesian-hf" in data["tags"]
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert results["accuracy"] == pytest.approx(metrics["accuracy"])
    assert results["ece"] == pytest.approx(metrics["ece"])
    assert "reliability_diagram.png" in card.text
    assert (folder / "reliability_diagram.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["heldout"]["ece_before"] == pytest.approx(
        json.loads((folder / "calibration.json").read_text())["fit_metrics"]["ece_before"]
    )


def test_drift_check_recommends_recalibration_on_shifted_labels(calibrated_dir):
    _, model, tokenizer, _, _ = calibrated_dir
    from bayesian_hf.data import load_exchangeable_reviews

    test = load_exchangeable_reviews(train_size=10, validation_size=10, calibration_size=10, test_size=200, ood_size=10, seed=5)["test"]
    same = calibration_drift(model, tokenizer, test["text"], test["label"], tolerance=0.1)
    flipped = calibration_drift(model, tokenizer, test["text"], [1 - y for y in test["label"]], tolerance=0.1)
    assert flipped["recent_ece"] > same["recent_ece"]
    assert flipped["recalibrate"] is True
    assert set(same) >= {"recent_ece", "fit_ece", "drift", "recommendation"}


def test_push_and_load_from_a_local_hub_in_a_fresh_process(calibrated_dir, local_hub, tmp_path):
    folder, model, tokenizer, _, _ = calibrated_dir
    url = push_model_folder(folder, "user/tiny-bayes")
    assert "user/tiny-bayes" in url
    from huggingface_hub import HfApi

    files = set(HfApi().list_repo_files("user/tiny-bayes"))
    assert {"calibration.json", "README.md", "reliability_diagram.png", "model.safetensors", "tokenizer.json",
            "modeling_bayesian_expectation.py", "calibration_artifact.py", "metrics.py"} <= files
    assert set(REMOTE_CODE_FILES) <= files  # all the remote code (the calibrators now live in their own files)
    assert len(HfApi().list_repo_commits("user/tiny-bayes")) == 2  # the initial commit + ONE upload commit
    expected = predict(model, tokenizer, TEXTS, seed=2)
    script = textwrap.dedent(
        f"""
        import json, sys, torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        remote = AutoModelForSequenceClassification.from_pretrained("user/tiny-bayes", trust_remote_code=True)
        assert "bayesian_hf" not in sys.modules
        assert remote.calibration is not None, "calibration.json must load with the remote code"
        tok = AutoTokenizer.from_pretrained("user/tiny-bayes", trust_remote_code=True)
        enc = tok({TEXTS!r}, padding=True, return_tensors="pt")
        with torch.no_grad():
            remote_probs = remote(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).calibrated_probs
        import bayesian_hf
        from transformers import pipeline
        clf = pipeline("uncertainty-classification", model="user/tiny-bayes")
        print(json.dumps({{"pipeline": clf({TEXTS!r}, seed=2), "remote_probs": remote_probs.tolist()}}))
        """
    )
    env = dict(os.environ)
    env["HF_MODULES_CACHE"] = str(tmp_path / "modules")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-4000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    for pulled, local in zip(got["pipeline"], expected):
        assert pulled["label"] == local["label"]
        assert pulled["score"] == pytest.approx(local["score"], abs=1e-6)
        assert pulled["prediction_set"] == local["prediction_set"]
    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        local_probs = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).calibrated_probs
    torch.testing.assert_close(torch.tensor(got["remote_probs"]), local_probs, rtol=0, atol=1e-6)


def test_model_push_to_hub_sends_everything_in_one_commit(calibrated_dir, local_hub):
    folder, _, _, _, _ = calibrated_dir
    from huggingface_hub import HfApi

    model = BayesianExpectationForSequenceClassification.from_pretrained(folder)
    url = model.push_to_hub("user/via-method")
    assert "user/via-method" in url
    files = set(HfApi().list_repo_files("user/via-method"))
    assert {"model.safetensors", "config.json", "calibration.json", "modeling_bayesian_expectation.py", "README.md",
            "reliability_diagram.png", "tokenizer.json", "tokenizer_config.json"} <= files
    assert len(HfApi().list_repo_commits("user/via-method")) == 2  # the initial commit + ONE upload
