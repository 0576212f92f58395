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

See ``docs/data.md``.
"""

from __future__ import annotations

import logging
import re
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Value

from .splits import stratified_carve_indices

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "load_text_classification_data",
    "describe_class_balance",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]
FileArg = Union[PathLike, Sequence[PathLike], None]

#: file extension -> (``datasets`` packaged builder, extra builder kwargs)
SUPPORTED_EXTENSIONS: dict[str, tuple[str, dict[str, Any]]] = {
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"sep": "\t"}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".parquet": ("parquet", {}),
    ".pq": ("parquet", {}),
}
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst")

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


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


def _as_paths(files: FileArg) -> list[Path]:
    if files is None:
        return []
    if isinstance(files, (str, Path)):
        return [Path(files)]
    return [Path(f) for f in files]


def _builder_for(path: Path) -> tuple[str, dict[str, Any]]:
    suffixes = [s.lower() for s in path.suffixes]
    while suffixes and suffixes[-1] in _COMPRESSION_SUFFIXES:
        suffixes.pop()
    ext = suffixes[-1] if suffixes else ""
    if ext not in SUPPORTED_EXTENSIONS:
        raise ValueError(
            f"unsupported data file extension {ext or '(none)'!r} for {str(path)!r}; supported: "
            f"{', '.join(sorted(SUPPORTED_EXTENSIONS))} (optionally compressed with "
            f"{', '.join(_COMPRESSION_SUFFIXES)})"
        )
    return SUPPORTED_EXTENSIONS[ext]


def _load_files(files: dict[str, FileArg], cache_dir: str | None) -> DatasetDict:
    import datasets

    out: dict[str, Dataset] = {}
    for split, arg in files.items():
        paths = _as_paths(arg)
        if not paths:
            continue
        builders = {_builder_for(p)[0] for p in paths}
        if len(builders) > 1:
            raise ValueError(
                f"{split} files mix formats {sorted(builders)}: {[str(p) for p in paths]}"
            )
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{split} data file(s) not found: {missing}")
        builder, kwargs = _builder_for(paths[0])
        if builder != "parquet":
            for p in paths:
                _check_utf8(p)
        logger.info("loading %s split from %s (%s)", split, [str(p) for p in paths], builder)
        try:
            out[split] = datasets.load_dataset(
                builder,
                data_files={split: [str(p) for p in paths]},
                split=split,
                cache_dir=cache_dir,
                **kwargs,
            )
        except datasets.exceptions.DatasetGenerationError as err:
            cause = err.__cause__ or err.__context__
            if isinstance(cause, UnicodeDecodeError):
                raise ValueError(f"{split} data file(s) {[str(p) for p in paths]} are not UTF-8 ({cause}); re-save "
                                 "them as UTF-8") from None
            raise ValueError(f"cannot read the {split} data file(s) {[str(p) for p in paths]}: "
                             f"{type(cause or err).__name__}: {cause or err}") from None
    return DatasetDict(out)


def _check_utf8(path: Path) -> None:
    """Raise ``ValueError`` naming the first byte of a text data file that is not UTF-8 (read in chunks, so a
    large file costs no memory; compressed files are checked after decompression by their codec)."""
    import bz2
    import codecs
    import gzip
    import lzma

    openers = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
    opener = openers.get(path.suffix.lower(), open)
    if path.suffix.lower() == ".zst":
        return  # no standard-library codec: the loader's own error is reported
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, line = 0, 1
    with opener(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as err:
                bad = offset + err.start
                line += chunk[: err.start].count(b"\n")
                raise ValueError(f"{path} is not UTF-8: byte 0x{err.object[err.start]:02x} at offset {bad} (line {line}) "
                                 "cannot be decoded; re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)") from None
            if not chunk:
                return
            offset += len(chunk)
            line += chunk.count(b"\n")


def _resolve_source(
    dataset: DatasetDict | Dataset | None,
    dataset_name: str | None,
    dataset_config_name: str | None,
    files: dict[str, FileArg],
    embedded: bool,
    embedded_kwargs: Mapping[str, Any] | None,
    cache_dir: str | None,
) -> DatasetDict:
    given_files = {k: v for k, v in files.items() if _as_paths(v)}
    sources = [
        name
        for name, present in (
            ("dataset", dataset is not None),
            ("dataset_name", dataset_name is not None),
            ("files", bool(given_files)),
            ("embedded", embedded),
        )
        if present
    ]
    if len(sources) != 1:
        raise ValueError(
            "give exactly one data source: dataset=, dataset_name=, train_file= (with optional "
            "validation/test/calibration files) or embedded=True; got "
            + (", ".join(sources) if sources else "none")
        )
    if embedded_kwargs and not embedded:
        raise ValueError("embedded_kwargs given but embedded=False")
    if dataset_config_name is not None and dataset_name is None:
        raise ValueError("dataset_config_name given without dataset_name")

    if dataset is not None:
        if isinstance(dataset, Dataset):
            return DatasetDict({"train": dataset})
        if not isinstance(dataset, DatasetDict):
            raise TypeError(
                f"dataset must be a datasets.DatasetDict or Dataset, got {type(dataset).__name__}"
            )
        return DatasetDict(dict(dataset))
    if dataset_name is not None:
        import datasets

        loaded = datasets.load_dataset(dataset_name, dataset_config_name, cache_dir=cache_dir)
        if isinstance(loaded, Dataset):
            loaded = DatasetDict({"train": loaded})
        if not isinstance(loaded, DatasetDict):
            raise TypeError(f"load_dataset({dataset_name!r}) returned {type(loaded).__name__}")
        return loaded
    if given_files:
        if "train" not in given_files:
            raise ValueError("train_file is required when loading from files")
        return _load_files(given_files, cache_dir)
    from .synthetic import load_exchangeable_reviews

    return load_exchangeable_reviews(**dict(embedded_kwargs or {}))


def _normalise_split_names(dsd: DatasetDict) -> DatasetDict:
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


def _select_columns(
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


def _apply_labels(
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
# Texts, carving, balance
# --------------------------------------------------------------------------------------------


def _check_texts(dsd: DatasetDict, drop_empty: bool) -> DatasetDict:
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


def _class_counts(ds: Dataset, num_labels: int) -> np.ndarray:
    labels = np.asarray(ds["label"][:], dtype=np.int64)
    return np.bincount(labels, minlength=num_labels)


def _check_classes(dsd: DatasetDict, names: list[str]) -> None:
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


def _ordered(dsd: Mapping[str, Dataset]) -> DatasetDict:
    keys = [k for k in _SPLIT_ORDER if k in dsd] + [k for k in dsd if k not in _SPLIT_ORDER]
    return DatasetDict({k: dsd[k] for k in keys})


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
    raw = _resolve_source(
        dataset, dataset_name, dataset_config_name, files, embedded, embedded_kwargs, cache_dir
    )
    dsd = _ordered(_normalise_split_names(raw))
    dsd = _select_columns(dsd, text_column, label_column, keep_extra_columns)
    dsd, names = _apply_labels(dsd, label_names)
    dsd = _check_texts(dsd, drop_empty)

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
        dsd = _ordered(merged)

    _check_classes(dsd, names)
    label2id = {name: i for i, name in enumerate(names)}
    table = describe_class_balance(dsd, names)
    logger.info("class balance:\n%s", table)
    if verbose:
        print(table)
    return dsd, label2id


def load_labelled_texts(
    path: str | os.PathLike[str],
    *,
    label2id: Mapping[str, int],
    text_column: str = "text",
    label_column: str = "label",
    labels_optional: bool = False,
) -> tuple[list[str], list[int] | None]:
    """Texts and label ids of ONE labelled file (csv/json/jsonl/parquet), mapped through a model's ``label2id``.

    Labels may be the label names or their ids (as ints or strings). Used to calibrate or check drift on data the
    model has not seen; raises ``ValueError`` on missing columns, empty texts or labels the model does not know.
    With ``labels_optional=True`` a file without the label column gives ``(texts, None)``.
    """
    ds = _load_files({"data": path}, None)["data"]
    if labels_optional and label_column not in ds.column_names and text_column in ds.column_names:
        texts = [str(t) if t is not None else "" for t in ds[text_column]]
        empty = [i for i, t in enumerate(texts) if not t.strip()]
        if empty:
            raise ValueError(f"{path}: {len(empty)} empty text(s), first at row {empty[0]}")
        return texts, None
    missing = [c for c in (text_column, label_column) if c not in ds.column_names]
    if missing:
        raise ValueError(f"{path} has no column(s) {missing}; available: {ds.column_names}")
    feature = ds.features[label_column]
    names = getattr(feature, "names", None)
    texts = [str(t) if t is not None else "" for t in ds[text_column]]
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        raise ValueError(f"{path}: {len(empty)} empty text(s), first at row {empty[0]}")
    known = {str(k): int(v) for k, v in label2id.items()}
    ids_by_string = {str(v): int(v) for v in label2id.values()}
    labels = []
    for i, raw in enumerate(ds[label_column]):
        key = names[raw] if names is not None and isinstance(raw, int) else str(raw)
        if key in known:
            labels.append(known[key])
        elif key in ids_by_string:
            labels.append(ids_by_string[key])
        else:
            raise ValueError(f"{path}: row {i} has label {raw!r}, unknown to the model (labels: {sorted(known)})")
    return texts, labels
