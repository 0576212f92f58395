"""The service routes with the thresholds stored in calibration.json (`bayesian-hf calibrate --target_risk`) when
neither the flags nor the request set them; flags and requests still override, key by key."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest
from _server_helpers import ThreadServer, free_port, make_tiny_served_model  # noqa: E402

from bayesian_hf.serving import ServeSettings  # noqa: E402

STORED = {"accept": 0.5, "review": 0.5, "target_risk": 0.4, "delta": 0.1, "coverage": 0.9,
          "risk_upper_bound": 0.39, "feasible": True}
TEXTS = ["The food was great. The staff were kind!", "Dreadful film. The plot made no sense.", "Fine."]


@pytest.fixture(scope="module")
def folders(tmp_path_factory, minilm_path):
    from bayesian_hf.calibration import load_calibration, save_calibration

    root = tmp_path_factory.mktemp("thresholds")
    plain = Path(make_tiny_served_model(root, minilm_path)["path"])
    stored = root / "stored"
    shutil.copytree(plain, stored)
    config = json.loads((stored / "config.json").read_text())
    loaded = load_calibration(stored)
    meta = loaded.metadata
    save_calibration(stored, loaded.calibrator, label2id=config["label2id"], fit_metrics=meta["fit_metrics"],
                     num_samples=meta["num_samples"], conformal=None,
                     extra={"selection": meta["selection"], "decision_thresholds": STORED})
    return {"plain": str(plain), "stored": str(stored)}


def _serve(path: str, **overrides):
    values = dict(model=path, port=free_port(), torch_threads=1, graceful_timeout_s=10, max_wait_ms=1)
    values.update(overrides)
    return ThreadServer(ServeSettings(**values))


def _decide(score: float, accept: float, review: float) -> str:
    return "accept" if score >= accept else "review" if score >= review else "escalate"


def test_stored_thresholds_are_the_default_and_can_be_overridden(folders):
    with _serve(folders["stored"]) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        info = client.get("/model-info").json()
        assert info["serving"]["default_thresholds"] == {"accept": 0.5, "review": 0.5}
        results = client.post("/batch-predict", json={"texts": TEXTS}).json()["results"]
        # a two-class score is >= 0.5: everything is accepted at the stored threshold (0.9 would accept none)
        assert [r["decision"] for r in results] == ["accept"] * len(TEXTS)
        # a request overrides one key; the other stays the stored one
        results = client.post("/batch-predict", json={"texts": TEXTS, "thresholds": {"accept": 0.99}}).json()["results"]
        for r in results:
            assert r["decision"] == _decide(r["score"], 0.99, 0.5)
    with _serve(folders["stored"], accept_threshold=0.95) as server:
        info = httpx.get(server.url + "/model-info", timeout=60).json()
        assert info["serving"]["default_thresholds"] == {"accept": 0.95, "review": 0.5}


def test_without_stored_thresholds_the_defaults_apply(folders):
    with _serve(folders["plain"]) as server:
        info = httpx.get(server.url + "/model-info", timeout=60).json()
        assert info["serving"]["default_thresholds"] == {"accept": 0.9, "review": 0.6}
