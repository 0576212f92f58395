"""Fit the last-layer Laplace posterior of a trained model (see ``posterior.py`` for what it is).

1. One eval-mode pass over (up to ``max_examples`` of) the training texts collects the pooled expectation
   states ``phi`` and the MAP probabilities ``p``; their moments ``A = E[phi~ phi~^T]`` and
   ``B = E[diag p - p p^T]`` are the Kronecker factors of the generalised Gauss-Newton matrix.
2. The prior precision ``lambda`` maximises the Laplace marginal likelihood (closed form for the Kronecker
   factors; ``prior_method="marglik"``, the default) or the held-out NLL of the posterior predictive on
   validation texts (``prior_method="heldout_nll"``). Measured on real data (``benchmarks/results/
   uncertainty_cuda.md``), held-out NLL is nearly flat in ``lambda`` (differences of 1e-6 nats), so its argmax
   is noise and often the largest ``lambda`` of the grid, which switches the posterior off; the evidence is
   not flat and gives a stable choice. With validation texts, the scale with which order dispersion enters the
   logit variance is then chosen by held-out NLL, and kept at 0 unless it improves NLL by more than
   ``min_nll_gain`` nats.

The posterior is stored in the model's buffers (``posterior.*`` in ``model.safetensors``) and travels with the
weights; calibrators are fitted afterwards on top of the posterior predictive.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .inference import collect_outputs
from .posterior import sample_predictive, standard_normal_draws

#: prior precisions tried (log grid); the evidence / held-out NLL picks one
DEFAULT_PRIOR_PRECISIONS: tuple[float, ...] = tuple(float(x) for x in np.logspace(-4, 6, 41))
#: order-dispersion scales tried, in units of 1 / median dispersion (0 = dispersion does not enter)
DEFAULT_ORDER_SCALES: tuple[float, ...] = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0)


def _nll_grid(
    posterior: Any, logits: torch.Tensor, features: torch.Tensor, dispersion: torch.Tensor, labels: torch.Tensor,
    priors: torch.Tensor, order_scale: float, num_samples: int,
) -> torch.Tensor:
    """Held-out NLL of the sampled predictive for every prior precision in ``priors`` ``(G,)`` -> ``(G,)``."""
    s = posterior.eigen_variances(features, priors)  # (G, B, C)
    tril = posterior.scale_tril(s, dispersion, order_scale)  # (G, B, C, 2C)
    draws = standard_normal_draws(num_samples, tril.shape[-1], tril.dtype, tril.device)
    probs = torch.stack([sample_predictive(logits, tril[g], draws)["probs"] for g in range(tril.shape[0])])
    picked = probs.gather(-1, labels.view(1, -1, 1).expand(probs.shape[0], -1, 1)).squeeze(-1)
    return -torch.log(picked.clamp_min(1e-12)).mean(-1)


def log_marginal_likelihood(posterior: Any, map_norm: float, prior_precision: float) -> float:
    """Laplace evidence terms that depend on ``lambda``: ``-lambda |theta|^2 / 2 + P/2 log lambda
    - 1/2 log det(N A (x) B + lambda I)``."""
    curvature = posterior.num_examples.double() * torch.outer(
        posterior.feature_eigenvalues.double(), posterior.class_eigenvalues.double()
    )
    p = curvature.numel()
    logdet = torch.log(curvature + prior_precision).sum()
    return float(-0.5 * prior_precision * map_norm + 0.5 * p * math.log(prior_precision) - 0.5 * logdet)


def fit_posterior(
    model: torch.nn.Module,
    tokenizer: Any,
    train_texts: Sequence[str],
    *,
    validation_texts: Sequence[str] | None = None,
    validation_labels: Sequence[int] | None = None,
    max_examples: int | None = 20000,
    batch_size: int = 32,
    num_orderings: int | None = None,
    max_length: int | None = None,
    prior_precisions: Sequence[float] = DEFAULT_PRIOR_PRECISIONS,
    order_scales: Sequence[float] = DEFAULT_ORDER_SCALES,
    prior_method: str = "marglik",
    min_nll_gain: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Fit the Laplace posterior of ``model`` (``head_type="laplace"``) in place and return a JSON-safe report.

    Args:
        train_texts: the texts the model was trained on (labels are not needed: the GGN uses the model's own
            probabilities). At most ``max_examples`` of them are used (a seeded subsample).
        validation_texts, validation_labels: held-out labelled texts for choosing the order scale (and
            ``lambda`` with ``prior_method="heldout_nll"``). Without them order dispersion stays out of the
            variance.
        prior_method: ``"marglik"`` (default) or ``"heldout_nll"`` (needs validation texts).
        min_nll_gain: held-out NLL (nats) that order dispersion must gain to enter the variance.
    """
    if prior_method not in ("marglik", "heldout_nll"):
        raise ValueError(f"prior_method must be 'marglik' or 'heldout_nll', got {prior_method!r}")
    if prior_method == "heldout_nll" and validation_texts is None:
        raise ValueError("prior_method='heldout_nll' needs validation_texts and validation_labels")
    if getattr(model.config, "head_type", None) != "laplace" or not hasattr(model, "posterior"):
        raise ValueError(f"fit_posterior needs head_type='laplace', the model has {getattr(model.config, 'head_type', None)!r}")
    if not len(train_texts):
        raise ValueError("fit_posterior needs training texts")
    if (validation_texts is None) != (validation_labels is None):
        raise ValueError("give validation_texts and validation_labels together")
    priors = [float(x) for x in prior_precisions]
    if not priors or any(not (math.isfinite(x) and x > 0) for x in priors):
        raise ValueError(f"prior_precisions must be finite numbers > 0, got {prior_precisions!r}")
    scales = [float(x) for x in order_scales]
    if not scales or any(not (math.isfinite(x) and x >= 0) for x in scales):
        raise ValueError(f"order_scales must be finite numbers >= 0, got {order_scales!r}")
    if validation_texts is not None:
        labels = torch.as_tensor(np.asarray(validation_labels, dtype=np.int64)).view(-1)
        if labels.shape[0] != len(validation_texts):
            raise ValueError(f"{len(validation_texts)} validation texts but {labels.shape[0]} labels")
        if labels.numel() == 0:
            raise ValueError("empty validation split")
        if int(labels.min()) < 0 or int(labels.max()) >= model.config.num_labels:
            raise ValueError(f"validation labels must be in [0, {model.config.num_labels})")
    texts = list(train_texts)
    if max_examples is not None and len(texts) > max_examples:
        keep = np.sort(np.random.default_rng(seed).choice(len(texts), size=max_examples, replace=False))
        texts = [texts[i] for i in keep]

    model.eval()
    model.reset_posterior()
    common = dict(batch_size=batch_size, num_orderings=num_orderings, max_length=max_length, progress=progress)
    train = collect_outputs(model, tokenizer, texts, fields=("features", "probs"), desc="posterior: curvature", **common)
    val = None
    if validation_texts is not None:
        # collected before the fit, so the logits are the MAP logits (log-softmax of the classifier)
        val = collect_outputs(
            model, tokenizer, list(validation_texts), fields=("features", "logits", "order_dispersion"),
            desc="posterior: held-out", **common,
        )
    phi = torch.from_numpy(train["features"]).double()
    phi = torch.cat([phi, torch.ones_like(phi[:, :1])], dim=-1)
    p = torch.from_numpy(train["probs"]).double()
    n = phi.shape[0]
    feature_moment = phi.T @ phi / n
    class_moment = torch.diag(p.mean(0)) - p.T @ p / n
    posterior = model.posterior
    posterior.fit(feature_moment, class_moment, n, model.classifier, prior_precision=1.0)
    map_norm = float(posterior.map_weights.double().pow(2).sum())

    report: dict[str, Any] = {"num_examples": n, "num_classes": int(p.shape[1]), "hidden_size": int(phi.shape[1] - 1)}
    evidence = [log_marginal_likelihood(posterior, map_norm, lam) for lam in priors]
    marglik_lambda = priors[int(np.argmax(evidence))]
    posterior.set_hyperparameters(marglik_lambda, 0.0)
    report.update(method=prior_method, prior_precision=marglik_lambda, order_scale=0.0,
                  log_marginal_likelihood=dict(zip(map(str, priors), evidence)))
    if val is None:
        return report

    device = posterior.feature_basis.device
    logits = torch.from_numpy(val["logits"]).double().to(device)
    features = torch.from_numpy(val["features"]).double().to(device)
    dispersion = torch.from_numpy(val["order_dispersion"]).double().to(device)
    labels = labels.to(device)
    positive = dispersion[dispersion > 0]
    unit = float(1.0 / positive.median()) if positive.numel() else 0.0
    searched = priors if prior_method == "heldout_nll" else [marglik_lambda]
    grid = torch.tensor(searched, dtype=torch.float64, device=device)
    map_nll = float(torch.nn.functional.cross_entropy(logits, labels))
    table: dict[str, list[float]] = {}
    samples = int(model.config.posterior_samples)
    best: dict[float, tuple[float, float]] = {}  # order scale -> (NLL, lambda)
    with torch.no_grad():
        for scale in scales:
            absolute = scale * unit
            if scale > 0 and absolute == 0:
                continue
            nll = _nll_grid(posterior, logits, features, dispersion, labels, grid, absolute, samples)
            table[str(scale)] = nll.tolist()
            g = int(torch.argmin(nll))
            best[absolute] = (float(nll[g]), searched[g])
    base_nll, best_lam = best[0.0]
    best_scale, best_nll = 0.0, base_nll
    for absolute, (value, lam) in best.items():
        if value < best_nll and base_nll - value > min_nll_gain:
            best_scale, best_nll, best_lam = absolute, value, lam
    posterior.set_hyperparameters(best_lam, best_scale)
    report.update(
        prior_precision=best_lam, order_scale=best_scale, heldout_nll=best_nll, heldout_nll_without_order=base_nll,
        map_heldout_nll=map_nll, num_validation=int(labels.numel()), prior_precisions=searched,
        order_scales_relative=scales, order_scale_unit=unit, heldout_nll_grid=table,
    )
    return report


__all__ = ["fit_posterior", "log_marginal_likelihood"]
