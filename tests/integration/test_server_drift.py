"""Drift monitoring in the HTTP service: a real uvicorn server on 127.0.0.1 whose model has a ``drift_reference``
in its calibration.json exposes ``GET /drift``, the drift gauges in ``/metrics`` and the drift status in
``/model-info``; in-distribution traffic keeps the PSI small, the embedded out-of-distribution split raises the
alert."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest
from _server_helpers import ThreadServer, free_port, make_tiny_served_model  # noqa: E402

from bayesian_hf.serving import ServeSettings  # noqa: E402
from bayesian_hf.serving.metrics import sample_value  # noqa: E402

KEY = "drift-test-key-aaaaaaaaaaaaaaaa"
WINDOW = 300
SIGNALS = ("confidence", "epistemic", "aleatoric", "order_dispersion", "length")


def _texts(split: str, size: int, seed: int) -> list[str]:
    from bayesian_hf.data import load_exchangeable_reviews

    sizes = {"train_size": 0, "validation_size": 0, "calibration_size": 0, "test_size": 0, "ood_size": 0}
    sizes[f"{split}_size"] = size
    return list(load_exchangeable_reviews(**sizes, seed=seed)[split]["text"])


def _rewrite_calibration(folder: Path, drift_reference: dict) -> None:
    """calibration.json with the same calibrator, conformal predictor and selection, plus ``drift_reference``
    (``save_pretrained`` keeps only "selection" and "fit_split" of the metadata)."""
    from bayesian_hf.calibration import load_calibration, save_calibration

    config = json.loads((folder / "config.json").read_text())
    loaded = load_calibration(folder)
    meta = loaded.metadata
    save_calibration(folder, loaded.calibrator, label2id=config["label2id"], fit_metrics=meta["fit_metrics"],
                     num_samples=meta["num_samples"], conformal=loaded.conformal,
                     extra={"selection": meta["selection"],
                            **({"drift_reference": drift_reference} if drift_reference is not None else {})})


@pytest.fixture(scope="module")
def models(tmp_path_factory, minilm_path):
    """The tiny served model three times: without a drift reference, with one built from 1000 in-distribution
    texts (``build_sketch`` on ``collect_outputs``, with the true labels), and with a corrupt one."""
    import torch
    from transformers import AutoTokenizer

    from bayesian_hf import BayesianExpectationForSequenceClassification
    from bayesian_hf.data import load_exchangeable_reviews
    from bayesian_hf.drift import build_sketch
    from bayesian_hf.evaluation import collect_outputs

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("drift")
        plain = Path(make_tiny_served_model(root, minilm_path)["path"])
        _rewrite_calibration(plain, None)  # `calibrate` stores a reference now: this model is the one without
        model = BayesianExpectationForSequenceClassification.from_pretrained(plain)
        tokenizer = AutoTokenizer.from_pretrained(plain)
        reference = load_exchangeable_reviews(train_size=0, validation_size=1000, calibration_size=0, test_size=0,
                                              ood_size=0, seed=7)["validation"]
        outputs = collect_outputs(model, tokenizer, reference["text"], progress=False)
        sketch = build_sketch(outputs, [len(t) for t in reference["text"]], labels=reference["label"]).to_dict()
    finally:
        torch.set_num_threads(threads)
    with_reference = root / "with-reference"
    shutil.copytree(plain, with_reference)
    _rewrite_calibration(with_reference, sketch)
    corrupt = root / "corrupt-reference"
    shutil.copytree(plain, corrupt)
    broken = json.loads(json.dumps(sketch))
    broken["signals"]["length"]["shares"][0] += 0.5  # shares no longer sum to 1
    _rewrite_calibration(corrupt, broken)
    return {"plain": str(plain), "reference": str(with_reference), "corrupt": str(corrupt)}


@pytest.fixture(scope="module")
def key_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("drift-keys") / "keys.txt"
    path.write_text(KEY + "\n")
    path.chmod(0o600)
    return str(path)


def settings_for(model_path: str, **overrides) -> ServeSettings:
    values = dict(model=model_path, port=free_port(), torch_threads=1, graceful_timeout_s=10, max_wait_ms=1)
    values.update(overrides)
    return ServeSettings(**values)


def _send(client: httpx.Client, texts: list[str]) -> None:
    for start in range(0, len(texts), 50):
        resp = client.post("/batch-predict", json={"texts": texts[start:start + 50], "return_uncertainty": False})
        assert resp.status_code == 200, resp.text


def _metrics(url: str) -> str:
    resp = httpx.get(url + "/metrics", headers={"X-API-Key": KEY}, timeout=30)  # keyed servers need it
    assert resp.status_code == 200
    return resp.text


def test_drift_endpoint_gauges_and_alert(models, key_file):
    settings = settings_for(models["reference"], api_key_file=key_file, drift_window=WINDOW)
    with ThreadServer(settings) as server, \
            httpx.Client(base_url=server.url, headers={"X-API-Key": KEY}, timeout=120) as client:
        # /drift follows the /model-info convention: a key is needed when the server has keys
        assert httpx.get(server.url + "/drift").status_code == 401
        assert httpx.get(server.url + "/drift", headers={"X-API-Key": "wrong-key-wrong-key-wrong"}).status_code == 403

        empty = client.get("/drift").json()
        assert empty["enabled"] is True and empty["alert"] is False
        assert empty["window_size"] == WINDOW and empty["window_samples"] == 0 and empty["psi_threshold"] == 0.2
        assert empty["min_samples"] == 100 and empty["length_unit"] == "characters"
        assert empty["statistics"]["num_samples"] == 0 and empty["statistics"]["psi"] == {}
        info = client.get("/model-info").json()
        assert info["drift"] == {"enabled": True, "alert": False, "psi_threshold": 0.2, "window_size": WINDOW,
                                 "window_samples": 0, "drifted_signals": []}

        # in-distribution traffic (texts the reference never saw): every PSI small, no alert
        _send(client, _texts("validation", WINDOW, seed=8))
        report = client.get("/drift").json()
        stats = report["statistics"]
        assert report["window_samples"] == WINDOW == stats["num_samples"] and report["total_observed"] == WINDOW
        assert set(stats["signals"]) == set(SIGNALS) and set(stats["psi"]) == set(SIGNALS) | {"label"}
        assert stats["max_psi"] < 0.15, stats["psi"]
        assert report["alert"] is False and stats["alert"] is False and stats["drifted_signals"] == []
        length = stats["signals"]["length"]
        assert 0 <= length["ks_statistic"] <= 1 and 0 <= length["ks_pvalue"] <= 1 and length["wasserstein"] >= 0
        assert stats["label_shift"]["total_variation"] < 0.1 and stats["label_shift"]["bbse"] is not None
        text = _metrics(server.url)
        assert sample_value(text, "bayesian_hf_drift_enabled") == 1
        assert sample_value(text, "bayesian_hf_drift_alert") == 0
        assert sample_value(text, "bayesian_hf_drift_window_samples") == WINDOW
        for signal in (*SIGNALS, "label"):
            assert f'bayesian_hf_drift_psi{{signal="{signal}"}}' in text
            assert sample_value(text, "bayesian_hf_drift_psi", {"signal": signal}) == pytest.approx(
                stats["psi"][signal])

        # the embedded out-of-distribution split (spacecraft maintenance logs) fills the window: alert
        _send(client, _texts("ood", WINDOW, seed=8))
        report = client.get("/drift").json()
        stats = report["statistics"]
        assert report["total_observed"] == 2 * WINDOW and report["window_samples"] == WINDOW  # bounded window
        assert report["alert"] is True and stats["drifted_signals"], stats["psi"]
        assert stats["max_psi"] > 0.2 and "length" in stats["drifted_signals"]
        assert stats["signals"]["length"]["window_mean"] > stats["signals"]["length"]["reference_mean"]
        assert stats["signals"]["length"]["ks_pvalue"] < 1e-6
        text = _metrics(server.url)
        assert sample_value(text, "bayesian_hf_drift_alert") == 1
        assert sample_value(text, "bayesian_hf_drift_psi", {"signal": "length"}) > 0.2
        info = client.get("/model-info").json()["drift"]
        assert info["alert"] is True and info["max_psi"] == pytest.approx(stats["max_psi"])
        assert info["drifted_signals"] == stats["drifted_signals"]


def test_drift_is_off_without_a_reference(models):
    with ThreadServer(settings_for(models["plain"])) as server:
        report = httpx.get(server.url + "/drift", timeout=30)
        assert report.status_code == 200
        body = report.json()
        assert body["enabled"] is False and body["alert"] is False and "no drift_reference" in body["reason"]
        text = "The pasta was superb. The service was slow!"
        assert httpx.post(server.url + "/predict", json={"text": text}, timeout=30).status_code == 200
        assert httpx.get(server.url + "/model-info", timeout=30).json()["drift"] == {
            "enabled": False, "alert": False, "psi_threshold": 0.2}
        metrics = _metrics(server.url)
        assert sample_value(metrics, "bayesian_hf_drift_enabled") == 0
        assert "bayesian_hf_drift_psi{" not in metrics


def test_a_corrupt_reference_turns_drift_off_but_the_model_serves(models, caplog):
    with caplog.at_level("WARNING", logger="bayesian_hf.serving"), \
            ThreadServer(settings_for(models["corrupt"])) as server:
        body = httpx.get(server.url + "/drift", timeout=30).json()
        assert body["enabled"] is False and body["reason"].startswith("invalid drift_reference")
        assert "signals.length.shares" in body["reason"]
        resp = httpx.post(server.url + "/predict", json={"text": "Lovely room. Cold breakfast."}, timeout=30)
        assert resp.status_code == 200
    assert any("drift_reference" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("overrides", [{"drift_window": 0}, {"drift_window": 2_000_000},
                                       {"drift_psi_threshold": 0.0}, {"drift_psi_threshold": float("nan")}])
def test_bad_drift_settings_are_refused(overrides):
    with pytest.raises(ValueError, match="drift_"):
        ServeSettings(model="m", **overrides)


def test_drift_settings_from_flags_and_environment():
    settings = ServeSettings.from_sources({"model": "m", "drift_window": 500},
                                          {"BAYESIAN_HF_DRIFT_PSI_THRESHOLD": "0.25", "BAYESIAN_HF_DRIFT_WINDOW": "9"})
    assert settings.drift_window == 500 and settings.drift_psi_threshold == 0.25
    assert ServeSettings(model="m").drift_window == 2000 and ServeSettings(model="m").drift_psi_threshold == 0.2
