"""Input and prediction drift: a reference sketch of the model's outputs on calibration data, a bounded rolling
window of the same signals in production, and the statistics that compare them.

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
tens of KiB) and meant to travel in ``calibration.json`` under ``drift_reference``.

:class:`DriftWindow` is a fixed-size ring buffer: its memory is set by ``max_size`` whatever the traffic.
:func:`drift_statistics` compares a window (or arrays) with a sketch and returns JSON-safe numbers and an
``alert``: some PSI above ``psi_threshold`` with at least ``min_samples`` predictions in the window.
"""

from __future__ import annotations

import math
import threading
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
MAX_WINDOW = 10_000_000
DEFAULT_PSI_THRESHOLD = 0.2
DEFAULT_MIN_SAMPLES = 100
PSI_EPSILON = 1e-4
"""Floor of a bin share in the PSI, so an empty bin gives a large but finite term."""
_SUM_TOLERANCE = 1e-6
_BBSE_MAX_CONDITION = 1e6


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
    :func:`build_sketch` from :func:`bayesian_hf.evaluation.collect_outputs` on the calibration split."""

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
    """The drift signals and the predicted label ids from a :func:`~bayesian_hf.evaluation.collect_outputs` dict
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
    missing = [k for k in ("epistemic", "aleatoric", "order_dispersion") if outputs.get(k) is None]
    if missing:
        raise ValueError(f"outputs are missing {missing}")
    lengths = np.asarray(lengths, dtype=np.float64).reshape(-1)
    signals = {"confidence": probs.max(1), "length": lengths}
    for key in ("epistemic", "aleatoric", "order_dispersion"):
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


# ------------------------------------------------------------------------------------------------- window
class DriftWindow:
    """The last ``max_size`` predictions' signals and labels, in a preallocated ring buffer (memory
    ``max_size * (len(signals) + 1) * 8`` bytes, whatever the traffic). Thread-safe."""

    def __init__(self, max_size: int, signals: Sequence[str] = SIGNALS) -> None:
        if isinstance(max_size, bool) or not isinstance(max_size, (int, np.integer)) or not 1 <= max_size <= MAX_WINDOW:
            raise ValueError(f"max_size must be an integer in [1, {MAX_WINDOW}], got {max_size!r}")
        unknown = sorted(set(signals) - set(SIGNALS))
        if unknown or not signals:
            raise ValueError(f"signals must be a non-empty subset of {list(SIGNALS)}, got {list(signals)}")
        self.max_size = int(max_size)
        self.signals = tuple(signals)
        self._values = np.zeros((self.max_size, len(self.signals)), dtype=np.float64)
        self._labels = np.zeros(self.max_size, dtype=np.int64)
        self._next = 0
        self._size = 0
        self.total_seen = 0
        """Predictions appended since creation (also the ones pushed out)."""
        self.skipped = 0
        """Predictions refused for a non-finite value or a negative label."""
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._size

    @property
    def nbytes(self) -> int:
        return int(self._values.nbytes + self._labels.nbytes)

    def append(self, values: Mapping[str, float], label: int) -> bool:
        """Add one prediction; ``False`` (and nothing stored) when a value is missing or not finite."""
        try:
            row = [float(values[name]) for name in self.signals]
        except (KeyError, TypeError, ValueError):
            row = None
        with self._lock:
            if row is None or not all(math.isfinite(v) for v in row) or int(label) < 0:
                self.skipped += 1
                return False
            self._values[self._next] = row
            self._labels[self._next] = int(label)
            self._next = (self._next + 1) % self.max_size
            self._size = min(self._size + 1, self.max_size)
            self.total_seen += 1
            return True

    def extend(self, arrays: Mapping[str, Any], labels: Any) -> int:
        """Add many predictions (arrays per signal, label ids); returns how many were stored."""
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        cols = np.stack([np.asarray(arrays[name], dtype=np.float64).reshape(-1) for name in self.signals], axis=1)
        if cols.shape[0] != labels.size:
            raise ValueError(f"{cols.shape[0]} rows of signals for {labels.size} labels")
        ok = np.isfinite(cols).all(1) & (labels >= 0)
        cols, kept = cols[ok][-self.max_size:], labels[ok][-self.max_size:]
        with self._lock:
            self.skipped += int((~ok).sum())
            self.total_seen += int(ok.sum())
            idx = (self._next + np.arange(kept.size)) % self.max_size
            self._values[idx] = cols
            self._labels[idx] = kept
            self._next = (self._next + kept.size) % self.max_size
            self._size = min(self._size + kept.size, self.max_size)
        return int(ok.sum())

    def arrays(self) -> dict[str, np.ndarray]:
        """Copies of the window, oldest first: one array per signal and ``"label"``."""
        with self._lock:
            if self._size < self.max_size:
                order = np.arange(self._size)
            else:
                order = (self._next + np.arange(self.max_size)) % self.max_size
            values, labels = self._values[order].copy(), self._labels[order].copy()
        out = {name: values[:, i] for i, name in enumerate(self.signals)}
        out["label"] = labels
        return out

    def clear(self) -> None:
        with self._lock:
            self._next = self._size = 0


