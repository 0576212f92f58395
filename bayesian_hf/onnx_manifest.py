"""The contract of an ONNX export folder: its file names, the graph interface, and the manifest that binds them
(written by :mod:`bayesian_hf.onnx_export`, checked by :func:`verify_export` before
:class:`bayesian_hf.onnx_runtime.OnnxBayesianModel` loads a folder). The exporter depends on the runtime, never
the reverse: both depend on this module."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from .configuration_bayesian_expectation import BayesianExpectationConfig
from .inference import OUTPUT_KEYS
from .model_files import CALIBRATION_FILENAME

#: Written by ``bayesian-hf export`` next to ``model.onnx``; its presence makes ``backend="auto"`` pick ONNX.
EXPORT_MANIFEST = "export_manifest.json"
ONNX_FILENAME = "model.onnx"
MANIFEST_FORMAT = "bayesian_hf.onnx_export"
MANIFEST_VERSION = 1
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids", "unit_ids", "orderings", "ordering_weights")
#: the graph's outputs, in this order: the prediction outputs (one list: inference.OUTPUT_KEYS) but calibrated_probs
#: (the calibrator runs after the graph), probs first
OUTPUT_NAMES = ("probs", "logits", *(k for k in OUTPUT_KEYS if k not in ("logits", "probs", "calibrated_probs")))


def is_onnx_export(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder written by ``bayesian-hf export`` (it holds the export manifest)."""
    return os.path.isfile(os.path.join(os.fspath(path), EXPORT_MANIFEST))


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The export manifest of ``folder``; ``ValueError`` when it is missing fields or is not JSON."""
    path = os.path.join(os.fspath(folder), EXPORT_MANIFEST)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{folder} has no {EXPORT_MANIFEST}: not a folder written by `bayesian-hf export`")
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); re-export the model") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path} is not a {MANIFEST_FORMAT} manifest; re-export the model")
    if manifest.get("format_version") != MANIFEST_VERSION:
        raise ValueError(f"{path} has format_version {manifest.get('format_version')!r}; this version reads {MANIFEST_VERSION}")
    for key in ("onnx_file", "labels", "sha256", "inputs", "outputs"):
        if key not in manifest:
            raise ValueError(f"{path} lacks {key!r}; re-export the model")
    return manifest


def verify_export(folder: str | os.PathLike, config: Any | None = None) -> dict[str, Any]:
    """Check an export folder before it is loaded; returns its manifest.

    Raises ``ValueError`` when ``model.onnx`` or ``calibration.json`` does not match its recorded sha256 (the
    folder was modified after export), when a recorded file is missing or an unrecorded calibration appeared, or
    when the manifest's labels differ from the config's ``id2label`` (``config``: the folder's config, read when
    not given). The calibration's own label hash is checked when it is loaded.
    """
    folder = os.fspath(folder)
    manifest = read_manifest(folder)
    if manifest["onnx_file"] != ONNX_FILENAME or list(manifest["inputs"]) != list(INPUT_NAMES) \
            or list(manifest["outputs"]) != list(OUTPUT_NAMES):
        raise ValueError(f"{folder}: the manifest describes another graph interface than this version of bayesian_hf "
                         "reads; re-export the model")
    recorded = manifest["sha256"]
    for name in (ONNX_FILENAME, CALIBRATION_FILENAME):
        path = os.path.join(folder, name)
        expected = recorded.get(name)
        if expected is None:
            if os.path.exists(path):
                raise ValueError(f"{folder}: {name} is not part of the export (no checksum in {EXPORT_MANIFEST}); "
                                 "remove it or re-export the model")
            continue
        if not os.path.isfile(path):
            raise ValueError(f"{folder}: {name} is missing (the export recorded it); re-export the model")
        actual = sha256_file(path)
        if actual != expected:
            raise ValueError(f"{folder}: checksum mismatch for {name} (sha256 {actual[:12]}..., the export recorded "
                             f"{str(expected)[:12]}...): the file was modified after export; re-export the model")
    if config is None:
        config = BayesianExpectationConfig.from_pretrained(folder)
    labels = [str(config.id2label[i]) for i in range(config.num_labels)]
    if list(manifest["labels"]) != labels:
        raise ValueError(f"{folder}: labels mismatch: the export manifest has {manifest['labels']}, config.json has "
                         f"{labels}; the folder mixes files of different models -- re-export the model")
    return manifest
