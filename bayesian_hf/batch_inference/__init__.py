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

The package, one concern per module: ``options`` (:class:`BatchPredictOptions`), ``sharding`` (:func:`resolve_shard`),
``readers`` (input and output files), ``writers`` (the columns, atomic writes), ``prediction`` (one part's rows),
``parts`` (manifest, part files, resume), ``merge``, ``runner`` (:func:`run_batch_predict`) and ``command`` (the
``bayesian-hf predict`` flags).  See ``docs/batch_inference.md``.
"""

from __future__ import annotations

from .command import add_predict_arguments, format_summary, main, options_from_args
from .merge import merge_parts
from .options import BatchPredictOptions
from .parts import (  # noqa: F401  (the two private names: tests/unit/test_batch_inference.py imports them)
    MANIFEST_NAME,
    MANIFEST_VERSION,
    METADATA_KEY,
    _describe_mismatch,
    _manifest_key,
    build_manifest,
    model_fingerprint,
)
from .prediction import NOTHING_TO_TOKENISE, length_buckets, predict_rows
from .readers import (
    INPUT_FORMATS,
    OUTPUT_FORMATS,
    InputRows,
    read_input,
    read_output,
    row_error,
)
from .runner import run_batch_predict
from .sharding import ShardPlan, resolve_shard
from .writers import output_schema, probability_column

__all__ = [
    "INPUT_FORMATS",
    "MANIFEST_NAME",
    "MANIFEST_VERSION",
    "METADATA_KEY",
    "NOTHING_TO_TOKENISE",
    "OUTPUT_FORMATS",
    "BatchPredictOptions",
    "InputRows",
    "ShardPlan",
    "add_predict_arguments",
    "build_manifest",
    "format_summary",
    "length_buckets",
    "main",
    "merge_parts",
    "model_fingerprint",
    "options_from_args",
    "output_schema",
    "predict_rows",
    "probability_column",
    "read_input",
    "read_output",
    "resolve_shard",
    "row_error",
    "run_batch_predict",
]
