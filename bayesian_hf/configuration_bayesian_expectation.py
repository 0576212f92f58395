"""Configuration of Bayesian-expectation BERT models.

Self-contained on purpose: this file (and ``folder_integrity.py``, its one relative import) is copied next to
the weights by ``save_pretrained`` so a model loads with ``trust_remote_code=True`` in a process that never
imported ``bayesian_hf``.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from transformers import PreTrainedConfig

from .folder_integrity import portable_name

# the choices of the config's string fields, defined once: the config checks them, the training arguments type them
UnitSegmentation = Literal["sentence", "sep", "none"]
CollapsePoint = Literal["context", "attention", "output"]
EvidenceWeighting = Literal["count", "learned"]
HeadType = Literal["laplace", "evidential", "counting"]
UNIT_SEGMENTATIONS: tuple[str, ...] = get_args(UnitSegmentation)
COLLAPSE_POINTS: tuple[str, ...] = get_args(CollapsePoint)
EVIDENCE_WEIGHTINGS: tuple[str, ...] = get_args(EvidenceWeighting)
HEAD_TYPES: tuple[str, ...] = get_args(HeadType)


class BayesianExpectationConfig(PreTrainedConfig):
    r"""Configuration for [`BayesianExpectationModel`] and [`BayesianExpectationForSequenceClassification`].

    It carries every field of a BERT configuration (so a BERT checkpoint maps onto it one to one) plus the
    fields that make the encoder Bayesian in expectation.

    Args:
        vocab_size (`int`, defaults to 30522):
            Size of the token vocabulary (the word-embedding table); BERT-base uncased has 30522.
        hidden_size (`int`, defaults to 768):
            Width of the hidden states and of the pooled feature the classifier reads (384 for MiniLM-L6).
        num_hidden_layers (`int`, defaults to 12):
            Number of encoder blocks (6 for MiniLM-L6).
        num_attention_heads (`int`, defaults to 12):
            Attention heads per block; must divide `hidden_size`.
        intermediate_size (`int`, defaults to 3072):
            Width of the feed-forward sub-block (usually 4 * `hidden_size`).
        hidden_act (`str`, defaults to `"gelu"`):
            Activation of the feed-forward sub-block, any name of `transformers.activations.ACT2FN`.
        hidden_dropout_prob (`float`, defaults to 0.1):
            Dropout after the embeddings and each sub-block (training only), e.g. 0.0 for deterministic training.
        attention_probs_dropout_prob (`float`, defaults to 0.1):
            Dropout on the attention probabilities (training only).
        max_position_embeddings (`int`, defaults to 512):
            Longest input in tokens (the position-embedding table the orderings permute).
        type_vocab_size (`int`, defaults to 2):
            Number of token types (segment A/B).
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the normal initialisation of fresh weights.
        layer_norm_eps (`float`, defaults to 1e-12):
            Epsilon of the LayerNorms.
        pad_token_id (`int`, defaults to 0):
            Id of `[PAD]` (BERT's vocabulary: 0).
        cls_token_id (`int`, defaults to 101):
            Id of `[CLS]`, which never moves (unit 0); `from_bert` fills it from the tokenizer.
        sep_token_id (`int`, defaults to 102):
            Id of `[SEP]`, which never moves and ends a unit for `unit_segmentation="sep"`.
        classifier_dropout (`float`, *optional*):
            Dropout before the classifier; `None` uses `hidden_dropout_prob`, e.g. 0.2.
        bayesian_layers (`list[int]`, defaults to `[0]`):
            Indices of the encoder blocks replaced by a `BayesianExpectationLayer`. The orderings travel as a
            batch of `B*k` up to the last of them, where they collapse to their expectation; blocks above run once.
        num_orderings (`int`, defaults to 8):
            Orderings of the exchangeable units averaged at evaluation time (k).
        num_train_orderings (`int`, defaults to 4):
            Orderings averaged in training mode.
        unit_segmentation (`str`, defaults to `"sentence"`):
            How exchangeable units are found when `unit_ids` are not passed: `"sentence"` (split after
            sentence-final punctuation tokens), `"sep"` (segments ended by `[SEP]`) or `"none"` (the whole text
            is one unit, so nothing is reordered).
        collapse_point (`str`, defaults to `"context"`):
            Where inside the last Bayesian layer the orderings are averaged: `"context"` (the attention context,
            before the output projection), `"attention"` (after the attention sub-block) or `"output"` (after the
            whole block). Earlier is cheaper; later keeps more of the per-ordering non-linearity.
        head_type (`str`, defaults to `"laplace"`):
            The posterior head. `"laplace"`: BERT's classifier on the pooled expectation state with a last-layer
            Laplace posterior over its weights (fitted after training by `bayesian_hf.fit_posterior`); unfitted, the
            probabilities are exactly the classifier's softmax. `"evidential"`: learned Dirichlet evidence
            `alpha = prior_concentration + exp(logits)` trained with the MDL loss. `"counting"`: the first head,
            one Dirichlet pseudo-count per unit (kept as a measured ablation: it caps a one-unit text at confidence
            (alpha0 + 1) / (C alpha0 + 1)). A config saved before this field existed loads as `"counting"`.
        posterior_samples (`int`, defaults to 64):
            Fixed antithetic Gaussian draws of the logits used for the Laplace predictive and its entropy
            decomposition.
        prior_concentration (`float`, defaults to 0.5):
            Symmetric Dirichlet prior alpha0 per class of the `"evidential"` and `"counting"` heads.
        evidence_weighting (`str`, defaults to `"count"`):
            `"counting"` head only. `"count"`: every unit's vote weighs one pseudo-count (the posterior's total
            evidence is the number of units). `"learned"`: each unit also asserts how much evidence it carries, a
            weight in (0, 1) from a small head.
        mdl_beta (`float`, defaults to 0.0):
            Weight of the model part of the two-part code (KL of the asserted evidence from the prior).
        mdl_anneal_steps (`int`, defaults to 0):
            Linear warm-up of `mdl_beta` from 0 over this many training steps (0 = constant).
        length_adaptive_mixing (`bool`, defaults to `False`):
            Mix the observed realization into the expectation with a learnable weight scaled by `e*log(n)/n`
            (n = number of units), so short inputs keep more of their observed order.
        identity_first (`bool`, defaults to `False`):
            Make ordering 0 the identity (the realization actually observed). Off by default because it biases a
            k-sample average towards the observed order by 1/k.
        ordering_seed (`int`, defaults to 0):
            Seed of the deterministic orderings used in eval mode (they depend only on the seed, the example's
            tokens and k, never on the rest of the batch).
        sentence_end_token_ids (`list[int]`, *optional*):
            Token ids that end a sentence for `unit_segmentation="sentence"`; filled by `from_bert` from the
            tokenizer, e.g. `[1012, 999, 1029]` (".", "!", "?" in BERT's vocabulary).
        kwargs:
            The fields of `transformers.PreTrainedConfig`, among them `num_labels` (e.g. 2) or `id2label` /
            `label2id` (e.g. `{0: "negative", 1: "positive"}`), which must agree with each other.

    Example:

    ```python
    >>> from bayesian_hf import BayesianExpectationConfig, BayesianExpectationForSequenceClassification

    >>> # a tiny random model: 2 blocks of width 32, the first one Bayesian, 4 orderings averaged at evaluation
    >>> config = BayesianExpectationConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    ...                                    intermediate_size=37, bayesian_layers=[0], num_orderings=4, num_labels=3)
    >>> model = BayesianExpectationForSequenceClassification(config)
    >>> config.head_type, config.collapse_point
    ('laplace', 'context')
    ```
    """

    model_type = "bayesian-expectation"

    def __init__(
        self,
        vocab_size: int = 30522,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        max_position_embeddings: int = 512,
        type_vocab_size: int = 2,
        initializer_range: float = 0.02,
        layer_norm_eps: float = 1e-12,
        pad_token_id: int = 0,
        cls_token_id: int = 101,
        sep_token_id: int = 102,
        classifier_dropout: float | None = None,
        bayesian_layers: list[int] | None = None,
        num_orderings: int = 8,
        num_train_orderings: int = 4,
        unit_segmentation: UnitSegmentation = "sentence",
        collapse_point: CollapsePoint = "context",
        head_type: HeadType | None = None,
        posterior_samples: int = 64,
        prior_concentration: float = 0.5,
        evidence_weighting: EvidenceWeighting | None = None,
        mdl_beta: float = 0.0,
        mdl_anneal_steps: int = 0,
        length_adaptive_mixing: bool = False,
        identity_first: bool = False,
        ordering_seed: int = 0,
        sentence_end_token_ids: list[int] | None = None,
        **kwargs: Any,
    ) -> None:
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.pad_token_id = pad_token_id
        self.cls_token_id = cls_token_id
        self.sep_token_id = sep_token_id
        self.classifier_dropout = classifier_dropout
        self.bayesian_layers = [0] if bayesian_layers is None else [int(i) for i in bayesian_layers]
        self.num_orderings = num_orderings
        self.num_train_orderings = num_train_orderings
        self.unit_segmentation = unit_segmentation
        self.collapse_point = collapse_point
        if head_type is None:
            # configs written before `head_type` existed always carry `evidence_weighting`: they used the counting
            # head, and loading them with another head would silently change their predictions
            head_type = "counting" if evidence_weighting is not None else "laplace"
        self.head_type = head_type
        self.posterior_samples = posterior_samples
        self.prior_concentration = prior_concentration
        self.evidence_weighting = "count" if evidence_weighting is None else evidence_weighting
        self.mdl_beta = mdl_beta
        self.mdl_anneal_steps = mdl_anneal_steps
        self.length_adaptive_mixing = length_adaptive_mixing
        self.identity_first = identity_first
        self.ordering_seed = ordering_seed
        self.sentence_end_token_ids = list(sentence_end_token_ids) if sentence_end_token_ids is not None else []
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        self.validate_bayesian_fields()

    def validate_bayesian_fields(self) -> None:
        """Raise `ValueError` naming the first invalid field."""
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of num_attention_heads ({self.num_attention_heads})"
            )
        layers = self.bayesian_layers
        if not layers:
            raise ValueError("bayesian_layers must name at least one encoder block")
        if len(set(layers)) != len(layers) or sorted(layers) != layers:
            raise ValueError(f"bayesian_layers must be sorted and unique, got {layers}")
        bad = [i for i in layers if not 0 <= i < self.num_hidden_layers]
        if bad:
            raise ValueError(
                f"bayesian_layers {bad} are outside the encoder (num_hidden_layers={self.num_hidden_layers})"
            )
        for name in ("num_orderings", "num_train_orderings"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.unit_segmentation not in UNIT_SEGMENTATIONS:
            raise ValueError(f"unit_segmentation must be one of {UNIT_SEGMENTATIONS}, got {self.unit_segmentation!r}")
        if self.collapse_point not in COLLAPSE_POINTS:
            raise ValueError(f"collapse_point must be one of {COLLAPSE_POINTS}, got {self.collapse_point!r}")
        if self.evidence_weighting not in EVIDENCE_WEIGHTINGS:
            raise ValueError(
                f"evidence_weighting must be one of {EVIDENCE_WEIGHTINGS}, got {self.evidence_weighting!r}"
            )
        if self.head_type not in HEAD_TYPES:
            raise ValueError(f"head_type must be one of {HEAD_TYPES}, got {self.head_type!r}")
        if self.evidence_weighting == "learned" and self.head_type != "counting":
            raise ValueError("evidence_weighting='learned' belongs to head_type='counting'")
        value = self.posterior_samples
        if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= 4096 or value % 2:
            raise ValueError(f"posterior_samples must be an even integer in [2, 4096], got {value!r}")
        if not self.prior_concentration > 0:
            raise ValueError(f"prior_concentration must be > 0, got {self.prior_concentration!r}")
        if not self.mdl_beta >= 0:
            raise ValueError(f"mdl_beta must be >= 0, got {self.mdl_beta!r}")
        if self.mdl_anneal_steps < 0:
            raise ValueError(f"mdl_anneal_steps must be >= 0, got {self.mdl_anneal_steps!r}")
        self.validate_labels()

    def to_dict(self) -> dict[str, Any]:
        """`PreTrainedConfig.to_dict` with local paths in ``base_model_name_or_path`` / ``_name_or_path`` reduced to
        a publishable name (`folder_integrity.portable_name`): config.json never carries absolute local paths."""
        output = super().to_dict()
        for key in ("base_model_name_or_path", "_name_or_path"):
            if isinstance(output.get(key), str):
                output[key] = portable_name(output[key])
        return output

    def validate_labels(self) -> None:
        """Raise `ValueError` unless `id2label` and `label2id` are inverse maps over the class ids 0..C-1 (two
        maps that disagree silently swap the labels every prediction is reported under)."""
        id2label, label2id = getattr(self, "id2label", None), getattr(self, "label2id", None)
        if not id2label or not label2id:
            return
        try:
            ids = {int(k): v for k, v in id2label.items()}
            names = {str(k): v for k, v in label2id.items()}
        except (AttributeError, TypeError, ValueError):
            raise ValueError("id2label must map class ids to names and label2id names to class ids") from None
        if any(isinstance(v, bool) or not isinstance(v, int) for v in names.values()):
            raise ValueError(f"label2id must map label names to integer class ids, got {label2id}")
        if any(not isinstance(v, str) for v in ids.values()):
            raise ValueError(f"id2label must map class ids to label names (strings), got {id2label}")
        if sorted(ids) != list(range(len(ids))):
            raise ValueError(f"id2label must cover the class ids 0..{len(ids) - 1} exactly, got {sorted(ids)}")
        if {name: i for i, name in ids.items()} != names or len(set(ids.values())) != len(ids):
            raise ValueError(
                f"id2label {ids} and label2id {names} disagree (each must be the inverse of the other): the labels "
                "would be silently swapped; fix config.json so both maps name the same class ids")


__all__ = ["BayesianExpectationConfig"]
