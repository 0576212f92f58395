"""The calibration artifact ``calibration.json``: save / load, bound to the label maps and the weights
(docs/design.md §10.3).

Plain JSON (Python floats round-trip exactly, so a reloaded calibrator reproduces ``transform`` bit for bit);
nothing is ever pickled.  Files are read defensively: corrupt, truncated, oversized or mistyped files raise
``ValueError`` naming the file and the bad field.  This module and the calibrators it can rebuild travel with the
weights for ``trust_remote_code``; the selection of a calibrator (``calibration_selection``) does not.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .calibration_base import Calibrator, available_methods, calibrator_from_dict

# registers the built-in methods (and makes transformers copy them for trust_remote_code): an artifact may name any
from .calibrators import BUILTIN_CALIBRATORS  # noqa: F401
from .conformal import _QHAT_SLACK, ConformalPredictor
from .folder_integrity import atomic_file
from .model_files import CALIBRATION_FILENAME  # the file save_calibration / load_calibration use in a folder

__all__ = [
    "CALIBRATION_FILENAME",
    "FORMAT_VERSION",
    "MAX_CALIBRATION_BYTES",
    "LoadedCalibration",
    "label_mapping_hash",
    "labels_hash",
    "load_calibration",
    "save_calibration",
]

#: Version of the JSON artifact layout; bumped on incompatible changes.
FORMAT_VERSION = 1
_FORMAT_NAME = "bayesian_hf.calibration"

logger = logging.getLogger(__name__)


def _check_label2id(label2id: Mapping[Any, Any]) -> dict[str, int]:
    if not isinstance(label2id, Mapping) or not label2id:
        raise ValueError("label2id must be a non-empty mapping {label name: class id}")
    out: dict[str, int] = {}
    for k, v in label2id.items():
        if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(
                "label2id must map label names (str) to class ids (int); got "
                f"{k!r}: {v!r} (did you pass id2label?)"
            )
        out[k] = int(v)
    if sorted(out.values()) != list(range(len(out))):
        raise ValueError(f"label2id ids must be exactly 0..{len(out) - 1}, got {sorted(out.values())}")
    return out


def label_mapping_hash(label2id: Mapping[str, int]) -> str:
    """sha256 hex digest of the canonical JSON of ``label2id`` (sorted keys, no whitespace).

    Ties a calibration artifact to the label order it was fit with: a calibrator applied to a
    model whose classes are permuted would silently produce wrong probabilities.
    """
    canon = json.dumps(_check_label2id(label2id), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


def labels_hash(label2id: Mapping[str, int], id2label: Mapping[Any, str]) -> str:
    """sha256 hex digest of BOTH label maps (canonical JSON); ``ValueError`` unless ``id2label`` is exactly the
    inverse of ``label2id`` (a config whose two maps disagree silently swaps labels)."""
    labels = _check_label2id(label2id)
    names = _check_id2label(id2label)
    if {name: i for i, name in names.items()} != labels:
        raise ValueError(f"id2label {names} is not the inverse of label2id {labels}: the labels would be swapped; "
                         "fix config.json so both maps agree")
    canon = json.dumps({"label2id": labels, "id2label": {str(i): n for i, n in sorted(names.items())}},
                       sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


def _check_id2label(id2label: Mapping[Any, Any]) -> dict[int, str]:
    if not isinstance(id2label, Mapping) or not id2label:
        raise ValueError("id2label must be a non-empty mapping {class id: label name}")
    out: dict[int, str] = {}
    for k, v in id2label.items():
        try:
            i = int(k)
        except (TypeError, ValueError):
            raise ValueError(f"id2label keys must be class ids, got {k!r}") from None
        if isinstance(k, bool) or not isinstance(v, str) or i in out:
            raise ValueError(f"id2label must map distinct class ids to label names (str), got {k!r}: {v!r}")
        out[i] = v
    return out


#: ``calibration.json`` larger than this is refused before it is read (a real one is tens of KiB: the biggest
#: part, the drift reference sketch, is bounded by design)
MAX_CALIBRATION_BYTES = 4 * 1024 * 1024


def _library_version() -> str:
    # the package's own version when it is loaded (it is absent when this file runs as remote code); looked up,
    # not imported: a module never imports the package root
    v = getattr(sys.modules.get("bayesian_hf"), "__version__", None)
    if isinstance(v, str) and v:
        return v
    try:
        from importlib.metadata import version

        return version("bayesian-hf")
    except Exception:
        return "unknown"


def _resolve(path: str | os.PathLike[str]) -> str:
    p = os.fspath(path)
    return os.path.join(p, CALIBRATION_FILENAME) if os.path.isdir(p) else p


def save_calibration(
    path: str | os.PathLike[str],
    calibrator: Calibrator,
    *,
    label2id: Mapping[str, int],
    fit_metrics: Mapping[str, float],
    num_samples: int,
    conformal: ConformalPredictor | None = None,
    extra: Mapping[str, Any] | None = None,
    id2label: Mapping[Any, str] | None = None,
    weights_sha256: str | None = None,
) -> str:
    """Write the calibration artifact as JSON, atomically (temp file in the same folder + ``os.replace``).

    ``path`` is a file path, or an existing folder (then ``calibration.json`` inside it).  Fields:
    ``format``, ``format_version``, ``method``, ``parameters`` (``calibrator.to_dict()``),
    ``fit_metrics``, ``num_samples``, ``library_version``, ``label_hash``, ``label2id``,
    ``conformal`` (``to_dict()`` or null), plus the JSON-serialisable ``extra`` fields (e.g. the
    selection report).  With ``id2label`` the artifact also stores ``id2label`` and ``labels_hash`` (both maps,
    which must agree); with ``weights_sha256`` (see ``folder_integrity.weights_fingerprint``) it is bound to
    those weights and ``from_pretrained`` refuses it next to other weights.  Returns the path written.
    """
    if not isinstance(calibrator, Calibrator):
        raise TypeError(f"calibrator must be a Calibrator, got {type(calibrator).__name__}")
    labels = _check_label2id(label2id)
    params = calibrator.to_dict()
    if len(labels) != params["num_classes"]:
        raise ValueError(
            f"label2id has {len(labels)} labels but the calibrator was fit on {params['num_classes']} classes"
        )
    if conformal is not None and conformal.num_classes != params["num_classes"]:
        raise ValueError("conformal predictor and calibrator disagree on the number of classes")
    metrics_clean: dict[str, float | None] = {}
    for k, v in dict(fit_metrics).items():
        fv = float(v)
        metrics_clean[str(k)] = fv if math.isfinite(fv) else None  # strict JSON has no NaN
    doc = {
        "format": _FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "method": calibrator.method,
        "parameters": params,
        "fit_metrics": metrics_clean,
        "num_samples": int(num_samples),
        "library_version": _library_version(),
        "label_hash": label_mapping_hash(labels),
        "label2id": labels,
        "conformal": conformal.to_dict() if conformal is not None else None,
    }
    if id2label is not None:
        doc["labels_hash"] = labels_hash(labels, id2label)
        doc["id2label"] = {str(i): n for i, n in sorted(_check_id2label(id2label).items())}
    if weights_sha256 is not None:
        if not isinstance(weights_sha256, str) or len(weights_sha256) != 64:
            raise ValueError("weights_sha256 must be a sha256 hex digest")
        doc["weights_sha256"] = weights_sha256
    for key, value in dict(extra or {}).items():
        if key in doc:
            raise ValueError(f"extra field {key!r} would overwrite a calibration artifact field")
        doc[key] = value
    text = json.dumps(doc, indent=2, sort_keys=True, allow_nan=False) + "\n"
    out = _resolve(path)
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    with atomic_file(out) as tmp, open(tmp, "x", encoding="utf-8") as f:
        f.write(text)
    return out


@dataclass(frozen=True)
class LoadedCalibration:
    """Result of :func:`load_calibration`."""

    calibrator: Calibrator
    conformal: ConformalPredictor | None
    metadata: dict[str, Any] = field(default_factory=dict)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name} is not allowed in a calibration artifact")


def load_calibration(
    path: str | os.PathLike[str],
    *,
    label2id: Mapping[str, int] | None = None,
    ignore_mismatch: bool = False,
    id2label: Mapping[Any, str] | None = None,
    weights_sha256: str | None = None,
) -> LoadedCalibration:
    """Read an artifact written by :func:`save_calibration` (file path or folder).

    Raises ``FileNotFoundError`` if absent and ``ValueError`` naming the file for everything else: a file over
    :data:`MAX_CALIBRATION_BYTES`, JSON that is corrupt, truncated, not UTF-8 or nested too deep, a field that is
    missing, ill-typed or out of range (``qhat`` outside [0, 1], ``decision_thresholds`` outside [0, 1], ...), or
    a binding that does not hold: ``label2id`` (and ``id2label``) given and their hash differs from the stored
    one, ``weights_sha256`` given and the artifact is bound to other weights (with ``ignore_mismatch=True`` these
    two only warn). An artifact without ``weights_sha256`` (written before the binding existed) loads with a
    warning. ``metadata`` holds every top-level field except ``parameters`` and ``conformal``.
    """
    p = _resolve(path)
    size = os.path.getsize(p)
    if size > MAX_CALIBRATION_BYTES:
        raise ValueError(f"calibration artifact {p} is {size} bytes, over the {MAX_CALIBRATION_BYTES}-byte limit "
                         "(a real one is tens of KiB): refusing to read it")
    try:
        return _load_calibration_document(p, label2id, ignore_mismatch, id2label, weights_sha256)
    except ValueError as err:
        if p in str(err):
            raise
        raise ValueError(f"calibration artifact {p}: {err}") from err
    except (RecursionError, UnicodeDecodeError, TypeError, KeyError, AttributeError, IndexError, OverflowError,
            MemoryError) as err:
        raise ValueError(f"calibration artifact {p} is corrupt ({type(err).__name__}: {err}); "
                         "re-run `bayesian-hf calibrate`") from err


def _check_metadata_ranges(doc: Mapping[str, Any], p: str) -> None:
    stored = doc.get("decision_thresholds")
    if stored is not None:
        if not isinstance(stored, Mapping):
            raise ValueError(f"calibration artifact {p}: 'decision_thresholds' must be an object")
        for key in ("accept", "review"):
            v = stored.get(key)
            if v is None and key not in stored:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0 + _QHAT_SLACK:
                raise ValueError(f"calibration artifact {p}: decision_thresholds[{key!r}] must be in [0, 1], got {v!r}")
        if isinstance(stored.get("accept"), (int, float)) and isinstance(stored.get("review"), (int, float)) \
                and stored["review"] > stored["accept"]:
            raise ValueError(f"calibration artifact {p}: decision_thresholds 'review' exceeds 'accept'")
    for key in ("risk_coverage",):
        if doc.get(key) is not None and not isinstance(doc[key], list):
            raise ValueError(f"calibration artifact {p}: {key!r} must be a list")
    if doc.get("drift_reference") is not None and not isinstance(doc["drift_reference"], Mapping):
        raise ValueError(f"calibration artifact {p}: 'drift_reference' must be an object")


def _load_calibration_document(
    p: str,
    label2id: Mapping[str, int] | None,
    ignore_mismatch: bool,
    id2label: Mapping[Any, str] | None,
    weights_sha256: str | None,
) -> LoadedCalibration:
    with open(p, encoding="utf-8") as f:
        text = f.read()
    try:
        doc = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise ValueError(f"calibration artifact {p} is not valid JSON (truncated or corrupt?): {e}") from e
    if not isinstance(doc, dict):
        raise ValueError(f"calibration artifact {p} must contain a JSON object")
    if doc.get("format") != _FORMAT_NAME:
        raise ValueError(f"{p} is not a bayesian_hf calibration artifact (format={doc.get('format')!r})")
    required = ("format_version", "method", "parameters", "fit_metrics", "num_samples", "library_version", "label_hash")
    missing = [k for k in required if k not in doc]
    if missing:
        raise ValueError(f"calibration artifact {p} is missing fields {missing}")
    fv = doc["format_version"]
    if isinstance(fv, bool) or not isinstance(fv, int) or fv < 1 or fv > FORMAT_VERSION:
        raise ValueError(
            f"calibration artifact {p} has format_version {fv!r}; this library reads versions 1..{FORMAT_VERSION}"
        )
    if not isinstance(doc["method"], str) or doc["method"] not in available_methods():
        raise ValueError(f"calibration artifact {p}: unknown calibration method {doc['method']!r}; known methods: "
                         f"{sorted(available_methods())}")
    if not isinstance(doc["parameters"], dict) or doc["parameters"].get("method") != doc["method"]:
        raise ValueError(f"calibration artifact {p}: 'parameters' must be an object whose method is {doc['method']!r}")
    if not isinstance(doc["fit_metrics"], dict):
        raise ValueError(f"calibration artifact {p}: 'fit_metrics' must be an object")
    ns = doc["num_samples"]
    if isinstance(ns, bool) or not isinstance(ns, int) or ns < 0:
        raise ValueError(f"calibration artifact {p}: 'num_samples' must be a non-negative integer, got {ns!r}")
    stored_hash = doc["label_hash"]
    if not isinstance(stored_hash, str) or len(stored_hash) != 64:
        raise ValueError(f"calibration artifact {p}: 'label_hash' must be a sha256 hex string")
    if doc.get("label2id") is not None and label_mapping_hash(doc["label2id"]) != stored_hash:
        raise ValueError(f"calibration artifact {p}: stored label2id does not match its label_hash (corrupt file)")
    stored_both = doc.get("labels_hash")
    if stored_both is not None:
        if not isinstance(stored_both, str) or doc.get("label2id") is None or doc.get("id2label") is None \
                or labels_hash(doc["label2id"], doc["id2label"]) != stored_both:
            raise ValueError(f"calibration artifact {p}: stored id2label/label2id do not match its labels_hash "
                             "(corrupt file)")
    stored_weights = doc.get("weights_sha256")
    if stored_weights is not None and (not isinstance(stored_weights, str) or len(stored_weights) != 64):
        raise ValueError(f"calibration artifact {p}: 'weights_sha256' must be a sha256 hex string")
    _check_metadata_ranges(doc, p)
    calibrator = calibrator_from_dict(doc["parameters"])
    conformal = ConformalPredictor.from_dict(doc["conformal"]) if doc.get("conformal") is not None else None
    if conformal is not None and conformal.num_classes != calibrator.num_classes:
        raise ValueError(f"calibration artifact {p}: conformal and calibrator disagree on the number of classes")
    if conformal is not None and not 0.0 <= float(conformal.qhat) <= 1.0 + _QHAT_SLACK:
        raise ValueError(f"calibration artifact {p}: conformal 'qhat' must be in [0, 1] (a non-conformity score of "
                         f"probabilities), got {conformal.qhat!r}")
    mismatches = []
    if label2id is not None:
        expected = label_mapping_hash(label2id)
        if expected != stored_hash:
            mismatches.append(
                f"calibration artifact {p} was fit with a different label mapping (label_hash "
                f"{stored_hash[:12]}..., model's label2id hashes to {expected[:12]}...); stored label2id: "
                f"{doc.get('label2id')}"
            )
        elif id2label is not None and stored_both is not None and labels_hash(label2id, id2label) != stored_both:
            mismatches.append(f"calibration artifact {p} was fit with a different id2label (stored: "
                              f"{doc.get('id2label')}, model: {dict(id2label)})")
    if weights_sha256 is not None:
        if stored_weights is None:
            logger.warning("calibration artifact %s is not bound to weights (written by an older version): it cannot "
                           "be checked against them; re-run `bayesian-hf calibrate` to bind it", p)
        elif stored_weights != weights_sha256:
            mismatches.append(
                f"calibration artifact {p} was fit on other weights (weights_sha256 {stored_weights[:12]}..., the "
                f"model's weights hash to {weights_sha256[:12]}...): re-run `bayesian-hf calibrate` on this model")
    for msg in mismatches:
        if not ignore_mismatch:
            raise ValueError(msg + "; pass ignore_mismatch=True (ignore_calibration_mismatch) to load anyway")
        warnings.warn(msg, UserWarning, stacklevel=3)
    metadata = {k: v for k, v in doc.items() if k not in ("parameters", "conformal")}
    return LoadedCalibration(calibrator=calibrator, conformal=conformal, metadata=metadata)
