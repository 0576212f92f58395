"""Corpus readers: where the rows come from, before any normalisation (``data.loading`` runs the rest).

A Hub dataset name (``datasets.load_dataset``), local CSV/TSV/JSON/JSONL/Parquet files (optionally compressed, checked
to be UTF-8 first), an in-memory :class:`datasets.DatasetDict` or the embedded synthetic dataset; and
:func:`load_labelled_texts`, the texts and label ids of one labelled file mapped through a model's ``label2id``.
See ``docs/data.md``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

from datasets import Dataset, DatasetDict

from .synthetic import load_exchangeable_reviews

__all__ = ["SUPPORTED_EXTENSIONS", "FileArg", "PathLike", "load_labelled_texts", "resolve_source"]

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


def resolve_source(
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
    return load_exchangeable_reviews(**dict(embedded_kwargs or {}))


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
