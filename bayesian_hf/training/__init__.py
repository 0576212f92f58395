"""Fine-tuning through ``transformers.Trainer`` / Accelerate, one file per piece (as ``sentence-transformers``
splits its trainer): usable separately or through :func:`main` (``bayesian-hf train`` / ``scripts/train.py``).

* ``training_args.py``: :class:`ModelArguments`, :class:`DataArguments` (+ ``transformers.TrainingArguments``),
  parsed by :func:`parse_args` from a YAML recipe (``--config configs/NAME.yaml``) with command-line overrides,
  and :func:`check_training_args`;
* ``data.py``: :func:`load_data` (one source, held-out splits, seeded subsampling) and :func:`truncation_report`;
* ``data_collator.py``: :class:`UnitDataCollator`: tokenizes the raw ``text`` of each batch with
  :func:`bayesian_hf.tokenization.tokenize_with_units` (so the exchangeable units come from the text, not from
  token heuristics) and ignores every other column;
* ``model_loading.py``: :func:`load_model_and_tokenizer` (convert a BERT checkpoint or load a Bayesian one);
* ``trainer.py``: :class:`BayesianTrainer`: a ``Trainer`` whose loss is the model's MDL loss, with the beta
  schedule driven by the global step, seeded training orderings (a function of seed, step, rank and
  micro-batch, so a resumed run sees the same orderings as an uninterrupted one), uncertainty statistics logged
  next to the loss, and the distributed / mixed-precision checks (no world-size loss scaling, no
  ``find_unused_parameters``, fp16 refused on CPU);
* ``compute_metrics.py``: :func:`make_bayesian_compute_metrics`: accuracy, F1, NLL, Brier, ECE (15 bins),
  adaptive ECE, MCE, AUROC/AUPRC of error detection, AURC and the mean uncertainties, from the tuple of arrays
  ``Trainer`` gathers;
* ``run.py``: :func:`run_training`: load data and model, train, evaluate every held-out split, print and write
  the summary (``summary.json``) and return a :class:`TrainingRun` (trainer, model, tokenizer, data, paths) so
  later steps (calibration, saving, pipelines) can be chained on; :func:`quickstart`: :func:`run_training` with
  ``configs/quickstart.yaml``.

Every name is re-exported here, so ``from bayesian_hf.training import X`` works for all of them. See
``docs/training.md``.
"""

from ..metrics import LOWER_IS_BETTER
from ..resources import embedded_model_path
from .compute_metrics import (
    OPTIONAL_PREDICTION_KEYS,
    PREDICTION_KEYS,
    SUMMARY_COLUMNS,
    UNCERTAINTY_KEYS,
    make_bayesian_compute_metrics,
    select_prediction_outputs,
    split_predictions,
)
from .data import load_data, truncation_report
from .data_collator import UnitDataCollator
from .model_loading import load_model_and_tokenizer
from .run import (
    TrainingRun,
    _setup_logging,
    evaluate_splits,
    finish_distributed,
    format_table,
    last_complete_checkpoint,
    main,
    quickstart,
    quickstart_config_path,
    render_summary,
    run_training,
)
from .trainer import BayesianTrainer, MDLStepCallback
from .training_args import (
    BAYESIAN_MODEL_TYPE,
    DataArguments,
    ModelArguments,
    build_parser,
    check_training_args,
    load_yaml_config,
    parse_args,
)

__all__ = [
    "BAYESIAN_MODEL_TYPE",
    "BayesianTrainer",
    "DataArguments",
    "LOWER_IS_BETTER",
    "MDLStepCallback",
    "ModelArguments",
    "OPTIONAL_PREDICTION_KEYS",
    "PREDICTION_KEYS",
    "SUMMARY_COLUMNS",
    "TrainingRun",
    "UNCERTAINTY_KEYS",
    "UnitDataCollator",
    "build_parser",
    "check_training_args",
    "embedded_model_path",
    "evaluate_splits",
    "finish_distributed",
    "format_table",
    "last_complete_checkpoint",
    "load_data",
    "load_model_and_tokenizer",
    "load_yaml_config",
    "main",
    "make_bayesian_compute_metrics",
    "parse_args",
    "quickstart",
    "quickstart_config_path",
    "render_summary",
    "run_training",
    "select_prediction_outputs",
    "split_predictions",
    "truncation_report",
]
