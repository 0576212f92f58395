#!/usr/bin/env python
"""Inference backends side by side: PyTorch eager, torch.compile, ONNX Runtime fp32 and ONNX Runtime INT8.

    python benchmarks/bench_backends.py --model outputs/quickstart [--repeats 3] [--threads 2]

One run, one process, the same weights (the trained folder ``--model`` and its two exports, made here with
``bayesian_hf.onnx_export.export_onnx``) and the same inputs for every backend:

* speed: model calls on pre-tokenized batches of 1 and 32 texts of exactly ``--seq`` (128) tokens (embedded test
  reviews joined until they are long enough, then truncated; several sentence units each). Each repeat times
  every backend in turn (interleaved, so a change in the machine's load affects all of them alike); per repeat
  throughput (texts/s over the repeat) and p50/p99 call latency; the table gives the median over repeats.
  The ORT backends' time includes the orderings computed outside the graph (part of their path).
* quality: accuracy, ECE (15 bins) of the calibrated probabilities and error-detection AUROC of the total
  uncertainty on the embedded test split, plus label agreement and max |dp| against PyTorch eager.

Goal on this CPU: ORT INT8 >= 2x PyTorch eager throughput at batch 32, accuracy within 0.5 pt, AUROC within 0.01.
Writes ``benchmarks/results/backends_cpu.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "benchmarks"))

from load_test import cpu_name, load_average  # noqa: E402

BACKENDS = ("torch_eager", "torch_compile", "onnx_fp32", "onnx_int8")


def long_texts(tokenizer, texts: list[str], count: int, seq: int) -> list[str]:
    """``count`` texts of at least ``seq`` tokens, each the concatenation of consecutive reviews."""
    out, current, i = [], [], 0
    while len(out) < count:
        current.append(texts[i % len(texts)])
        i += 1
        joined = " ".join(current)
        if len(tokenizer(joined)["input_ids"]) >= seq:
            out.append(joined)
            current = []
    return out


def encode(tokenizer, config, texts: list[str], seq: int) -> dict:
    from bayesian_hf.orderings import tokenize_with_units

    enc = tokenize_with_units(tokenizer, texts, max_length=seq, segmentation=config.unit_segmentation)
    enc.pop("truncated")
    assert enc["input_ids"].shape[1] == seq, enc["input_ids"].shape
    return enc


def time_calls(model, enc: dict, iters: int) -> dict:
    import torch

    latencies = []
    started = time.perf_counter()
    for _ in range(iters):
        t0 = time.perf_counter()
        with torch.inference_mode():
            model(**enc)
        latencies.append(time.perf_counter() - t0)
    total = time.perf_counter() - started
    batch = int(enc["input_ids"].shape[0])
    return {"throughput": batch * iters / total, "p50_ms": 1000 * float(np.percentile(latencies, 50)),
            "p99_ms": 1000 * float(np.percentile(latencies, 99))}


def quality(model, tokenizer, texts: list[str], labels: np.ndarray) -> dict:
    from bayesian_hf.inference import collect_outputs
    from bayesian_hf.metrics import error_detection_auroc, expected_calibration_error

    out = collect_outputs(model, tokenizer, texts, batch_size=32, progress=False)
    probs = out.get("calibrated_probs", out["probs"])
    correct = probs.argmax(1) == labels
    return {"accuracy": float(correct.mean()), "ece": float(expected_calibration_error(probs, labels)),
            "auroc_error_detection": float(error_detection_auroc(out["total"], correct)),
            "_probs": probs, "_raw": out["probs"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a trained model folder (e.g. from `bayesian-hf quickstart`)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iters-batch1", type=int, default=20, help="calls per repeat at batch 1")
    parser.add_argument("--iters-batch32", type=int, default=3, help="calls per repeat at batch 32")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads for every backend (default: torch's)")
    parser.add_argument("--skip-compile", action="store_true", help="leave torch.compile out")
    parser.add_argument("--output", type=Path, default=RESULTS / "backends_cpu")
    parser.add_argument("--note", default="", help="a remark for the report (e.g. machine shared with other jobs)")
    args = parser.parse_args(argv)
    if not 1 <= args.repeats <= 50 or args.iters_batch1 < 1 or args.iters_batch32 < 1:
        parser.error("--repeats must be in [1, 50] and the iteration counts >= 1")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import onnxruntime
    import torch

    from bayesian_hf.backends import load_for_inference
    from bayesian_hf.cli import _embedded_splits
    from bayesian_hf.onnx_export import export_onnx

    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    load_before = load_average()
    report: dict = {"backends": {}}
    with tempfile.TemporaryDirectory(prefix="bhf-backends-") as tmp:
        timings = {}
        for name, quantize in (("onnx_fp32", None), ("onnx_int8", "int8")):
            t0 = time.perf_counter()
            export_onnx(args.model, Path(tmp) / name, quantize=quantize)
            timings[name] = round(time.perf_counter() - t0, 1)
            print(f"exported {name} in {timings[name]} s", flush=True)
        models = {}
        models["torch_eager"], tokenizer = load_for_inference(args.model, backend="torch", torch_threads=threads)
        names = [b for b in BACKENDS if not (b == "torch_compile" and args.skip_compile)]
        if "torch_compile" in names:
            t0 = time.perf_counter()
            models["torch_compile"], _ = load_for_inference(args.model, backend="torch", compile=True,
                                                            torch_threads=threads)
            timings["torch_compile"] = round(time.perf_counter() - t0, 1)
        for name in ("onnx_fp32", "onnx_int8"):
            models[name], _ = load_for_inference(Path(tmp) / name, backend="onnx", torch_threads=threads)
        config = models["torch_eager"].config

        (test,) = _embedded_splits(models["torch_eager"], ("test",))
        texts, labels = list(test["text"]), np.asarray(test["label"])
        inputs = long_texts(tokenizer, texts, args.batch, args.seq)
        encodings = {1: encode(tokenizer, config, inputs[:1], args.seq),
                     args.batch: encode(tokenizer, config, inputs, args.seq)}
        units = encodings[args.batch]["unit_ids"].amax(1)
        print(f"inputs: {args.batch} texts x {args.seq} tokens, {float(units.float().mean()):.1f} units on average",
              flush=True)
        # warm-up at both shapes (torch.compile compiles here: counted in its load time, not in the timings)
        for name in names:
            t0 = time.perf_counter()
            for enc in encodings.values():
                time_calls(models[name], enc, 1)
            if name == "torch_compile":
                timings["torch_compile_warmup"] = round(time.perf_counter() - t0, 1)
        per_repeat = {name: {size: [] for size in encodings} for name in names}
        for repeat in range(args.repeats):
            for size, enc in encodings.items():
                iters = args.iters_batch1 if size == 1 else args.iters_batch32
                for name in names:
                    per_repeat[name][size].append(time_calls(models[name], enc, iters))
            print(f"repeat {repeat + 1}/{args.repeats}: " + ", ".join(
                f"{n} {per_repeat[n][args.batch][-1]['throughput']:.1f}/s" for n in names), flush=True)
        reference = None
        for name in names:
            scores = quality(models[name], tokenizer, texts, labels)
            if reference is None:
                reference = scores
            entry = {"speed": {}, "quality": {k: round(v, 4) for k, v in scores.items() if not k.startswith("_")}}
            entry["quality"]["label_agreement_with_eager"] = round(
                float((scores["_probs"].argmax(1) == reference["_probs"].argmax(1)).mean()), 4)
            entry["quality"]["max_abs_dprob_vs_eager"] = float(f"{np.abs(scores['_raw'] - reference['_raw']).max():.2e}")
            for size in encodings:
                runs = per_repeat[name][size]
                entry["speed"][f"batch{size}"] = {key: round(float(np.median([r[key] for r in runs])), 2)
                                                  for key in ("throughput", "p50_ms", "p99_ms")}
            if name == "torch_compile":
                entry["compiled"] = bool(getattr(models[name], "compiled", False))
            report["backends"][name] = entry
            print(f"{name}: {entry}", flush=True)

    eager, int8 = report["backends"]["torch_eager"], report["backends"]["onnx_int8"]
    key = f"batch{args.batch}"
    speedup = int8["speed"][key]["throughput"] / eager["speed"][key]["throughput"]
    acc_drop = 100 * (eager["quality"]["accuracy"] - int8["quality"]["accuracy"])
    auroc_drop = eager["quality"]["auroc_error_detection"] - int8["quality"]["auroc_error_detection"]
    goals = {"speedup_int8_vs_eager_batch32": round(speedup, 2), "speedup_met": speedup >= 2.0,
             "accuracy_drop_pt": round(acc_drop, 2), "accuracy_met": abs(acc_drop) <= 0.5,
             "auroc_drop": round(auroc_drop, 4), "auroc_met": abs(auroc_drop) <= 0.01}
    goals["all_met"] = goals["speedup_met"] and goals["accuracy_met"] and goals["auroc_met"]
    fastest = max(report["backends"], key=lambda n: report["backends"][n]["speed"][key]["throughput"])
    report.update({
        "command": " ".join(["python benchmarks/bench_backends.py",
                             *(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "model": {"folder": os.path.basename(os.path.normpath(args.model)), "num_orderings": int(config.num_orderings),
                  "bayesian_layers": list(config.bayesian_layers), "head_type": config.head_type,
                  "posterior_samples": int(config.posterior_samples)},
        "setup": {"batch": args.batch, "seq": args.seq, "repeats": args.repeats, "iters_batch1": args.iters_batch1,
                  "iters_batch32": args.iters_batch32, "threads": threads, "test_texts": len(texts),
                  "load_seconds": timings},
        "environment": {"machine": f"CPU, {os.cpu_count()} cores", "cpu": cpu_name(), "torch": torch.__version__,
                        "onnxruntime": onnxruntime.__version__, "python": platform.python_version(),
                        "load_before": load_before, "load_after": load_average(), "note": args.note},
        "goals": goals, "fastest_batch32": fastest,
    })
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    write_markdown(report, args.output.with_suffix(".md"))
    print(json.dumps(goals), flush=True)
    return 0


def write_markdown(report: dict, path: Path) -> None:
    setup, env, goals = report["setup"], report["environment"], report["goals"]
    b = setup["batch"]
    lines = [
        "# Inference backends (CPU)", "",
        f"`{report['command']}` -- {report['date']}", "",
        f"Machine: {env['machine']} ({env['cpu']}), {setup['threads']} intra-op threads; torch {env['torch']}, "
        f"onnxruntime {env['onnxruntime']}. Load average before/after: {env['load_before']} / {env['load_after']}.",
        f"{env['note']}".strip(), "",
        f"Model: {report['model']}. Inputs: batches of 1 and {b} texts x {setup['seq']} tokens; "
        f"median of {setup['repeats']} repeats ({setup['iters_batch1']} calls at batch 1, {setup['iters_batch32']} "
        f"at batch {b} per repeat), backends interleaved within each repeat. Quality on the embedded test split "
        f"({setup['test_texts']} texts).", "",
        f"| backend | texts/s b1 | p50 ms b1 | p99 ms b1 | texts/s b{b} | p50 ms b{b} | p99 ms b{b} | accuracy | ECE "
        "| error AUROC | agreement | max abs dp |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, e in report["backends"].items():
        s1, sb, q = e["speed"]["batch1"], e["speed"][f"batch{b}"], e["quality"]
        label = name + (" (fell back to eager)" if name == "torch_compile" and not e.get("compiled") else "")
        lines.append(f"| {label} | {s1['throughput']} | {s1['p50_ms']} | {s1['p99_ms']} | {sb['throughput']} | "
                     f"{sb['p50_ms']} | {sb['p99_ms']} | {q['accuracy']:.4f} | {q['ece']:.4f} | "
                     f"{q['auroc_error_detection']:.4f} | {q['label_agreement_with_eager']:.4f} | "
                     f"{q['max_abs_dprob_vs_eager']:.1e} |")
    met = lambda ok: "met" if ok else "MISSED"  # noqa: E731
    lines += [
        "", "## Goal", "",
        f"- ORT INT8 >= 2x PyTorch eager throughput at batch {b}: {goals['speedup_int8_vs_eager_batch32']}x -- "
        f"{met(goals['speedup_met'])}",
        f"- accuracy within 0.5 pt: drop {goals['accuracy_drop_pt']} pt -- {met(goals['accuracy_met'])}",
        f"- error-detection AUROC within 0.01: drop {goals['auroc_drop']} -- {met(goals['auroc_met'])}",
        "", f"Load/export seconds: {setup['load_seconds']}.", "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
