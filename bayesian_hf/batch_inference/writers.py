"""Writing: the output columns (one Arrow schema for every part and output) and atomic file writes."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..folder_integrity import atomic_file
from ..inference import UNCERTAINTY_KEYS

#: the input row index column (first in every part and output)
_ROW_COLUMN = "row"


def write_atomic(path: Path, write) -> None:
    """Write through ``write(tmp_path)`` to a temporary file in the same folder, then ``os.replace``: readers see
    the old file or the whole new one, never half of it."""
    with atomic_file(path) as tmp:
        write(Path(tmp))


def write_json_atomic(path: Path, data: Any) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n"))


def output_schema(id2label: Mapping[int, str], id_type: Any | None, id_column: str | None) -> Any:
    """The Arrow schema of every part (and of a Parquet / JSONL output)."""
    import pyarrow as pa

    fields = [pa.field(_ROW_COLUMN, pa.int64())]
    if id_column is not None:
        fields.append(pa.field(id_column, id_type))
    fields += [pa.field("label", pa.string()), pa.field("score", pa.float64()), pa.field("calibrated", pa.bool_())]
    fields += [pa.field(probability_column(id2label[i]), pa.float64()) for i in sorted(id2label)]
    fields += [pa.field(probability_column(id2label[i], raw=True), pa.float64()) for i in sorted(id2label)]
    # uncertainty_epistemic/_aleatoric/_total, order_dispersion: one float column per uncertainty output
    fields += [pa.field(k if k == "order_dispersion" else f"uncertainty_{k}", pa.float64()) for k in UNCERTAINTY_KEYS]
    fields += [
        pa.field("num_units", pa.int64()),
        pa.field("decision", pa.string()),
        pa.field("prediction_set", pa.list_(pa.string())),
        pa.field("truncated", pa.bool_()),
        pa.field("error", pa.string()),
    ]
    return pa.schema(fields)


def probability_column(label: str, raw: bool = False) -> str:
    """The column of one label's probability: ``prob_<label>`` (calibrated when the model has a calibrator), or
    with ``raw`` ``raw_prob_<label>`` (the model's own predictive probability, before the calibrator)."""
    return f"raw_prob_{label}" if raw else f"prob_{label}"


def records_to_table(rows: Sequence[int], ids: Any | None, records: Sequence[Mapping[str, Any] | None],
                      errors: Sequence[str | None], schema: Any, id2label: Mapping[int, str],
                      id_column: str | None) -> Any:
    """One part as an Arrow table: a record (or None for a bad row) per input row, in input order."""
    import pyarrow as pa

    def col(get):
        return [None if r is None else get(r) for r in records]

    columns: dict[str, Any] = {_ROW_COLUMN: list(rows)}
    if id_column is not None:
        columns[id_column] = ids
    columns["label"] = col(lambda r: r["label"])
    columns["score"] = col(lambda r: r["score"])
    columns["calibrated"] = col(lambda r: r["calibrated"])
    for i in sorted(id2label):
        name = id2label[i]
        columns[probability_column(name)] = col(lambda r, name=name: r["probabilities"][name])
        columns[probability_column(name, raw=True)] = col(lambda r, name=name: r["raw_probabilities"][name])
    for part in ("epistemic", "aleatoric", "total"):
        columns[f"uncertainty_{part}"] = col(lambda r, part=part: r["uncertainty"][part])
    columns["order_dispersion"] = col(lambda r: r["order_dispersion"])
    columns["num_units"] = col(lambda r: r["num_units"])
    columns["decision"] = col(lambda r: r["decision"])
    columns["prediction_set"] = col(lambda r: r.get("prediction_set"))
    columns["truncated"] = col(lambda r: r.get("truncated"))
    columns["error"] = list(errors)
    return pa.Table.from_pydict({name: columns[name] for name in schema.names}, schema=schema)
