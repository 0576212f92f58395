"""Input and prediction drift in production: a bounded rolling window of the drift signals and the statistics
that compare it with the reference sketch of :mod:`bayesian_hf.drift_reference` (re-exported here: the sketch,
the signals and the JSON format).

:class:`DriftWindow` is a fixed-size ring buffer: its memory is set by ``max_size`` whatever the traffic.
:func:`drift_statistics` compares a window (or arrays) with a sketch and returns JSON-safe numbers and an
``alert``: some PSI above ``psi_threshold`` with at least ``min_samples`` predictions in the window.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .drift_reference import (  # noqa: F401  (re-exported: bayesian_hf.drift is where callers import them)
    DEFAULT_NUM_BINS,
    FORMAT_NAME,
    FORMAT_VERSION,
    LENGTH_UNITS,
    MAX_BINS,
    MAX_LABELS,
    MAX_SUBSAMPLE,
    SIGNALS,
    ReferenceSketch,
    SignalSketch,
    bin_counts,
    build_sketch,
    record_signals,
    signals_from_outputs,
)

MAX_WINDOW = 10_000_000
DEFAULT_PSI_THRESHOLD = 0.2
DEFAULT_MIN_SAMPLES = 100
PSI_EPSILON = 1e-4
"""Floor of a bin share in the PSI, so an empty bin gives a large but finite term."""
_BBSE_MAX_CONDITION = 1e6


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
