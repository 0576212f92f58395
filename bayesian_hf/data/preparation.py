"""Preparation: what every source goes through once it is a :class:`datasets.DatasetDict` (``data.loading`` runs
it).

Split names normalised (``valid``/``val``/``dev`` -> ``validation``, ``calib``/``cal`` -> ``calibration``), the text
and label columns checked and renamed to ``text`` / ``label``, labels mapped to ids decided on the train split
(:func:`apply_labels`'s rules are in ``data.loading.load_text_classification_data``), empty texts rejected or dropped,
every split checked for two classes, and the class-balance table (:func:`describe_class_balance`).
See ``docs/data.md``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Value

__all__ = [
    "apply_labels",
    "check_classes",
    "check_texts",
    "describe_class_balance",
    "normalise_split_names",
    "order_splits",
    "select_columns",
]

logger = logging.getLogger(__name__)

_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "calibration": "calibration",
    "calib": "calibration",
    "cal": "calibration",
    "test": "test",
}
_SPLIT_ORDER = ("train", "validation", "calibration", "test")
_UNLABELLED = object()  # marker for None / -1 labels


def normalise_split_names(dsd: DatasetDict) -> DatasetDict:
    out: dict[str, Dataset] = {}
    for name, ds in dsd.items():
        canonical = _SPLIT_ALIASES.get(str(name).lower(), str(name))
        if canonical in out:
            raise ValueError(f"splits {sorted(dsd)} contain two names for {canonical!r}")
        out[canonical] = ds
    if "train" not in out:
        raise ValueError(f"no 'train' split; available splits: {sorted(out)}")
    return DatasetDict(out)


# --------------------------------------------------------------------------------------------
# Columns and labels
# --------------------------------------------------------------------------------------------


def select_columns(
    dsd: DatasetDict, text_column: str, label_column: str, keep_extra_columns: bool
) -> DatasetDict:
    if text_column == label_column:
        raise ValueError(f"text_column and label_column are both {text_column!r}")
    out: dict[str, Dataset] = {}
    for split, ds in dsd.items():
        missing = [c for c in (text_column, label_column) if c not in ds.column_names]
        if missing:
            raise ValueError(
                f"split {split!r} has no column(s) {missing}; available columns: "
                f"{ds.column_names} (set text_column= / label_column=)"
            )
        extras = [c for c in ds.column_names if c not in (text_column, label_column)]
        keep = [c for c in extras if keep_extra_columns and c not in ("text", "label")]
        ds = ds.select_columns([text_column, label_column, *keep])
        ds = ds.rename_columns({text_column: "text", label_column: "label"})
        if not _is_string_feature(ds.features["text"]):
            raise ValueError(
                f"text column {text_column!r} of split {split!r} has type "
                f"{ds.features['text']}, expected strings"
            )
        out[split] = ds
    return DatasetDict(out)


def _is_string_feature(feature: Any) -> bool:
    return isinstance(feature, Value) and feature.dtype in ("string", "large_string")


def _label_kind(feature: Any, split: str) -> str:
    if isinstance(feature, ClassLabel):
        return "classlabel"
    if isinstance(feature, Value):
        dtype = feature.dtype
        if dtype in ("string", "large_string"):
            return "string"
        if dtype == "bool":
            return "int"
        if dtype.startswith(("int", "uint")):
            return "int"
        if dtype.startswith("float"):
            return "float"
        if dtype == "null":
            return "null"
    raise ValueError(
        f"label column of split {split!r} has unsupported type {feature}; single-label "
        "classification needs string, integer or ClassLabel labels"
    )


def _natural_key(value: str) -> tuple[int, Any]:
    return (0, int(value)) if re.fullmatch(r"-?\d+", value) else (1, value)


def _label_names_from_train(
    train: Dataset, label_names: Sequence[str] | None
) -> tuple[list[str], str]:
    """Class names (index = id) and the train label kind."""
    feature = train.features["label"]
    kind = _label_kind(feature, "train")
    values = train["label"][:]
    if kind == "classlabel":
        names = list(feature.names)
        if label_names is not None:
            if len(label_names) != len(names):
                raise ValueError(
                    f"label_names has {len(label_names)} entries but the train ClassLabel has "
                    f"{len(names)} classes: {names}"
                )
            names = [str(n) for n in label_names]
        return names, kind
    if kind == "null":
        raise ValueError("train split has no labels (label column is all null)")
    present = [v for v in values if v is not None and not (isinstance(v, float) and np.isnan(v))]
    if kind == "string":
        uniq = sorted(set(present), key=_natural_key)
        if label_names is None:
            return uniq, kind
        names = [str(n) for n in label_names]
        unknown = sorted(set(uniq) - set(names))
        if unknown:
            raise ValueError(f"train labels {unknown} are not in label_names {names}")
        return names, kind
    # int / float; -1 is the HF "no label" marker, reported later as unlabelled rows
    ints = [i for i in _as_int_labels(present, "train") if i != -1]
    if ints and min(ints) < 0:
        raise ValueError(
            f"train split has negative integer labels {sorted({i for i in ints if i < 0})}; "
            "use ids 0..K-1 or string labels"
        )
    if label_names is not None:
        names = [str(n) for n in label_names]
        too_big = sorted({i for i in ints if i >= len(names)})
        if too_big:
            raise ValueError(
                f"train labels {too_big} are out of range for label_names {names} "
                f"({len(names)} classes)"
            )
        return names, "int"
    k = (max(ints) + 1) if ints else 0
    return [str(i) for i in range(k)], "int"


def _as_int_labels(values: list[Any], split: str) -> list[int]:
    out = []
    for v in values:
        if isinstance(v, float) and not float(v).is_integer():
            raise ValueError(
                f"split {split!r} has non-integer numeric label {v!r}; regression is not supported"
            )
        out.append(int(v))
    return out


def _convert_labels(
    ds: Dataset,
    split: str,
    names: list[str],
    train_kind: str,
    train_classlabel_names: list[str] | None,
) -> tuple[list[Any], list[Any]]:
    """Map one split's labels to ids. Returns (ids with _UNLABELLED markers, unknown values)."""
    name2id = {n: i for i, n in enumerate(names)}
    if train_classlabel_names is not None:  # original names still map (label_names renames)
        for i, n in enumerate(train_classlabel_names):
            name2id.setdefault(n, i)
    feature = ds.features["label"]
    kind = _label_kind(feature, split)
    values = ds["label"][:]
    ids: list[Any] = []
    unknown: list[Any] = []
    if kind == "classlabel":
        identity = list(feature.names) in (names, train_classlabel_names)
        for v in values:
            if v is None or v < 0:
                ids.append(_UNLABELLED)
            elif identity:
                ids.append(int(v))
            elif feature.names[v] in name2id:
                ids.append(name2id[feature.names[v]])
            else:
                ids.append(None)
                unknown.append(feature.names[v])
        return ids, unknown
    for v in values:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            ids.append(_UNLABELLED)
            continue
        if isinstance(v, str):
            key = v
        elif train_kind == "string":
            key = str(_as_int_labels([v], split)[0])
        else:
            i = _as_int_labels([v], split)[0]
            if i == -1:
                ids.append(_UNLABELLED)
            elif 0 <= i < len(names):
                ids.append(i)
            else:
                ids.append(None)
                unknown.append(v)
            continue
        if key in name2id:
            ids.append(name2id[key])
        else:
            ids.append(None)
            unknown.append(v)
    return ids, unknown


