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
    assert set(report) >= {"recent_ece", "fit_ece", "drift", "recalibrate", "recommendation"}
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
