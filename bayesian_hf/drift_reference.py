"""The drift reference: a sketch of the model's outputs on calibration data, as plain JSON.

Signals (one float per prediction):

- ``confidence``: the largest calibrated probability (the served ``score``);
- ``epistemic``, ``aleatoric``: the two parts of the predictive uncertainty (nats);
- ``order_dispersion``: variance of the prediction across orderings of the units;
- ``length``: input length (characters by default; the sketch records the unit);

plus the predicted label. A :class:`ReferenceSketch` keeps, per signal, quantile bin edges with the reference
share of each bin (for the population stability index, PSI), a sorted subsample of at most
:data:`MAX_SUBSAMPLE` values (for the Kolmogorov-Smirnov test and the Wasserstein distance), the mean and the
standard deviation, and the predicted-label shares (with the joint predicted/true label shares when the labels
were given, for a BBSE estimate of the label shift). It is plain JSON (``to_dict``/``from_dict``), small (a few
tens of KiB) and meant to travel in ``calibration.json`` under ``drift_reference``. :mod:`bayesian_hf.drift`
compares production traffic with it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

SIGNALS: tuple[str, ...] = ("confidence", "epistemic", "aleatoric", "order_dispersion", "length")
LENGTH_UNITS = ("characters", "tokens")
FORMAT_NAME = "bayesian_hf.drift_reference"
FORMAT_VERSION = 1
DEFAULT_NUM_BINS = 10
MAX_BINS = 100
MAX_SUBSAMPLE = 1000
MAX_LABELS = 1000
_SUM_TOLERANCE = 1e-6
#: The signals read from the model's outputs as they are (``confidence`` and ``length`` are computed).
_OUTPUT_SIGNALS = ("epistemic", "aleatoric", "order_dispersion")


# ---------------------------------------------------------------------------------------------- validation
def _fail(where: str, message: str) -> ValueError:
    return ValueError(f"drift reference: {where} {message}")


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(where, f"must be a number, got {type(value).__name__}")
    out = float(value)
    if not math.isfinite(out):
        raise _fail(where, f"must be finite, got {value!r}")
    return out


def _numbers(value: Any, where: str, *, min_len: int, max_len: int) -> np.ndarray:
    if not isinstance(value, (list, tuple)):
        raise _fail(where, f"must be a list of numbers, got {type(value).__name__}")
    if not min_len <= len(value) <= max_len:
        raise _fail(where, f"must have {min_len}..{max_len} entries, got {len(value)}")
    return np.array([_number(v, f"{where}[{i}]") for i, v in enumerate(value)], dtype=np.float64)


def _shares(value: Any, where: str, *, min_len: int, max_len: int) -> np.ndarray:
    shares = _numbers(value, where, min_len=min_len, max_len=max_len)
    if (shares < 0).any() or abs(shares.sum() - 1.0) > _SUM_TOLERANCE:
        raise _fail(where, f"must be non-negative shares summing to 1 (sum {shares.sum():.6g})")
    return shares


def _check_keys(doc: Any, where: str, required: Sequence[str], optional: Sequence[str] = ()) -> dict:
    if not isinstance(doc, dict):
        raise _fail(where, f"must be a JSON object, got {type(doc).__name__}")
    missing = [k for k in required if k not in doc]
    if missing:
        raise _fail(where, f"is missing fields {missing}")
    unknown = sorted(set(doc) - set(required) - set(optional), key=str)
    if unknown:
        raise _fail(where, f"has unknown fields {unknown}")
    return doc


def _finite_1d(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} has non-finite values")
    return arr


# ------------------------------------------------------------------------------------------------- sketch
@dataclass(frozen=True)
class SignalSketch:
    """One signal of the reference: ``edges`` (interior bin edges, strictly increasing; bin ``i`` holds values
    ``x`` with ``edges[i-1] < x <= edges[i]``, the outer bins are open-ended), the reference ``shares`` of the
    ``len(edges) + 1`` bins, a sorted ``sample`` (at most :data:`MAX_SUBSAMPLE` order statistics), ``mean`` and
    ``std`` of the full reference."""

    edges: np.ndarray
    shares: np.ndarray
    sample: np.ndarray
    mean: float
    std: float

    @classmethod
    def fit(cls, values: Any, *, num_bins: int = DEFAULT_NUM_BINS, max_subsample: int = MAX_SUBSAMPLE,
            name: str = "signal") -> SignalSketch:
        x = np.sort(_finite_1d(values, name))
        if x.size == 0:
            raise ValueError(f"{name}: no reference values")
        if not 1 <= num_bins <= MAX_BINS:
            raise ValueError(f"num_bins must be in [1, {MAX_BINS}], got {num_bins}")
        if not 1 <= max_subsample <= MAX_SUBSAMPLE:
            raise ValueError(f"max_subsample must be in [1, {MAX_SUBSAMPLE}], got {max_subsample}")
        # quantiles that are data values (no interpolation), so no bin but the top one can be empty in the reference
        levels = np.linspace(0.0, 1.0, num_bins + 1)[1:-1]
        edges = np.unique(np.quantile(x, levels, method="lower")) if num_bins > 1 else np.empty(0)
        counts = bin_counts(x, edges)
        # ties (a point mass, e.g. order_dispersion = 0 for one-sentence texts) leave empty or sliver bins, whose
        # PSI terms are noise: merge every bin under half a regular bin's share into its smaller neighbour
        min_count = 0.5 * x.size / num_bins
        while edges.size and counts.min() < min_count:
            i = int(counts.argmin())
            left = counts[i - 1] if i > 0 else np.inf
            right = counts[i + 1] if i < counts.size - 1 else np.inf
            edges = np.delete(edges, i - 1 if left <= right else i)
            counts = bin_counts(x, edges)
        if edges.size == 0 and num_bins > 1 and x[0] == x[-1]:  # a constant: keep "above it" as an (empty) bin
            edges = x[:1].copy()
            counts = bin_counts(x, edges)
        if x.size <= max_subsample:
            sample = x.copy()
        else:  # evenly spaced order statistics: real values (no interpolation between discrete levels)
            sample = x[((np.arange(max_subsample) + 0.5) * x.size / max_subsample).astype(np.int64)]
        return cls(edges=edges, shares=counts / x.size, sample=sample, mean=float(x.mean()), std=float(x.std()))

    def to_dict(self) -> dict[str, Any]:
        return {"edges": self.edges.tolist(), "shares": self.shares.tolist(), "sample": self.sample.tolist(),
                "mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, doc: Any, where: str = "signal") -> SignalSketch:
        _check_keys(doc, where, ("edges", "shares", "sample", "mean", "std"))
        edges = _numbers(doc["edges"], f"{where}.edges", min_len=0, max_len=MAX_BINS - 1)
        if edges.size > 1 and not (np.diff(edges) > 0).all():
            raise _fail(f"{where}.edges", "must be strictly increasing")
        shares = _shares(doc["shares"], f"{where}.shares", min_len=1, max_len=MAX_BINS)
        if shares.size != edges.size + 1:
            raise _fail(f"{where}.shares", f"must have len(edges) + 1 = {edges.size + 1} entries, got {shares.size}")
        sample = _numbers(doc["sample"], f"{where}.sample", min_len=1, max_len=MAX_SUBSAMPLE)
        if sample.size > 1 and (np.diff(sample) < 0).any():
            raise _fail(f"{where}.sample", "must be sorted")
        std = _number(doc["std"], f"{where}.std")
        if std < 0:
            raise _fail(f"{where}.std", "must be >= 0")
        return cls(edges=edges, shares=shares, sample=sample, mean=_number(doc["mean"], f"{where}.mean"), std=std)


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of ``values`` in the ``len(edges) + 1`` bins ``(-inf, e0], (e0, e1], ..., (e_last, inf)``."""
    idx = np.searchsorted(edges, values, side="left")
    return np.bincount(idx, minlength=edges.size + 1).astype(np.float64)


