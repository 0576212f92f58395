"""Stratified, seeded splits of a label array into index sets (numpy only).

One primitive, :func:`class_permutations`: the classes in sorted order, each class's row indices shuffled by one
``numpy.random.default_rng(seed)`` drawn class after class.  Every splitter cuts those shuffled blocks:

* :func:`stratified_carve_indices` -- the validation / calibration splits carved out of train when a dataset lacks
  them (``data.loading``): per-class sizes by largest-remainder rounding, at least one row per class left in train;
* :func:`stratified_halves` -- the calibration-fit / held-out halves of ``evaluation.fit_model_calibration`` and
  ``bayesian-hf calibrate``: each class cut at ``n_class // 2``.

Kept hand-written: scikit-learn's ``StratifiedShuffleSplit`` and ``datasets.Dataset.train_test_split(
stratify_by_column=...)`` (which follows it) draw with ``np.random.RandomState`` and allocate per-class sizes by
``_approximate_mode``, so they select other rows for the same seed, which would change the committed figures.

``calibration_selection._stratified_folds`` (shuffled stratified K-fold, kept hand-written for the same reason) is
not here: importing this subpackage from ``bayesian_hf.calibration`` would load the dataset loaders with it
(``data/__init__`` imports them).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["class_permutations", "largest_remainder_sizes", "stratified_carve_indices", "stratified_halves"]


def class_permutations(labels: np.ndarray, seed: int) -> list[np.ndarray]:
    """Row indices of each class (classes in sorted order), each shuffled; one generator seeded with ``seed``."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    return [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]


def largest_remainder_sizes(frac: float, counts: np.ndarray) -> np.ndarray:
    """Per-class carve sizes: largest-remainder rounding of ``frac * counts`` so the total is
    ``round(frac * n)``; a class with >= 2 examples contributes at least one."""
    exact = frac * counts
    base = np.floor(exact).astype(np.int64)
    extra = int(np.floor(frac * counts.sum() + 0.5)) - int(base.sum())
    order = np.argsort(-(exact - base), kind="stable")
    base[order[: max(extra, 0)]] += 1
    base[(base == 0) & (counts >= 2)] = 1
    return base


def stratified_carve_indices(labels: np.ndarray, fractions: Mapping[str, float], seed: int) -> dict[str, np.ndarray]:
    """Sorted row indices of ``"train"`` and of each named split carved out of it, stratified by label.

    Each class is shuffled (:func:`class_permutations`); the carved splits take consecutive blocks of it, in the
    order of ``fractions``, sized by :func:`largest_remainder_sizes` (``fraction * n_class``), always leaving at
    least one example per class in train.
    """
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.unique(labels, return_counts=True)[1]
    sizes = {name: largest_remainder_sizes(frac, counts) for name, frac in fractions.items()}
    taken: dict[str, list[np.ndarray]] = {name: [] for name in fractions}
    keep: list[np.ndarray] = []
    for j, idx in enumerate(class_permutations(labels, seed)):
        start = 0
        for name in fractions:
            k = min(int(sizes[name][j]), max(len(idx) - start - 1, 0))
            taken[name].append(idx[start : start + k])
            start += k
        keep.append(idx[start:])
    out = {"train": np.sort(np.concatenate(keep))}
    for name, parts in taken.items():
        out[name] = np.sort(np.concatenate(parts))
    return out


def stratified_halves(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint sorted index arrays covering ``labels``; each class is shuffled and its first
    ``n_class // 2`` rows go to the first half."""
    first, second = [], []
    for idx in class_permutations(labels, seed):
        cut = len(idx) // 2
        first.append(idx[:cut])
        second.append(idx[cut:])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(second))
