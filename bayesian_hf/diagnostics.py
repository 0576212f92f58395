"""Diagnostics: the optimal chain-of-thought length of docs/design.md §13.3.

Chlon et al. (arXiv 2507.11768) derive the number of reasoning steps that minimises expected loss for a context
of n exchangeable pieces of evidence: ``k* = sqrt(n * alpha / (H * (B0 - B_opt))) * log2(1 / epsilon)``. It is a
pure function, exposed as a diagnostic (``return_cot=True`` in the service), not as a vocabulary head.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from .orderings import sample_unit_permutations
from .tokenization import num_units as count_units
from .uncertainty import unit_pooling


@dataclass(frozen=True)
class CoTDiagnostic:
    """The optimal chain-of-thought length and the inputs it was computed from."""

    optimal_length: float
    n: float
    alpha: float
    entropy_bits: float
    bits_gap: float
    epsilon: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def optimal_cot_length(n: float, alpha: float, entropy_bits: float, bits_gap: float, epsilon: float) -> CoTDiagnostic:
    """``k* = sqrt(n * alpha / (H * (B0 - B_opt))) * log2(1 / epsilon)``.

    Args:
        n: size of the context (number of exchangeable units or tokens), > 0.
        alpha: the per-step evidence rate of the paper's bound, > 0.
        entropy_bits: H, the entropy of the prediction in bits, > 0.
        bits_gap: ``B0 - B_opt``, bits saved per step by the optimal code over the baseline, > 0.
        epsilon: target error probability, in (0, 1).

    Raises:
        ValueError: naming the first input outside its domain.
    """
    for name, value in (("n", n), ("alpha", alpha), ("entropy_bits", entropy_bits), ("bits_gap", bits_gap)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    if not isinstance(epsilon, (int, float)) or isinstance(epsilon, bool) or not 0 < epsilon < 1:
        raise ValueError(f"epsilon must be in (0, 1), got {epsilon!r}")
    length = math.sqrt(n * alpha / (entropy_bits * bits_gap)) * math.log2(1.0 / epsilon)
    return CoTDiagnostic(length, float(n), float(alpha), float(entropy_bits), float(bits_gap), float(epsilon))


def positional_bias(
    model,
    input_ids,
    attention_mask,
    unit_ids,
    *,
    num_orderings: int = 16,
    num_bins: int = 8,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Per-position bias of single realizations and its Fourier spectrum (docs/design.md §13.2).

    For every example with m >= 2 units, k orderings are run one at a time (batched as B*k examples with one
    explicit ordering each). For realization pi, ``d = log p_pi(y*) - mean_pi log p_pi(y*)`` is the realization
    minus the expectation on the class ``y*`` the expectation predicts. Each unit's own stance ``v_u`` is its
    vote for ``y*`` in the expectation, centred over the example's units. The bias at a relative position
    (slot / (m - 1), in ``num_bins`` bins) is the mean of ``d * v_u`` over the units placed there: positive where
    a unit pulls the realization its own way more than average (primacy/recency effects). The spectrum is
    ``|rfft|`` of the binned bias: power at high frequencies is the "harmonic" artifact of position embeddings.
    """
    model.eval()
    with torch.no_grad():
        units = count_units(unit_ids)
        keep = units >= 2
        if not bool(keep.any()):
            raise ValueError("positional bias needs examples with at least 2 units")
        input_ids, attention_mask, unit_ids, units = input_ids[keep], attention_mask[keep], unit_ids[keep], units[keep]
        batch, width = input_ids.shape[0], int(units.max())
        perms = sample_unit_permutations(
            units, num_orderings, generator=torch.Generator().manual_seed(seed), enumerate_small=False
        ).permutations  # (B, k, M)
        k = perms.shape[1]
        expectation = model(input_ids=input_ids, attention_mask=attention_mask, unit_ids=unit_ids, orderings=perms)
        target = expectation.probs.argmax(-1)  # (B,)
        repeat = lambda t: t.repeat_interleave(k, dim=0)  # noqa: E731
        single = model(
            input_ids=repeat(input_ids), attention_mask=repeat(attention_mask), unit_ids=repeat(unit_ids),
            orderings=perms.reshape(batch * k, 1, width),
        )
        scores = single.logits.gather(1, repeat(target).unsqueeze(1)).view(batch, k)
        deviation = scores - scores.mean(dim=1, keepdim=True)  # realization minus expectation
        # each unit's stance: its vote for y* in the expectation, centred over the example's units
        hidden = model.bert(input_ids=input_ids, attention_mask=attention_mask, unit_ids=unit_ids, orderings=perms)
        states, present = unit_pooling(hidden.last_hidden_state, unit_ids, width)
        votes = torch.softmax(model.classifier(model.bert.pooler.activation(model.bert.pooler.dense(states))), -1)
        stance = votes.gather(2, target.view(-1, 1, 1).expand(-1, width, 1)).squeeze(-1)
        stance = torch.where(present, stance - (stance * present).sum(1, keepdim=True) / present.sum(1, keepdim=True), 0)
        slot_of_unit = perms.argsort(dim=-1).double()  # (B, k, M)
        relative = slot_of_unit / (units.view(-1, 1, 1).double() - 1).clamp(min=1)
        bins = (relative * num_bins).long().clamp(max=num_bins - 1)
        contribution = (deviation.unsqueeze(-1) * stance.unsqueeze(1)).double()  # (B, k, M)
        mask = present.unsqueeze(1).expand_as(bins)
        totals = torch.zeros(num_bins, dtype=torch.float64).index_add_(0, bins[mask], contribution[mask])
        counts = torch.zeros(num_bins, dtype=torch.float64).index_add_(0, bins[mask], torch.ones_like(contribution[mask]))
        bias = totals / counts.clamp(min=1)
        spectrum = torch.fft.rfft(bias).abs()
    return {
        "relative_position_bins": [(i + 0.5) / num_bins for i in range(num_bins)],
        "bias": bias.tolist(),
        "counts": counts.tolist(),
        "spectrum": spectrum.tolist(),
        "num_examples": int(batch),
        "num_orderings": int(k),
    }
