"""Helpers of the server reliability tests: a tiny (untrained) model folder and real uvicorn servers on 127.0.0.1
built exactly as ``bayesian-hf serve`` builds them (``serving.server.build_server``), in a background thread."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

from _server_helpers import ThreadServer, free_port, start_cli_server, wait_until_ready  # noqa: E402,F401


def make_tiny_folder(path: Path, minilm_path: str, **config: Any) -> str:
    """A random tiny BERT (MiniLM vocabulary, 128 positions) converted with ``from_bert`` and saved with its
    tokenizer: enough to exercise the service, in a second. ``config`` overrides the Bayesian config."""
    import torch
    from tiny_models import make_tiny_bert
    from transformers import AutoTokenizer

    from bayesian_hf import BayesianExpectationForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    bert = make_tiny_bert(path / "bert", tokenizer, labels=("negative", "positive"))
    torch.manual_seed(0)
    options = dict(num_labels=2, num_orderings=4, num_train_orderings=2)
    options.update(config)
    model = BayesianExpectationForSequenceClassification.from_bert(bert, **options)
    out = path / "model"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


class GuardedServer(ThreadServer):
    """``create_app(settings)`` served by ``build_server`` (the CLI's uvicorn setup) in a background thread;
    ``overrides`` are uvicorn options (e.g. ``access_log=True``)."""

    def __init__(self, settings: Any, *, loader: Any = None, wait_ready: bool = True, **overrides: Any) -> None:
        self.overrides = overrides
        super().__init__(settings, loader=loader, wait_ready=wait_ready)

    def build_server(self, settings: Any) -> Any:
        options = dict(log_level="warning", access_log=False)
        options.update(self.overrides)
        try:
            from bayesian_hf.serving.server import build_server
        except ImportError:  # a checkout before serving/server.py (to see these tests fail on it)
            import uvicorn

            options = dict(host="127.0.0.1", port=settings.port, lifespan="on", **options)
            return uvicorn.Server(uvicorn.Config(self.app, **options))
        return build_server(self.app, settings, **options)


def raw_exchange(port: int, data: bytes, *, read_timeout: float = 10.0) -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes it (or ``read_timeout``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as sock:
        sock.sendall(data)
        return read_until_closed(sock, read_timeout)


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def json_body(raw: bytes) -> dict:
    import json

    head, _, body = raw.partition(b"\r\n\r\n")
    return json.loads(body)
