"""Bayesian-expectation BERT: predictions averaged over orderings of the exchangeable units of the input.

The k orderings enter at the embeddings as position ids (``orderings.py``) and travel as a batch of ``B*k``
through the encoder blocks up to the last ``BayesianExpectationLayer``; there the per-token statistics across
orderings are taken (mean = the expectation, variance = order dispersion) and the batch collapses to the
expectation, so the blocks above run once. With ``bayesian_layers=[0]`` the overhead over plain BERT is the
embeddings and (part of) one block run k times.

Parameter names match ``BertForSequenceClassification`` (``bert.embeddings.*``, ``bert.encoder.layer.{i}.*``,
``bert.pooler.*``, ``classifier.*``) so a BERT checkpoint maps onto the model one to one.

This file only uses relative imports of files saved with it (the list is ``model_files.REMOTE_CODE_FILES``), so a
saved model loads with ``trust_remote_code=True`` without ``bayesian_hf`` installed.

It is over ~400 lines because it is one cohesive thing, a ``transformers`` model file (outputs, embeddings,
layers, base model, classification head), like ``modeling_bert.py``. It does no file or Hub work of its own:
``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` delegate the artifacts (``calibration.json``, card,
carried files, the push) to ``model_artifacts.py``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.models.bert.modeling_bert import BertIntermediate, BertOutput, BertPooler, BertSelfOutput
from transformers.utils import ModelOutput, can_return_tuple, logging

from .calibration_artifact import LoadedCalibration
from .configuration_bayesian_expectation import BayesianExpectationConfig
from .conversion import BAYESIAN_ONLY_PARAMETERS, from_bert  # noqa: F401  (BAYESIAN_ONLY_PARAMETERS: re-export)
from .folder_integrity import atomic_model_folder, check_weights_finite, recover_interrupted_save, short_message
from .losses import annealed_beta, gaussian_mdl_loss, mdl_loss
from .model_artifacts import (  # noqa: F401  (CALIBRATION_METADATA_KEYS: re-export)
    CALIBRATION_METADATA_KEYS,
    load_calibration_artifact,
    push_model,
    save_calibration_artifact,
)
from .model_files import CARRIED_FILES, RELIABILITY_PNG, RISK_COVERAGE_PNG  # noqa: F401  (re-exports)
from .orderings import (
    effective_num_orderings,
    example_seeds,
    permuted_position_ids,
    sample_unit_permutations,
)
from .posterior import LaplacePosterior, point_predictive
from .tokenization import num_units, unit_ids_from_input_ids, validate_unit_ids
from .uncertainty import (
    dirichlet_posterior,
    dirichlet_uncertainty,
    unit_pooling,
    weighted_mean,
    weighted_mean_and_dispersion,
)

logger = logging.get_logger(__name__)


@dataclass
class BayesianExpectationModelOutput(ModelOutput):
    """Output of [`BayesianExpectationModel`].

    Args:
        last_hidden_state: ``(B, S, D)`` expectation over orderings of the last hidden states.
        pooler_output: ``(B, D)`` BERT pooler applied to the [CLS] expectation.
        order_dispersion: ``(B,)`` variance across orderings at the collapse point, averaged over tokens and
            hidden dimensions (0 when there is a single ordering).
        token_dispersion: ``(B, S)`` the same per token.
        unit_ids: ``(B, S)`` the units that were reordered.
        ordering_weights: ``(B, k)`` weight of each ordering in the expectation.
        hidden_states: per-layer expectations (embeddings first) when ``output_hidden_states=True``.
        attentions: per-layer attention maps (averaged over orderings) when ``output_attentions=True``.
    """

    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    order_dispersion: torch.Tensor | None = None
    token_dispersion: torch.Tensor | None = None
    unit_ids: torch.Tensor | None = None
    ordering_weights: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class BayesianSequenceClassifierOutput(ModelOutput):
    """Output of [`BayesianExpectationForSequenceClassification`].

    Args:
        loss: MDL-regularised loss (nats/example) when ``labels`` are given.
        logits: ``(B, C)`` log of the posterior predictive probabilities (``softmax(logits) == probs``).
        probs: ``(B, C)`` posterior predictive (Laplace head: the mean softmax over Gaussian logit draws; exactly
            the classifier's softmax while no posterior is fitted).
        calibrated_probs: ``(B, C)`` ``probs`` after the attached calibrator (eval mode; None without one).
        epistemic: ``(B,)`` mutual information between label and classifier weights (nats): uncertainty that
            more training data like this input would remove; grows away from the training data.
        aleatoric: ``(B,)`` expected entropy under the posterior (nats): ambiguity the input itself carries.
        total: ``(B,)`` entropy of the predictive (nats) = epistemic + aleatoric.
        order_dispersion: ``(B,)`` variance of the representation across orderings of the units.
        concentration: ``(B, C)`` Dirichlet parameters alpha (Laplace head: the Laplace bridge of the logit
            Gaussian, its strength is learned evidence; counting head: prior + one vote per unit).
        logit_variance: ``(B, C)`` posterior variance of the (centred) logits (Laplace head).
        features: ``(B, D)`` the pooled expectation state the classifier reads.
        num_units: ``(B,)`` number of exchangeable units in the input.
        hidden_states, attentions: as in [`BayesianExpectationModelOutput`].
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    probs: torch.Tensor | None = None
    calibrated_probs: torch.Tensor | None = None
    epistemic: torch.Tensor | None = None
    aleatoric: torch.Tensor | None = None
    total: torch.Tensor | None = None
    order_dispersion: torch.Tensor | None = None
    concentration: torch.Tensor | None = None
    num_units: torch.Tensor | None = None
    logit_variance: torch.Tensor | None = None
    features: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


class BayesianExpectationEmbeddings(nn.Module):
    """BERT embeddings that add k sets of position embeddings to one set of word/type embeddings."""

    def __init__(self, config: BayesianExpectationConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        token_type_ids: torch.Tensor,
        position_ids: torch.Tensor,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``position_ids`` is ``(B, k, S)``; returns ``(B*k, S, D)`` (example-major)."""
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        base = inputs_embeds + self.token_type_embeddings(token_type_ids)  # (B, S, D), once
        embeddings = base.unsqueeze(1) + self.position_embeddings(position_ids)  # (B, k, S, D)
        embeddings = self.dropout(self.LayerNorm(embeddings))
        return embeddings.flatten(0, 1)

    def factored(
        self,
        input_ids: torch.Tensor | None,
        token_type_ids: torch.Tensor,
        position_ids: torch.Tensor,
        attention: "BayesianSelfAttention",
        inputs_embeds: torch.Tensor | None = None,
        mean_weights: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Embeddings of the k orderings AND the first block's query/key/value, without k projections.

        ``W LN(x + p) = (W_g x + W_g p - mu * W_g 1) / sigma + W beta + b`` with ``W_g = W diag(gamma)``: the
        projection of the ordering-independent part ``x`` (word + token type) is computed once per token and the
        projection of every position embedding once per position, so the k orderings cost gathers and
        elementwise work instead of k matrix products. ``mu`` and ``sigma`` of ``x + p`` come from per-token
        moments and the dot products ``x . p``. Exact (up to rounding) when dropout is off, i.e. in eval mode.

        Returns the ``(B*k, S, D)`` embeddings (or, when ``mean_weights`` ``(B, k)`` are given, only their
        weighted mean ``(B, S, D)``, without materialising the k copies) and ``(q, k, v)``, each ``(B*k, H, S, d)``.
        """
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        x = inputs_embeds + self.token_type_embeddings(token_type_ids)  # (B, S, D)
        batch, k, seq = position_ids.shape
        dim = x.shape[-1]
        table = self.position_embeddings.weight[: int(position_ids.max()) + 1]  # (P, D)
        stat = torch.promote_types(x.dtype, torch.float32)
        xs, ts = x.to(stat), table.to(stat)
        # moments of z = x + p for every (example, ordering, token)
        x_dot_p = torch.matmul(xs, ts.t()).gather(2, position_ids.transpose(1, 2)).transpose(1, 2) / dim  # (B,k,S)
        table_moments = torch.stack([ts.mean(-1), (ts * ts).mean(-1)], dim=-1)[position_ids]  # (B, k, S, 2)
        mean = xs.mean(-1).unsqueeze(1) + table_moments[..., 0]
        second = (xs * xs).mean(-1).unsqueeze(1) + 2 * x_dot_p + table_moments[..., 1]
        rstd = torch.rsqrt((second - mean * mean).clamp_min(0) + self.LayerNorm.eps)
        scale = rstd.unsqueeze(-1).to(x.dtype)  # (B, k, S, 1)
        # centre each part by its own mean: x + p - mu = (x - mean(x)) + (p - mean(p))
        x_centred = x - xs.mean(-1, keepdim=True).to(x.dtype)  # (B, S, D)
        table_centred = table - ts.mean(-1, keepdim=True).to(x.dtype)  # (P, D)
        gamma, beta = self.LayerNorm.weight, self.LayerNorm.bias
        if mean_weights is None:
            hidden = nn.functional.embedding(position_ids, table_centred * gamma) + (x_centred * gamma).unsqueeze(1)
            hidden = torch.addcmul(beta, hidden, scale).flatten(0, 1)
        else:
            # sum_k w_k rstd_k (x + p_k - mu_k) gamma + beta; the position part as a (B, S, P) x (P, D) product
            coef = mean_weights.to(rstd.dtype).unsqueeze(-1) * rstd  # (B, k, S)
            spread = torch.zeros(batch, seq, table.shape[0], dtype=coef.dtype, device=coef.device)
            spread.scatter_add_(2, position_ids.transpose(1, 2), coef.transpose(1, 2))
            hidden = torch.addcmul(beta, x_centred * gamma, coef.sum(1).unsqueeze(-1).to(x.dtype))
            hidden = hidden + torch.matmul(spread.to(x.dtype), table_centred * gamma)

        def project(linear: nn.Linear) -> torch.Tensor:
            folded = (linear.weight * gamma).t()  # (W diag(gamma))^T
            out = nn.functional.embedding(position_ids, table_centred @ folded) + (x_centred @ folded).unsqueeze(1)
            out = torch.addcmul(linear.weight @ beta + linear.bias, out, scale)
            return attention._heads(out.flatten(0, 1))

        qkv = (project(attention.query), project(attention.key), project(attention.value))
        return hidden, qkv


class BayesianSelfAttention(nn.Module):
    """Multi-head self-attention through ``scaled_dot_product_attention`` (eager only for attention maps)."""

    def __init__(self, config: BayesianExpectationConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_prob = config.attention_probs_dropout_prob

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        hidden: torch.Tensor,
        mask: torch.Tensor,
        output_attentions: bool = False,
        qkv: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if qkv is None:
            qkv = (self._heads(self.query(hidden)), self._heads(self.key(hidden)), self._heads(self.value(hidden)))
        q, k, v = qkv
        dropout = self.dropout_prob if self.training else 0.0
        probs = None
        if output_attentions:
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim) + mask
            probs = torch.softmax(scores, dim=-1, dtype=torch.promote_types(q.dtype, torch.float32)).to(q.dtype)
            context = torch.matmul(nn.functional.dropout(probs, dropout, self.training), v)
        else:
            context = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        context = context.transpose(1, 2).flatten(2)  # (N, S, D)
        return context, probs


class BayesianAttention(nn.Module):
    """Self-attention + output projection, residual and LayerNorm (the ``BertAttention`` sub-block)."""

    def __init__(self, config: BayesianExpectationConfig) -> None:
        super().__init__()
        self.self = BayesianSelfAttention(config)
        self.output = BertSelfOutput(config)


class BertStyleLayer(GradientCheckpointingLayer):
    """A plain BERT encoder block (same parameter names as ``BertLayer``)."""

    def __init__(self, config: BayesianExpectationConfig) -> None:
        super().__init__()
        self.attention = BayesianAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def feed_forward(self, attention_output: torch.Tensor) -> torch.Tensor:
        return self.output(self.intermediate(attention_output), attention_output)

    def forward(
        self, hidden: torch.Tensor, mask: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        context, probs = self.attention.self(hidden, mask, output_attentions)
        attention_output = self.attention.output(context, hidden)
        return self.feed_forward(attention_output), probs


class BayesianExpectationLayer(BertStyleLayer):
    """Martingale-aware block: runs on the k orderings of every example, takes their statistics and, when it is
    the last Bayesian layer, collapses them to the expectation.

    Where the collapse happens is ``config.collapse_point``: ``"context"`` averages the attention context
    (before the output projection), ``"attention"`` the attention sub-block output, ``"output"`` the whole block.
    """

    def __init__(self, config: BayesianExpectationConfig, collapses: bool) -> None:
        super().__init__(config)
        self.collapses = collapses
        self.collapse_point = config.collapse_point
        if collapses and config.length_adaptive_mixing:
            # weight of the observed realization = sigmoid(mixing_logit) * e * log(n) / n
            self.mixing_logit = nn.Parameter(torch.zeros(()))

    def _mix(self, mean: torch.Tensor, stacked: torch.Tensor, weights: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
        if not hasattr(self, "mixing_logit"):
            return mean
        batch, k = weights.shape
        observed = stacked.view(batch, k, *stacked.shape[1:])[:, 0]  # ordering 0 is the identity
        n = units.to(mean.dtype).clamp(min=1)
        w = torch.sigmoid(self.mixing_logit) * math.e * torch.log(n) / n
        w = w.view(-1, *([1] * (mean.dim() - 1)))
        return (1 - w) * mean + w * observed

    def forward(
        self,
        hidden: torch.Tensor,
        mask: torch.Tensor,
        weights: torch.Tensor,
        units: torch.Tensor,
        output_attentions: bool = False,
        qkv: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
        hidden_mean: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Returns the block output (``(B, S, D)`` if this layer collapses, else ``(B*k, S, D)``), the per-token
        order dispersion ``(B, S)`` and the attention map. ``qkv`` are precomputed projections and
        ``hidden_mean`` the precomputed expectation of the input (see `BayesianExpectationEmbeddings.factored`);
        ``hidden`` may then be None for the ``"context"`` collapse."""
        context, probs = self.attention.self(hidden, mask, output_attentions, qkv=qkv)
        if not self.collapses or self.collapse_point == "output":
            out = self.feed_forward(self.attention.output(context, hidden))
            mean, dispersion = weighted_mean_and_dispersion(out, weights)
            if not self.collapses:
                return out, dispersion, probs
            return self._mix(mean, out, weights, units), dispersion, probs
        if self.collapse_point == "context":
            context_mean, dispersion = weighted_mean_and_dispersion(context, weights)
            context_mean = self._mix(context_mean, context, weights, units)
            if hidden_mean is None:
                hidden_mean = self._mix(weighted_mean(hidden, weights), hidden, weights, units)
            return self.feed_forward(self.attention.output(context_mean, hidden_mean)), dispersion, probs
        attention_output = self.attention.output(context, hidden)
        mean, dispersion = weighted_mean_and_dispersion(attention_output, weights)
        return self.feed_forward(self._mix(mean, attention_output, weights, units)), dispersion, probs


class BayesianExpectationPreTrainedModel(PreTrainedModel):
    config_class = BayesianExpectationConfig
    config: BayesianExpectationConfig
    base_model_prefix = "bert"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["BertStyleLayer", "BayesianExpectationLayer"]
    _keep_in_fp32_modules = ["posterior"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, LaplacePosterior):
            module.initialise()
        if isinstance(module, BayesianExpectationLayer) and hasattr(module, "mixing_logit"):
            module.mixing_logit.zero_()
        if getattr(module, "is_evidence_strength_head", False):
            module.bias.fill_(EVIDENCE_STRENGTH_INIT)


EVIDENCE_STRENGTH_INIT = 2.0  # sigmoid(2) = 0.88 of a pseudo-count per unit at the start of training


def _additive_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """HF-style additive key mask ``(B, 1, 1, S)``: 0 where attended, the dtype's minimum where masked (never a
    hard-coded -1e9, which overflows in half precision)."""
    mask = attention_mask[:, None, None, :].to(dtype)
    return (1.0 - mask) * torch.finfo(dtype).min


class BayesianExpectationModel(BayesianExpectationPreTrainedModel):
    """BERT encoder whose blocks listed in ``config.bayesian_layers`` are [`BayesianExpectationLayer`]s.

    It returns the expectation over orderings of the last hidden states, like ``BertModel`` returns its
    hidden states.
    """

    def __init__(self, config: BayesianExpectationConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config)
        self.embeddings = BayesianExpectationEmbeddings(config)
        last = max(config.bayesian_layers)
        layers = [
            BayesianExpectationLayer(config, collapses=(i == last)) if i in config.bayesian_layers else BertStyleLayer(config)
            for i in range(config.num_hidden_layers)
        ]
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(layers)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    def resolve_unit_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Units from token ids by ``config.unit_segmentation`` (used when the caller passes none)."""
        config = self.config
        return unit_ids_from_input_ids(
            input_ids,
            attention_mask,
            segmentation=config.unit_segmentation,
            cls_token_id=config.cls_token_id,
            sep_token_id=config.sep_token_id,
            pad_token_id=config.pad_token_id,
            sentence_end_token_ids=config.sentence_end_token_ids,
        )

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        unit_ids: torch.Tensor | None = None,
        num_orderings: int | None = None,
        orderings: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        ordering_seed: int | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        ordering_weights: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> BayesianExpectationModelOutput | tuple:
        r"""
        unit_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Exchangeable unit of each token (0 = never moves). Derived from `input_ids` by
            `config.unit_segmentation` when not given (see `bayesian_hf.tokenize_with_units` for text-level units).
        num_orderings (`int`, *optional*):
            Orderings to average (k). Defaults to `config.num_train_orderings` in training mode and
            `config.num_orderings` in eval mode.
        orderings (`torch.LongTensor` of shape `(k, M)` or `(batch_size, k, M)`, *optional*):
            Explicit unit permutations (slot -> 0-based unit), e.g. for deterministic serving or export. Each
            ordering gets weight 1/k unless `ordering_weights` is given.
        ordering_weights (`torch.FloatTensor` of shape `(batch_size, k)`, *optional*):
            Weights of the explicit `orderings` (rows summing to 1), e.g. the `1/m!` weights of enumerated
            orderings that `bayesian_hf.orderings.sample_unit_permutations` returns (the ONNX export uses them).
        generator (`torch.Generator`, *optional*):
            Random source for the orderings. In eval mode without a generator the orderings are a deterministic
            function of `config.ordering_seed` and each example's tokens, so outputs do not depend on the batch.
        ordering_seed (`int`, *optional*):
            Overrides `config.ordering_seed` for this call (a per-request seed that keeps that independence).
        return_dict (`bool`, *optional*):
            `False` returns `output.to_tuple()` (`@can_return_tuple`; default `config.return_dict`).
        """
        config = self.config
        output_hidden_states = bool(output_hidden_states)
        output_attentions = bool(output_attentions)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        shape = input_ids.shape if input_ids is not None else inputs_embeds.shape[:-1]
        if len(shape) != 2:
            raise ValueError(f"input_ids must have shape (batch_size, sequence_length), got {tuple(shape)}")
        batch, seq = shape
        device = input_ids.device if input_ids is not None else inputs_embeds.device
        if seq > config.max_position_embeddings:
            raise ValueError(
                f"sequence length {seq} exceeds max_position_embeddings={config.max_position_embeddings}"
            )
        if attention_mask is None:
            attention_mask = torch.ones(shape, dtype=torch.long, device=device)
        elif tuple(attention_mask.shape) != tuple(shape):
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, expected {tuple(shape)}")
        if token_type_ids is None:
            token_type_ids = torch.zeros(shape, dtype=torch.long, device=device)
        if unit_ids is None:
            if input_ids is None:
                raise ValueError("unit_ids are required when inputs_embeds are given instead of input_ids")
            unit_ids = self.resolve_unit_ids(input_ids, attention_mask)
        else:
            validate_unit_ids(unit_ids, shape)
            unit_ids = unit_ids.to(device).long() * (attention_mask > 0).long()
        units = num_units(unit_ids)

        k = num_orderings
        if k is None:
            k = config.num_train_orderings if self.training else config.num_orderings
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise ValueError(f"num_orderings must be an integer >= 1, got {num_orderings!r}")
        k = int(k)
        identity_first = config.identity_first or config.length_adaptive_mixing
        if orderings is not None:
            permutations, weights = self._explicit_orderings(orderings, batch, units, device)
            if ordering_weights is not None:
                if tuple(ordering_weights.shape) != tuple(weights.shape):
                    raise ValueError(f"ordering_weights must have shape {tuple(weights.shape)}, got {tuple(ordering_weights.shape)}")
                weights = ordering_weights.to(device)
        elif ordering_weights is not None:
            raise ValueError("ordering_weights needs explicit orderings")
        else:
            seeds = None
            if not self.training and generator is None and input_ids is not None:
                seed = config.ordering_seed if ordering_seed is None else int(ordering_seed)
                seeds = example_seeds(input_ids, attention_mask, seed)
            sampled = sample_unit_permutations(
                units,
                effective_num_orderings(units, k),
                generator=generator,
                seeds=seeds,
                identity_first=identity_first,
                enumerate_small=not config.length_adaptive_mixing,
            )
            permutations, weights = sampled.permutations, sampled.weights
        k = permutations.shape[1]
        base_positions = position_ids if position_ids is not None else torch.arange(seq, device=device).unsqueeze(0)
        ordered_positions = permuted_position_ids(unit_ids, permutations, base_positions.expand(batch, seq))

        weights = weights.to(device)
        first = self.encoder.layer[0]
        qkv = hidden_mean = None
        if k > 1 and not self.training and isinstance(first, BayesianExpectationLayer) and not output_attentions:
            # the k orderings of block 0 without k projections; for a "context" collapse not even k embeddings
            mean_only = (
                first.collapses and first.collapse_point == "context" and not config.length_adaptive_mixing
                and not output_hidden_states
            )
            hidden, qkv = self.embeddings.factored(
                input_ids, token_type_ids, ordered_positions, first.attention.self, inputs_embeds=inputs_embeds,
                mean_weights=weights if mean_only else None,
            )
            if mean_only:
                hidden, hidden_mean = None, hidden
        else:
            hidden = self.embeddings(input_ids, token_type_ids, ordered_positions, inputs_embeds=inputs_embeds)
        mask = _additive_mask(attention_mask, (hidden if hidden is not None else hidden_mean).dtype)
        expanded_mask = mask.repeat_interleave(k, dim=0) if k > 1 else mask

        all_hidden: list[torch.Tensor] = []
        all_attentions: list[torch.Tensor] = []
        collapsed = False
        token_dispersion = torch.zeros(batch, seq, dtype=torch.float32, device=device)

        def expectation(states: torch.Tensor) -> torch.Tensor:
            return states if collapsed else weighted_mean_and_dispersion(states, weights)[0]

        def attention_mean(probs: torch.Tensor) -> torch.Tensor:
            if probs.shape[0] == batch:
                return probs
            return (probs.view(batch, k, *probs.shape[1:]) * weights.to(probs.dtype).view(batch, k, 1, 1, 1)).sum(1)

        if output_hidden_states:
            all_hidden.append(expectation(hidden))
        for layer in self.encoder.layer:
            if isinstance(layer, BayesianExpectationLayer):
                hidden, token_dispersion, probs = layer(
                    hidden, expanded_mask, weights, units, output_attentions=output_attentions, qkv=qkv,
                    hidden_mean=hidden_mean,
                )
                qkv = hidden_mean = None
                collapsed = collapsed or layer.collapses
            else:
                hidden, probs = layer(hidden, mask if collapsed else expanded_mask, output_attentions=output_attentions)
            if output_hidden_states:
                all_hidden.append(expectation(hidden))
            if output_attentions:
                all_attentions.append(attention_mean(probs))

        valid = attention_mask.to(token_dispersion.dtype)
        order_dispersion = (token_dispersion * valid).sum(-1) / valid.sum(-1).clamp(min=1)
        pooled = self.pooler(hidden) if self.pooler is not None else None
        return BayesianExpectationModelOutput(
            last_hidden_state=hidden,
            pooler_output=pooled,
            order_dispersion=order_dispersion,
            token_dispersion=token_dispersion,
            unit_ids=unit_ids,
            ordering_weights=weights,
            hidden_states=tuple(all_hidden) if output_hidden_states else None,
            attentions=tuple(all_attentions) if output_attentions else None,
        )

    @staticmethod
    def _explicit_orderings(
        orderings: torch.Tensor, batch: int, units: torch.Tensor, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        orderings = torch.as_tensor(orderings, device=device).long()
        if orderings.dim() == 2:
            orderings = orderings.unsqueeze(0).expand(batch, -1, -1)
        if orderings.dim() != 3 or orderings.shape[0] != batch:
            raise ValueError(f"orderings must have shape (k, M) or (batch_size, k, M), got {tuple(orderings.shape)}")
        width = orderings.shape[-1]
        if units.numel() and int(units.max()) > width:
            raise ValueError(f"orderings cover {width} units but an example has {int(units.max())}")
        expected = torch.arange(width, device=device)
        if not torch.equal(orderings.sort(dim=-1).values, expected.expand_as(orderings)):
            raise ValueError(f"every ordering must be a permutation of 0..{width - 1}")
        k = orderings.shape[1]
        return orderings, torch.full((batch, k), 1.0 / k, dtype=torch.float64, device=device)


class BayesianExpectationForSequenceClassification(BayesianExpectationPreTrainedModel):
    """Sequence classifier on the expectation over orderings, with a posterior head (``config.head_type``).

    * ``"laplace"`` (default): ``logits = classifier(dropout(pooler(expectation state of [CLS])))``, exactly
      BERT's head, with a last-layer Laplace posterior over the classifier (:class:`LaplacePosterior`, fitted
      after training by ``bayesian_hf.fit_posterior`` and saved with the weights). The predictive and the
      epistemic / aleatoric / total decomposition come from the logit Gaussian; unfitted, ``probs`` is the
      classifier's softmax, so a converted BERT classifier with one ordering is reproduced exactly.
    * ``"evidential"``: Dirichlet ``alpha = prior_concentration + exp(logits)`` from the same head, trained
      with the MDL loss.
    * ``"counting"``: every unit votes with ``softmax(classifier(tanh(pooler.dense(mean of its token
      states))))`` and the votes update a Dirichlet prior (one pseudo-count per unit).
    """

    # the loss is a per-example mean, never rescaled by Trainer's num_items_in_batch (which would multiply it by
    # the world size under DDP with average_tokens_across_devices)
    accepts_loss_kwargs = False

    def __init__(self, config: BayesianExpectationConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = BayesianExpectationModel(config, add_pooling_layer=True)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        if config.head_type == "counting" and config.evidence_weighting == "learned":
            # how much evidence each unit asserts, sigmoid(.) in (0, 1); starts near one count per unit
            self.evidence_strength = nn.Linear(config.hidden_size, 1)
            self.evidence_strength.is_evidence_strength_head = True
        if config.head_type == "laplace":
            self.posterior = LaplacePosterior(config.hidden_size, config.num_labels)
        self.mdl_step = 0  # optimizer steps so far, for the beta annealing; BayesianTrainer / MDLStepCallback set it
        self.calibration: LoadedCalibration | None = None  # saved as calibration.json next to the weights
        self.post_init()

    # ------------------------------------------------------------------------------------------ posterior

    @property
    def has_posterior(self) -> bool:
        """Whether a Laplace posterior is fitted (``False`` for the Dirichlet heads)."""
        return hasattr(self, "posterior") and self.posterior.is_fitted

    def reset_posterior(self) -> None:
        """Forget a fitted Laplace posterior (the predictive becomes the classifier's softmax). Training changes
        the classifier the posterior was fitted around, so `BayesianTrainer` calls this before training."""
        if hasattr(self, "posterior"):
            self.posterior.reset()

    # ------------------------------------------------------------------------------------------ calibration

    def set_calibration(self, calibration: LoadedCalibration | None) -> None:
        """Attach a fitted calibrator (and optional conformal predictor); it travels with `save_pretrained`."""
        if calibration is not None and calibration.calibrator.num_classes not in (None, self.num_labels):
            raise ValueError(
                f"calibrator was fit for {calibration.calibrator.num_classes} classes, the model has {self.num_labels}"
            )
        self.calibration = calibration

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        """`PreTrainedModel.save_pretrained` plus `calibration.json` when a calibrator is attached (JSON, never
        pickle; `model_artifacts.save_calibration_artifact`). `push_to_hub` saves through this method, so the
        calibrator is pushed in the same commit.

        The whole folder is written atomically (`folder_integrity.atomic_model_folder`): into a sibling staging
        folder first, then swapped in, so a process killed at any moment leaves the old folder or the new one.
        Files of the old folder that describe other weights (`calibration.json`, card, diagrams) are dropped;
        the rest (tokenizer, checkpoints, ...) is kept. `calibration.json` is bound to the sha256 of the weights."""
        if not kwargs.get("is_main_process", True) or kwargs.get("push_to_hub", False):
            super().save_pretrained(save_directory, *args, **kwargs)
            return
        with atomic_model_folder(save_directory) as staging:
            super().save_pretrained(staging, *args, **kwargs)
            if self.calibration is not None:
                save_calibration_artifact(self, staging)

    def save_calibration_file(self, save_directory: str | os.PathLike) -> str:
        """Write the attached calibrator as `calibration.json` (atomically) in `save_directory`, bound to the sha256
        of the weights saved there (which must be this model's: `save_pretrained` first)."""
        return save_calibration_artifact(self, save_directory)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        tokenizer: Any | None = None,
        card_dir: str | os.PathLike | None = None,
        commit_message: str | None = None,
        commit_description: str | None = None,
        private: bool | None = None,
        token: bool | str | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        max_shard_size: int | str | None = "50GB",
        tags: list[str] | None = None,
    ) -> str:
        """`PreTrainedModel.push_to_hub` that sends the whole model in ONE commit: weights, config, modeling code and
        `calibration.json` (via `save_pretrained`), plus the tokenizer (``tokenizer``, or the tokenizer files of
        ``card_dir``) and the model card with its reliability diagram from ``card_dir`` (default: the local folder the
        model was loaded from, when it has them). Refuses pickle-based files like `bayesian-hf push`: both go through
        `model_artifacts.upload_model_folder`. Returns the commit URL."""
        url = push_model(
            self, repo_id, tokenizer=tokenizer, card_dir=card_dir, commit_message=commit_message,
            commit_description=commit_description, private=private, token=token, revision=revision,
            create_pr=create_pr, max_shard_size=max_shard_size,
        )
        if tags:
            logger.info("tags are set in the model card (README.md) metadata, not by push_to_hub: %s", tags)
        return url

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *model_args: Any,
        ignore_calibration_mismatch: bool = False,
        load_calibration_file: bool = True,
        **kwargs: Any,
    ):
        """`PreTrainedModel.from_pretrained` that also loads `calibration.json` (local folder or Hub;
        `model_artifacts.load_calibration_artifact`).

        A missing calibrator gives uncalibrated outputs with a warning; a corrupt one, one fit for other labels or
        one bound to other weights (``weights_sha256``) raises `ValueError` unless
        `ignore_calibration_mismatch=True` (then it is attached with a warning, or dropped when unreadable).
        NaN/Inf weights and an inconsistent config (e.g. ``id2label`` disagreeing with ``label2id``) raise
        `ValueError`. A local folder that a killed save left half-swapped is repaired first
        (`folder_integrity.recover_interrupted_save`).
        """
        if os.path.isdir(os.path.dirname(os.path.abspath(os.fspath(pretrained_model_name_or_path)))):
            try:
                recover_interrupted_save(pretrained_model_name_or_path)
            except OSError as err:  # e.g. a read-only mount: load what is there, the next save repairs it
                logger.warning("could not clean up after an interrupted save of %s: %s", pretrained_model_name_or_path, err)
        from safetensors import SafetensorError

        try:
            model = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        except (SafetensorError, KeyError, RecursionError, UnicodeDecodeError, TypeError, AttributeError,
                IndexError) as err:
            raise ValueError(f"cannot load the model at {pretrained_model_name_or_path}: is a file of it corrupt? "
                             f"({type(err).__name__}: {short_message(err)})") from err
        check_weights_finite(model, pretrained_model_name_or_path)
        if not load_calibration_file:
            return model
        calibration = load_calibration_artifact(model, pretrained_model_name_or_path,
                                                ignore_mismatch=ignore_calibration_mismatch, hub_kwargs=kwargs)
        if calibration is not None:
            model.set_calibration(calibration)
        return model

    @classmethod
    def from_bert(
        cls,
        name_or_path: str,
        bayesian_layers: list[int] | None = None,
        num_labels: int = 2,
        **config_overrides: Any,
    ) -> "BayesianExpectationForSequenceClassification":
        """Convert a BERT checkpoint (base model or sequence classifier, local path or Hub id) keeping every
        pretrained weight; the Bayesian layers start from the blocks they replace. See `conversion.from_bert`."""
        return from_bert(name_or_path, bayesian_layers=bayesian_layers, num_labels=num_labels, model_class=cls, **config_overrides)

    def _apply_calibration(self, probs: torch.Tensor, logits: torch.Tensor) -> torch.Tensor | None:
        """``calibrated_probs``: the attached calibrator on ``logits`` (``None`` without one or in training mode),
        as a tensor of ``probs``' dtype on ``logits``' device.

        The calibrators are numpy objects (fit, stored in ``calibration.json`` and applied by the ONNX backend and
        the server the same way), so the logits make one float64 round trip through numpy here; a torch port would
        change the last bits of ``calibrated_probs``."""
        if self.calibration is None or self.training:
            return None
        values = self.calibration.calibrator.transform(logits.detach().double().cpu().numpy())
        return torch.as_tensor(values, dtype=probs.dtype, device=logits.device)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        unit_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        num_orderings: int | None = None,
        orderings: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        ordering_seed: int | None = None,
        inputs_embeds: torch.Tensor | None = None,
        return_dict: bool | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        ordering_weights: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> BayesianSequenceClassifierOutput | tuple:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Class ids in `[0, num_labels)`; the MDL-regularised loss is returned when given.
        unit_ids, num_orderings, orderings, ordering_weights, generator, ordering_seed, return_dict: see
            [`BayesianExpectationModel.forward`].
        """
        base = self.bert(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            unit_ids=unit_ids,
            num_orderings=num_orderings,
            orderings=orderings,
            ordering_weights=ordering_weights,
            generator=generator,
            ordering_seed=ordering_seed,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )
        unit_ids = base.unit_ids
        units = num_units(unit_ids)
        beta = annealed_beta(self.config.mdl_beta, self.mdl_step, self.config.mdl_anneal_steps)
        if labels is not None:
            labels = labels.to(base.last_hidden_state.device).long().view(-1)
            if labels.shape[0] != base.last_hidden_state.shape[0]:
                raise ValueError(f"labels has {labels.shape[0]} entries for a batch of {base.last_hidden_state.shape[0]}")
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_labels):
                raise ValueError(f"labels must be in [0, {self.num_labels}), got values {labels.unique().tolist()}")
        loss = alpha = logit_variance = features = None
        if self.config.head_type == "counting":
            max_units = max(int(unit_ids.max()) if unit_ids.numel() else 0, 1)
            unit_states, unit_mask = unit_pooling(base.last_hidden_state, unit_ids, max_units)
            pooled = self.bert.pooler.activation(self.bert.pooler.dense(unit_states))
            vote_logits = self.classifier(self.dropout(pooled))
            votes = torch.softmax(vote_logits, dim=-1, dtype=torch.promote_types(vote_logits.dtype, torch.float32))
            if hasattr(self, "evidence_strength"):
                strength = torch.sigmoid(self.evidence_strength(pooled)).to(votes.dtype)  # (B, M, 1)
                votes = votes * strength
            alpha = dirichlet_posterior(votes, unit_mask, self.config.prior_concentration)
            stats = dirichlet_uncertainty(alpha)
            units = unit_mask.sum(-1)
        else:
            features = base.pooler_output
            head_logits = self.classifier(self.dropout(features))
            if self.config.head_type == "evidential":
                evidence = torch.exp(head_logits.to(torch.promote_types(head_logits.dtype, torch.float32)).clamp(max=30.0))
                alpha = evidence + self.config.prior_concentration
                stats = dirichlet_uncertainty(alpha)
            elif self.training:
                # MAP training: the posterior is fitted afterwards around the trained classifier
                stats = point_predictive(head_logits)
            else:
                self.posterior.check_consistent(self.classifier)
                stats = self.posterior(head_logits, features, base.order_dispersion, self.config.posterior_samples)
                alpha, logit_variance = stats["concentration"], stats["logit_variance"]
            if labels is not None and self.config.head_type == "laplace":
                weights = (self.classifier.weight, self.classifier.bias)
                loss, _ = gaussian_mdl_loss(head_logits, labels, weights, beta)
        logits = torch.log(stats["probs"].clamp_min(torch.finfo(stats["probs"].dtype).tiny))
        if labels is not None and alpha is not None and self.config.head_type != "laplace":
            loss, _ = mdl_loss(alpha, labels, self.config.prior_concentration, beta)

        return BayesianSequenceClassifierOutput(
            loss=loss,
            logits=logits,
            probs=stats["probs"],
            calibrated_probs=self._apply_calibration(stats["probs"], logits),
            epistemic=stats["epistemic"],
            aleatoric=stats["aleatoric"],
            total=stats["total"],
            order_dispersion=base.order_dispersion,
            concentration=alpha,
            num_units=units,
            logit_variance=logit_variance,
            features=features,
            hidden_states=base.hidden_states,
            attentions=base.attentions,
        )


__all__ = [
    "BayesianExpectationEmbeddings",
    "BayesianExpectationForSequenceClassification",
    "BayesianExpectationLayer",
    "BayesianExpectationModel",
    "BayesianExpectationModelOutput",
    "BayesianExpectationPreTrainedModel",
    "BayesianSequenceClassifierOutput",
    "BertStyleLayer",
]
