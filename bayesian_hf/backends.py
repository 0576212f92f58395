"""The one place that loads a model folder for inference.

:func:`load_for_inference` returns ``(model, tokenizer)`` that :func:`bayesian_hf.pipelines.predict` accepts,
whatever the backend:

* ``"torch"``: :class:`~bayesian_hf.modeling_bayesian_expectation.BayesianExpectationForSequenceClassification`
  in eval mode (with its ``calibration.json``), optionally wrapped by ``torch.compile`` (``compile=True``; a
  failure to compile falls back to eager with a logged warning).
* ``"onnx"``: an ONNX Runtime session over a folder written by ``bayesian-hf export``
  (:class:`bayesian_hf.onnx_runtime.OnnxBayesianModel`), checked against the folder's export manifest.
* ``"auto"`` (default): ``"onnx"`` when the folder holds an export manifest, else ``"torch"``.

The server's loader, ``bayesian-hf predict`` and the benchmarks all come through here, so every caller runs the
same inference path.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Literal

import torch

from .folder_integrity import load_checked_tokenizer
from .modeling_bayesian_expectation import BayesianExpectationForSequenceClassification
from .onnx_manifest import EXPORT_MANIFEST, is_onnx_export
from .onnx_runtime import OnnxBayesianModel

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnx")

Backend = Literal["auto", "torch", "onnx"]


def resolve_backend(path: str | os.PathLike, backend: str = "auto") -> str:
    """The concrete backend (``"torch"`` or ``"onnx"``) for ``path``; ``ValueError`` for an unknown name or an
    ONNX request on a folder that holds no export."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    exported = os.path.isdir(os.fspath(path)) and is_onnx_export(path)
    if backend == "auto":
        return "onnx" if exported else "torch"
    if backend == "onnx" and not exported:
        raise ValueError(
            f"{path} holds no ONNX export ({EXPORT_MANIFEST} is missing); create one with "
            f"`bayesian-hf export --model {path} --format onnx --output OUT` and serve OUT"
        )
    return backend


def compile_model(model: Any) -> Any:
    """``torch.compile`` the encoder (``model.bert``: the embeddings with the k orderings and the blocks, where the
    time goes), falling back to eager (with a warning that says why) when compilation fails. The head, the
    posterior predictive and the numpy calibrator stay eager (dynamo cannot trace the calibrator's numpy).
    Compilation is lazy, so one small warm-up batch is run here to surface failures at load time rather than on
    the first request."""
    encoder = model.bert
    eager_forward = encoder.forward
    try:
        encoder.forward = torch.compile(eager_forward, dynamic=True)
        _warm_up(model)
    except Exception as err:  # noqa: BLE001 -- any compiler failure (no C++ compiler, unsupported op) falls back
        encoder.forward = eager_forward
        logger.warning("torch.compile failed (%s: %s); falling back to eager PyTorch", type(err).__name__, str(err)[:300])
        model.compiled = False
        return model
    model.compiled = True
    logger.info("torch.compile enabled for %s", type(model).__name__)
    return model


def _warm_up(model: Any) -> None:
    config = model.config
    device = next(model.parameters()).device
    ids = torch.tensor([[config.cls_token_id or 0] + [5] * 6 + [config.sep_token_id or 0]] * 2, device=device)
    units = torch.tensor([[0, 1, 1, 1, 2, 2, 2, 0]] * 2, device=device)
    with torch.inference_mode():
        model(input_ids=ids, attention_mask=torch.ones_like(ids), unit_ids=units)


def load_torch(
    path: str, *, device: str = "cpu", compile: bool = False, torch_threads: int | None = None
) -> tuple[Any, Any]:
    """The PyTorch model (eval mode, ``calibration.json`` attached) and its tokenizer."""
    if torch_threads:
        torch.set_num_threads(int(torch_threads))
    model = BayesianExpectationForSequenceClassification.from_pretrained(path)
    model = model.to(device).eval()
    model.compiled = False
    if compile:
        model = compile_model(model)
    tokenizer = load_checked_tokenizer(path, model.config)
    return model, tokenizer


def load_for_inference(
    path: str | os.PathLike,
    *,
    backend: Backend = "auto",
    device: str = "cpu",
    compile: bool = False,
    torch_threads: int | None = None,
) -> tuple[Any, Any]:
    """Load a model folder for prediction: ``(model, tokenizer)`` accepted by :func:`bayesian_hf.pipelines.predict`.

    Args:
        path: a saved model folder (``save_pretrained`` + ``calibration.json``), a folder written by
            ``bayesian-hf export``, or a Hub id (PyTorch backend only).
        backend: ``"auto"`` (ONNX when the folder holds an export manifest, else PyTorch), ``"torch"`` or ``"onnx"``.
        device: torch device of the PyTorch backend; the ONNX backend runs on ``"cpu"`` only.
        compile: ``torch.compile`` the PyTorch model (falls back to eager with a warning when it fails);
            ignored with a warning for the ONNX backend.
        torch_threads: intra-op threads (``torch.set_num_threads`` / ONNX Runtime ``intra_op_num_threads``).
    """
    path = os.fspath(path)
    chosen = resolve_backend(path, backend)
    if chosen == "torch":
        return load_torch(path, device=device, compile=compile, torch_threads=torch_threads)
    if compile:
        logger.warning("--compile applies to the PyTorch backend only; ignored for the ONNX backend")
    if str(device) != "cpu":
        raise ValueError(f"the ONNX backend runs on the CPU; got device={device!r} (use --backend torch for {device})")
    model = OnnxBayesianModel.from_pretrained(path, num_threads=torch_threads)
    return model, model.tokenizer


__all__ = ["BACKENDS", "EXPORT_MANIFEST", "compile_model", "is_onnx_export", "load_for_inference", "load_torch", "resolve_backend"]
