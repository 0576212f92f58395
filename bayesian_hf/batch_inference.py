"""Batch inference over files: ``bayesian-hf predict --model DIR --data in.{csv,jsonl,parquet} --output out.parquet``.

The input is cut into fixed-size *parts* (``part_size`` rows, part ``p`` holds rows ``[p*part_size, (p+1)*part_size)``).
Each part is classified with :func:`bayesian_hf.pipelines.predict` in length-bucketed batches (the part's texts
sorted by length, so a batch pads to similar lengths; results are put back in input order) and written atomically
(temporary file + ``os.replace``) as one Parquet file in ``OUTPUT.parts/``.  A JSON manifest there binds the parts
to the input (its SHA-256), the model folder (a fingerprint of its files) and the options that change results.

* **Resumable**: a rerun skips the parts that exist, so a crash (or a preempted pod) loses at most one part.
* **Sharded**: ``num_shards=N, shard_index=I`` runs the parts with ``part_id % N == I``; under ``torchrun`` /
  ``accelerate launch`` (``RANK``/``WORLD_SIZE`` set) every rank is one shard and rank 0 merges once all parts are
  there.  ``JOB_COMPLETION_INDEX`` (Kubernetes indexed Job) or ``SLURM_ARRAY_TASK_ID`` (Slurm array) give
  ``shard_index`` when it is not passed.  The shard that finishes last merges; ``merge_only`` merges explicitly.
* **Deterministic**: the parts and the batches inside a part do not depend on sharding or resuming, and a
  prediction does not depend on its batch-mates (orderings are seeded per example), so every way of running the
  job writes the same rows.
* **Bad rows are kept**: empty / whitespace / missing / non-string texts, and texts with nothing to tokenise, get
  an ``error`` and null predictions; the output has exactly the input's rows in the input's order.

See ``docs/batch_inference.md``.
"""

from __future__ import annotations

import codecs
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

INPUT_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
OUTPUT_FORMATS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl"}
MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
METADATA_KEY = b"bayesian_hf.predict"
#: files of a model folder that never change predictions (left out of its fingerprint)
_FINGERPRINT_SKIP_SUFFIXES = (".md", ".png", ".jpg", ".svg", ".log", ".bak")
#: the prediction columns, in order, around the per-label probability columns
_ROW_COLUMN = "row"


