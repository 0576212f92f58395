"""``bayesian-hf report``, ``compare`` and ``drift``: measuring saved folders on labelled (or unlabelled) files --
risk-coverage, an A/B comparison, drift against the calibration-time reference."""

from __future__ import annotations

import argparse
import os

from ..folder_integrity import load_checked_tokenizer
from ..modeling_bayesian_expectation import BayesianExpectationForSequenceClassification
from .common import add_column_arguments, load_model_folder


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

    from ..data import load_labelled_texts
    from ..inference import collect_outputs
    from ..risk_control import plot_risk_coverage, risk_coverage_table

    model, tokenizer = load_model_folder(args.model)
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


def cmd_compare(args: argparse.Namespace) -> int:
    """A/B comparison of two model folders on the same labelled file: accuracy, NLL, ECE, AURC with paired
    bootstrap intervals of the differences, decision mix, latency, and a verdict."""
    import json

    from ..comparison import compare_models, render_comparison
    from ..data import load_labelled_texts

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


def cmd_drift(args: argparse.Namespace) -> int:
    """Drift of recent data against the calibration-time reference. Without labels: PSI / KS / Wasserstein of
    the model's own outputs (confidence, epistemic, aleatoric, order dispersion, length) and the predicted-label
    shift. With labels also: ECE of the calibrated model against the ECE when it was fit, and whether to
    recalibrate. Exit 1 with --fail_on_drift when an alert fires or recalibration is recommended."""
    import json

    from ..data import load_labelled_texts
    from ..drift import ReferenceSketch, drift_statistics, signals_from_outputs
    from ..evaluation import calibration_drift
    from ..inference import collect_outputs

    model, tokenizer = load_model_folder(args.model)
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


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``bayesian-hf report``."""
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="labelled csv/jsonl/parquet")
    add_column_arguments(parser)
    parser.add_argument("--delta", type=float, default=0.1, help="level of the pointwise upper bounds")
    parser.add_argument("--output_dir", default=None, help="where the JSON and PNG go (default: the model folder)")


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``bayesian-hf compare``."""
    parser.add_argument("--model", action="append", required=True, help="model folder (give twice: A then B)")
    parser.add_argument("--data", required=True, help="labelled csv/jsonl/parquet")
    add_column_arguments(parser)
    parser.add_argument("--num_resamples", type=int, default=1000, help="paired bootstrap resamples")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="also write the report as JSON here")


def add_drift_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``bayesian-hf drift``."""
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="recent data: csv/jsonl/parquet, with or without labels")
    add_column_arguments(parser)
    parser.add_argument("--tolerance", type=float, default=0.03, help="allowed ECE increase before recalibrating")
    parser.add_argument("--psi_threshold", type=float, default=0.2, help="PSI above which a signal has drifted")
    parser.add_argument("--fail_on_drift", action="store_true", help="exit 1 when recalibration is recommended")