def apply_labels(
    dsd: DatasetDict, label_names: Sequence[str] | None
) -> tuple[DatasetDict, list[str]]:
    names, train_kind = _label_names_from_train(dsd["train"], label_names)
    train_feature = dsd["train"].features["label"]
    train_cl_names = list(train_feature.names) if isinstance(train_feature, ClassLabel) else None
    if len(names) < 2:
        raise ValueError(
            f"train split has {len(names)} class(es) {names}; classification needs at least 2"
        )
    class_label = ClassLabel(names=names)
    out: dict[str, Dataset] = {}
    train_ids: set[int] = set()
    for split, ds in dsd.items():  # train first (ordered below)
        ids, unknown = _convert_labels(ds, split, names, train_kind, train_cl_names)
        n_unlabelled = sum(1 for i in ids if i is _UNLABELLED)
        if n_unlabelled == len(ids) and split != "train" and len(ids) > 0:
            logger.warning("split %r has no labels (all None/-1): dropped", split)
            continue
        if n_unlabelled:
            first = next(j for j, i in enumerate(ids) if i is _UNLABELLED)
            raise ValueError(
                f"split {split!r} has {n_unlabelled} row(s) without a label (None/-1/NaN), "
                f"first at row {first}"
            )
        if split == "train":
            train_ids = {int(i) for i in ids}
        else:
            unseen = sorted(
                {str(v) for v in unknown}
                | {names[i] for i in ids if i is not None and i not in train_ids}
            )
            if unseen:
                raise ValueError(
                    f"split {split!r} contains label(s) not seen in train: {unseen}; "
                    f"train labels: {[names[i] for i in sorted(train_ids)]}"
                )
        ds = ds.remove_columns("label").add_column(
            "label", [int(i) for i in ids], feature=class_label
        )
        out[split] = ds.select_columns(["text", "label"] + [
            c for c in ds.column_names if c not in ("text", "label")
        ])
    return DatasetDict(out), names


