"""The whole run: :func:`run_training` (load data and model, train, fit the posterior, save, evaluate every
held-out split, write ``summary.json``), its :class:`TrainingRun`, the summary table, and the entry points
:func:`main` (``bayesian-hf train``) and :func:`quickstart`."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
import transformers
from transformers import PreTrainedModel, Trainer, TrainerCallback, TrainingArguments, set_seed

from ..folder_integrity import portable_mapping, portable_name, recover_interrupted_save
from ..json_safe import json_safe
from ..metrics import ood_auroc
from ..model_files import SUMMARY_FILE
from ..posterior_fitting import fit_posterior
from ..resources import embedded_model_path, packaged_file
from .compute_metrics import SUMMARY_COLUMNS, make_bayesian_compute_metrics, split_predictions
from .data import load_data, truncation_report
from .data_collator import UnitDataCollator
from .model_loading import load_model_and_tokenizer
from .trainer import BayesianTrainer
from .training_args import DataArguments, ModelArguments, check_training_args, parse_args

logger = logging.getLogger(__name__)


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
    summary = json_safe(summary)
    summary_path = output_dir / SUMMARY_FILE
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


def _setup_logging(training_args: TrainingArguments) -> None:
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
    return packaged_file("configs", "quickstart.yaml")


def quickstart(argv: Sequence[str] = (), output_dir: str | None = None) -> TrainingRun:
    """Train the embedded MiniLM on the embedded dataset with ``configs/quickstart.yaml`` (output
    ``outputs/quickstart`` unless ``output_dir`` or ``--output_dir`` is given), evaluate on validation, test and
    ood, print the summary and return the :class:`TrainingRun`. Extra ``argv`` flags override the recipe."""
    args = ["--config", str(quickstart_config_path())]
    if output_dir is not None:
        args += ["--output_dir", str(output_dir)]
    return main(args + list(argv))
