"""The model of a training run: a BERT checkpoint converted with ``from_bert`` or a Bayesian checkpoint loaded
with ``from_pretrained``, with the data's labels and the overrides of :class:`ModelArguments`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transformers import AutoConfig, AutoTokenizer, PreTrainedModel

from ..modeling_bayesian_expectation import BayesianExpectationForSequenceClassification
from ..resources import embedded_model_path
from .training_args import BAYESIAN_MODEL_TYPE, ModelArguments

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
