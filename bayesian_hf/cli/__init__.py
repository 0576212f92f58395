"""The ``bayesian-hf`` command: :func:`build_parser` and :func:`main` (the console script
``bayesian_hf.cli:main``; ``python -m bayesian_hf.cli`` runs ``__main__``, which is how ``torchrun`` starts it).

One module per command group: ``demo``; ``train`` (train, quickstart); ``calibrate`` (calibrate, fit-posterior);
``analysis`` (report, compare, drift); ``deploy`` (push, serve, export, predict); ``common`` holds what several
share.  A command imports the heavy parts it runs inside its function (``datasets``, the ``Trainer`` stack,
matplotlib, FastAPI/uvicorn), so ``bayesian-hf --help`` and the other commands do not load them.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ..batch_inference import add_predict_arguments
from ..onnx_export import add_export_arguments
from ..serving.settings import add_serve_arguments
from .analysis import (
    add_compare_arguments,
    add_drift_arguments,
    add_report_arguments,
    cmd_compare,
    cmd_drift,
    cmd_report,
    describe_risk_coverage,
)
from .calibrate import (
    add_calibrate_arguments,
    add_fit_posterior_arguments,
    calibrate_and_describe,
    cmd_calibrate,
    cmd_fit_posterior,
)
from .common import embedded_splits as _embedded_splits  # noqa: F401  (old private name: benchmarks/bench_backends.py)
from .demo import DEMO_TEXTS, add_demo_arguments, cmd_demo, print_predictions
from .deploy import add_push_arguments, cmd_export, cmd_predict, cmd_push, cmd_serve
from .train import add_quickstart_arguments, cmd_quickstart, cmd_train

# subcommands whose unknown flags are passed on to the training argument parser
_PASS_THROUGH = {"train", "quickstart"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bayesian-hf", description="Bayesian-in-expectation BERT classifiers.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help=cmd_demo.__doc__)
    add_demo_arguments(demo)
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
    add_quickstart_arguments(quick)
    quick.set_defaults(func=cmd_quickstart)
    for name, func, add_arguments in (
        ("calibrate", cmd_calibrate, add_calibrate_arguments),
        ("fit-posterior", cmd_fit_posterior, add_fit_posterior_arguments),
        ("report", cmd_report, add_report_arguments),
        ("compare", cmd_compare, add_compare_arguments),
        ("push", cmd_push, add_push_arguments),
        ("drift", cmd_drift, add_drift_arguments),
        ("serve", cmd_serve, add_serve_arguments),
        ("export", cmd_export, add_export_arguments),
        ("predict", cmd_predict, add_predict_arguments),
    ):
        command = sub.add_parser(name, help=func.__doc__, description=func.__doc__)
        add_arguments(command)
        command.set_defaults(func=func)
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


__all__ = [
    "DEMO_TEXTS",
    "build_parser",
    "calibrate_and_describe",
    "cmd_calibrate",
    "cmd_compare",
    "cmd_demo",
    "cmd_drift",
    "cmd_export",
    "cmd_fit_posterior",
    "cmd_predict",
    "cmd_push",
    "cmd_quickstart",
    "cmd_report",
    "cmd_serve",
    "cmd_train",
    "describe_risk_coverage",
    "main",
    "print_predictions",
]
