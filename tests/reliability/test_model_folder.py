"""Model folders that gave wrong answers without an error (issue 11, items 6-11 and 13): each case is refused
with a clear error or repaired, never loaded into confident wrong answers."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from _folders import build_model, observe, save_folder  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory, minilm_tokenizer):
    """Two tiny calibrated models with different weights (seed 0 and 1) and a saved folder of the first."""
    work = tmp_path_factory.mktemp("models")
    old, new = build_model(minilm_tokenizer, work, seed=0), build_model(minilm_tokenizer, work, seed=1)
    folder = save_folder(old, minilm_tokenizer, work / "saved")
    return {"old": old, "new": new, "folder": folder, "tokenizer": minilm_tokenizer, "expected": observe(folder)}


@pytest.fixture
def folder(models, tmp_path):
    """A fresh copy of the saved folder of the seed-0 model."""
    return shutil.copytree(models["folder"], tmp_path / "model")


def _load(path, **kwargs):
    from bayesian_hf import BayesianExpectationForSequenceClassification

    return BayesianExpectationForSequenceClassification.from_pretrained(path, **kwargs)


# ------------------------------------------------------------------------------------------- 6. tokenizer


def test_missing_tokenizer_json_is_refused_not_tokenised_to_unk(folder, models):
    from transformers import pipeline

    from bayesian_hf.folder_integrity import load_checked_tokenizer

    os.remove(Path(folder) / "tokenizer.json")
    with pytest.raises(ValueError, match="only 5 tokens .*tokenizer.json"):
        load_checked_tokenizer(folder, models["old"].config)
    with pytest.raises(ValueError, match="not the model's tokenizer"):
        pipeline("uncertainty-classification", model=_load(folder), tokenizer=str(folder))


def test_server_loader_refuses_a_tokenizer_that_is_not_the_models(folder, models):
    from bayesian_hf.backends import load_for_inference

    os.remove(Path(folder) / "tokenizer.json")
    with pytest.raises(ValueError, match="tokenizer"):
        load_for_inference(folder, backend="torch")


def test_tokenizer_check_catches_wrong_special_ids_and_oversized_vocab(models):
    from bayesian_hf.folder_integrity import check_tokenizer_matches

    config = models["old"].config.__class__.from_dict(models["old"].config.to_dict())
    tokenizer = models["tokenizer"]
    check_tokenizer_matches(config, tokenizer)  # the right tokenizer passes
    config.sep_token_id = 100
    with pytest.raises(ValueError, match=r"\[SEP\] the id 102 .*sep_token_id=100"):
        check_tokenizer_matches(config, tokenizer)
    config.sep_token_id, config.vocab_size = 102, 30000
    with pytest.raises(ValueError, match="30522 tokens .* 30000"):
        check_tokenizer_matches(config, tokenizer)


# ------------------------------------------------------------------------------------------- 7. labels


def test_id2label_disagreeing_with_label2id_is_refused(folder):
    path = Path(folder) / "config.json"
    config = json.loads(path.read_text())
    config["id2label"] = {"0": "positive", "1": "negative"}  # label2id still says negative=0
    path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="id2label .* and label2id .* disagree"):
        _load(folder)


def test_calibration_label_hash_covers_id2label(folder):
    from bayesian_hf.calibration import labels_hash, load_calibration

    doc = json.loads((Path(folder) / "calibration.json").read_text())
    assert doc["labels_hash"] == labels_hash({"negative": 0, "positive": 1}, {0: "negative", 1: "positive"})
    doc["id2label"] = {"0": "positive", "1": "negative"}
    (Path(folder) / "calibration.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="id2label .*label2id"):
        load_calibration(folder)


# ------------------------------------------------------------------------------------------- 8. atomic saves


def test_retraining_into_a_folder_drops_the_old_calibrator_card_and_diagram(folder, models):
    for name in ("README.md", "reliability_diagram.png", "risk_coverage.png", "posterior_fit.json"):
        (Path(folder) / name).write_text("about the OLD weights")
    (Path(folder) / "checkpoint-3").mkdir()
    (Path(folder) / "checkpoint-3" / "trainer_state.json").write_text("{}")
    (Path(folder) / "notes.txt").write_text("mine")
    new = models["new"]
    calibration, new.calibration = new.calibration, None
    try:
        new.save_pretrained(folder)  # new weights, no calibrator: nothing of the old model may describe them
    finally:
        new.calibration = calibration
    names = set(os.listdir(folder))
    assert not names & {"calibration.json", "README.md", "reliability_diagram.png", "risk_coverage.png",
                        "posterior_fit.json"}
    assert {"tokenizer.json", "notes.txt", "checkpoint-3"} <= names  # not bound to the weights: kept
    assert (Path(folder) / "checkpoint-3" / "trainer_state.json").exists()
    assert _load(folder).calibration is None
    leftovers = [p for p in Path(folder).parent.iterdir() if p.name.startswith(".")]
    assert leftovers == [] and not [n for n in names if n.endswith(".tmp")]


def test_resaving_the_same_weights_keeps_their_card(folder, models):
    old = models["old"]
    (Path(folder) / "README.md").write_text("card of these weights")
    calibration, old.calibration = old.calibration, None
    try:
        old.save_pretrained(folder)
    finally:
        old.calibration = calibration
    assert (Path(folder) / "README.md").read_text() == "card of these weights"
    assert _load(folder).calibration is not None  # bound to byte-identical weights: still valid


def test_calibration_bound_to_other_weights_is_refused(folder, models, tmp_path):
    other = save_folder(models["new"], models["tokenizer"], tmp_path / "other")
    shutil.copy(Path(folder) / "calibration.json", Path(other) / "calibration.json")
    with pytest.raises(ValueError, match="fit on other weights"):
        _load(other)
    with pytest.warns(UserWarning, match="fit on other weights"):
        assert _load(other, ignore_calibration_mismatch=True).calibration is not None


def test_save_calibration_file_refuses_a_folder_holding_other_weights(folder, models):
    with pytest.raises(ValueError, match="not this model's"):
        models["new"].save_calibration_file(folder)


def test_saving_into_the_working_directory_replaces_files_in_place(folder, models, monkeypatch):
    monkeypatch.chdir(folder)  # a folder that must not be renamed (also: a container volume's mount point)
    (Path(folder) / "README.md").write_text("about the OLD weights")
    models["new"].save_pretrained(".")
    assert Path(os.getcwd()) == Path(folder).resolve() and (Path(folder) / "tokenizer.json").exists()
    assert not (Path(folder) / "README.md").exists()
    assert not [n for n in os.listdir(folder) if n.startswith(".")]
    assert observe(folder) != models["expected"]  # the new weights with their own calibrator
    assert _load(folder).calibration is not None


def test_load_recovers_a_save_killed_between_its_renames(folder, models):
    aside = Path(folder).parent / f".{Path(folder).name}.old-999999-abcd"
    os.rename(folder, aside)  # what the non-atomic swap leaves when killed between its two renames
    (Path(folder).parent / f".{Path(folder).name}.saving-999999-abcd").mkdir()
    from bayesian_hf.folder_integrity import temp_name

    dead = temp_name("calibration.json").replace(f".{os.getpid()}-", ".999999-")  # a writer killed mid-write
    (aside / dead).write_text("{")
    assert observe(folder) == models["expected"]
    assert sorted(p.name for p in Path(folder).parent.iterdir()) == ["model"]
    assert not [n for n in os.listdir(folder) if n.endswith(".tmp")]


def test_push_ignores_temporary_and_replaced_files(folder):
    from bayesian_hf.hub import check_model_folder

    (Path(folder) / ".calibration.json.x1.tmp").write_bytes(b"0" * 100)
    (Path(folder) / "model.safetensors.tmp").write_bytes(b"0" * 100)
    (Path(folder) / "calibration.json.stale").write_text("{}")
    names = check_model_folder(folder)
    assert "model.safetensors" in names
    assert not [n for n in names if n.endswith((".tmp", ".stale"))]


# ------------------------------------------------------------------------------------------- 9. NaN weights


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_at_load(folder, value):
    from safetensors.torch import load_file, save_file

    path = Path(folder) / "model.safetensors"
    tensors = load_file(path)
    tensors["bert.encoder.layer.1.output.dense.weight"][0, 0] = value
    save_file(tensors, path, metadata={"format": "pt"})
    with pytest.raises(ValueError, match="NaN or Inf .*bert.encoder.layer.1.output.dense.weight"):
        _load(folder, load_calibration_file=False)


def test_server_reports_non_finite_weights_as_not_ready(folder):
    from fastapi.testclient import TestClient
    from safetensors.torch import load_file, save_file

    from bayesian_hf.serving import ServeSettings, create_app

    path = Path(folder) / "model.safetensors"
    tensors = load_file(path)
    tensors["classifier.weight"][0, 0] = float("nan")
    save_file(tensors, path, metadata={"format": "pt"})
    with TestClient(create_app(ServeSettings(model=str(folder)))) as client:
        deadline = time.monotonic() + 60
        ready = client.get("/ready")
        while "loading" in ready.text and time.monotonic() < deadline:
            time.sleep(0.2)
            ready = client.get("/ready")
    assert ready.status_code == 503 and "failed" in ready.text, ready.text


# ------------------------------------------------------------------------------------------- 10. calibration.json


def _edit_calibration(folder, edit):
    path = Path(folder) / "calibration.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["conformal"].update(qhat=-1), "qhat"),
        (lambda d: d["conformal"].update(qhat=1.5), "qhat"),
        (lambda d: d.update(decision_thresholds={"accept": 2.0, "review": 0.5}), "decision_thresholds"),
        (lambda d: d.update(method="magic"), "unknown calibration method"),
        (lambda d: d["parameters"].update(temperature=-3), "temperature"),
        (lambda d: d.update(parameters=[1, 2]), "parameters"),
        (lambda d: d.update(weights_sha256=5), "weights_sha256"),
    ],
)
def test_calibration_values_out_of_range_are_refused(folder, edit, message):
    _edit_calibration(folder, edit)
    with pytest.raises(ValueError, match=message):
        _load(folder)


@pytest.mark.parametrize(
    "content",
    [
        b"[" * 200_000,  # RecursionError inside json
        b'{"format": "bayesian_hf.calibration", "x": "\xff\xfe"}',  # not UTF-8
        b'{"format": "bayesian_hf.calibration", "format_version": 1, "method": "temperature", "parameters": {"method":'
        b' "temperature", "num_classes": 2, "temperature": [1]}, "fit_metrics": {}, "num_samples": 1,'
        b' "library_version": "x", "label_hash": "' + b"0" * 64 + b'"}',  # wrong type deep inside
    ],
    ids=["deep-nesting", "not-utf8", "wrong-type"],
)
def test_calibration_parse_errors_are_value_errors_naming_the_file(folder, content):
    from bayesian_hf.calibration import load_calibration

    path = Path(folder) / "calibration.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="calibration.json"):
        load_calibration(path)


def test_oversized_calibration_is_refused_before_it_is_read(folder):
    from bayesian_hf.calibration import MAX_CALIBRATION_BYTES

    path = _edit_calibration(folder, lambda d: d.update(padding=[0.5] * 1_500_000))
    assert path.stat().st_size > MAX_CALIBRATION_BYTES
    with pytest.raises(ValueError, match="over the 4194304-byte limit"):
        _load(folder)


# ------------------------------------------------------------------------------------------- 11. pushed files


def test_pushed_files_hold_no_absolute_local_path(models, tmp_path, local_hub):
    import numpy as np
    from huggingface_hub import snapshot_download

    from bayesian_hf.hub import push_model_folder, write_model_card

    model = models["old"]
    assert os.path.isabs(model.config.base_model_name_or_path)  # from_bert of a local tiny BERT
    folder = save_folder(model, models["tokenizer"], tmp_path / "to-push")
    probs = np.array([[0.8, 0.2], [0.3, 0.7]])
    write_model_card(folder, model, eval_metrics={"accuracy": 1.0}, eval_probs=probs, eval_labels=np.array([0, 1]),
                     dataset_name="tiny")
    Path(folder, "summary.json").write_text(json.dumps({"x": 1}))
    push_model_folder(folder, "user/no-paths")
    pulled = Path(snapshot_download("user/no-paths", cache_dir=tmp_path / "cache"))
    local = str(tmp_path)
    leaks = [p.name for p in pulled.rglob("*") if p.is_file() and local.encode() in p.read_bytes()]
    assert leaks == []
    assert json.loads((pulled / "config.json").read_text())["base_model_name_or_path"] == "bert-0"


def test_training_outputs_hold_no_absolute_local_path(tmp_path, minilm_path):
    from _train_helpers import make_tiny_bert, tiny_args

    from bayesian_hf.training import main

    bert = make_tiny_bert(tmp_path / "bert", minilm_path)
    out = tmp_path / "run"
    main(tiny_args(bert, out))
    for name in ("config.json", "summary.json", "training_args.json"):
        assert str(tmp_path) not in (out / name).read_text(), name


# ------------------------------------------------------------------------------------------- 13. CSV encoding


def test_non_utf8_csv_gives_one_clear_line(tmp_path, capfd):
    from bayesian_hf.cli import main

    data = tmp_path / "latin1.csv"
    data.write_bytes("text,label\n\"Café très bon.\",positive\n\"Mauvais.\",negative\n".encode("latin-1"))
    capfd.readouterr()
    status = main(["train", "--train_file", str(data), "--output_dir", str(tmp_path / "out"), "--max_steps", "1"])
    err = capfd.readouterr().err
    assert status == 2, err[-2000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert "latin1.csv is not UTF-8" in lines[0] and "line 2" in lines[0]
