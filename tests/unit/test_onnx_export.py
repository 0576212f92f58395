"""ONNX export and the ONNX Runtime backend on a tiny model: parity with PyTorch (tensors, pipeline records,
the HTTP service), INT8, the manifest's checksums and labels, input validation and the `export` command."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from conftest import make_batch  # noqa: E402

from bayesian_hf import BayesianExpectationForSequenceClassification  # noqa: E402
from bayesian_hf.backends import EXPORT_MANIFEST, load_for_inference  # noqa: E402
from bayesian_hf.onnx_export import ONNX_FILENAME, export_onnx, verify_export  # noqa: E402
from bayesian_hf.onnx_runtime import OnnxBayesianModel  # noqa: E402
from bayesian_hf.pipelines import predict  # noqa: E402

TEXTS = [
    "Fine.",  # one unit
    "The pasta was superb. Service was painfully slow! We will still come back.",
    "Dreadful film. The plot made no sense. The lead actor was wasted. The music was loud. I left early.",
    "Lovely room with a view. The breakfast was cold.",
    "Great. Bad. Okay. Nice. Awful. Superb. Meh. Fine. Good. Poor.",  # 10 units: sampled orderings
    "A long single sentence about a hotel stay that went on and on without any punctuation at all until here",
]
OUTPUTS = ("probs", "calibrated_probs", "epistemic", "aleatoric", "total", "order_dispersion")


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory, minilm_path):
    """A tiny BERT converted with from_bert, trained a few steps, with a (random, valid) Laplace posterior and a
    fitted calibrator + conformal sets, saved; plus its fp32 and INT8 exports."""
    from conftest import fit_random_posterior
    from tiny_models import make_tiny_bert, train_tiny
    from transformers import AutoTokenizer

    from bayesian_hf.data import load_exchangeable_reviews
    from bayesian_hf.evaluation import fit_model_calibration

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("onnx")
        tokenizer = AutoTokenizer.from_pretrained(minilm_path)
        bert = make_tiny_bert(root / "bert", tokenizer, labels=("negative", "positive"))
        model = BayesianExpectationForSequenceClassification.from_bert(
            bert, num_labels=2, num_orderings=4, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        data = load_exchangeable_reviews(train_size=320, validation_size=0, calibration_size=80, test_size=0,
                                         ood_size=0, seed=0)
        train_tiny(model, tokenizer, data["train"], steps=30)
        fit_random_posterior(model, num_examples=20)
        fit_model_calibration(model, tokenizer, data["calibration"]["text"], data["calibration"]["label"],
                              conformal_score="lac", seed=0)
        model_dir = root / "model"
        model.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        export_onnx(model_dir, root / "fp32")
        export_onnx(model_dir, root / "int8", quantize="int8")
    finally:
        torch.set_num_threads(threads)
    return {"model": str(model_dir), "fp32": str(root / "fp32"), "int8": str(root / "int8"),
            "texts": list(data["calibration"]["text"])}


@pytest.fixture(scope="module")
def backends(tiny_folders):
    torch_model, tokenizer = load_for_inference(tiny_folders["model"])
    onnx_model, _ = load_for_inference(tiny_folders["fp32"])
    return torch_model, onnx_model, tokenizer


def test_the_folders_and_the_auto_backend(tiny_folders, backends):
    torch_model, onnx_model, _ = backends
    assert isinstance(torch_model, BayesianExpectationForSequenceClassification)
    assert isinstance(onnx_model, OnnxBayesianModel)
    assert torch_model.has_posterior  # the exported predictive samples the Laplace posterior
    assert onnx_model.calibration is not None and onnx_model.calibration.conformal is not None
    assert onnx_model.calibration.calibrator.method == torch_model.calibration.calibrator.method
    folder = Path(tiny_folders["fp32"])
    for name in (ONNX_FILENAME, "config.json", "calibration.json", EXPORT_MANIFEST, "tokenizer.json"):
        assert (folder / name).is_file(), name
    manifest = json.loads((folder / EXPORT_MANIFEST).read_text())
    assert manifest["labels"] == ["negative", "positive"]
    assert manifest["quantization"] is None and manifest["posterior_fitted"] is True
    assert set(manifest["versions"]) >= {"torch", "onnx", "onnxruntime", "bayesian_hf"}
    assert json.loads((Path(tiny_folders["int8"]) / EXPORT_MANIFEST).read_text())["quantization"] == "int8-dynamic"


@pytest.mark.parametrize(
    "unit_lengths, pad_to, num_orderings",
    [
        ([[3, 4, 2], [5], [2] * 9], None, None),  # 3! <= k enumerated with zero-weight slots, 1 unit, 9 units sampled
        ([[6]], 40, None),  # one example, one unit, padding: a single ordering
        ([[2, 2]] * 5, None, None),
        ([[3] * 4, [1], [7, 1, 1]], 48, 3),  # other k, padding
        ([[2] * 12, [4, 4]], None, 1),  # k = 1
    ],
)
def test_fp32_matches_pytorch_on_tensors(backends, unit_lengths, pad_to, num_orderings):
    torch_model, onnx_model, tokenizer = backends
    batch = make_batch(unit_lengths, pad_to=pad_to)
    batch["input_ids"] = batch["input_ids"] + 1000  # real WordPiece ids (the tiny vocabulary ids are [unusedN])
    batch["input_ids"][batch["attention_mask"] == 0] = tokenizer.pad_token_id
    with torch.inference_mode():
        expected = torch_model(**batch, num_orderings=num_orderings)
    got = onnx_model(**batch, num_orderings=num_orderings)
    for name in (*OUTPUTS, "num_units"):
        np.testing.assert_allclose(getattr(got, name).double().numpy(), getattr(expected, name).double().numpy(),
                                   atol=1e-4, rtol=0, err_msg=name)
    assert torch.equal(got.probs.argmax(-1), expected.probs.argmax(-1))
    assert float(expected.epistemic.max()) > 0  # the posterior draws are in the graph


def test_pipeline_records_match(backends):
    torch_model, onnx_model, tokenizer = backends
    scores = [r["score"] for r in predict(torch_model, tokenizer, TEXTS)]
    # thresholds inside the range of the scores, so that all three decisions occur
    thresholds = {"accept": float(np.quantile(scores, 0.7)), "review": float(np.quantile(scores, 0.3))}
    for seed in (None, 7):
        expected = predict(torch_model, tokenizer, TEXTS, thresholds=thresholds, seed=seed, max_length=24)
        got = predict(onnx_model, tokenizer, TEXTS, thresholds=thresholds, seed=seed, max_length=24)
        assert len({r["decision"] for r in expected}) >= 2
        for e, g in zip(expected, got):
            assert set(e) == set(g)
            assert (g["label"], g["decision"], g["prediction_set"], g["truncated"], g["num_units"]) == \
                (e["label"], e["decision"], e["prediction_set"], e["truncated"], e["num_units"])
            for label, p in e["probabilities"].items():
                assert g["probabilities"][label] == pytest.approx(p, abs=1e-4)
            for key, value in e["uncertainty"].items():
                assert g["uncertainty"][key] == pytest.approx(value, abs=1e-4)


def test_int8_label_agreement(tiny_folders, backends):
    from bayesian_hf.evaluation import collect_outputs

    torch_model, _, tokenizer = backends
    int8, _ = load_for_inference(tiny_folders["int8"])
    texts = tiny_folders["texts"]
    expected = collect_outputs(torch_model, tokenizer, texts, progress=False)["probs"]
    got = collect_outputs(int8, tokenizer, texts, progress=False)["probs"]
    agreement = float((expected.argmax(1) == got.argmax(1)).mean())
    print(f"INT8 label agreement with PyTorch on {len(texts)} texts: {agreement:.3f}; "
          f"max |dp| {np.abs(expected - got).max():.4f}")
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)
    assert agreement >= 0.9
    import onnx

    nodes = onnx.load(str(Path(tiny_folders["int8"], ONNX_FILENAME))).graph.node
    assert any(n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for n in nodes)  # the blocks are quantised
    kept = [n for n in nodes if "/posterior/" in n.name or "/classifier/" in n.name]
    assert kept and not any("Integer" in n.op_type or "Quant" in n.op_type for n in kept)  # the head stays fp32
    assert Path(tiny_folders["int8"], ONNX_FILENAME).stat().st_size < Path(tiny_folders["fp32"], ONNX_FILENAME).stat().st_size


def _copy(folder: str, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(folder, target)
    return target


@pytest.mark.parametrize("name", [ONNX_FILENAME, "calibration.json"])
def test_a_tampered_file_is_refused(tiny_folders, tmp_path, name):
    folder = _copy(tiny_folders["fp32"], tmp_path)
    data = bytearray((folder / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (folder / name).write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"checksum mismatch for {name}"):
        load_for_inference(folder)


def test_missing_or_foreign_files_are_refused(tiny_folders, tmp_path):
    folder = _copy(tiny_folders["fp32"], tmp_path)
    (folder / "calibration.json").unlink()
    with pytest.raises(ValueError, match="calibration.json is missing"):
        verify_export(folder)
    manifest = json.loads((folder / EXPORT_MANIFEST).read_text())
    (folder / EXPORT_MANIFEST).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        verify_export(folder)
    manifest["sha256"]["calibration.json"] = None
    (folder / EXPORT_MANIFEST).write_text(json.dumps(manifest))
    verify_export(folder)  # an export without a calibrator is valid...
    shutil.copy(Path(tiny_folders["fp32"], "calibration.json"), folder / "calibration.json")
    with pytest.raises(ValueError, match="not part of the export"):  # ...but one cannot be slipped in afterwards
        verify_export(folder)


def test_mismatched_labels_are_refused(tiny_folders, tmp_path):
    folder = _copy(tiny_folders["fp32"], tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["id2label"] = {"0": "positive", "1": "negative"}
    config["label2id"] = {"positive": 0, "negative": 1}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="labels mismatch"):
        load_for_inference(folder)


def test_export_validates_its_request(tiny_folders, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_onnx(tmp_path / "nope", tmp_path / "out")
    with pytest.raises(ValueError, match="unknown export format"):
        export_onnx(tiny_folders["model"], tmp_path / "out", format="tflite")
    with pytest.raises(ValueError, match="unknown quantization"):
        export_onnx(tiny_folders["model"], tmp_path / "out", quantize="int4")
    with pytest.raises(ValueError, match="already an ONNX export"):
        export_onnx(tiny_folders["fp32"], tmp_path / "out")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        export_onnx(tiny_folders["model"], tmp_path / "busy")
    with pytest.raises(ValueError, match="holds no ONNX export"):
        load_for_inference(tiny_folders["model"], backend="onnx")
    with pytest.raises(ValueError, match="runs on the CPU"):
        load_for_inference(tiny_folders["fp32"], device="cuda")
    assert not any(p.name.startswith(".export-") for p in tmp_path.iterdir())  # nothing half-written


def test_export_command_end_to_end(tiny_folders, tmp_path, capsys):
    from bayesian_hf.cli import main

    out = tmp_path / "exported"
    assert main(["export", "--model", tiny_folders["model"], "--format", "onnx", "--output", str(out)]) == 0
    assert "Exported" in capsys.readouterr().out
    assert os.stat(out).st_mode & 0o005 == 0o005  # readable by a serving user other than the exporter (not 0700)
    model, tokenizer = load_for_inference(out)  # auto-detected
    assert isinstance(model, OnnxBayesianModel)
    assert predict(model, tokenizer, ["Nice place. Bad food."])[0]["label"] in ("negative", "positive")
    assert main(["export", "--model", str(tmp_path / "missing"), "--output", str(tmp_path / "o2")]) == 2
    with pytest.raises(SystemExit):
        main(["export", "--model", tiny_folders["model"], "--format", "tflite", "--output", str(tmp_path / "o3")])


def test_server_with_the_onnx_backend_answers_with_the_same_schema(tiny_folders):
    import httpx
    from _server_helpers import ThreadServer, free_port

    from bayesian_hf.serving import ServeSettings

    answers = {}
    for backend, folder in (("torch", tiny_folders["model"]), ("onnx", tiny_folders["fp32"])):
        settings = ServeSettings(model=folder, backend=backend, port=free_port(), torch_threads=1, graceful_timeout_s=5)
        with ThreadServer(settings) as server:
            one = httpx.post(server.url + "/predict", json={"text": TEXTS[1]}, timeout=60)
            batch = httpx.post(server.url + "/batch-predict", json={"texts": TEXTS[:4]}, timeout=60)
        assert one.status_code == 200, one.text
        assert batch.status_code == 200, batch.text
        answers[backend] = one.json(), batch.json()["results"]
    (t_one, t_batch), (o_one, o_batch) = answers["torch"], answers["onnx"]
    assert set(o_one) == set(t_one) and o_one["prediction_set"] == t_one["prediction_set"]
    assert (o_one["label"], o_one["decision"]) == (t_one["label"], t_one["decision"])
    assert o_one["score"] == pytest.approx(t_one["score"], abs=1e-4)
    assert [set(r) for r in o_batch] == [set(r) for r in t_batch]
    assert [(r["label"], r["decision"]) for r in o_batch] == [(r["label"], r["decision"]) for r in t_batch]
