"""``bayesian-hf calibrate`` and ``bayesian-hf fit-posterior``: fitting what comes after training on a saved
folder (the calibrator with its conformal sets and thresholds; the last-layer Laplace posterior)."""

from __future__ import annotations

import argparse
import os

from ..calibration_selection import CALIBRATION_SUMMARY_KEYS
from ..folder_integrity import atomic_file
from ..model_files import CALIBRATION_FILENAME, POSTERIOR_FIT_FILE
from .analysis import describe_risk_coverage
from .common import add_folder_and_files_arguments, embedded_splits, load_model_folder


def calibrate_and_describe(model, tokenizer, calibration, test, folder, *, dataset_name: str, alpha: float = 0.1,
                           conformal_score: str = "aps", seed: int = 0, target_risk: float | None = None,
                           delta: float = 0.1, review_target_risk: float | None = None,
                           review_budget: float | None = None) -> dict:
    """Fit the calibrator on ``calibration`` (a split with ``text``/``label``), write ``calibration.json`` into
    ``folder``, evaluate on ``test`` and render the model card with those metrics and a reliability diagram."""
    import numpy as np

    from ..evaluation import fit_model_calibration
    from ..hub import write_model_card
    from ..inference import collect_outputs
    from ..metrics import classification_metrics
    from ..training import format_table

    _, report = fit_model_calibration(model, tokenizer, calibration["text"], calibration["label"], alpha=alpha,
                                      conformal_score=conformal_score, seed=seed, target_risk=target_risk, delta=delta,
                                      review_target_risk=review_target_risk, review_budget=review_budget)
    model.save_calibration_file(folder)
    outputs = collect_outputs(model, tokenizer, test["text"])
    labels = np.asarray(test["label"])
    metrics = classification_metrics(outputs["calibrated_probs"], labels, uncertainty=outputs["total"])
    coverage = model.calibration.conformal.evaluate(outputs["calibrated_probs"], labels)
    write_model_card(folder, model, eval_metrics=metrics, eval_probs=outputs["calibrated_probs"], eval_labels=labels,
                     dataset_name=dataset_name)
    held = report["heldout"]
    rows = [{"metric": m, "before": held[f"{m}_before"], "after": held[f"{m}_after"]}
            for m in CALIBRATION_SUMMARY_KEYS]
    print(f"\nCalibrator: {report['selection']['chosen']} (cross-fitted held-out NLL per method: "
          + ", ".join(f"{k}={v:.4f}" for k, v in report["selection"]["heldout_nll"].items() if v is not None)
          + f"); before/after on {report['heldout_examples']} held-out calibration examples:")
    print(format_table(rows, ["metric", "before", "after"]))
    print(f"Conformal {model.calibration.conformal.score.upper()} sets at {1 - alpha:.0%} on test: "
          + ", ".join(f"{k}={v:.4f}" for k, v in coverage.items() if isinstance(v, float)))
    print(describe_risk_coverage(report["risk_coverage"], model.calibration.metadata.get("decision_thresholds")))
    print(f"Test metrics with the calibrator: accuracy={metrics['accuracy']:.4f} ece={metrics['ece']:.4f} "
          f"nll={metrics['nll']:.4f}; wrote {folder}/calibration.json, README.md, reliability_diagram.png, "
          "risk_coverage.png")
    return {"report": report, "test_metrics": metrics, "coverage": coverage}


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Fit calibrators on a calibration split (cross-fitted choice by held-out NLL), add a conformal predictor,
    save calibration.json next to the weights and refresh the model card."""
    from datasets import Dataset

    from ..data import load_labelled_texts

    model, tokenizer = load_model_folder(args.model, load_calibration_file=False)
    if args.calibration_file:
        label2id = dict(model.config.label2id)
        kw = dict(label2id=label2id, text_column=args.text_column, label_column=args.label_column)
        texts, labels = load_labelled_texts(args.calibration_file, **kw)
        calibration = Dataset.from_dict({"text": texts, "label": labels})
        test_file = args.test_file or args.calibration_file
        texts, labels = load_labelled_texts(test_file, **kw)
        test = Dataset.from_dict({"text": texts, "label": labels})
        name = os.path.basename(str(args.calibration_file))
    else:
        calibration, test = embedded_splits(model)
        name = "exchangeable-reviews (embedded)"
    if args.recalibrate_if_better and not _new_calibration_is_better(model, tokenizer, calibration, args):
        return 0
    calibrate_and_describe(model, tokenizer, calibration, test, args.model, dataset_name=name, alpha=args.alpha,
                           conformal_score=args.conformal, seed=args.seed, target_risk=args.target_risk,
                           delta=args.delta, review_target_risk=args.review_target_risk,
                           review_budget=args.review_budget)
    return 0


def _new_calibration_is_better(model, tokenizer, calibration, args: argparse.Namespace) -> bool:
    """``--recalibrate-if-better``: fit on the new data and compare with the folder's current calibrator on the
    held-out half of that data (the half the new fit does not see). True (and the old file copied to
    ``calibration.json.bak``) when the new calibrator's NLL is lower; False keeps the old file untouched."""
    import shutil

    import numpy as np

    from ..calibration import load_calibration
    from ..data.splits import stratified_halves
    from ..evaluation import fit_model_calibration
    from ..inference import collect_outputs
    from ..metrics import negative_log_likelihood

    path = os.path.join(args.model, CALIBRATION_FILENAME)
    if not os.path.exists(path):
        print(f"{path} does not exist: fitting a first calibrator")
        return True
    old = load_calibration(path, label2id=dict(model.config.label2id))
    _, report = fit_model_calibration(model, tokenizer, calibration["text"], calibration["label"], seed=args.seed)
    labels = np.asarray(calibration["label"])
    logits = collect_outputs(model, tokenizer, calibration["text"], fields=("logits",), progress=False)["logits"]
    _, held = stratified_halves(labels, args.seed)
    old_nll = negative_log_likelihood(old.calibrator.transform(logits[held]), labels[held])
    new_nll = float(report["heldout"]["nll_after"])
    better = new_nll < old_nll
    print(f"held-out NLL on {len(held)} new examples: current calibrator ({old.calibrator.method}) {old_nll:.4f}, "
          f"refit ({report['selection']['chosen']}) {new_nll:.4f} -> "
          + ("replacing calibration.json (old one kept as calibration.json.bak)" if better else "keeping the current one"))
    if better:
        shutil.copy2(path, path + ".bak")
    else:
        model.set_calibration(old)
    return better


