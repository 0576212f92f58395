"""`bayesian-hf compare`: two real model folders on the same labelled file, end to end."""

from __future__ import annotations

import copy
import json

import torch

from bayesian_hf.cli import main


def test_compare_cli_prefers_the_intact_model(tiny_trained_model, tmp_path, capsys):
    model, tokenizer, data = tiny_trained_model
    a, b = tmp_path / "a", tmp_path / "b"
    good = copy.deepcopy(model)
    good.set_calibration(None)
    good.reset_posterior()
    good.save_pretrained(a)
    tokenizer.save_pretrained(a)
    broken = copy.deepcopy(good)
    with torch.no_grad():  # a model that is confidently sure of one class whatever the text
        broken.classifier.bias.copy_(torch.tensor([4.0, -4.0]))
    broken.save_pretrained(b)
    tokenizer.save_pretrained(b)
    test = data["test"].select(range(120))
    names = data["test"].features["label"].names
    rows = [json.dumps({"text": t, "label": names[y]}) for t, y in zip(test["text"], test["label"])]
    file = tmp_path / "test.jsonl"
    file.write_text("\n".join(rows), encoding="utf-8")
    out_json = tmp_path / "report.json"
    assert main(["compare", "--model", str(a), "--model", str(b), "--data", str(file), "--num_resamples", "200",
                 "--output", str(out_json)]) == 0
    printed = capsys.readouterr().out
    assert "verdict: A is better" in printed
    report = json.loads(out_json.read_text(encoding="utf-8"))
    assert report["num_examples"] == 120 and report["metrics"]["nll"]["low"] > 0
    assert set(report["decision_mix"]["a"]) == {"accept", "review", "escalate"}
