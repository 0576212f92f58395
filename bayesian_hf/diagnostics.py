"""Diagnostics: the optimal chain-of-thought length of DESIGN 3.6.

Chlon et al. (arXiv 2507.11768) derive the number of reasoning steps that minimises expected loss for a context
of n exchangeable pieces of evidence: ``k* = sqrt(n * alpha / (H * (B0 - B_opt))) * log2(1 / epsilon)``. It is a
pure function, exposed as a diagnostic (``return_cot=True`` in the service), not as a vocabulary head.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


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