def cmd_fit_posterior(args: argparse.Namespace) -> int:
    """Fit the last-layer Laplace posterior of a trained folder (head_type laplace) on its training texts: prior
    precision by marginal likelihood, order scale by held-out NLL. Rewrites the weights file (the posterior is
    saved as `posterior.*` buffers) and removes a calibrator fitted on the old predictive."""
    import json
    import shutil

    from ..data import load_labelled_texts
    from ..posterior_fitting import fit_posterior

    model, tokenizer = load_model_folder(args.model, load_calibration_file=False)
    label2id = dict(model.config.label2id)
    kw = dict(label2id=label2id, text_column=args.text_column, label_column=args.label_column)
    if args.train_file:
        train_texts, _ = load_labelled_texts(args.train_file, **kw)
        val_texts, val_labels = load_labelled_texts(args.validation_file, **kw) if args.validation_file else (None, None)
    else:
        if args.validation_file:
            raise ValueError("--validation_file needs --train_file")
        train, validation = embedded_splits(model, ("train", "validation"))
        train_texts, val_texts, val_labels = train["text"], validation["text"], validation["label"]
    report = fit_posterior(model, tokenizer, train_texts, validation_texts=val_texts, validation_labels=val_labels,
                           max_examples=args.max_examples, batch_size=args.batch_size, max_length=args.max_length)
    stale = os.path.join(args.model, CALIBRATION_FILENAME)
    if os.path.exists(stale):  # kept for reference (never loaded, never pushed); the save below drops the original
        shutil.copy2(stale, stale + ".stale")
        print(f"the calibrator fitted on the previous predictive is retired to {stale}.stale: run `bayesian-hf "
              f"calibrate --model {args.model}`")
    model.save_pretrained(args.model)
    summary = {k: v for k, v in report.items() if not isinstance(v, (dict, list))}
    with atomic_file(os.path.join(args.model, POSTERIOR_FIT_FILE)) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    print("Laplace posterior fitted: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                    for k, v in summary.items()))
    return 0


def add_calibrate_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``bayesian-hf calibrate``."""
    add = parser.add_argument
    add_folder_and_files_arguments(
        parser, "a saved Bayesian model folder (it receives calibration.json)",
        [("--calibration_file", "csv/jsonl/parquet (default: the embedded calibration split)"),
         ("--test_file", "where to report test metrics and conformal coverage")])
    add("--alpha", type=float, default=0.1, help="conformal miscoverage (sets cover 1 - alpha)")
    add("--conformal", choices=["lac", "aps"], default="aps")
    add("--seed", type=int, default=0)
    add("--target_risk", "--target-risk", dest="target_risk", type=float, default=None,
        help="choose the accept threshold so that the error among accepted predictions is at most "
        "this (e.g. 0.02) with probability >= 1 - delta")
    add("--delta", type=float, default=0.1, help="allowed failure probability of the guarantee")
    add("--review_target_risk", "--review-target-risk", dest="review_target_risk", type=float, default=None,
        help="error-rate target for the predictions sent to review")
    add("--review_budget", "--review-budget", dest="review_budget", type=float, default=None,
        help="at most this share of traffic is sent to review")
    add("--recalibrate-if-better", "--recalibrate_if_better", dest="recalibrate_if_better", action="store_true",
        help="replace calibration.json only if the refit lowers held-out NLL (old file kept as calibration.json.bak)")


def add_fit_posterior_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``bayesian-hf fit-posterior``."""
    add = parser.add_argument
    add_folder_and_files_arguments(
        parser, "a trained Bayesian model folder (head_type laplace)",
        [("--train_file", "csv/jsonl/parquet (default: the embedded train split)"),
         ("--validation_file", "labelled held-out texts for the order scale")])
    add("--max_examples", type=int, default=20000, help="at most this many training texts")
    add("--max_length", type=int, default=None, help="token limit (default: the model's)")
    add("--batch_size", type=int, default=32)
