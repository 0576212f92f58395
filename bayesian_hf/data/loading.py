"""Loading text-classification datasets for training and evaluation.

Every source (a Hub dataset name, local CSV/TSV/JSON/JSONL/Parquet files, an in-memory
:class:`datasets.DatasetDict`, or the embedded synthetic dataset) goes through the same
normalisation:

1. split names are normalised (``valid``/``val``/``dev`` -> ``validation``,
   ``calib``/``cal`` -> ``calibration``); a ``train`` split is required;
2. the text and label columns are checked and renamed to ``text`` and ``label``;
3. labels are mapped to integer ids from the *train* split (rules in
   :func:`load_text_classification_data`) and stored as a :class:`datasets.ClassLabel`;
   evaluation splits may not contain labels unseen in train;
4. empty / whitespace-only texts are rejected (or dropped with ``drop_empty=True``);
5. missing ``validation`` (and ``calibration`` when ``calibration_split > 0``) splits are carved
   out of train with a stratified, seeded split;
6. every split must contain at least two classes; the class balance is logged and returned
   by :func:`describe_class_balance`.

This module is the entry point that runs those steps; the sources are read by ``data/readers.py``, steps 1-4 and 6
are ``data/preparation.py``, step 5 is ``data/splits.py``. See ``docs/data.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from datasets import Dataset, DatasetDict

from .preparation import (
    apply_labels,
    check_classes,
    check_texts,
    describe_class_balance,
    normalise_split_names,
    order_splits,
    select_columns,
)
from .readers import SUPPORTED_EXTENSIONS, FileArg, load_labelled_texts, resolve_source
from .splits import stratified_carve_indices

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "load_text_classification_data",
    "describe_class_balance",
    "load_labelled_texts",
]

logger = logging.getLogger(__name__)


def _stratified_carve(
    train: Dataset, fractions: dict[str, float], seed: int
) -> dict[str, Dataset]:
    """Split ``train`` into ``train`` + the named splits, stratified by label
    (:func:`bayesian_hf.data.splits.stratified_carve_indices`); rows keep their original order."""
    indices = stratified_carve_indices(np.asarray(train["label"][:], dtype=np.int64), fractions, seed)
    return {name: train.select(idx) for name, idx in indices.items()}


def _as_fraction(value: float, n: int, name: str) -> float:
    if isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a fraction in [0, 1) or a count >= 1, got {value!r}")
    if isinstance(value, int) and value >= 1:
        if value >= n:
            raise ValueError(f"{name}={value} is not smaller than the train split ({n} rows)")
        return value / n
    if value >= 1:
        raise ValueError(f"{name} must be a fraction in [0, 1) or an integer count, got {value}")
    return float(value)


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


def load_text_classification_data(
    *,
    dataset: DatasetDict | Dataset | None = None,
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    train_file: FileArg = None,
    validation_file: FileArg = None,
    test_file: FileArg = None,
    calibration_file: FileArg = None,
    text_column: str = "text",
    label_column: str = "label",
    validation_split: float = 0.1,
    calibration_split: float = 0.0,
    seed: int = 42,
    label_names: Sequence[str] | None = None,
    embedded: bool = False,
    embedded_kwargs: Mapping[str, Any] | None = None,
    drop_empty: bool = False,
    keep_extra_columns: bool = False,
    cache_dir: str | None = None,
    verbose: bool = False,
) -> tuple[DatasetDict, dict[str, int]]:
    """Load a single-label text-classification dataset with normalised ``text``/``label``.

    Give exactly one source: ``dataset`` (an in-memory DatasetDict, or a Dataset used as
    train), ``dataset_name`` (+ ``dataset_config_name``; goes through
    ``datasets.load_dataset``), ``train_file`` (+ optional ``validation_file``, ``test_file``,
    ``calibration_file``; ``.csv``/``.tsv``/``.json``/``.jsonl``/``.parquet``, optionally
    compressed; a path or a list of paths) or ``embedded=True`` (the synthetic
    "exchangeable reviews", :func:`bayesian_hf.data.load_exchangeable_reviews` called with
    ``embedded_kwargs``).

    Label rule (decided on the train split): ClassLabel names if the column is a ClassLabel;
    otherwise sorted unique string labels (numeric strings sorted numerically); non-negative
    integer labels are kept as ids with names ``"0"``, ``"1"``, ... ``label_names`` overrides
    the names (and, for string labels, fixes their order).  Labels of other splits that do not
    occur in train raise ``ValueError``; a non-train split whose labels are all missing
    (``None``/``-1``, e.g. GLUE test sets) is dropped with a warning.

    ``validation_split`` / ``calibration_split`` (fraction of train, or an integer count) are
    used only when that split is absent; the split is then carved from train, stratified by
    label, with ``seed``.  Every resulting split must contain at least two classes.

    Returns:
        ``(dataset_dict, label2id)``: splits ordered train, validation, calibration, test, then
        any others (e.g. ``ood``); columns ``text`` (str) and ``label`` (ClassLabel), plus the
        source's other columns when ``keep_extra_columns=True``.
    """
    files = {
        "train": train_file,
        "validation": validation_file,
        "test": test_file,
        "calibration": calibration_file,
    }
    raw = resolve_source(
        dataset, dataset_name, dataset_config_name, files, embedded, embedded_kwargs, cache_dir
    )
    dsd = order_splits(normalise_split_names(raw))
    dsd = select_columns(dsd, text_column, label_column, keep_extra_columns)
    dsd, names = apply_labels(dsd, label_names)
    dsd = check_texts(dsd, drop_empty)

    n_train = len(dsd["train"])
    carve: dict[str, float] = {}
    if "calibration" not in dsd and calibration_split:
        carve["calibration"] = _as_fraction(calibration_split, n_train, "calibration_split")
    if "validation" not in dsd and validation_split:
        carve["validation"] = _as_fraction(validation_split, n_train, "validation_split")
    if sum(carve.values()) >= 1.0:
        raise ValueError(f"carved fractions {carve} leave nothing for train")
    if carve:
        logger.info("carving %s out of train (stratified, seed=%d)", carve, seed)
        parts = _stratified_carve(dsd["train"], carve, seed)
        merged = dict(dsd)
        merged.update(parts)
        dsd = order_splits(merged)

    check_classes(dsd, names)
    label2id = {name: i for i, name in enumerate(names)}
    table = describe_class_balance(dsd, names)
    logger.info("class balance:\n%s", table)
    if verbose:
        print(table)
    return dsd, label2id