# ----------------------------------------------------------------------------------------------- options
@dataclasses.dataclass
class BatchPredictOptions:
    """Everything ``bayesian-hf predict`` needs.  See :func:`run_batch_predict`."""

    model: str
    data: str
    output: str
    text_column: str = "text"
    id_column: str | None = None
    batch_size: int = 32
    part_size: int = 1024
    num_orderings: int | None = None
    seed: int | None = None
    thresholds: dict[str, float] | None = None
    max_length: int | None = None
    backend: str = "auto"
    device: str = "cpu"
    compile: bool = False
    torch_threads: int | None = None
    num_shards: int | None = None
    shard_index: int | None = None
    merge_only: bool = False
    overwrite: bool = False
    keep_parts: bool = False
    wait_timeout: float = 3600.0
    progress: bool = True

    def check(self) -> None:
        """Raise ``ValueError`` on an option that cannot work (before any file is touched)."""
        for name in ("batch_size", "part_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.num_orderings is not None and self.num_orderings < 1:
            raise ValueError(f"num_orderings must be >= 1, got {self.num_orderings}")
        if self.max_length is not None and self.max_length < 3:
            raise ValueError(f"max_length must be >= 3 (room for [CLS], one token and [SEP]), got {self.max_length}")
        if self.backend not in ("auto", "torch", "onnx"):
            raise ValueError(f"backend must be 'auto', 'torch' or 'onnx', got {self.backend!r}")
        if self.wait_timeout < 0:
            raise ValueError(f"wait_timeout must be >= 0 seconds, got {self.wait_timeout}")
        if self.thresholds is not None:
            from .pipelines import validate_thresholds

            validate_thresholds(self.thresholds)


@dataclasses.dataclass(frozen=True)
class ShardPlan:
    """Which shard this process runs, and whether it is one rank of a ``torchrun``/``accelerate`` group."""

    num_shards: int
    shard_index: int
    distributed: bool = False
    local_rank: int = 0
    source: str = "single process"


def resolve_shard(num_shards: int | None, shard_index: int | None,
                  environ: Mapping[str, str] | None = None) -> ShardPlan:
    """The shard of this process.

    * ``WORLD_SIZE > 1`` (``torchrun``, ``accelerate launch``): one shard per rank; explicit shard flags are an
      error (the launcher already decides).
    * ``num_shards > 1`` without ``shard_index``: the index comes from ``JOB_COMPLETION_INDEX`` (Kubernetes
      indexed Job) or ``SLURM_ARRAY_TASK_ID`` minus ``SLURM_ARRAY_TASK_MIN`` (Slurm array).
    """
    env = os.environ if environ is None else environ
    world = int(env.get("WORLD_SIZE", "1") or 1)
    if world > 1:
        if num_shards not in (None, world) or shard_index is not None:
            raise ValueError(f"running under a distributed launcher (WORLD_SIZE={world}): every rank is one shard; "
                             "drop --num_shards/--shard_index")
        rank = int(env.get("RANK", "0"))
        return ShardPlan(world, rank, True, int(env.get("LOCAL_RANK", rank)), f"rank {rank} of {world}")
    n = 1 if num_shards is None else int(num_shards)
    if n < 1:
        raise ValueError(f"num_shards must be >= 1, got {n}")
    source = "--shard_index"
    if shard_index is None:
        if n == 1:
            shard_index, source = 0, "single process"
        elif env.get("JOB_COMPLETION_INDEX", "") != "":
            shard_index, source = int(env["JOB_COMPLETION_INDEX"]), "JOB_COMPLETION_INDEX"
        elif env.get("SLURM_ARRAY_TASK_ID", "") != "":
            shard_index = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", "0") or 0)
            source = "SLURM_ARRAY_TASK_ID"
        else:
            raise ValueError(f"--num_shards {n} needs --shard_index (or JOB_COMPLETION_INDEX / SLURM_ARRAY_TASK_ID "
                             "in the environment)")
    if not 0 <= int(shard_index) < n:
        raise ValueError(f"shard_index must be in [0, {n - 1}] for {n} shards, got {shard_index} (from {source})")
    return ShardPlan(n, int(shard_index), False, 0, source)


# ----------------------------------------------------------------------------------------------- input
@dataclasses.dataclass
class InputRows:
    """The texts (as read: may hold None or non-strings) and the optional id column of an input file."""

    texts: list[Any]
    ids: Any | None  # a pyarrow Array, or None
    sha256: str
    num_rows: int


def _format_of(path: str, formats: Mapping[str, str], what: str) -> str:
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

    fmt = _format_of(path, INPUT_FORMATS, "input")
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


# ----------------------------------------------------------------------------------------------- manifest
def model_fingerprint(model_dir: str) -> dict[str, Any]:
    """SHA-256 over the files of a model folder that change predictions (config, weights, tokenizer,
    ``calibration.json``...; not the card or images), by name and content.  The same folder copied to another
    machine has the same fingerprint (modification times are not used)."""
    root = Path(model_dir)
    digest = hashlib.sha256()
    files = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        skip = rel.startswith((".", "runs/", "checkpoint-")) or "/." in rel
        if skip or rel.lower().endswith(_FINGERPRINT_SKIP_SUFFIXES):
            continue
        digest.update(rel.encode() + b"\0")
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                digest.update(chunk)
        digest.update(b"\0")
        files.append(rel)
    return {"sha256": digest.hexdigest(), "files": files}


def build_manifest(options: BatchPredictOptions, inputs: InputRows, model_info: Mapping[str, Any]) -> dict[str, Any]:
    """What the parts are bound to: the input's SHA-256 and row count, the model fingerprint and the options
    that change the output rows.  ``batch_size``, sharding, device and threads are left out: they do not."""
    from .backends import resolve_backend

    num_parts = -(-inputs.num_rows // options.part_size)
    manifest = {
        "version": MANIFEST_VERSION,
        "input": {"path": os.path.abspath(options.data), "sha256": inputs.sha256, "num_rows": inputs.num_rows},
        "model": {"path": os.path.abspath(options.model), **model_info},
        "options": {
            "text_column": options.text_column,
            "id_column": options.id_column,
            "num_orderings": options.num_orderings,
            "seed": options.seed,
            "thresholds": options.thresholds,
            "max_length": options.max_length,
            "backend": resolve_backend(options.model, options.backend),  # "auto" resolved: torch or onnx
            "part_size": options.part_size,
        },
        "num_parts": num_parts,
    }
    manifest["key"] = _manifest_key(manifest)
    return manifest


def _manifest_key(manifest: Mapping[str, Any]) -> str:
    """A short hash of what makes two manifests the same job (paths left out: the input and the model may be
    mounted at different places on different machines)."""
    core = {
        "input": {k: manifest["input"][k] for k in ("sha256", "num_rows")},
        "model": {k: v for k, v in manifest["model"].items() if k not in ("path", "files")},
        "options": manifest["options"],
        "num_parts": manifest["num_parts"],
    }
    return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()[:16]


def _describe_mismatch(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    diffs = []
    if old.get("input", {}).get("sha256") != new["input"]["sha256"]:
        diffs.append("the input file changed (sha256)")
    if old.get("model", {}).get("sha256") != new["model"]["sha256"]:
        diffs.append("the model folder changed (fingerprint)")
    for key, value in new["options"].items():
        if old.get("options", {}).get(key) != value:
            diffs.append(f"{key} {old.get('options', {}).get(key)!r} -> {value!r}")
    return "; ".join(diffs) or "different manifest version"


def _write_atomic(path: Path, write) -> None:
    """Write through ``write(tmp_path)`` to a temporary file in the same folder, then ``os.replace``: readers see
    the old file or the whole new one, never half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_json_atomic(path: Path, data: Any) -> None:
    _write_atomic(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n"))


# ----------------------------------------------------------------------------------------------- columns
def output_schema(id2label: Mapping[int, str], id_type: Any | None, id_column: str | None) -> Any:
    """The Arrow schema of every part (and of a Parquet / JSONL output)."""
    import pyarrow as pa

    fields = [pa.field(_ROW_COLUMN, pa.int64())]
    if id_column is not None:
        fields.append(pa.field(id_column, id_type))
    fields += [pa.field("label", pa.string()), pa.field("score", pa.float64()), pa.field("calibrated", pa.bool_())]
    fields += [pa.field(probability_column(id2label[i]), pa.float64()) for i in sorted(id2label)]
    fields += [pa.field(probability_column(id2label[i], raw=True), pa.float64()) for i in sorted(id2label)]
    fields += [
        pa.field("uncertainty_epistemic", pa.float64()),
        pa.field("uncertainty_aleatoric", pa.float64()),
        pa.field("uncertainty_total", pa.float64()),
        pa.field("order_dispersion", pa.float64()),
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


def _records_to_table(rows: Sequence[int], ids: Any | None, records: Sequence[Mapping[str, Any] | None],
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


# ----------------------------------------------------------------------------------------------- prediction
def length_buckets(texts: Sequence[str], batch_size: int) -> list[list[int]]:
    """Batches of positions into ``texts``, grouping similar lengths (sorted by character length, ties by
    position): a batch pads to its longest text, so sorting cuts the padding.  Deterministic."""
    order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def predict_rows(model: Any, tokenizer: Any, texts: Sequence[Any], *, batch_size: int,
                 predict_kwargs: Mapping[str, Any], progress: Any | None = None
                 ) -> tuple[list[dict[str, Any] | None], list[str | None]]:
    """Records and errors for ``texts`` (any values): bad rows get an error and no record; the others are
    classified by :func:`bayesian_hf.pipelines.predict` in length-bucketed batches.  A batch that raises is
    split in halves until the texts that fail are alone, so one text that cannot be classified (e.g. nothing to
    tokenise) marks only its own row; when every text of a batch fails alone too, the error is raised (a
    problem of the model or the options, not of the rows)."""
    records: list[dict[str, Any] | None] = [None] * len(texts)
    errors: list[str | None] = [row_error(t) for t in texts]
    good = [i for i, e in enumerate(errors) if e is None]
    if progress is not None and len(good) < len(texts):
        progress.update(len(texts) - len(good))
    for bucket in length_buckets([texts[i] for i in good], batch_size):
        rows = [good[j] for j in bucket]
        failures: list[Exception] = []
        for i, record, error in _predict_isolating(model, tokenizer, texts, rows, predict_kwargs, failures):
            if record is not None and record["num_units"] == 0:
                record, error = None, NOTHING_TO_TOKENISE
            records[i], errors[i] = record, error
        if len(rows) > 1 and len(failures) == len(rows):
            raise failures[0]  # every text fails alone, for a reason that is not the text's: the model or options
        if progress is not None:
            progress.update(len(rows))
    return records, errors


def _predict_isolating(model: Any, tokenizer: Any, texts: Sequence[Any], rows: list[int],
                       predict_kwargs: Mapping[str, Any], failures: list[Exception]):
    """``(row, record, error)`` for ``rows``: one ``predict`` call, bisected on failure."""
    from .pipelines import predict

    try:
        out = predict(model, tokenizer, [texts[i] for i in rows], **predict_kwargs)
    except (ValueError, RuntimeError) as err:
        if len(rows) == 1:
            if "nothing to classify" in str(err):  # a property of the text (only control / zero-width characters)
                yield rows[0], None, NOTHING_TO_TOKENISE
                return
            failures.append(err)
            yield rows[0], None, f"prediction failed: {type(err).__name__}: {err}"
            return
        half = len(rows) // 2
        yield from _predict_isolating(model, tokenizer, texts, rows[:half], predict_kwargs, failures)
        yield from _predict_isolating(model, tokenizer, texts, rows[half:], predict_kwargs, failures)
        return
    for i, record in zip(rows, out):
        yield i, record, None


# ----------------------------------------------------------------------------------------------- the job
def _parts_dir(output: str) -> Path:
    return Path(output + ".parts")


def _part_path(parts_dir: Path, part: int, key: str) -> Path:
    return parts_dir / f"part-{part:06d}-{key}.parquet"


def _load_model(options: BatchPredictOptions, plan: ShardPlan):
    from .backends import load_for_inference

    device = options.device
    if plan.distributed and device.startswith("cuda") and ":" not in device:
        device = f"cuda:{plan.local_rank}"  # one GPU per rank
    threads = options.torch_threads
    if threads is None and plan.distributed and device == "cpu":
        local = int(os.environ.get("LOCAL_WORLD_SIZE", plan.num_shards) or 1)
        threads = max(1, (os.cpu_count() or 1) // local)  # ranks on one machine share its cores
    return load_for_inference(options.model, backend=options.backend, device=device, compile=options.compile,
                              torch_threads=threads)


def _config_labels(model_dir: str) -> dict[int, str]:
    """``id2label`` of the model folder's ``config.json`` (known before loading the weights)."""
    path = Path(model_dir) / "config.json"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{model_dir} has no config.json: not a saved model folder") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    id2label = config.get("id2label") or {i: f"LABEL_{i}" for i in range(int(config.get("num_labels", 2)))}
    return {int(k): str(v) for k, v in id2label.items()}


def _prepare_parts_dir(parts_dir: Path, manifest: dict[str, Any], overwrite: bool, plan: ShardPlan) -> None:
    """Create ``parts_dir`` with ``manifest``, or check the one there.  A different job's manifest is an error
    without ``overwrite``; with it, the manifest is replaced (parts are named by the manifest key, so the other
    job's parts are never mistaken for this one's; this shard deletes its own stale ones)."""
    parts_dir.mkdir(parents=True, exist_ok=True)
    path = parts_dir / MANIFEST_NAME
    tmp = parts_dir / f".{MANIFEST_NAME}.{os.getpid()}.{time.monotonic_ns()}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    try:
        os.link(tmp, path)  # atomic create-if-absent: concurrent shards agree on one manifest
        return
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        old = {}
    if old.get("key") == manifest["key"]:
        return
    if not overwrite:
        raise ValueError(f"{parts_dir} holds the parts of a different job ({_describe_mismatch(old, manifest)}); "
                         "pass --overwrite to start again, or use another --output")
    logger.warning("replacing the manifest in %s (%s)", parts_dir, _describe_mismatch(old, manifest))
    _write_json_atomic(path, manifest)
    for stale in parts_dir.glob("part-*.parquet"):
        part = int(stale.name.split("-")[1])
        if part % plan.num_shards == plan.shard_index and not stale.name.endswith(f"-{manifest['key']}.parquet"):
            stale.unlink(missing_ok=True)


def _output_is_this_job(output: str, key: str) -> bool:
    if OUTPUT_FORMATS.get(Path(output).suffix.lower()) != "parquet":
        return False
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_schema(output).metadata or {}
        return json.loads(metadata.get(METADATA_KEY, b"{}")).get("key") == key
    except Exception:  # an unreadable or foreign file is simply not this job's output
        return False


def run_batch_predict(options: BatchPredictOptions, *, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Run (this shard of) a batch prediction job and merge when all parts are there.  Returns a summary:
    ``{"status": "merged"|"shard_done"|"up_to_date", "rows", "errors", "parts_written", "parts_skipped", ...}``.

    Output semantics: an existing ``output`` is an error unless ``overwrite`` -- except a Parquet output written
    by this same job (same input, model and options), which is reported up to date.  ``OUTPUT.parts/`` from an
    interrupted run of the same job is resumed; from a different job it is an error unless ``overwrite``.
    """
    options.check()
    fmt_out = _format_of(options.output, OUTPUT_FORMATS, "output")
    plan = resolve_shard(options.num_shards, options.shard_index, environ)
    if not os.path.isdir(options.model):
        raise FileNotFoundError(f"model folder {options.model} does not exist")
    parts_dir = _parts_dir(options.output)
    inputs = read_input(options.data, options.text_column, options.id_column)
    manifest = build_manifest(options, inputs, model_fingerprint(options.model))
    key = manifest["key"]
    id2label = _config_labels(options.model)
    schema = output_schema(id2label, inputs.ids.type if inputs.ids is not None else None, options.id_column)
    summary: dict[str, Any] = {"output": options.output, "rows": inputs.num_rows, "num_parts": manifest["num_parts"],
                               "shard": f"{plan.shard_index}/{plan.num_shards}", "parts_written": 0,
                               "parts_skipped": 0}

    if os.path.exists(options.output) and not options.overwrite:
        if _output_is_this_job(options.output, key):
            return {**summary, "status": "up_to_date", **_summarise(options.output)}
        if not parts_dir.is_dir():
            raise ValueError(f"{options.output} exists; pass --overwrite to replace it (or choose another --output)")
    if options.overwrite and plan.shard_index == 0 and os.path.exists(options.output):
        os.unlink(options.output)

    if not options.merge_only:
        _prepare_parts_dir(parts_dir, manifest, options.overwrite, plan)
        mine = [p for p in range(manifest["num_parts"]) if p % plan.num_shards == plan.shard_index]
        if options.overwrite:
            for p in mine:
                _part_path(parts_dir, p, key).unlink(missing_ok=True)
        todo = [p for p in mine if not _part_path(parts_dir, p, key).exists()]
        summary["parts_skipped"] = len(mine) - len(todo)
        predict_kwargs = {"num_orderings": options.num_orderings, "seed": options.seed,
                          "thresholds": options.thresholds, "max_length": options.max_length,
                          "return_raw_probabilities": True}
        if todo:
            model, tokenizer = _load_model(options, plan)
            labels = {int(k): v for k, v in model.config.id2label.items()}
            if labels != id2label:
                raise ValueError(f"the loaded model's labels {labels} differ from config.json's {id2label}")
            _run_parts(todo, inputs, options, model, tokenizer, predict_kwargs, parts_dir, key, schema, id2label, plan)
        summary["parts_written"] = len(todo)
    elif not (parts_dir / MANIFEST_NAME).exists():
        raise ValueError(f"nothing to merge: {parts_dir / MANIFEST_NAME} does not exist (run the shards first)")
    else:
        old = json.loads((parts_dir / MANIFEST_NAME).read_text())
        if old.get("key") != key:
            raise ValueError(f"{parts_dir} holds the parts of a different job ({_describe_mismatch(old, manifest)})")

    missing = _missing_parts(parts_dir, manifest)
    if plan.distributed and plan.shard_index != 0:
        return {**summary, "status": "shard_done", "parts_missing": len(missing), "note": "rank 0 merges"}
    if plan.distributed and missing:
        missing = _wait_for_parts(parts_dir, manifest, options.wait_timeout)
    if missing:
        if options.merge_only:
            raise ValueError(f"cannot merge: {len(missing)} of {manifest['num_parts']} parts are missing (first: "
                             f"part {missing[0]}; shard I of N runs the parts with part_id % N == I): run those "
                             "shards first")
        return {**summary, "status": "shard_done", "parts_missing": len(missing)}
    lock = parts_dir / "merge.lock"
    if options.merge_only:
        lock.unlink(missing_ok=True)  # an explicit merge takes over a lock left by a crashed merge
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return {**summary, "status": "shard_done", "parts_missing": 0, "note": "another process is merging"}
    os.write(fd, f"{os.getpid()}@{os.uname().nodename}\n".encode())
    os.close(fd)
    merge_parts(parts_dir, manifest, options.output, fmt_out, schema)
    if options.keep_parts:
        lock.unlink(missing_ok=True)
    else:
        shutil.rmtree(parts_dir, ignore_errors=True)
    return {**summary, "status": "merged", **_summarise(options.output)}


def _run_parts(todo: Sequence[int], inputs: InputRows, options: BatchPredictOptions, model: Any, tokenizer: Any,
               predict_kwargs: Mapping[str, Any], parts_dir: Path, key: str, schema: Any,
               id2label: Mapping[int, str], plan: ShardPlan) -> None:
    import pyarrow.parquet as pq
    from tqdm.auto import tqdm

    size = options.part_size
    total = sum(min(size, inputs.num_rows - p * size) for p in todo)
    desc = "predict" if plan.num_shards == 1 else f"predict shard {plan.shard_index}/{plan.num_shards}"
    with tqdm(total=total, unit="text", desc=desc, disable=not options.progress or not total,
              position=plan.shard_index if plan.distributed else None, dynamic_ncols=True) as bar:
        for part in todo:
            start, stop = part * size, min((part + 1) * size, inputs.num_rows)
            texts = inputs.texts[start:stop]
            records, errors = predict_rows(model, tokenizer, texts, batch_size=options.batch_size,
                                           predict_kwargs=predict_kwargs, progress=bar)
            ids = inputs.ids.slice(start, stop - start) if inputs.ids is not None else None
            table = _records_to_table(range(start, stop), ids, records, errors, schema, id2label, options.id_column)
            _write_atomic(_part_path(parts_dir, part, key), lambda tmp, table=table: pq.write_table(table, tmp))


def _missing_parts(parts_dir: Path, manifest: Mapping[str, Any]) -> list[int]:
    return [p for p in range(manifest["num_parts"]) if not _part_path(parts_dir, p, manifest["key"]).exists()]


def _wait_for_parts(parts_dir: Path, manifest: Mapping[str, Any], timeout: float) -> list[int]:
    """Rank 0 of a launcher group: poll until the other ranks' parts are there (or ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    missing = _missing_parts(parts_dir, manifest)
    while missing and time.monotonic() < deadline:
        time.sleep(0.5)
        missing = _missing_parts(parts_dir, manifest)
    if missing:
        raise TimeoutError(f"rank 0 waited {timeout:g} s for {len(missing)} part(s) of the other ranks "
                           f"(first: part {missing[0]}); rerun to resume, or merge later with --merge")
    return missing


def merge_parts(parts_dir: Path, manifest: Mapping[str, Any], output: str, fmt: str, schema: Any) -> None:
    """Concatenate the parts, in order, into ``output`` (written atomically), streaming one part at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    key = manifest["key"]
    paths = [_part_path(parts_dir, p, key) for p in range(manifest["num_parts"])]
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

    _write_atomic(Path(output), write)


def _summarise(output: str) -> dict[str, Any]:
    """Counts of a finished output file: rows, errors by reason, decisions."""
    import pyarrow.compute as pc

    table = read_output(output, columns=["error", "decision"])
    errors = {str(v["values"]): int(v["counts"]) for v in pc.value_counts(table.column("error")).to_pylist()
              if v["values"] is not None}
    decisions = {str(v["values"]): int(v["counts"]) for v in pc.value_counts(table.column("decision")).to_pylist()
                 if v["values"] is not None}
    return {"rows": table.num_rows, "errors": sum(errors.values()), "error_reasons": errors, "decisions": decisions}


def read_output(path: str, columns: Sequence[str] | None = None) -> Any:
    """A finished output (parquet / csv / jsonl) as a pyarrow Table."""
    import pyarrow as pa

    fmt = _format_of(path, OUTPUT_FORMATS, "output")
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


def format_summary(summary: Mapping[str, Any]) -> str:
    """The one line ``bayesian-hf predict`` prints at the end."""
    status = summary["status"]
    shard = f"shard {summary['shard']}: " if summary["shard"] != "0/1" else ""
    parts = f"{summary['parts_written']} part(s) written, {summary['parts_skipped']} already done"
    if status == "shard_done":
        note = summary.get("note") or (f"{summary['parts_missing']} part(s) of other shards still missing; the last "
                                       "shard to finish merges, or run again with --merge")
        return f"{shard}{parts}; {note}"
    reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(summary["error_reasons"].items()))
    decisions = ", ".join(f"{d} {n}" for d, n in sorted(summary["decisions"].items()))
    head = "up to date (same input, model and options): " if status == "up_to_date" else f"{shard}{parts}; "
    return (f"{head}{summary['rows']} rows -> {summary['output']}; {summary['errors']} row(s) not classified"
            + (f" ({reasons})" if reasons else "") + (f"; decisions: {decisions}" if decisions else ""))


# ----------------------------------------------------------------------------------------------- command line
def _thresholds(accept: float | None, review: float | None) -> dict[str, float] | None:
    out = {k: v for k, v in (("accept", accept), ("review", review)) if v is not None}
    return out or None


def add_predict_arguments(parser: Any) -> None:
    """The flags of ``bayesian-hf predict``."""
    add = parser.add_argument
    add("--model", required=True, help="a saved model folder (PyTorch or exported ONNX)")
    add("--data", required=True, help="input file: .csv, .jsonl (or .json) or .parquet")
    add("--output", required=True, help="output file: .parquet (default choice), .csv or .jsonl")
    add("--text_column", "--text-column", dest="text_column", default="text")
    add("--id_column", "--id-column", dest="id_column", default=None, help="an input column copied to the output")
    add("--batch_size", "--batch-size", dest="batch_size", type=int, default=32, help="texts per forward pass")
    add("--part_size", "--part-size", dest="part_size", type=int, default=1024,
        help="rows per resumable part (changing it starts a new job)")
    add("--num_orderings", "--num-orderings", dest="num_orderings", type=int, default=None,
        help="orderings per text (default: the model config's)")
    add("--seed", type=int, default=None, help="ordering seed (default: the model config's)")
    add("--max_length", "--max-length", dest="max_length", type=int, default=None,
        help="token limit; longer texts are truncated and flagged")
    add("--accept_threshold", "--accept-threshold", dest="accept_threshold", type=float, default=None,
        help="confidence for 'accept' (default: calibration.json's decision_thresholds, else 0.9)")
    add("--review_threshold", "--review-threshold", dest="review_threshold", type=float, default=None,
        help="confidence for 'review' (default: calibration.json's, else 0.6)")
    add("--backend", choices=("auto", "torch", "onnx"), default="auto",
        help="auto: ONNX Runtime for an exported folder, else PyTorch")
    add("--device", default="cpu", help="torch device (under torchrun, 'cuda' means cuda:LOCAL_RANK)")
    add("--compile", action="store_true", help="torch.compile the PyTorch model")
    add("--torch_threads", "--torch-threads", dest="torch_threads", type=int, default=None,
        help="intra-op threads (under a launcher: cores / local ranks)")
    add("--num_shards", "--num-shards", dest="num_shards", type=int, default=None,
        help="split the parts over this many independent runs (part_id %% N == shard_index)")
    add("--shard_index", "--shard-index", dest="shard_index", type=int, default=None,
        help="this run's shard (default: JOB_COMPLETION_INDEX or SLURM_ARRAY_TASK_ID)")
    add("--merge", dest="merge_only", action="store_true", help="only merge the finished parts into --output")
    add("--overwrite", action="store_true", help="replace an existing output and recompute this shard's parts")
    add("--keep_parts", "--keep-parts", dest="keep_parts", action="store_true",
        help="keep OUTPUT.parts/ after merging")
    add("--wait_timeout", "--wait-timeout", dest="wait_timeout", type=float, default=3600.0,
        help="seconds rank 0 of a torchrun/accelerate group waits for the other ranks' parts")
    add("--no_progress", "--no-progress", dest="progress", action="store_false", help="no progress bar")


def options_from_args(args: Any) -> BatchPredictOptions:
    """``BatchPredictOptions`` from parsed ``predict`` flags."""
    return BatchPredictOptions(
        model=args.model, data=args.data, output=args.output, text_column=args.text_column,
        id_column=args.id_column, batch_size=args.batch_size, part_size=args.part_size,
        num_orderings=args.num_orderings, seed=args.seed,
        thresholds=_thresholds(args.accept_threshold, args.review_threshold), max_length=args.max_length,
        backend=args.backend, device=args.device, compile=args.compile, torch_threads=args.torch_threads,
        num_shards=args.num_shards, shard_index=args.shard_index, merge_only=args.merge_only,
        overwrite=args.overwrite, keep_parts=args.keep_parts, wait_timeout=args.wait_timeout,
        progress=args.progress,
    )


def main(args: Any) -> int:
    """``bayesian-hf predict``: run, print the summary line, exit 0 (also for a finished shard)."""
    summary = run_batch_predict(options_from_args(args))
    print(format_summary(summary))
    return 0
