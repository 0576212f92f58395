"""``bayesian-hf predict`` on the command line: its flags, the options they make, and the summary line."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .options import BatchPredictOptions
from .runner import run_batch_predict


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


def _thresholds(accept: float | None, review: float | None) -> dict[str, float] | None:
    out = {k: v for k, v in (("accept", accept), ("review", review)) if v is not None}
    return out or None


def _add_flag(parser: Any, name: str, **kwargs: Any) -> None:
    """``--name`` with ``name``'s dashed spelling (``--batch_size`` and ``--batch-size``) as the same option."""
    dashed = name.replace("_", "-")
    parser.add_argument(f"--{name}", *([f"--{dashed}"] if dashed != name else []), dest=name, **kwargs)


def add_predict_arguments(parser: Any) -> None:
    """The flags of ``bayesian-hf predict``."""

    def add(name: str, **kwargs: Any) -> None:
        _add_flag(parser, name, **kwargs)

    add("model", required=True, help="a saved model folder (PyTorch or exported ONNX)")
    add("data", required=True, help="input file: .csv, .jsonl (or .json) or .parquet")
    add("output", required=True, help="output file: .parquet (default choice), .csv or .jsonl")
    add("text_column", default="text")
    add("id_column", default=None, help="an input column copied to the output")
    add("batch_size", type=int, default=32, help="texts per forward pass")
    add("part_size", type=int, default=1024, help="rows per resumable part (changing it starts a new job)")
    add("num_orderings", type=int, default=None, help="orderings per text (default: the model config's)")
    add("seed", type=int, default=None, help="ordering seed (default: the model config's)")
    add("max_length", type=int, default=None, help="token limit; longer texts are truncated and flagged")
    add("accept_threshold", type=float, default=None,
        help="confidence for 'accept' (default: calibration.json's decision_thresholds, else 0.9)")
    add("review_threshold", type=float, default=None,
        help="confidence for 'review' (default: calibration.json's, else 0.6)")
    add("backend", choices=("auto", "torch", "onnx"), default="auto",
        help="auto: ONNX Runtime for an exported folder, else PyTorch")
    add("device", default="cpu", help="torch device (under torchrun, 'cuda' means cuda:LOCAL_RANK)")
    add("compile", action="store_true", help="torch.compile the PyTorch model")
    add("torch_threads", type=int, default=None, help="intra-op threads (under a launcher: cores / local ranks)")
    add("num_shards", type=int, default=None,
        help="split the parts over this many independent runs (part_id %% N == shard_index)")
    add("shard_index", type=int, default=None,
        help="this run's shard (default: JOB_COMPLETION_INDEX or SLURM_ARRAY_TASK_ID)")
    parser.add_argument("--merge", dest="merge_only", action="store_true",
                        help="only merge the finished parts into --output")
    add("overwrite", action="store_true", help="replace an existing output and recompute this shard's parts")
    add("keep_parts", action="store_true", help="keep OUTPUT.parts/ after merging")
    add("wait_timeout", type=float, default=3600.0,
        help="seconds rank 0 of a torchrun/accelerate group waits for the other ranks' parts")
    parser.add_argument("--no_progress", "--no-progress", dest="progress", action="store_false",
                        help="no progress bar")


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