@dataclass(frozen=True)
class ReferenceSketch:
    """The reference distribution of the drift signals (see the module docstring). Build it with
    :func:`build_sketch` from :func:`bayesian_hf.inference.collect_outputs` on the calibration split."""

    signals: dict[str, SignalSketch]
    label_shares: np.ndarray
    num_samples: int
    length_unit: str = "characters"
    confusion: np.ndarray | None = None
    """``confusion[i, j]`` = reference share of (predicted ``i``, true ``j``); ``None`` without true labels."""

    @property
    def num_labels(self) -> int:
        return int(self.label_shares.size)

    @classmethod
    def from_arrays(cls, signals: Mapping[str, Any], predicted: Any, *, num_labels: int | None = None,
                    true_labels: Any | None = None, num_bins: int = DEFAULT_NUM_BINS,
                    max_subsample: int = MAX_SUBSAMPLE, length_unit: str = "characters") -> ReferenceSketch:
        """From per-example arrays: ``signals`` maps names of :data:`SIGNALS` (all or some) to values,
        ``predicted`` holds the predicted label ids."""
        unknown = sorted(set(signals) - set(SIGNALS))
        if unknown or not signals:
            raise ValueError(f"signals must be a non-empty subset of {list(SIGNALS)}, got {sorted(signals)}")
        if length_unit not in LENGTH_UNITS:
            raise ValueError(f"length_unit must be one of {LENGTH_UNITS}, got {length_unit!r}")
        pred = np.asarray(predicted).reshape(-1)
        n = pred.size
        if n == 0:
            raise ValueError("no reference predictions")
        if not np.issubdtype(pred.dtype, np.integer) or pred.min() < 0:
            raise ValueError("predicted labels must be non-negative integer ids")
        num_labels = int(num_labels if num_labels is not None else pred.max() + 1)
        if not 1 <= num_labels <= MAX_LABELS or pred.max() >= num_labels:
            raise ValueError(f"num_labels must be in [1, {MAX_LABELS}] and above every predicted id")
        fitted = {}
        for name in SIGNALS:
            if name in signals:
                values = np.asarray(signals[name]).reshape(-1)
                if values.size != n:
                    raise ValueError(f"signal {name} has {values.size} values for {n} predictions")
                fitted[name] = SignalSketch.fit(values, num_bins=num_bins, max_subsample=max_subsample, name=name)
        confusion = None
        if true_labels is not None:
            y = np.asarray(true_labels).reshape(-1)
            if y.size != n or not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= num_labels:
                raise ValueError(f"true_labels must be {n} integer ids in [0, {num_labels})")
            confusion = np.zeros((num_labels, num_labels))
            np.add.at(confusion, (pred, y), 1.0)
            confusion /= n
        shares = np.bincount(pred, minlength=num_labels) / n
        return cls(signals=fitted, label_shares=shares, num_samples=int(n), length_unit=length_unit,
                   confusion=confusion)

    # ------------------------------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "num_samples": self.num_samples,
            "length_unit": self.length_unit,
            "signals": {name: sketch.to_dict() for name, sketch in self.signals.items()},
            "label_shares": self.label_shares.tolist(),
            "confusion": self.confusion.tolist() if self.confusion is not None else None,
        }

    @classmethod
    def from_dict(cls, doc: Any) -> ReferenceSketch:
        """Validate and load a :meth:`to_dict` document; ``ValueError`` naming the bad field otherwise."""
        _check_keys(doc, "document", ("format", "format_version", "num_samples", "signals", "label_shares"),
                    ("length_unit", "confusion"))
        if doc["format"] != FORMAT_NAME:
            raise _fail("format", f"must be {FORMAT_NAME!r}, got {doc['format']!r}")
        version = doc["format_version"]
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
            raise _fail("format_version", f"must be an integer in 1..{FORMAT_VERSION}, got {version!r}")
        n = doc["num_samples"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise _fail("num_samples", f"must be a positive integer, got {n!r}")
        unit = doc.get("length_unit", "characters")
        if unit not in LENGTH_UNITS:
            raise _fail("length_unit", f"must be one of {list(LENGTH_UNITS)}, got {unit!r}")
        signals = doc["signals"]
        if not isinstance(signals, dict) or not signals:
            raise _fail("signals", "must be a non-empty object")
        unknown = sorted(set(signals) - set(SIGNALS), key=str)
        if unknown:
            raise _fail("signals", f"has unknown signals {unknown}; known: {list(SIGNALS)}")
        parsed = {name: SignalSketch.from_dict(signals[name], f"signals.{name}") for name in SIGNALS if name in signals}
        shares = _shares(doc["label_shares"], "label_shares", min_len=1, max_len=MAX_LABELS)
        confusion = None
        if doc.get("confusion") is not None:
            rows = doc["confusion"]
            if not isinstance(rows, list) or len(rows) != shares.size:
                raise _fail("confusion", f"must be a {shares.size}x{shares.size} list of lists")
            confusion = np.stack([_numbers(r, f"confusion[{i}]", min_len=shares.size, max_len=shares.size)
                                  for i, r in enumerate(rows)])
            if (confusion < 0).any() or abs(confusion.sum() - 1.0) > 1e-5:
                raise _fail("confusion", "must hold non-negative shares summing to 1")
            if np.abs(confusion.sum(1) - shares).max() > 1e-5:
                raise _fail("confusion", "rows must sum to label_shares")
        return cls(signals=parsed, label_shares=shares, num_samples=n, length_unit=unit, confusion=confusion)


def signals_from_outputs(outputs: Mapping[str, Any], lengths: Any) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The drift signals and the predicted label ids from a :func:`~bayesian_hf.inference.collect_outputs` dict
    (``calibrated_probs`` when present, else ``probs``) and per-example input lengths."""
    probs = outputs.get("calibrated_probs")
    if probs is None:
        probs = outputs.get("probs")
    if probs is None:
        raise ValueError("outputs need 'calibrated_probs' or 'probs'")
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] == 0:
        raise ValueError(f"probabilities must be a non-empty (examples, classes) array, got shape {probs.shape}")
    n = probs.shape[0]
    missing = [k for k in _OUTPUT_SIGNALS if outputs.get(k) is None]
    if missing:
        raise ValueError(f"outputs are missing {missing}")
    lengths = np.asarray(lengths, dtype=np.float64).reshape(-1)
    signals = {"confidence": probs.max(1), "length": lengths}
    for key in _OUTPUT_SIGNALS:
        signals[key] = np.asarray(outputs[key], dtype=np.float64).reshape(-1)
    for name, values in signals.items():
        if values.size != n:
            raise ValueError(f"{name} has {values.size} values for {n} examples")
    return signals, probs.argmax(1)


def build_sketch(outputs: Mapping[str, Any], lengths: Any, *, labels: Any | None = None,
                 num_bins: int = DEFAULT_NUM_BINS, length_unit: str = "characters") -> ReferenceSketch:
    """A :class:`ReferenceSketch` from ``collect_outputs(model, tokenizer, texts)`` on calibration data and the
    input ``lengths`` (``[len(t) for t in texts]`` for characters). ``labels`` (true label ids, optional) add the
    joint predicted/true shares used for the BBSE label-shift estimate. Store it as ``sketch.to_dict()`` in
    the calibration metadata under ``drift_reference``."""
    signals, predicted = signals_from_outputs(outputs, lengths)
    num_labels = np.asarray(outputs.get("calibrated_probs", outputs.get("probs"))).shape[1]
    return ReferenceSketch.from_arrays(signals, predicted, num_labels=num_labels, true_labels=labels,
                                       num_bins=num_bins, length_unit=length_unit)


def record_signals(record: Mapping[str, Any], text: str) -> dict[str, float]:
    """The drift signals of one prediction record (``pipelines.format_predictions``) and its text (length in
    characters)."""
    uncertainty = record["uncertainty"]
    return {"confidence": float(record["score"]), "epistemic": float(uncertainty["epistemic"]),
            "aleatoric": float(uncertainty["aleatoric"]), "order_dispersion": float(record["order_dispersion"]),
            "length": float(len(text))}
