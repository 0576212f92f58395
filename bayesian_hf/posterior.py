"""Last-layer Laplace posterior over the classifier that reads the expectation state.

The classifier computes logits ``m = W phi + b`` from the pooled expectation state ``phi`` (D). After training,
the posterior over ``theta = [W, b]`` is approximated by a Gaussian ``N(theta_MAP, (G + lambda I)^-1)``, with
``G`` the generalised Gauss-Newton matrix of the training loss in its Kronecker-factored form
(``G ~= N * A (x) B``, ``A = E[phi~ phi~^T]`` over ``phi~ = [phi, 1]`` and ``B = E[diag(p) - p p^T]``; the
factorisation laplace-torch uses for last layers by default). With the eigendecompositions ``A = U diag(a) U^T``
and ``B = Q diag(b) Q^T`` the logit covariance of an example is

    V = Q diag(s) Q^T,   s_j = sum_i (phi~ . u_i)^2 / (N a_i b_j + lambda),

one ``(D+1) x (D+1)`` product per example. The component along the all-ones logit direction does not change
the softmax, so it is projected out (``P V P`` with ``P = I - 11^T/C``).

The predictive and the decomposition use ``S`` fixed, antithetic Gaussian draws of the logits (deterministic,
no Python loop): ``probs = mean_s softmax(m + L z_s)``, ``total = H(probs)``, ``aleatoric = mean_s
H(softmax(.))`` and ``epistemic = total - aleatoric`` (the mutual information, >= 0 by Jensen). With zero
covariance every draw equals ``m`` and ``probs == softmax(m)`` exactly: plain BERT is the special case.

Order dispersion (the variance of the representation across orderings of the units) can enter the logit
variance as ``order_scale * dispersion * P`` (a first-order propagation with one fitted scale, 0 = off).

Only torch is imported: this file travels with the weights for ``trust_remote_code`` loading.
"""

from __future__ import annotations

import math

import torch
from torch import nn

#: Seed of the fixed standard-normal draws used for the predictive (they are the same for every example).
SAMPLE_SEED = 20250715


