"""``bayesian-hf push``, ``serve``, ``export`` and ``predict``: the ways a saved folder leaves the machine -- the
Hub, HTTP, ONNX, and files classified in batch."""

from __future__ import annotations

import argparse
import dataclasses
import os

from ..batch_inference import main as predict_main
from ..onnx_export import cmd_export as export_main
from ..serving.settings import settings_from_args


def cmd_push(args: argparse.Namespace) -> int:
    """Push a saved model folder (weights, tokenizer, calibrator, card, diagram, modeling code) in ONE commit."""
    from ..hub import push_model_folder

    url = push_model_folder(args.model, args.repo_id, private=args.private, token=args.token)
    print(f"pushed {args.model} to {args.repo_id}: {url}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve predictions over HTTP (FastAPI + uvicorn): /predict, /batch-predict, /health, /ready, /model-info,
    /metrics. Flags fall back to BAYESIAN_HF_* environment variables; see docs/serving.md."""
    from ..serving import serve  # lazy: the server needs FastAPI and uvicorn (the optional `serve` extra)

    settings = settings_from_args(args)
    model = os.path.expanduser(settings.model)
    if model.startswith((".", "/")) or os.path.exists(model):  # a local folder, not a Hub id
        if not os.path.isdir(model):
            raise FileNotFoundError(f"model folder {settings.model} does not exist")
        settings = dataclasses.replace(settings, model=model)
    serve(settings)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Classify every row of a csv/jsonl/parquet file into a parquet/csv/jsonl file with all prediction columns:
    length-bucketed batches, resumable parts, shards (--num_shards/--shard_index, torchrun, accelerate launch,
    Kubernetes indexed Jobs, Slurm arrays). Bad rows are kept and marked. See docs/batch_inference.md."""
    return predict_main(args)


def cmd_export(args: argparse.Namespace) -> int:
    """Export a model folder to ONNX (fp32, or --quantize int8) with its config, tokenizer, calibration.json and a
    checksummed manifest; `serve` and `predict` run the result with ONNX Runtime. See docs/inference_backends.md."""
    return export_main(args)


def add_push_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``bayesian-hf push``."""
    parser.add_argument("--model", required=True, help="the saved model folder")
    parser.add_argument("--repo_id", required=True, help="user/name on the Hub (HF_ENDPOINT is honoured)")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--token", default=None, help="defaults to HF_TOKEN / the cached login")
