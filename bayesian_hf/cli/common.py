"""What several commands share: loading a model folder with its checked tokenizer, the labelled-file column flags,
and the embedded dataset's splits in a model's label ids."""

from __future__ import annotations

import argparse
from typing import Any, Sequence

from ..folder_integrity import load_checked_tokenizer
from ..modeling_bayesian_expectation import BayesianExpectationForSequenceClassification


def load_model_folder(folder: str, **kwargs: Any) -> tuple[BayesianExpectationForSequenceClassification, Any]:
    """The model of a saved folder (``kwargs`` go to ``from_pretrained``) and its tokenizer, refusing a tokenizer
    that is not the model's."""
    model = BayesianExpectationForSequenceClassification.from_pretrained(folder, **kwargs)
    return model, load_checked_tokenizer(folder, model.config)


def add_column_arguments(parser: argparse.ArgumentParser) -> None:
    """``--text_column`` and ``--label_column`` of a labelled csv/jsonl/parquet file."""
    parser.add_argument("--text_column", default="text")
    parser.add_argument("--label_column", default="label")


def add_folder_and_files_arguments(parser: argparse.ArgumentParser, model_help: str,
                                   files: Sequence[tuple[str, str]]) -> None:
    """``--model`` (a saved folder), optional labelled files (``(flag, help)`` pairs; without them a command uses
    the embedded dataset's splits) and their column flags."""
    parser.add_argument("--model", required=True, help=model_help)
    for flag, text in files:
        parser.add_argument(flag, default=None, help=text)
    add_column_arguments(parser)


def embedded_splits(model, splits: Sequence[str] = ("calibration", "test")) -> tuple:
    """The embedded dataset's splits (default calibration and test) with labels mapped to the model's label ids."""
    from ..data import LABEL_NAMES, load_exchangeable_reviews  # lazy: the dataset loader imports datasets

    label2id = {str(k): int(v) for k, v in model.config.label2id.items()}
    unknown = [name for name in LABEL_NAMES if name not in label2id]
    if unknown:
        raise ValueError(f"the embedded dataset's labels {LABEL_NAMES} are not the model's labels {sorted(label2id)}")
    data = load_exchangeable_reviews()
    remap = lambda split: split.map(lambda ex: {"label": label2id[LABEL_NAMES[ex["label"]]]})  # noqa: E731
    return tuple(remap(data[name]) for name in splits)