# --------------------------------------------------------------------------------------------
# Texts, classes, balance
# --------------------------------------------------------------------------------------------


def check_texts(dsd: DatasetDict, drop_empty: bool) -> DatasetDict:
    out: dict[str, Dataset] = {}
    for split, ds in dsd.items():
        texts = ds["text"][:]
        bad = [j for j, t in enumerate(texts) if t is None or not str(t).strip()]
        if bad:
            if not drop_empty:
                raise ValueError(
                    f"split {split!r} has {len(bad)} empty or whitespace-only text(s), first at "
                    f"row {bad[0]}; clean the data or pass drop_empty=True"
                )
            logger.warning(
                "split %r: dropping %d empty or whitespace-only text(s) (first at row %d)",
                split, len(bad), bad[0],
            )
            bad_set = set(bad)
            ds = ds.select([j for j in range(len(texts)) if j not in bad_set])
        out[split] = ds
    return DatasetDict(out)


def _class_counts(ds: Dataset, num_labels: int) -> np.ndarray:
    labels = np.asarray(ds["label"][:], dtype=np.int64)
    return np.bincount(labels, minlength=num_labels)


def check_classes(dsd: DatasetDict, names: list[str]) -> None:
    for split, ds in dsd.items():
        counts = _class_counts(ds, len(names))
        present = int((counts > 0).sum())
        if present < 2:
            detail = {names[i]: int(c) for i, c in enumerate(counts)}
            role = "training" if split == "train" else "evaluation"
            raise ValueError(
                f"split {split!r} has {len(ds)} rows but only {present} class(es); class counts: "
                f"{detail}. A {role} split needs at least two classes"
                + ("" if split == "train" else " (accuracy on a one-class split is meaningless)")
            )


def describe_class_balance(
    dsd: DatasetDict | Mapping[str, Dataset], id2label: Mapping[int, str] | Sequence[str]
) -> str:
    """A plain-text table of label counts and fractions per split.

    ``id2label`` maps label ids to names (a dict or a list indexed by id).  Ids not in it are
    shown by number.
    """
    if isinstance(id2label, Mapping):
        names = {int(k): str(v) for k, v in id2label.items()}
    else:
        names = {i: str(v) for i, v in enumerate(id2label)}
    num = max(names, default=-1) + 1
    rows = []
    for split, ds in dsd.items():
        labels = np.asarray(ds["label"][:], dtype=np.int64)
        counts = np.bincount(labels, minlength=num) if labels.size else np.zeros(num, int)
        rows.append((split, len(labels), counts))
    num = max([num] + [len(c) for _, _, c in rows])
    header = ["split", "n"] + [names.get(i, str(i)) for i in range(num)]
    table = [header]
    for split, n, counts in rows:
        cells = [split, str(n)]
        for i in range(num):
            c = int(counts[i]) if i < len(counts) else 0
            cells.append(f"{c} ({100.0 * c / n:.1f}%)" if n else "0")
        table.append(cells)
    widths = [max(len(r[j]) for r in table) for j in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) if j == 0 else cell.rjust(w) for j, (cell, w) in
                  enumerate(zip(r, widths)))
        for r in table
    ]
    return "\n".join(lines)


def order_splits(dsd: Mapping[str, Dataset]) -> DatasetDict:
    keys = [k for k in _SPLIT_ORDER if k in dsd] + [k for k in dsd if k not in _SPLIT_ORDER]
    return DatasetDict({k: dsd[k] for k in keys})
