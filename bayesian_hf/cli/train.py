"""``bayesian-hf train`` and ``bayesian-hf quickstart``: fine-tuning with ``transformers.Trainer``; quickstart also
calibrates, writes the card, reloads the folder and runs ``pipeline()`` on a few texts."""

from __future__ import annotations

import argparse
from typing import Sequence

from ..modeling_bayesian_expectation import BayesianExpectationForSequenceClassification
from .calibrate import calibrate_and_describe
from .demo import DEMO_TEXTS, print_predictions


def cmd_train(args: argparse.Namespace, rest: Sequence[str]) -> int:
    """Fine-tune with transformers.Trainer: --config configs/NAME.yaml plus any flag of `bayesian-hf train --help`."""
    from ..training import main as train_main  # lazy: the training package imports the Trainer stack and datasets

    train_main(list(rest))
    return 0


def cmd_quickstart(args: argparse.Namespace, rest: Sequence[str]) -> int:
    """The main job: train the embedded MiniLM on the embedded dataset (configs/quickstart.yaml), evaluate on test
    and ood, fit a calibrator, save it with a model card, reload the folder and run pipeline() on a few texts."""
    from transformers import pipeline

    from ..training import quickstart  # lazy: the training package imports the Trainer stack and datasets

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


def add_quickstart_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``bayesian-hf quickstart`` (any ``bayesian-hf train`` flag is passed on to the training run)."""
    parser.add_argument("--output_dir", default=None, help="output folder (default: outputs/quickstart)")
