"""Training benchmark: the Bayesian model (k_train = 4) vs plain BertForSequenceClassification, same MiniLM weights.

Both start from the embedded all-MiniLM-L6-v2 and train on the embedded "exchangeable reviews" dataset with the
same budget (epochs, batch size, learning rate, schedule, max_length) and the same seeds, through the same
`BayesianTrainer`. Reported per seed and as medians:

* training throughput (samples/s) of each full run, and an interleaved micro-benchmark: blocks of optimizer
  steps of the two models alternate on identical batches, the ratio is taken per block and the median
  reported (robust to load from other processes on the machine);
* test accuracy, NLL, ECE (15 bins), AUROC of error detection (score: total uncertainty for the Bayesian
  model; predictive entropy for plain BERT, which for 2 classes ranks exactly like 1 - max prob);
* AUROC of OOD detection, test vs the `ood` split (same scores; epistemic also reported for the Bayesian model).

    python benchmarks/bench_training.py                       # 2 seeds, 2 epochs (~15 min on 2 CPU cores)
    python benchmarks/bench_training.py --seeds 0 --epochs 1  # quicker

Writes benchmarks/results/training_cpu.json and training_cpu.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from transformers import AutoTokenizer, BertForSequenceClassification, TrainingArguments, set_seed  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from bayesian_hf.training import (  # noqa: E402
    BayesianTrainer,
    DataArguments,
    ModelArguments,
    UnitDataCollator,
    embedded_model_path,
    evaluate_splits,
    load_data,
    load_model_and_tokenizer,
    make_bayesian_compute_metrics,
)

RESULTS = Path(__file__).resolve().parent / "results"
HEADLINE = ("accuracy", "nll", "ece", "auroc_error", "ood_auroc")


def build_model(kind: str, label2id: dict, args: argparse.Namespace, seed: int):
    set_seed(seed)
    path = embedded_model_path()
    if kind == "bayesian":
        model_args = ModelArguments(
            num_train_orderings=args.k_train, num_orderings=args.k_eval, max_length=args.max_length,
            mdl_beta=args.mdl_beta, mdl_anneal_steps=args.mdl_anneal_steps,
            evidence_weighting=args.evidence_weighting,
        )
        model, tokenizer = load_model_and_tokenizer(model_args, label2id)
        return model, tokenizer
    id2label = {i: name for name, i in label2id.items()}
    model = BertForSequenceClassification.from_pretrained(
        path, num_labels=len(label2id), id2label=id2label, label2id=dict(label2id)
    )
    return model, AutoTokenizer.from_pretrained(path)


def train_and_evaluate(kind: str, dsd, label2id, args, seed: int, workdir: str) -> dict:
    model, tokenizer = build_model(kind, label2id, args, seed)
    collator = UnitDataCollator(tokenizer, max_length=args.max_length, return_unit_ids=(kind == "bayesian"))
    training_args = TrainingArguments(
        output_dir=os.path.join(workdir, f"{kind}-{seed}"),
        seed=seed,
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=64,
        learning_rate=args.learning_rate,
        weight_decay=0.01,
        warmup_steps=0.1,
        lr_scheduler_type="linear",
        logging_steps=50,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        dataloader_num_workers=0,
    )
    trainer = BayesianTrainer(
        model=model, args=training_args, data_collator=collator, train_dataset=dsd["train"],
        processing_class=tokenizer, compute_metrics=make_bayesian_compute_metrics(),
    )
    start = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - start
    splits, ood = evaluate_splits(trainer, dsd, ["test", "ood"])
    test = splits["test"]
    row = {
        "model": kind,
        "seed": seed,
        "train_seconds": seconds,
        "train_samples_per_second": result.metrics["train_samples_per_second"],
        "accuracy": test["accuracy"],
        "f1": test["f1"],
        "nll": test["nll"],
        "brier": test["brier"],
        "ece": test["ece"],
        "adaptive_ece": test["adaptive_ece"],
        "auroc_error": test["auroc_error"],
        "aurc": test["aurc"],
        "ood_auroc": ood["ood_auroc_total"],
        "ood_auroc_max_prob": ood["ood_auroc_max_prob"],
        "ood_accuracy": splits["ood"]["accuracy"],
        "test_eval_samples_per_second": test.get("samples_per_second"),
    }
    if kind == "bayesian":
        row["ood_auroc_epistemic"] = ood["ood_auroc_epistemic"]
        row["mean_epistemic_test"] = test["mean_epistemic"]
        row["mean_epistemic_ood"] = splits["ood"]["mean_epistemic"]
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    return row


def interleaved_throughput(dsd, label2id, args) -> dict:
    """Alternate blocks of training steps of the two models on the same batches; ratio per block."""
    models, batches = {}, {}
    for kind in ("bayesian", "plain"):
        model, tokenizer = build_model(kind, label2id, args, seed=0)
        model.train()
        collator = UnitDataCollator(tokenizer, max_length=args.max_length, return_unit_ids=(kind == "bayesian"))
        rows = [dsd["train"][i] for i in range(args.batch_size * args.micro_steps)]
        batches[kind] = [collator(rows[j:j + args.batch_size]) for j in range(0, len(rows), args.batch_size)]
        models[kind] = (model, torch.optim.AdamW(model.parameters(), lr=1e-5))

    def block(kind: str) -> float:
        model, optimizer = models[kind]
        start = time.perf_counter()
        for batch in batches[kind]:
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    for _ in range(2):  # warm-up (allocator, optimizer state, thread pools)
        block("bayesian"), block("plain")
    ratios, times = [], {"bayesian": [], "plain": []}
    for r in range(args.micro_repeats):
        order = ("bayesian", "plain") if r % 2 == 0 else ("plain", "bayesian")
        t = {kind: block(kind) for kind in order}
        for kind in t:
            times[kind].append(t[kind])
        ratios.append(t["bayesian"] / t["plain"])
    n = args.batch_size * args.micro_steps
    return {
        "steps_per_block": args.micro_steps,
        "batch_size": args.batch_size,
        "blocks": args.micro_repeats,
        "ratio_per_block": ratios,
        "ratio_median": statistics.median(ratios),
        "bayesian_samples_per_second_median": n / statistics.median(times["bayesian"]),
        "plain_samples_per_second_median": n / statistics.median(times["plain"]),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--train_size", type=int, default=2000)
    parser.add_argument("--test_size", type=int, default=500)
    parser.add_argument("--ood_size", type=int, default=300)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--k_train", type=int, default=4)
    parser.add_argument("--k_eval", type=int, default=8)
    parser.add_argument("--mdl_beta", type=float, default=0.01)
    parser.add_argument("--mdl_anneal_steps", type=int, default=100)
    parser.add_argument("--evidence_weighting", choices=["count", "learned"], default="count")
    parser.add_argument("--micro_steps", type=int, default=5)
    parser.add_argument("--micro_repeats", type=int, default=8)
    parser.add_argument("--out", default=str(RESULTS / "training_cpu"))
    args = parser.parse_args(argv)
    hf_logging.set_verbosity_error()

    data_args = DataArguments(
        embedded=True, embedded_train_size=args.train_size, embedded_validation_size=0,
        embedded_calibration_size=0, embedded_test_size=args.test_size, embedded_ood_size=args.ood_size,
        validation_split=0.0,
    )
    dsd, label2id = load_data(data_args, verbose=True)
    started = time.perf_counter()
    throughput = interleaved_throughput(dsd, label2id, args)
    print(f"interleaved training-step ratio (bayesian / plain): median {throughput['ratio_median']:.3f}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for seed in args.seeds:
            for kind in ("bayesian", "plain"):  # side by side, per seed
                rows.append(train_and_evaluate(kind, dsd, label2id, args, seed, workdir))
    elapsed = time.perf_counter() - started

    def median(kind: str, key: str) -> float:
        values = [r[key] for r in rows if r["model"] == kind and r.get(key) is not None]
        return float(statistics.median(values)) if values else float("nan")

    keys = ("accuracy", "f1", "nll", "brier", "ece", "adaptive_ece", "auroc_error", "aurc", "ood_auroc",
            "ood_accuracy", "train_samples_per_second")
    medians = {kind: {k: median(kind, k) for k in keys} for kind in ("bayesian", "plain")}
    medians["bayesian"]["ood_auroc_epistemic"] = median("bayesian", "ood_auroc_epistemic")
    run_ratios = [
        next(r for r in rows if r["model"] == "plain" and r["seed"] == s)["train_samples_per_second"]
        / next(r for r in rows if r["model"] == "bayesian" and r["seed"] == s)["train_samples_per_second"]
        for s in args.seeds
    ]
    b, p = medians["bayesian"], medians["plain"]
    goals = {
        "throughput_ratio_le_1.5": throughput["ratio_median"] <= 1.5,
        "accuracy_within_0.5_points": b["accuracy"] >= p["accuracy"] - 0.005,
        "ece_better": b["ece"] < p["ece"],
        "auroc_error_better": b["auroc_error"] > p["auroc_error"],
        "ood_auroc_better": b["ood_auroc"] > p["ood_auroc"],
    }
    report = {
        "command": "python benchmarks/bench_training.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "environment": {
            "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version(),
        },
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "elapsed_seconds": elapsed,
        "interleaved_throughput": throughput,
        "run_throughput_ratio_per_seed": run_ratios,
        "runs": rows,
        "medians": medians,
        "goals": goals,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    out.with_suffix(".md").write_text(render_markdown(report))
    print(render_markdown(report))
    return 0


def render_markdown(report: dict) -> str:
    s = report["settings"]
    b, p = report["medians"]["bayesian"], report["medians"]["plain"]
    t = report["interleaved_throughput"]
    lines = [
        "# Training benchmark (CPU): Bayesian-expectation MiniLM vs plain BERT fine-tuning",
        "",
        f"Command: `{report['command']}` ({report['elapsed_seconds'] / 60:.1f} min; torch "
        f"{report['environment']['torch']}, {report['environment']['threads']} threads, "
        f"{report['environment']['cpu_count']} cores; the machine was shared, so absolute speeds are noisy).",
        "",
        f"Both models start from the embedded all-MiniLM-L6-v2 and train on the embedded dataset "
        f"({s['train_size']} train, {s['test_size']} test, {s['ood_size']} ood) for {s['epochs']:g} epochs, batch "
        f"{s['batch_size']}, lr {s['learning_rate']:g}, linear schedule with 10% warm-up, max_length "
        f"{s['max_length']}, seeds {s['seeds']}, through the same `BayesianTrainer`. Bayesian model: block 0 is "
        f"the Bayesian layer, k_train = {s['k_train']}, k_eval = {s['k_eval']} sentence orderings, MDL beta "
        f"{s['mdl_beta']:g} annealed over {s['mdl_anneal_steps']} steps, evidence weighting "
        f"`{s.get('evidence_weighting', 'count')}`. Medians over seeds.",
        "",
        f"| metric (test) | Bayesian (k_train={s['k_train']}) | plain BERT | better |",
        "|---|---|---|---|",
    ]
    better = {"accuracy": max, "f1": max, "nll": min, "brier": min, "ece": min, "adaptive_ece": min,
              "auroc_error": max, "aurc": min, "ood_auroc": max, "ood_accuracy": max}
    names = {"ood_auroc": "OOD-detection AUROC (test vs ood)", "auroc_error": "error-detection AUROC",
             "ood_accuracy": "accuracy on ood"}
    for key, pick in better.items():
        winner = "Bayesian" if pick(b[key], p[key]) == b[key] and b[key] != p[key] else (
            "plain" if b[key] != p[key] else "tie")
        lines.append(f"| {names.get(key, key)} | {b[key]:.4f} | {p[key]:.4f} | {winner} |")
    lines += [
        f"| training samples/s (full runs) | {b['train_samples_per_second']:.1f} | "
        f"{p['train_samples_per_second']:.1f} | |",
        "",
        f"Training-step time ratio Bayesian / plain, interleaved on identical batches: **{t['ratio_median']:.2f}x** "
        f"(median of {t['blocks']} blocks of {t['steps_per_block']} steps; per block "
        f"{', '.join(f'{r:.2f}' for r in t['ratio_per_block'])}). From the full runs' samples/s: "
        f"{', '.join(f'{r:.2f}' for r in report['run_throughput_ratio_per_seed'])} per seed.",
        f"OOD scores: total uncertainty (Bayesian), predictive entropy (plain; for 2 classes the same ranking as "
        f"1 - max prob). Bayesian OOD AUROC by epistemic uncertainty: {b['ood_auroc_epistemic']:.4f}.",
        "",
        "Goals (issue 3): " + ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in report["goals"].items()) + ".",
        "",
        "Per run:",
        "",
        "| model | seed | accuracy | nll | ece | auroc_error | ood_auroc | train samples/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        lines.append(
            f"| {r['model']} | {r['seed']} | {r['accuracy']:.4f} | {r['nll']:.4f} | {r['ece']:.4f} | "
            f"{r['auroc_error']:.4f} | {r['ood_auroc']:.4f} | {r['train_samples_per_second']:.1f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
