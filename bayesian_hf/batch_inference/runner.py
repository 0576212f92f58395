"""The job: :func:`run_batch_predict` runs this process's shard of the parts, then merges when all are there."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..backends import load_for_inference
from .merge import merge_parts, summarise_output
from .options import BatchPredictOptions
from .parts import (
    MANIFEST_NAME,
    _describe_mismatch,
    build_manifest,
    missing_parts,
    model_fingerprint,
    output_is_this_job,
    part_path,
    parts_dir_for,
    prepare_parts_dir,
    wait_for_parts,
)
from .prediction import predict_rows
from .readers import OUTPUT_FORMATS, InputRows, format_of, read_input
from .sharding import ShardPlan, resolve_shard
from .writers import output_schema, records_to_table, write_atomic


def _load_model(options: BatchPredictOptions, plan: ShardPlan):
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


def run_batch_predict(options: BatchPredictOptions, *, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Run (this shard of) a batch prediction job and merge when all parts are there.  Returns a summary:
    ``{"status": "merged"|"shard_done"|"up_to_date", "rows", "errors", "parts_written", "parts_skipped", ...}``.

    Output semantics: an existing ``output`` is an error unless ``overwrite`` -- except a Parquet output written
    by this same job (same input, model and options), which is reported up to date.  ``OUTPUT.parts/`` from an
    interrupted run of the same job is resumed; from a different job it is an error unless ``overwrite``.
    """
    options.check()
    fmt_out = format_of(options.output, OUTPUT_FORMATS, "output")
    plan = resolve_shard(options.num_shards, options.shard_index, environ)
    if not os.path.isdir(options.model):
        raise FileNotFoundError(f"model folder {options.model} does not exist")
    parts_dir = parts_dir_for(options.output)
    inputs = read_input(options.data, options.text_column, options.id_column)
    manifest = build_manifest(options, inputs, model_fingerprint(options.model))
    key = manifest["key"]
    id2label = _config_labels(options.model)
    schema = output_schema(id2label, inputs.ids.type if inputs.ids is not None else None, options.id_column)
    summary: dict[str, Any] = {"output": options.output, "rows": inputs.num_rows, "num_parts": manifest["num_parts"],
                               "shard": f"{plan.shard_index}/{plan.num_shards}", "parts_written": 0,
                               "parts_skipped": 0}

    if os.path.exists(options.output) and not options.overwrite:
        if output_is_this_job(options.output, key):
            return {**summary, "status": "up_to_date", **summarise_output(options.output)}
        if not parts_dir.is_dir():
            raise ValueError(f"{options.output} exists; pass --overwrite to replace it (or choose another --output)")
    if options.overwrite and plan.shard_index == 0 and os.path.exists(options.output):
        os.unlink(options.output)

    if not options.merge_only:
        prepare_parts_dir(parts_dir, manifest, options.overwrite, plan)
        mine = [p for p in range(manifest["num_parts"]) if p % plan.num_shards == plan.shard_index]
        if options.overwrite:
            for p in mine:
                part_path(parts_dir, p, key).unlink(missing_ok=True)
        todo = [p for p in mine if not part_path(parts_dir, p, key).exists()]
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

    missing = missing_parts(parts_dir, manifest)
    if plan.distributed and plan.shard_index != 0:
        return {**summary, "status": "shard_done", "parts_missing": len(missing), "note": "rank 0 merges"}
    if plan.distributed and missing:
        missing = wait_for_parts(parts_dir, manifest, options.wait_timeout)
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
    return {**summary, "status": "merged", **summarise_output(options.output)}


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
            table = records_to_table(range(start, stop), ids, records, errors, schema, id2label, options.id_column)
            write_atomic(part_path(parts_dir, part, key), lambda tmp, table=table: pq.write_table(table, tmp))
