"""Reading the input file (csv / jsonl / parquet) with one clear line per error, the rows that cannot be
classified, and reading a finished output back."""

from __future__ import annotations

import codecs
import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

INPUT_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
OUTPUT_FORMATS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl"}


@dataclasses.dataclass
class InputRows:
    """The texts (as read: may hold None or non-strings) and the optional id column of an input file."""

    texts: list[Any]
    ids: Any | None  # a pyarrow Array, or None
    sha256: str
    num_rows: int


def format_of(path: str, formats: Mapping[str, str], what: str) -> str:
    """The format of ``path`` by its extension (a ``ValueError`` naming the supported ones otherwise)."""
    suffix = Path(path).suffix.lower()
    if suffix not in formats:
        raise ValueError(f"unsupported {what} file extension {suffix or '(none)'!r} for {path!r}; supported: "
                         f"{', '.join(sorted(formats))}")
    return formats[suffix]


def _hash_and_check_utf8(path: str, check_utf8: bool, chunk_size: int = 1 << 22) -> str:
    """SHA-256 of the file; with ``check_utf8`` also a clear ``ValueError`` naming the line of the first byte
    that is not UTF-8 (pyarrow and json would report it with a traceback or an offset)."""
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, lines = 0, 0
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
            if check_utf8:
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as err:
                    bad = offset + err.start
                    fh.seek(0)
                    line = fh.read(bad).count(b"\n") + 1
                    sample = chunk[err.start:err.start + 4]
                    raise ValueError(f"{path} is not UTF-8 text (byte {bad}, line {line}: {sample!r}); "
                                     "re-encode it, e.g. `iconv -f latin1 -t utf-8 IN > OUT`") from None
                lines += chunk.count(b"\n")
            offset += len(chunk)
    if check_utf8:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise ValueError(f"{path} is not UTF-8 text (it ends inside a multi-byte character)") from None
    return digest.hexdigest()


def _missing_column(path: str, column: str, available: Sequence[str], flag: str) -> ValueError:
    return ValueError(f"{path} has no column {column!r} (pass {flag}); available: {list(available)}")


def read_input(path: str, text_column: str = "text", id_column: str | None = None) -> InputRows:
    """Read the text column (and ``id_column``) of a csv / jsonl (or JSON array) / parquet file.

    Texts are kept as read -- a missing value is None, a JSON number stays a number -- so that bad rows can be
    marked instead of dropped.  Raises ``FileNotFoundError`` / ``ValueError`` with one clear line otherwise.
    """
    import pyarrow as pa

    fmt = format_of(path, INPUT_FORMATS, "input")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"input file {path} does not exist")
    sha = _hash_and_check_utf8(path, check_utf8=fmt in ("csv", "jsonl"))
    ids = None
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            schema = pq.read_schema(path)
        except pa.ArrowException as err:
            raise ValueError(f"{path} is not a readable Parquet file: {err}") from None
        for column, flag in ((text_column, "--text_column"), (id_column, "--id_column")):
            if column is not None and column not in schema.names:
                raise _missing_column(path, column, schema.names, flag)
        kind = schema.field(text_column).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)
                or getattr(pa.types, "is_string_view", lambda _: False)(kind)):
            raise ValueError(f"{path}: column {text_column!r} holds {kind}, not text (pass --text_column)")
        columns = [text_column] + ([id_column] if id_column and id_column != text_column else [])
        table = pq.read_table(path, columns=columns)
        texts = table.column(text_column).to_pylist()
        if id_column is not None:
            ids = table.column(id_column).combine_chunks()
    elif fmt == "csv":
        import pyarrow.csv as pacsv

        try:
            table = pacsv.read_csv(
                path,
                parse_options=pacsv.ParseOptions(newlines_in_values=True),
                convert_options=pacsv.ConvertOptions(column_types={text_column: pa.string()},
                                                     strings_can_be_null=False, quoted_strings_can_be_null=False),
            )
        except pa.ArrowInvalid as err:
            if "Empty CSV file" in str(err):
                raise ValueError(f"{path} is empty (not even a header line)") from None
            raise ValueError(f"{path} is not valid CSV: {err}") from None
        for column, flag in ((text_column, "--text_column"), (id_column, "--id_column")):
            if column is not None and column not in table.column_names:
                raise _missing_column(path, column, table.column_names, flag)
        texts = table.column(text_column).to_pylist()
        if id_column is not None:
            ids = table.column(id_column).combine_chunks()
    else:
        records = _read_json_records(path)
        keys: dict[str, None] = {}
        for record in records[:1000]:
            keys.update(dict.fromkeys(record))
        for column, flag in ((text_column, "--text_column"), (id_column, "--id_column")):
            if column is not None and records and not any(column in r for r in records):
                raise _missing_column(path, column, list(keys), flag)
        texts = [r.get(text_column) for r in records]
        if id_column is not None:
            values = [r.get(id_column) for r in records]
            try:
                ids = pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types: keep them as JSON text
                ids = pa.array([None if v is None else v if isinstance(v, str) else json.dumps(v) for v in values])
    return InputRows(texts=texts, ids=ids, sha256=sha, num_rows=len(texts))


def _read_json_records(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        head = fh.read(4096).lstrip("\ufeff \t\r\n")
        fh.seek(0)
        if head.startswith("["):
            try:
                records = json.load(fh)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} is not valid JSON: {err}") from None
        else:
            records = []
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path} line {number} is not valid JSON: {err.msg}") from None
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise ValueError(f"{path}: record {i} is a {type(record).__name__}, expected an object with named fields")
    return records


def row_error(text: Any) -> str | None:
    """Why ``text`` cannot be classified before tokenising (None when it can)."""
    if text is None:
        return "missing text (null)"
    if not isinstance(text, str):
        return f"text is not a string ({type(text).__name__})"
    if not text.strip():
        return "empty text" if not text else "whitespace-only text"
    return None


NOTHING_TO_TOKENISE = "nothing to tokenise (no token besides [CLS]/[SEP])"


def read_output(path: str, columns: Sequence[str] | None = None) -> Any:
    """A finished output (parquet / csv / jsonl) as a pyarrow Table."""
    import pyarrow as pa

    fmt = format_of(path, OUTPUT_FORMATS, "output")
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path, columns=list(columns) if columns else None)
    if fmt == "csv":
        import pyarrow.csv as pacsv

        opts = pacsv.ConvertOptions(include_columns=list(columns) if columns else None,
                                    column_types={"error": pa.string(), "decision": pa.string(), "label": pa.string()},
                                    strings_can_be_null=True)
        return pacsv.read_csv(path, convert_options=opts)
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    table = pa.Table.from_pylist(rows) if rows else pa.table({c: pa.array([], pa.string()) for c in columns or []})
    return table.select(list(columns)) if columns else table
