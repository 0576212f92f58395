"""The `bayesian-hf` command end to end: calibrate, drift, push, demo, and a shortened quickstart."""

from __future__ import annotations

import json

import pytest

from bayesian_hf.cli import main


@pytest.fixture(scope="module")
def saved_model(tiny_trained_model, tmp_path_factory):
    model, tokenizer, _ = tiny_trained_model
    folder = tmp_path_factory.mktemp("cli-model")
    model.set_calibration(None)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_calibrate_drift_and_push(saved_model, tmp_path, capsys, local_hub):
    assert main(["calibrate", "--model", str(saved_model), "--alpha", "0.2"]) == 0
    printed = capsys.readouterr().out
    assert "Calibrator:" in printed and "Conformal APS sets" in printed
    doc = json.loads((saved_model / "calibration.json").read_text())
    assert doc["conformal"]["alpha"] == pytest.approx(0.2)
    assert (saved_model / "README.md").exists() and (saved_model / "reliability_diagram.png").exists()

    recent = tmp_path / "recent.csv"
    recent.write_text("text,label\n" + "\n".join(
        f"\"The soup was lovely. The staff were kind {i}!\",{'positive' if i % 3 else 'negative'}" for i in range(40)
    ) + "\n")
    assert main(["drift", "--model", str(saved_model), "--data", str(recent)]) in (0,)
    report = json.loads(capsys.readouterr().out)
    assert set(report["calibration"]) >= {"recent_ece", "fit_ece", "drift", "recalibrate", "recommendation"}
    assert report["labelled"] and report["drift"]["num_samples"] == 40
    assert set(report["drift"]["signals"]) >= {"confidence", "epistemic", "aleatoric", "order_dispersion", "length"}
    # without labels: the unsupervised statistics only; the repetitive recent texts are far from the reference
    unlabelled = tmp_path / "unlabelled.csv"
    unlabelled.write_text("text\n" + "\n".join(f"\"The soup was lovely. The staff were kind {i}!\"" for i in range(150)) + "\n")
    assert main(["drift", "--model", str(saved_model), "--data", str(unlabelled), "--fail_on_drift"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert not report["labelled"] and "calibration" not in report and report["drift"]["alert"] is True
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nhello there.,maybe\n")
    assert main(["drift", "--model", str(saved_model), "--data", str(bad)]) == 2
    assert "unknown to the model" in capsys.readouterr().err

    leftover = saved_model / "checkpoint-1" / "optimizer.pt"  # a Trainer checkpoint in the output folder
    leftover.parent.mkdir()
    leftover.write_bytes(b"\x80\x04pickled optimizer")
    try:
        assert main(["push", "--model", str(saved_model), "--repo_id", "user/cli-model"]) == 0
    finally:
        leftover.unlink()
        leftover.parent.rmdir()
    from huggingface_hub import HfApi

    files = HfApi().list_repo_files("user/cli-model")
    assert "calibration.json" in files
    assert not [f for f in files if f.startswith("checkpoint-")]  # training leftovers are never pushed


def test_push_refuses_pickles_and_incomplete_folders(saved_model, tmp_path, capsys):
    assert main(["push", "--model", str(tmp_path), "--repo_id", "user/x"]) == 2
    assert "missing" in capsys.readouterr().err
    (saved_model / "extra.bin").write_bytes(b"\x80\x04junk")
    try:
        assert main(["push", "--model", str(saved_model), "--repo_id", "user/x"]) == 2
        assert "pickle" in capsys.readouterr().err
    finally:
        (saved_model / "extra.bin").unlink()


def test_calibrate_reports_a_missing_model_clearly(tmp_path, capsys):
    assert main(["calibrate", "--model", str(tmp_path / "nope")]) == 2
    assert "error" in capsys.readouterr().err


@pytest.mark.slow
def test_quickstart_main_job_end_to_end(tmp_path, capsys):
    """The README's main command, shortened: train, evaluate, calibrate, save, reload, pipeline()."""
    out = tmp_path / "quick"
    code = main([
        "quickstart", "--output_dir", str(out), "--max_steps", "4", "--eval_steps", "4", "--save_steps", "4",
        "--logging_steps", "2", "--embedded_train_size", "64", "--embedded_validation_size", "40",
        "--embedded_calibration_size", "60", "--embedded_test_size", "60", "--embedded_ood_size", "20",
        "--report_to", "none",
    ])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Calibrator:" in printed and "pipeline() on new texts" in printed
    assert "decision" in printed
    model_dir = next(p.parent for p in out.rglob("calibration.json"))
    assert (model_dir / "model.safetensors").exists() and (model_dir / "README.md").exists()


def test_recalibrate_if_better_keeps_or_replaces_atomically(tiny_trained_model, tmp_path, capsys):
    import copy

    from bayesian_hf.calibration import TemperatureScaling, calibrator_from_dict, load_calibration, save_calibration

    model, tokenizer, _ = tiny_trained_model
    model = copy.deepcopy(model)
    model.set_calibration(None)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert main(["calibrate", "--model", str(tmp_path)]) == 0
    path = tmp_path / "calibration.json"
    first = path.read_bytes()
    # the same data and seed: the refit is not better, the file is left as it was and no backup is made
    assert main(["calibrate", "--model", str(tmp_path), "--recalibrate-if-better"]) == 0
    assert "keeping the current one" in capsys.readouterr().out
    assert path.read_bytes() == first and not (tmp_path / "calibration.json.bak").exists()
    # a badly over-confident current calibrator: the refit wins, the old file becomes the backup
    fitted = TemperatureScaling().fit([[2.0, -2.0], [-1.0, 1.0], [0.5, 0.0]], [0, 1, 1]).to_dict()
    bad = calibrator_from_dict({**fitted, "temperature": 0.02})
    save_calibration(path, bad, label2id=dict(model.config.label2id), fit_metrics={}, num_samples=3)
    bad_bytes = path.read_bytes()
    assert main(["calibrate", "--model", str(tmp_path), "--recalibrate-if-better"]) == 0
    assert "replacing calibration.json" in capsys.readouterr().out
    assert (tmp_path / "calibration.json.bak").read_bytes() == bad_bytes
    assert load_calibration(path).calibrator.to_dict() != bad.to_dict()


def test_calibrate_for_a_target_risk_then_report(tiny_trained_model, tmp_path, capsys):
    import copy

    model, tokenizer, data = tiny_trained_model
    model = copy.deepcopy(model)
    model.set_calibration(None)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert main(["calibrate", "--model", str(tmp_path), "--target_risk", "0.45", "--delta", "0.2"]) == 0
    printed = capsys.readouterr().out
    assert "accepting" in printed and "Decision thresholds for target risk" in printed
    doc = json.loads((tmp_path / "calibration.json").read_text())
    stored = doc["decision_thresholds"]
    assert stored["feasible"] and stored["target_risk"] == 0.45 and 0.5 <= stored["accept"] <= 1
    assert stored["risk_upper_bound"] <= 0.45 and doc["risk_coverage"] and doc["drift_reference"]
    card = (tmp_path / "README.md").read_text()
    assert "## Routing to humans" in card and "risk_coverage.png" in card and (tmp_path / "risk_coverage.png").exists()

    names = data["test"].features["label"].names
    test = data["test"].select(range(150))
    labelled = tmp_path / "labelled.jsonl"
    labelled.write_text("\n".join(json.dumps({"text": t, "label": names[y]}) for t, y in zip(test["text"], test["label"])))
    out_dir = tmp_path / "report"
    assert main(["report", "--model", str(tmp_path), "--data", str(labelled), "--output_dir", str(out_dir)]) == 0
    assert "At the stored accept threshold" in capsys.readouterr().out
    report = json.loads((out_dir / "risk_coverage_report.json").read_text())
    assert report["num_samples"] == 150 and report["risk_coverage"][-1]["coverage"] == 1.0
    assert (out_dir / "risk_coverage_report.png").stat().st_size > 1000

    # an impossible target: said plainly, and nothing is auto-accepted
    assert main(["calibrate", "--model", str(tmp_path), "--target_risk", "0.001"]) == 0
    assert "cannot be guaranteed" in capsys.readouterr().out
    assert json.loads((tmp_path / "calibration.json").read_text())["decision_thresholds"]["accept"] > 1