# --------------------------------------------------------------------------------------------- statistics
def psi(reference_shares: np.ndarray, window_shares: np.ndarray, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index ``sum (w - r) ln(w / r)`` with shares floored at ``epsilon``."""
    r = np.clip(np.asarray(reference_shares, dtype=np.float64), epsilon, None)
    w = np.clip(np.asarray(window_shares, dtype=np.float64), epsilon, None)
    return float(np.sum((w - r) * np.log(w / r)))


def _finite_or_none(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _bbse(confusion: np.ndarray, window_pred_shares: np.ndarray) -> dict[str, Any] | None:
    """Black-box shift estimation (Lipton et al. 2018): solve ``C w = mu`` for the label weights ``w``."""
    if np.linalg.cond(confusion) > _BBSE_MAX_CONDITION:
        return None
    weights = np.clip(np.linalg.solve(confusion, window_pred_shares), 0.0, None)
    true_shares = confusion.sum(0)
    estimated = weights * true_shares
    if estimated.sum() <= 0:
        return None
    estimated = estimated / estimated.sum()
    return {"label_weights": weights.tolist(), "reference_true_shares": true_shares.tolist(),
            "estimated_true_shares": estimated.tolist(),
            "total_variation": float(0.5 * np.abs(estimated - true_shares).sum())}


def drift_statistics(sketch: ReferenceSketch, window: DriftWindow | Mapping[str, Any], *,
                     psi_threshold: float = DEFAULT_PSI_THRESHOLD,
                     min_samples: int = DEFAULT_MIN_SAMPLES) -> dict[str, Any]:
    """Compare a window (a :class:`DriftWindow`, or a mapping with one array per signal and ``"label"``) with the
    reference. Per signal: ``psi``, ``ks_statistic``/``ks_pvalue`` (two-sample KS against the stored
    subsample), ``wasserstein`` (and ``wasserstein_scaled``, divided by the reference standard deviation) and
    the window and reference means; the predicted labels: ``total_variation``, ``psi`` and, when the sketch has
    the joint label shares, the ``bbse`` estimate. ``alert`` is true when some PSI (a signal's or the labels')
    exceeds ``psi_threshold`` and the window holds at least ``min_samples`` predictions. Plain JSON: no NaN."""
    from scipy.stats import ks_2samp, wasserstein_distance

    if not (math.isfinite(psi_threshold) and psi_threshold > 0):
        raise ValueError(f"psi_threshold must be > 0, got {psi_threshold!r}")
    if isinstance(min_samples, bool) or int(min_samples) < 1:
        raise ValueError(f"min_samples must be >= 1, got {min_samples!r}")
    arrays = window.arrays() if isinstance(window, DriftWindow) else window
    missing = [name for name in sketch.signals if name not in arrays]
    if missing or "label" not in arrays:
        raise ValueError(f"the window lacks {missing + ([] if 'label' in arrays else ['label'])}")
    labels = np.asarray(arrays["label"]).reshape(-1).astype(np.int64)
    n = int(labels.size)
    signals: dict[str, dict[str, Any]] = {}
    for name, ref in sketch.signals.items():
        values = np.asarray(arrays[name], dtype=np.float64).reshape(-1)
        if values.size != n:
            raise ValueError(f"the window has {values.size} values of {name} for {n} labels")
        values = values[np.isfinite(values)]
        if values.size == 0:
            signals[name] = {"psi": None, "ks_statistic": None, "ks_pvalue": None, "wasserstein": None,
                             "wasserstein_scaled": None, "window_mean": None, "reference_mean": ref.mean}
            continue
        ks = ks_2samp(values, ref.sample, method="asymp")
        w = wasserstein_distance(values, ref.sample)
        signals[name] = {
            "psi": psi(ref.shares, bin_counts(values, ref.edges) / values.size),
            "ks_statistic": _finite_or_none(ks.statistic),
            "ks_pvalue": _finite_or_none(ks.pvalue),
            "wasserstein": _finite_or_none(w),
            "wasserstein_scaled": _finite_or_none(w / ref.std) if ref.std > 0 else None,
            "window_mean": float(values.mean()),
            "reference_mean": ref.mean,
        }
    label_shift: dict[str, Any] = {"total_variation": None, "psi": None, "window_shares": None,
                                   "reference_shares": sketch.label_shares.tolist(), "unknown_labels": 0, "bbse": None}
    known = labels[(labels >= 0) & (labels < sketch.num_labels)]
    label_shift["unknown_labels"] = int(n - known.size)
    if known.size:
        shares = np.bincount(known, minlength=sketch.num_labels) / known.size
        label_shift.update(total_variation=float(0.5 * np.abs(shares - sketch.label_shares).sum()),
                           psi=psi(sketch.label_shares, shares), window_shares=shares.tolist())
        if sketch.confusion is not None:
            label_shift["bbse"] = _bbse(sketch.confusion, shares)
    psis = {name: s["psi"] for name, s in signals.items() if s["psi"] is not None}
    if label_shift["psi"] is not None:
        psis["label"] = label_shift["psi"]
    drifted = sorted(name for name, value in psis.items() if value > psi_threshold)
    enough = n >= int(min_samples)
    return {
        "num_samples": n,
        "reference_samples": sketch.num_samples,
        "psi_threshold": float(psi_threshold),
        "min_samples": int(min_samples),
        "enough_samples": enough,
        "signals": signals,
        "label_shift": label_shift,
        "psi": psis,
        "max_psi": max(psis.values()) if psis else None,
        "drifted_signals": drifted,
        "alert": bool(enough and drifted),
    }
