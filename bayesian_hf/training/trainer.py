"""The Trainer: :class:`BayesianTrainer` (MDL loss, seeded training orderings, uncertainty logging) and
:class:`MDLStepCallback` for a plain ``Trainer``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from ..inference import UNCERTAINTY_KEYS
from ..losses import annealed_beta
from .compute_metrics import select_prediction_outputs
from .training_args import check_training_args


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
_TRAIN_STATS = (*UNCERTAINTY_KEYS, "mdl_beta")


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
