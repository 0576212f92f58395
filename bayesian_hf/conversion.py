"""Convert a pretrained BERT checkpoint into a Bayesian-expectation model, keeping every pretrained weight.

Only transformers and the configuration: this file travels with the weights for ``trust_remote_code``. It does not
import the modeling file (which imports it for ``from_bert``): the model class to build is passed in, by
``BayesianExpectationForSequenceClassification.from_bert`` (what ``bayesian_hf.from_bert`` is).
"""

from __future__ import annotations

import logging
from typing import Any

from transformers import AutoConfig, AutoTokenizer, BertForSequenceClassification

from .configuration_bayesian_expectation import BayesianExpectationConfig

logger = logging.getLogger(__name__)

BERT_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "type_vocab_size",
    "initializer_range",
    "layer_norm_eps",
    "pad_token_id",
    "classifier_dropout",
)
SENTENCE_END_TOKENS = (".", "!", "?", "\u2026")
BAYESIAN_ONLY_PARAMETERS = ("mixing_logit", "evidence_strength", "posterior.")  # not in a BERT checkpoint: initialised fresh


def from_bert(
    name_or_path: str,
    bayesian_layers: list[int] | None = None,
    num_labels: int = 2,
    *,
    model_class: type,
    tokenizer: Any | None = None,
    **config_overrides: Any,
):
    """Load a BERT checkpoint (``BertModel`` or ``BertForSequenceClassification``; local path or Hub id) as a
    Bayesian-expectation sequence classifier.

    Every tensor of the checkpoint is copied: embeddings, all encoder blocks (the Bayesian layers start from the
    blocks they replace), the pooler and, when the checkpoint is a classifier with ``num_labels`` classes, its
    classifier. The tokenizer (loaded from the same place unless given) supplies the [CLS]/[SEP] ids and the
    sentence-final punctuation ids used to find units. ``model_class`` is the Bayesian sequence classifier to build
    (``BayesianExpectationForSequenceClassification``, or its ``trust_remote_code`` copy). Returns the model in
    eval mode.
    """
    source_config = AutoConfig.from_pretrained(name_or_path)
    if source_config.model_type != "bert":
        raise ValueError(
            f"from_bert needs a BERT checkpoint (model_type 'bert'), but {name_or_path!r} has model_type "
            f"{source_config.model_type!r}"
        )
    position_type = getattr(source_config, "position_embedding_type", "absolute")
    if position_type != "absolute":
        raise ValueError(f"only absolute position embeddings can be reordered, got {position_type!r}")
    fields = {name: getattr(source_config, name) for name in BERT_FIELDS if hasattr(source_config, name)}
    fields["bayesian_layers"] = [0] if bayesian_layers is None else list(bayesian_layers)
    fields["num_labels"] = num_labels
    if getattr(source_config, "num_labels", None) == num_labels and "id2label" not in config_overrides:
        fields["id2label"] = dict(source_config.id2label)
        fields["label2id"] = dict(source_config.label2id)

    if tokenizer is None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        except (OSError, ValueError) as err:  # a weights-only folder
            logger.warning("no tokenizer found at %s (%s); using BERT's default special token ids", name_or_path, err)
    if tokenizer is not None:
        fields["cls_token_id"] = tokenizer.cls_token_id
        fields["sep_token_id"] = tokenizer.sep_token_id
        vocab = tokenizer.get_vocab()
        fields["sentence_end_token_ids"] = [vocab[t] for t in SENTENCE_END_TOKENS if t in vocab]
    fields.update(config_overrides)
    config = BayesianExpectationConfig(**fields)

    source = BertForSequenceClassification.from_pretrained(
        name_or_path, num_labels=num_labels, ignore_mismatched_sizes=True
    )
    model = model_class(config)
    target = model.state_dict()
    state = {name: tensor for name, tensor in source.state_dict().items() if name in target}
    skipped = sorted(set(source.state_dict()) - set(state))
    skipped = [name for name in skipped if not name.endswith(("position_ids", "token_type_ids"))]
    if skipped:
        raise ValueError(f"checkpoint tensors with no place in the Bayesian model: {skipped[:5]}")
    result = model.load_state_dict(state, strict=False)
    missing = [n for n in result.missing_keys if not any(part in n for part in BAYESIAN_ONLY_PARAMETERS)]
    if missing:
        raise ValueError(f"Bayesian model parameters not found in the checkpoint: {missing[:5]}")
    model.config.name_or_path = str(name_or_path)
    model.config.base_model_name_or_path = str(name_or_path)
    return model.eval()
