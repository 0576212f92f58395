"""The MDL-regularised loss: a two-part code length in nats.

Dirichlet heads (``"evidential"``, ``"counting"``): :func:`mdl_loss`

* data part  = NLL of the labels under the posterior predictive ``alpha / sum(alpha)``;
* model part = ``beta * KL(Dir(alpha_misleading) || Dir(alpha0))``, the nats the head spends asserting
  evidence the label does not support (the evidence for the true class is removed first, as in evidential
  deep learning), with ``beta`` annealed from 0.

Gaussian last layer (``"laplace"``): :func:`gaussian_mdl_loss`

* data part  = cross-entropy of the MAP logits (the posterior is fitted after training);
* model part = ``beta * ||theta||^2 / 2``, the code length of the classifier weights under the N(0, I) prior
  up to a constant (the MAP counterpart of ``KL(q || prior)``; ``beta`` plays ``1 / N``).

At ``beta = 0`` both are exactly cross-entropy.

Only torch is imported: this file travels with the weights for ``trust_remote_code`` loading.
"""

from __future__ import annotations

import torch
from torch.distributions import Dirichlet, kl_divergence


def dirichlet_kl(alpha: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """``KL(Dir(alpha) || Dir(prior))`` per row, ``(B,)`` (``torch.distributions.kl_divergence``; unvalidated, as the
    closed form it replaced: same gradients bit for bit, values within 2e-6 relative in float32; it costs ~15 us
    more per (256, 3) batch for building the two distributions, nothing next to a training step)."""
    return kl_divergence(Dirichlet(alpha, validate_args=False), Dirichlet(prior, validate_args=False))


def annealed_beta(beta: float, step: int, anneal_steps: int) -> float:
    """Linear warm-up of the model-part weight from 0 to ``beta`` over ``anneal_steps`` steps."""
    if anneal_steps <= 0:
        return float(beta)
    return float(beta) * min(1.0, max(step, 0) / anneal_steps)


def mdl_loss(
    alpha: torch.Tensor, labels: torch.Tensor, prior_concentration: float, beta: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Two-part code length averaged over the batch (nats/example).

    Args:
        alpha: ``(B, C)`` Dirichlet concentrations (prior + evidence).
        labels: ``(B,)`` class ids.
        prior_concentration: the symmetric prior alpha0.
        beta: weight of the model part (already annealed).

    Returns:
        The scalar loss and its parts ``{"data": ..., "model": ...}`` (each a scalar).
    """
    alpha = alpha.to(torch.promote_types(alpha.dtype, torch.float32))
    log_probs = torch.log(alpha) - torch.log(alpha.sum(-1, keepdim=True))
    data = torch.nn.functional.nll_loss(log_probs, labels)
    if beta == 0:
        return data, {"data": data.detach(), "model": torch.zeros_like(data)}
    one_hot = torch.nn.functional.one_hot(labels, alpha.shape[-1]).to(alpha.dtype)
    evidence = alpha - prior_concentration
    misleading = prior_concentration + evidence * (1.0 - one_hot)
    model = dirichlet_kl(misleading, torch.full_like(misleading, prior_concentration)).mean()
    return data + beta * model, {"data": data.detach(), "model": model.detach()}


def gaussian_mdl_loss(
    logits: torch.Tensor, labels: torch.Tensor, weights: tuple[torch.Tensor, ...], beta: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Two-part code length of a Gaussian last layer at its MAP (nats/example): cross-entropy of ``logits``
    ``(B, C)`` plus ``beta * sum(||w||^2) / 2`` over the classifier tensors ``weights``."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    data = torch.nn.functional.cross_entropy(logits, labels)
    if beta == 0:
        return data, {"data": data.detach(), "model": torch.zeros_like(data)}
    model = 0.5 * sum(w.float().pow(2).sum() for w in weights)
    return data + beta * model, {"data": data.detach(), "model": model.detach()}


def code_length(log_probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Data code length of ``labels`` under ``log_probs`` in nats/example (the prequential diagnostic sums
    this over blocks each coded by a model trained on the blocks before it)."""
    return float(torch.nn.functional.nll_loss(log_probs.to(torch.promote_types(log_probs.dtype, torch.float32)), labels, reduction="mean"))
