"""Helpers of the HTTP service tests: a tiny trained + calibrated model folder, and real uvicorn servers on
127.0.0.1 (in a background thread, or as a ``bayesian-hf serve`` subprocess)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

MODEL_CARD = """---
language: en
license: apache-2.0
model-index:
- name: tiny-bayesian-test
  results:
  - task:
      type: text-classification
    dataset:
      name: exchangeable-reviews
      type: embedded
      split: test
    metrics:
    - type: accuracy
      value: {accuracy}
      name: Accuracy
    - type: ece
      value: {ece}
      name: Expected calibration error
---
# tiny-bayesian-test

A 2-layer, hidden-32 BERT trained for a few optimizer steps, for the service tests.
"""


def make_tiny_served_model(path: str | os.PathLike[str], minilm_path: str, steps: int = 60, seed: int = 0) -> dict:
    """A tiny BERT (MiniLM tokenizer) converted with ``from_bert``, trained ``steps`` optimizer steps on the
    embedded reviews, calibrated on the calibration split (``fit_model_calibration``: chosen calibrator + LAC
    conformal sets) and saved with its tokenizer and a model card. Returns test-split figures."""
    import numpy as np
    from tiny_models import make_tiny_bert, train_tiny
    from transformers import AutoTokenizer

    from bayesian_hf import BayesianExpectationForSequenceClassification
    from bayesian_hf.data import load_exchangeable_reviews
    from bayesian_hf.evaluation import collect_outputs, fit_model_calibration
    from bayesian_hf.metrics import expected_calibration_error

    path = Path(path)
    out_dir = path / "model"
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    bert_dir = make_tiny_bert(path / "bert", tokenizer, seed=seed, labels=("negative", "positive"))
    model = BayesianExpectationForSequenceClassification.from_bert(
        bert_dir, num_labels=2, num_orderings=4, num_train_orderings=2, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0)
    data = load_exchangeable_reviews(train_size=640, validation_size=0, calibration_size=120, test_size=120,
                                     ood_size=0, seed=seed)
    train_tiny(model, tokenizer, data["train"], steps=steps, seed=seed)
    calibration, _ = fit_model_calibration(model, tokenizer, data["calibration"]["text"], data["calibration"]["label"],
                                           conformal_score="lac", seed=seed)
    test_labels = np.asarray(data["test"]["label"])
    probs = collect_outputs(model, tokenizer, data["test"]["text"], progress=False)["calibrated_probs"]
    accuracy = float((probs.argmax(1) == test_labels).mean())
    ece = float(expected_calibration_error(probs, test_labels))
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "README.md").write_text(MODEL_CARD.format(accuracy=round(accuracy, 4), ece=round(ece, 4)))
    return {"path": str(out_dir), "accuracy": accuracy, "ece": ece, "calibrator": calibration.calibrator.method,
            "test_texts": list(data["test"]["text"]), "majority": float(max(np.mean(test_labels), 1 - np.mean(test_labels)))}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThreadServer:
    """``create_app(settings)`` served by a real uvicorn server in a background thread on 127.0.0.1."""

    def __init__(self, settings: Any, *, loader: Any = None, wait_ready: bool = True) -> None:
        from bayesian_hf.serving.app import create_app

        self.app = create_app(settings, loader=loader)
        self.server = self.build_server(settings)
        self.url = f"http://127.0.0.1:{settings.port}"
        self.port = settings.port
        self.state = self.app.state.service
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{settings.port}", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        if wait_ready:
            wait_until_ready(self.url)

    def build_server(self, settings: Any) -> Any:
        """A plain ``uvicorn.Server`` on 127.0.0.1 (subclasses serve through other setups)."""
        import uvicorn

        config = uvicorn.Config(self.app, host="127.0.0.1", port=settings.port, log_level="warning",
                                access_log=False, lifespan="on",
                                timeout_graceful_shutdown=int(settings.graceful_timeout_s))
        return uvicorn.Server(config)

    def stop(self, timeout: float = 30) -> None:
        """What uvicorn's SIGTERM handler does: stop accepting, finish in-flight requests, run the lifespan end."""
        import signal

        self.server.handle_exit(signal.SIGTERM, None)
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise RuntimeError("uvicorn did not stop")

    def __enter__(self) -> ThreadServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.thread.is_alive():
            self.stop()


def wait_until_ready(url: str, timeout: float = 60, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            last = httpx.get(url + "/ready", timeout=2)
            if last.status_code == 200:
                return
            if last.json().get("status") == "failed":
                raise RuntimeError(f"model failed to load: {last.text}")
        time.sleep(0.1)
    raise RuntimeError(f"server at {url} not ready after {timeout} s (last answer: {last and last.text})")


def start_cli_server(model_path: str, port: int, *flags: str, env: dict[str, str] | None = None,
                     log_path: str | os.PathLike[str] | None = None) -> subprocess.Popen:
    """``python -m bayesian_hf.cli serve --model PATH --port PORT FLAGS`` (stdout+stderr to ``log_path``)."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, "-m", "bayesian_hf.cli", "serve", "--model", model_path, "--host", "127.0.0.1",
         "--port", str(port), *flags],
        stdout=log, stderr=subprocess.STDOUT, env=full_env,
    )
