"""Shadow comparison in the HTTP service: a second model classifies the same texts after each response and its
disagreement is counted in /metrics; the responses are exactly those of a server without a shadow."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import pytest
from _server_helpers import ThreadServer, free_port, make_tiny_served_model  # noqa: E402

from bayesian_hf.serving import ServeSettings  # noqa: E402
from bayesian_hf.serving.metrics import sample_value  # noqa: E402

TEXTS = ["The food was great. The staff were kind!", "Dreadful film. The plot made no sense.", "Fine.",
         "Lovely room with a view. The breakfast was cold.", "The service was slow. We will not be back."]


@pytest.fixture(scope="module")
def folders(tmp_path_factory, minilm_path):
    import torch

    from bayesian_hf import BayesianExpectationForSequenceClassification

    root = tmp_path_factory.mktemp("shadow")
    served = Path(make_tiny_served_model(root, minilm_path)["path"])
    contrary = root / "contrary"
    shutil.copytree(served, contrary)
    model = BayesianExpectationForSequenceClassification.from_pretrained(contrary, load_calibration_file=False)
    with torch.no_grad():  # always the same, confident label
        model.classifier.bias.copy_(torch.tensor([6.0, -6.0]))
    model.save_pretrained(contrary)
    # the copied calibration.json belonged to the old weights: the save must not keep it
    assert not (contrary / "calibration.json").exists()
    return {"served": str(served), "contrary": str(contrary)}


def _serve(**overrides):
    values = dict(port=free_port(), torch_threads=1, graceful_timeout_s=10, max_wait_ms=1)
    values.update(overrides)
    return ThreadServer(ServeSettings(**values))


def _wait_for(url: str, name: str, count: float, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = httpx.get(url + "/metrics", timeout=30).text
        if (sample_value(text, name) or 0) >= count or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


def test_shadow_counts_disagreement_without_changing_responses(folders):
    with _serve(model=folders["served"]) as server:
        alone = httpx.post(server.url + "/batch-predict", json={"texts": TEXTS}, timeout=60).json()["results"]
    with _serve(model=folders["served"], shadow_model=folders["contrary"], shadow_fraction=1.0) as server:
        with_shadow = httpx.post(server.url + "/batch-predict", json={"texts": TEXTS}, timeout=60).json()["results"]
        text = _wait_for(server.url, "bayesian_hf_shadow_predictions_total", len(TEXTS))
        assert sample_value(text, "bayesian_hf_shadow_predictions_total") == len(TEXTS)
        served_labels = [r["label"] for r in with_shadow]
        disagreements = sum(label != "negative" for label in served_labels)  # the shadow always says "negative"
        assert sample_value(text, "bayesian_hf_shadow_label_disagreements_total") == disagreements
        assert sample_value(text, "bayesian_hf_shadow_errors_total") == 0
    assert with_shadow == alone


def test_identical_shadow_never_disagrees_and_settings_are_checked(folders):
    with _serve(model=folders["served"], shadow_model=folders["served"], shadow_fraction=1.0) as server:
        httpx.post(server.url + "/batch-predict", json={"texts": TEXTS}, timeout=60)
        text = _wait_for(server.url, "bayesian_hf_shadow_predictions_total", len(TEXTS))
        assert sample_value(text, "bayesian_hf_shadow_predictions_total") == len(TEXTS)
        assert sample_value(text, "bayesian_hf_shadow_label_disagreements_total") == 0
        assert sample_value(text, "bayesian_hf_shadow_decision_disagreements_total") == 0
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="shadow_fraction"):
            ServeSettings(model=folders["served"], shadow_fraction=bad)
