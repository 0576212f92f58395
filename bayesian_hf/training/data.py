"""The data of a training run: :func:`load_data` (one source, labels checked, held-out splits carved, seeded
subsampling, class balance printed) and :func:`truncation_report`."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data import describe_class_balance, load_text_classification_data
from .training_args import DataArguments


def _subsample(ds: Any, n: int | None, seed: int) -> Any:
    if n is None or n >= len(ds):
        return ds
    if n < 1:
        raise ValueError(f"max samples must be >= 1, got {n}")
    return ds.shuffle(seed=seed).select(range(n)).flatten_indices()


def load_data(data_args: DataArguments, dataset: Any = None, verbose: bool = True) -> tuple[Any, dict[str, int]]:
    """Load the data with :func:`bayesian_hf.data.load_text_classification_data` (labels checked, mapped to ids,
    validation/calibration splits carved when absent) and print the class balance of every split.

    ``dataset`` (an in-memory ``DatasetDict``/``Dataset``) replaces the file/Hub/embedded sources.
    Returns ``(DatasetDict, label2id)``.
    """
    sources = [
        dataset is not None,
        data_args.embedded,
        data_args.dataset_name is not None,
        data_args.train_file is not None,
    ]
    if not any(sources):
        raise ValueError(
            "no training data: give --embedded (the embedded synthetic dataset), --dataset_name NAME (Hub), "
            "--train_file FILE (csv/jsonl/parquet, + optional --validation_file/--test_file), or a recipe such as "
            "--config configs/quickstart.yaml"
        )
    if not data_args.embedded and data_args.train_file is None and any(
        (data_args.validation_file, data_args.test_file, data_args.calibration_file)
    ):
        raise ValueError("validation_file/test_file/calibration_file given without train_file")
    embedded_kwargs = None
    if data_args.embedded:
        embedded_kwargs = dict(
            train_size=data_args.embedded_train_size,
            validation_size=data_args.embedded_validation_size,
            calibration_size=data_args.embedded_calibration_size,
            test_size=data_args.embedded_test_size,
            ood_size=data_args.embedded_ood_size,
            seed=data_args.embedded_seed,
        )
    dsd, label2id = load_text_classification_data(
        dataset=dataset,
        dataset_name=data_args.dataset_name,
        dataset_config_name=data_args.dataset_config_name,
        train_file=data_args.train_file,
        validation_file=data_args.validation_file,
        test_file=data_args.test_file,
        calibration_file=data_args.calibration_file,
        text_column=data_args.text_column,
        label_column=data_args.label_column,
        validation_split=data_args.validation_split,
        calibration_split=data_args.calibration_split,
        seed=data_args.split_seed,
        embedded=data_args.embedded,
        embedded_kwargs=embedded_kwargs,
        drop_empty=data_args.drop_empty,
    )
    if data_args.max_train_samples is not None or data_args.max_eval_samples is not None:
        for split in list(dsd):
            limit = data_args.max_train_samples if split == "train" else data_args.max_eval_samples
            dsd[split] = _subsample(dsd[split], limit, data_args.split_seed)
            present = len(set(dsd[split]["label"][:]))
            if present < 2:
                raise ValueError(
                    f"split {split!r} has a single class after subsampling to {len(dsd[split])} examples; "
                    "raise max_train_samples/max_eval_samples"
                )
    if verbose:
        names = [name for name, _ in sorted(label2id.items(), key=lambda kv: kv[1])]
        print("Class balance per split:")
        print(describe_class_balance(dsd, names), flush=True)
    return dsd, label2id


def truncation_report(tokenizer: Any, dsd: Any, max_length: int, limit: int = 2000) -> dict[str, float]:
    """Fraction of the examples of each split (the first ``limit``) longer than ``max_length`` tokens."""
    report = {}
    for split, ds in dsd.items():
        texts = list(ds["text"][: min(limit, len(ds))])
        if not texts:
            continue
        lengths = [len(ids) for ids in tokenizer(texts, truncation=False, add_special_tokens=True,
                                                     verbose=False)["input_ids"]]
        report[split] = float(np.mean([n > max_length for n in lengths]))
    return report
