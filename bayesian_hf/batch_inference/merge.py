"""Merging the finished parts, in order, into the output file, and the counts of a finished output."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .parts import METADATA_KEY, part_path
from .readers import read_output
from .writers import write_atomic


def merge_parts(parts_dir: Path, manifest: Mapping[str, Any], output: str, fmt: str, schema: Any) -> None:
    """Concatenate the parts, in order, into ``output`` (written atomically), streaming one part at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    key = manifest["key"]
    paths = [part_path(parts_dir, p, key) for p in range(manifest["num_parts"])]
    meta = {METADATA_KEY: json.dumps({"key": key, "input_sha256": manifest["input"]["sha256"],
                                      "model_sha256": manifest["model"]["sha256"],
                                      "options": manifest["options"]}, sort_keys=True).encode()}
    out_schema = schema.with_metadata(meta)

    def tables():
        for path in paths:
            table = pq.read_table(path)
            if table.schema.remove_metadata() != schema.remove_metadata():
                raise ValueError(f"{path} does not have the columns of this job; rerun with --overwrite")
            yield table

    def write(tmp: Path) -> None:
        if fmt == "parquet":
            with pq.ParquetWriter(tmp, out_schema) as writer:
                for table in tables():
                    writer.write_table(table.replace_schema_metadata(meta))
                if not paths:
                    writer.write_table(out_schema.empty_table())
        elif fmt == "csv":
            import pyarrow.csv as pacsv

            csv_schema = schema.set(schema.get_field_index("prediction_set"), pa.field("prediction_set", pa.string()))
            with pacsv.CSVWriter(tmp, csv_schema) as writer:
                for table in tables():
                    sets = [None if s is None else json.dumps(s) for s in table.column("prediction_set").to_pylist()]
                    index = table.schema.get_field_index("prediction_set")
                    writer.write_table(table.set_column(index, "prediction_set", pa.array(sets, pa.string())))
        else:
            with open(tmp, "w", encoding="utf-8") as fh:
                for table in tables():
                    for row in table.to_pylist():
                        fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")

    write_atomic(Path(output), write)


def summarise_output(output: str) -> dict[str, Any]:
    """Counts of a finished output file: rows, errors by reason, decisions."""
    import pyarrow.compute as pc

    table = read_output(output, columns=["error", "decision"])
    errors = {str(v["values"]): int(v["counts"]) for v in pc.value_counts(table.column("error")).to_pylist()
              if v["values"] is not None}
    decisions = {str(v["values"]): int(v["counts"]) for v in pc.value_counts(table.column("decision")).to_pylist()
                 if v["values"] is not None}
    return {"rows": table.num_rows, "errors": sum(errors.values()), "error_reasons": errors, "decisions": decisions}
