"""``bayesian-hf demo``: convert the embedded MiniLM and print predictions with their uncertainty (no training)."""

from __future__ import annotations

import argparse
from typing import Sequence

from ..modeling_bayesian_expectation import BayesianExpectationForSequenceClassification
from ..pipelines import predict
from ..resources import embedded_model_path

DEMO_TEXTS = [
    "The pasta was superb. Service was painfully slow! We will still come back.",
    "Dreadful film. The plot made no sense. The lead actor was wasted.",
    "Lovely room with a view. The breakfast was cold.",
    "Fine.",
]


def short_text(text: str) -> str:
    """A text cut to fit a table column (48 characters)."""
    return text if len(text) <= 48 else text[:45] + "..."


def cmd_demo(args: argparse.Namespace) -> int:
    """Convert the embedded MiniLM BERT and print predictions with their uncertainty (no training)."""
    import torch
    from transformers import AutoTokenizer

    from ..training import format_table  # lazy: the training package imports the Trainer stack and datasets

    path = args.model or embedded_model_path()
    torch.manual_seed(args.seed)
    model = BayesianExpectationForSequenceClassification.from_bert(path, num_labels=2)
    tokenizer = AutoTokenizer.from_pretrained(path)
    texts = args.text or DEMO_TEXTS
    # the demo asks for exactly --num_orderings: no serving limit on it
    records = predict(model, tokenizer, texts, num_orderings=args.num_orderings,
                      max_num_orderings=max(args.num_orderings, 1), return_raw_probabilities=True)
    positive = model.config.id2label[1]
    rows = [
        {
            "text": short_text(text),
            "units": r["num_units"],
            "p(LABEL_1)": r["raw_probabilities"][positive],
            "epistemic": r["uncertainty"]["epistemic"],
            "aleatoric": r["uncertainty"]["aleatoric"],
            "total": r["uncertainty"]["total"],
            "order_disp": r["order_dispersion"],
        }
        for text, r in zip(texts, records)
    ]
    print(f"Converted {path} (bayesian_layers={model.config.bayesian_layers}, k={args.num_orderings}); "
          "the classifier head is untrained, so probabilities are near 0.5.")
    print(format_table(rows, list(rows[0])))
    return 0


def print_predictions(texts: Sequence[str], results: Sequence[dict]) -> None:
    """label, calibrated score, uncertainty and decision per text, as a table."""
    from ..training import format_table  # lazy: the training package imports the Trainer stack and datasets

    rows = [
        {
            "text": short_text(text),
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


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``bayesian-hf demo``."""
    parser.add_argument("--model", default=None, help="BERT checkpoint (default: the embedded MiniLM)")
    parser.add_argument("--text", action="append", help="a text to classify (repeatable)")
    parser.add_argument("--num_orderings", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