def standard_normal_draws(num_samples: int, num_classes: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(S, C)`` antithetic standard-normal draws (``z`` and ``-z``), fixed by :data:`SAMPLE_SEED`."""
    half = max(num_samples // 2, 1)
    generator = torch.Generator().manual_seed(SAMPLE_SEED)
    z = torch.randn(half, num_classes, generator=generator, dtype=torch.float64)
    return torch.cat([z, -z]).to(dtype=dtype, device=device)


def sample_predictive(logits: torch.Tensor, scale_tril: torch.Tensor, draws: torch.Tensor) -> dict[str, torch.Tensor]:
    """Predictive probabilities and the entropy decomposition of Gaussian logits.

    Args:
        logits: ``(B, C)`` mean logits.
        scale_tril: ``(B, C, R)`` a square root ``L`` of the logit covariance (``V = L L^T``).
        draws: ``(S, R)`` standard-normal draws.

    Returns:
        ``probs`` ``(B, C)``, ``total``, ``aleatoric``, ``epistemic`` ``(B,)`` in nats.
    """
    samples = logits.unsqueeze(1) + torch.einsum("bcr,sr->bsc", scale_tril, draws)  # (B, S, C)
    log_p = torch.log_softmax(samples, dim=-1)
    p = log_p.exp()
    probs = p.mean(dim=1)
    tiny = torch.finfo(probs.dtype).tiny
    total = -(probs * torch.log(probs.clamp_min(tiny))).sum(-1)
    aleatoric = -(p * log_p).sum(-1).mean(dim=1)
    epistemic = (total - aleatoric).clamp_min(0.0)  # >= 0 by Jensen; the clamp only removes rounding noise
    return {"probs": probs, "total": total, "aleatoric": aleatoric, "epistemic": epistemic}


def point_predictive(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """The zero-covariance case without drawing: ``softmax(logits)``, all uncertainty aleatoric."""
    log_p = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
    probs = log_p.exp()
    total = -(probs * log_p).sum(-1)
    return {"probs": probs, "total": total, "aleatoric": total, "epistemic": torch.zeros_like(total)}


def laplace_bridge(logits: torch.Tensor, variances: torch.Tensor, max_concentration: float = 1e8) -> torch.Tensor:
    """Dirichlet concentrations matching Gaussian logits (the Laplace bridge, Hobbhahn et al. 2022).

    ``alpha_k = (1 - 2/C + exp(m_k) / C^2 * sum_l exp(-m_l)) / V_kk`` on zero-mean logits; the strength
    ``sum(alpha)`` is the learned evidence (large where the posterior is sure). ``variances``: ``(B, C)``.
    """
    c = logits.shape[-1]
    m = logits - logits.mean(-1, keepdim=True)
    m = m.clamp(-30.0, 30.0)
    numerator = 1.0 - 2.0 / c + m.exp() * (-m).exp().sum(-1, keepdim=True) / c**2
    alpha = numerator / variances.clamp_min(numerator / max_concentration)
    return alpha


class LaplacePosterior(nn.Module):
    """Kronecker-factored last-layer Laplace posterior (buffers only; saved with the weights).

    Unfitted (``fitted == 0``) it has zero covariance, so the model's probabilities are exactly the softmax of
    its classifier. :meth:`fit` fills it from the sufficient statistics of the training features;
    ``prior_precision`` and ``order_scale`` are then chosen on held-out data (see
    ``bayesian_hf.posterior_fitting``).
    """

    def __init__(self, hidden_size: int, num_labels: int) -> None:
        super().__init__()
        d, c = hidden_size + 1, num_labels
        self.register_buffer("feature_basis", torch.zeros(d, d))
        self.register_buffer("feature_eigenvalues", torch.zeros(d))
        self.register_buffer("class_basis", torch.zeros(c, c))
        self.register_buffer("class_eigenvalues", torch.zeros(c))
        self.register_buffer("num_examples", torch.zeros(()))
        self.register_buffer("prior_precision", torch.ones(()))
        self.register_buffer("order_scale", torch.zeros(()))
        self.register_buffer("fitted", torch.zeros(()))
        # the classifier [W, b] the posterior was fitted around: a posterior fitted for other weights is refused
        self.register_buffer("map_weights", torch.zeros(c, d))
        self.initialise()

    @torch.no_grad()
    def initialise(self) -> None:
        """The unfitted state (also what a checkpoint without a posterior loads as)."""
        for buffer in (self.feature_basis, self.feature_eigenvalues, self.class_eigenvalues, self.num_examples,
                       self.order_scale, self.fitted, self.map_weights):
            buffer.zero_()
        self.class_basis.copy_(torch.eye(self.class_basis.shape[0], dtype=self.class_basis.dtype))
        self.prior_precision.fill_(1.0)

    @property
    def is_fitted(self) -> bool:
        return bool(self.fitted.item() > 0)

    def reset(self) -> None:
        """Forget the fit (zero covariance: the predictive is the classifier's softmax)."""
        self.fitted.zero_()
        self.order_scale.zero_()

    @torch.no_grad()
    def fit(
        self,
        feature_moment: torch.Tensor,
        class_moment: torch.Tensor,
        num_examples: int,
        classifier: nn.Linear,
        prior_precision: float = 1.0,
        order_scale: float = 0.0,
    ) -> None:
        """Set the posterior from ``A = E[phi~ phi~^T]`` ``(D+1, D+1)`` and ``B = E[diag p - p p^T]`` ``(C, C)``
        of ``num_examples`` training examples, around the current ``classifier`` weights."""
        a, u = torch.linalg.eigh(feature_moment.double())
        b, q = torch.linalg.eigh(class_moment.double())
        dtype = self.feature_basis.dtype
        self.feature_basis.copy_(u.to(dtype))
        self.feature_eigenvalues.copy_(a.clamp_min(0).to(dtype))
        self.class_basis.copy_(q.to(dtype))
        self.class_eigenvalues.copy_(b.clamp_min(0).to(dtype))
        self.num_examples.fill_(float(num_examples))
        self.set_hyperparameters(prior_precision, order_scale)
        self.map_weights.copy_(self._classifier_matrix(classifier).to(dtype))
        self.fitted.fill_(1.0)

    def set_hyperparameters(self, prior_precision: float, order_scale: float = 0.0) -> None:
        if not (math.isfinite(prior_precision) and prior_precision > 0):
            raise ValueError(f"prior_precision must be a finite number > 0, got {prior_precision!r}")
        if not (math.isfinite(order_scale) and order_scale >= 0):
            raise ValueError(f"order_scale must be a finite number >= 0, got {order_scale!r}")
        self.prior_precision.fill_(float(prior_precision))
        self.order_scale.fill_(float(order_scale))

    @staticmethod
    def _classifier_matrix(classifier: nn.Linear) -> torch.Tensor:
        return torch.cat([classifier.weight.detach(), classifier.bias.detach().unsqueeze(-1)], dim=-1)

    def check_consistent(self, classifier: nn.Linear, atol: float = 1e-5) -> None:
        """Raise ``ValueError`` when the posterior was fitted around other classifier weights."""
        if not self.is_fitted:
            return
        current = self._classifier_matrix(classifier).to(self.map_weights.dtype)
        if not torch.isfinite(self.feature_basis).all() or not torch.allclose(current, self.map_weights, atol=atol, rtol=0):
            raise ValueError(
                "the Laplace posterior was fitted for other classifier weights (the model was trained or edited "
                "after `fit_posterior`): refit it (`bayesian-hf fit-posterior`) or call `model.reset_posterior()`"
            )

    def eigen_variances(self, features: torch.Tensor, prior_precision: torch.Tensor | float | None = None) -> torch.Tensor:
        """``(B, C)`` logit variances ``s`` along the class eigenvectors for pooled features ``(B, D)``;
        ``prior_precision`` may be a ``(G,)`` grid, giving ``(G, B, C)``."""
        dtype = torch.promote_types(features.dtype, torch.float32)
        phi = torch.cat([features.to(dtype), torch.ones_like(features[..., :1], dtype=dtype)], dim=-1)
        proj = (phi @ self.feature_basis.to(dtype)).pow(2)  # (B, D+1)
        lam = self.prior_precision if prior_precision is None else torch.as_tensor(prior_precision)
        lam = lam.to(dtype=dtype, device=features.device)
        curvature = self.num_examples.to(dtype) * torch.outer(self.feature_eigenvalues.to(dtype), self.class_eigenvalues.to(dtype))
        inverse = 1.0 / (curvature + lam.reshape(*lam.shape, 1, 1))  # (..., D+1, C)
        return proj @ inverse  # (B, C) or (G, B, C)

    def scale_tril(
        self, eigen_variances: torch.Tensor, order_dispersion: torch.Tensor | None = None, order_scale: torch.Tensor | float | None = None
    ) -> torch.Tensor:
        """``(..., B, C, 2C)`` square root of the centred logit covariance ``P (Q diag(s) Q^T + c*disp*I) P``."""
        dtype = eigen_variances.dtype
        c = eigen_variances.shape[-1]
        centre = torch.eye(c, dtype=dtype, device=eigen_variances.device) - 1.0 / c
        factor = centre @ self.class_basis.to(dtype)  # (C, C)
        posterior_part = factor * eigen_variances.clamp_min(0).sqrt().unsqueeze(-2)  # (..., B, C, C)
        scale = self.order_scale if order_scale is None else torch.as_tensor(order_scale)
        scale = scale.to(dtype=dtype, device=eigen_variances.device)
        if order_dispersion is None:
            order_dispersion = torch.zeros(eigen_variances.shape[-2], dtype=dtype, device=eigen_variances.device)
        spread = (scale.reshape(*scale.shape, 1) * order_dispersion.to(dtype)).clamp_min(0).sqrt()  # (..., B)
        order_part = centre * spread.unsqueeze(-1).unsqueeze(-1)  # (..., B, C, C)
        return torch.cat([posterior_part, order_part.expand_as(posterior_part)], dim=-1)

    def forward(
        self, logits: torch.Tensor, features: torch.Tensor, order_dispersion: torch.Tensor | None, num_samples: int
    ) -> dict[str, torch.Tensor]:
        """Predictive, decomposition and Laplace-bridge concentrations for mean ``logits`` ``(B, C)``."""
        dtype = torch.promote_types(logits.dtype, torch.float32)
        logits = logits.to(dtype)
        if not self.is_fitted:  # zero covariance: exactly the classifier's softmax, no draws needed
            out = point_predictive(logits)
            variances = torch.zeros_like(logits)
            out["concentration"] = laplace_bridge(logits, variances)
            out["logit_variance"] = variances
            return out
        tril = self.scale_tril(self.eigen_variances(features), order_dispersion)
        draws = standard_normal_draws(num_samples, tril.shape[-1], dtype, logits.device)
        out = sample_predictive(logits, tril, draws)
        variances = (tril * tril).sum(-1)  # diag of the centred covariance, (B, C)
        out["concentration"] = laplace_bridge(logits, variances)
        out["logit_variance"] = variances
        return out


__all__ = ["LaplacePosterior", "laplace_bridge", "point_predictive", "sample_predictive", "standard_normal_draws"]
