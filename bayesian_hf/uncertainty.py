"""Sufficient statistics, the Dirichlet posterior and the uncertainty decomposition.

Each exchangeable unit casts one soft vote ``c_u`` in the probability simplex. The votes are exchangeable
sufficient statistics: the conjugate posterior is ``Dirichlet(alpha0 + sum_u c_u)`` (a Beta for two classes),
whatever the order of the units. From it:

* ``total``      = entropy of the predictive mean ``alpha / sum(alpha)``;
* ``aleatoric``  = expected entropy ``E_{pi ~ Dir(alpha)}[H(pi)]`` (noise the evidence agrees on);
* ``epistemic``  = ``total - aleatoric``, the mutual information between label and class probabilities,
  which falls as consistent evidence accumulates.

Only torch is imported: this file travels with the weights for ``trust_remote_code`` loading.
"""

from __future__ import annotations

import torch


def unit_pooling(hidden: torch.Tensor, unit_ids: torch.Tensor, max_units: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked mean of the token states of every unit.

    Args:
        hidden: ``(B, S, D)`` token states.
        unit_ids: ``(B, S)`` unit of each token (0 = none).
        max_units: M, the number of unit slots.

    Returns:
        ``(B, M, D)`` unit means and ``(B, M)`` boolean mask of the units that have at least one token.
    """
    one_hot = torch.nn.functional.one_hot(unit_ids.clamp(min=0), max_units + 1)[..., 1:].to(hidden.dtype)
    counts = one_hot.sum(dim=1)  # (B, M)
    means = torch.einsum("bsm,bsd->bmd", one_hot, hidden) / counts.clamp(min=1).unsqueeze(-1)
    return means, counts > 0


def dirichlet_posterior(votes: torch.Tensor, unit_mask: torch.Tensor, prior_concentration: float) -> torch.Tensor:
    """Conjugate update ``alpha = alpha0 + sum_u c_u`` over the present units. ``votes``: ``(B, M, C)``."""
    evidence = (votes * unit_mask.unsqueeze(-1).to(votes.dtype)).sum(dim=1)
    return evidence + prior_concentration


def dirichlet_uncertainty(alpha: torch.Tensor) -> dict[str, torch.Tensor]:
    """Predictive mean and the entropy decomposition of a Dirichlet ``(B, C)`` (nats)."""
    alpha = alpha.to(torch.promote_types(alpha.dtype, torch.float32))
    strength = alpha.sum(dim=-1, keepdim=True)
    probs = alpha / strength
    total = -(probs * torch.log(probs.clamp_min(torch.finfo(probs.dtype).tiny))).sum(dim=-1)
    aleatoric = torch.digamma(strength.squeeze(-1) + 1) - (probs * torch.digamma(alpha + 1)).sum(dim=-1)
    epistemic = (total - aleatoric).clamp_min(0.0)  # MI >= 0; clamp only removes rounding noise
    return {"probs": probs, "total": total, "aleatoric": aleatoric, "epistemic": epistemic}


def weighted_mean(stacked: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Expectation ``(B, S, D)`` of ``(B*k, S, D)`` states under ordering weights ``(B, k)``."""
    batch, k = weights.shape
    x = stacked.view(batch, k, *stacked.shape[1:])
    return torch.einsum("bk,bksd->bsd", weights.to(x.dtype), x)


def weighted_mean_and_dispersion(
    stacked: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Expectation and order dispersion across orderings.

    Args:
        stacked: ``(B*k, S, D)`` states of the k orderings of each example (example-major).
        weights: ``(B, k)`` ordering weights summing to 1.

    Returns:
        ``(B, S, D)`` weighted mean (the expectation, in the input dtype) and ``(B, S)`` the weighted variance
        across orderings averaged over the hidden dimension (computed in float32 or wider).
    """
    batch, k = weights.shape
    x = stacked.view(batch, k, *stacked.shape[1:])
    stat_dtype = torch.promote_types(x.dtype, torch.float32)
    if k == 1:
        return stacked, torch.zeros(x.shape[0], x.shape[2], dtype=stat_dtype, device=x.device)
    w = weights.to(stat_dtype)
    # two read passes over the k copies: a weighted sum (a batched matmul) and per-token squared norms
    mean = torch.einsum("bk,bksd->bsd", w.to(x.dtype), x).to(stat_dtype)
    mean_square = torch.linalg.vector_norm(x, dim=-1, dtype=stat_dtype).pow(2) / x.shape[-1]  # (B, k, S)
    dispersion = torch.einsum("bk,bks->bs", w, mean_square) - mean.pow(2).mean(dim=-1)
    # one ordering with weight (a single unit): exactly 0, not the rounding noise of E[x^2] - E[x]^2
    single = (weights > 0).sum(dim=-1, keepdim=True) <= 1
    dispersion = torch.where(single, torch.zeros_like(dispersion), dispersion.clamp_min(0.0))
    return mean.to(stacked.dtype), dispersion
