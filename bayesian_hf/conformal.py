"""Split-conformal prediction sets (LAC / APS) on calibrated probabilities (docs/design.md §10.4)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from .calibration_base import ArrayLike, _err, _float_field, _get, _int_field
from .metrics import _labels, _probs, _probs_labels

__all__ = ["ConformalPredictor"]

#: ``qhat`` is a non-conformity score: ``1 - p`` (LAC) or a cumulative probability (APS), so in [0, 1] (plus the
#: rounding of a float cumulative sum)
_QHAT_SLACK = 1e-6


class ConformalPredictor:
    """Split-conformal prediction sets on top of *probabilities* (e.g. a calibrator's output).

    Fit on held-out calibration data ``(probs, labels)`` exchangeable with the test data; then for
    a new example the set contains the true label with probability ``>= 1 - alpha`` (marginally).

    Scores (non-conformity, higher = less conforming):

    * ``"lac"`` (least ambiguous set-valued classifier): ``s = 1 - p_y``; set
      ``{y : 1 - p_y <= qhat}``.  Smallest average sets; may be empty for hard inputs.
    * ``"aps"`` (adaptive prediction sets, deterministic / non-randomised): sort classes by
      probability descending (ties: lower class id first); ``s`` = total probability of the classes
      ranked up to and including ``y``.  The set is ``{y : s <= qhat}`` (the top classes whose
      cumulative probability stays within ``qhat``) plus the top-ranked class, so it is never
      empty; adding the top class only raises coverage.  Set sizes adapt to how spread the
      distribution is.  Without the randomisation of Romano et al. (2020) APS over-covers,
      markedly so with few classes (binary sets are often full when ``alpha`` is below the error
      rate); LAC gives smaller sets at the same guarantee.

    ``qhat`` is the ``ceil((n + 1)(1 - alpha)) / n`` empirical quantile of the ``n`` calibration
    scores, i.e. exactly the ``k = ceil((n + 1)(1 - alpha))``-th smallest score (the
    finite-sample-valid choice: coverage is between ``1 - alpha`` and ``1 - alpha + 1/(n + 1)``
    for continuous scores; note ``np.quantile(..., method="higher")`` at that level would pick the
    ``(k + 1)``-th and over-cover).  Fitting needs ``n >= (1 - alpha) / alpha`` so that ``k <= n``.
    """

    SCORES: ClassVar[tuple[str, ...]] = ("lac", "aps")

    def __init__(self, alpha: float = 0.1, score: str = "lac") -> None:
        if not (isinstance(alpha, (int, float)) and 0.0 < float(alpha) < 1.0):
            raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
        if score not in self.SCORES:
            raise ValueError(f"score must be one of {self.SCORES}, got {score!r}")
        self.alpha = float(alpha)
        self.score = score
        self.qhat: float | None = None
        self.num_classes: int | None = None
        self.n_calibration: int = 0

    # -- scores -------------------------------------------------------------------------------
    @staticmethod
    def _aps_cumulative(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cumulative mass per class in rank order: (inclusive, exclusive), (N, C) each.

        The exclusive mass is exactly 0.0 for the top-ranked class only.
        """
        order = np.argsort(-p, axis=1, kind="stable")
        ps = np.take_along_axis(p, order, axis=1)
        cum_sorted = np.cumsum(ps, axis=1)
        excl_sorted = np.concatenate((np.zeros_like(ps[:, :1]), cum_sorted[:, :-1]), axis=1)
        inclusive = np.empty_like(p)
        exclusive = np.empty_like(p)
        np.put_along_axis(inclusive, order, cum_sorted, axis=1)
        np.put_along_axis(exclusive, order, excl_sorted, axis=1)
        return inclusive, exclusive

    def nonconformity(self, probs: ArrayLike, labels: ArrayLike) -> np.ndarray:
        """Non-conformity score of each (example, label) pair, ``(N,)``."""
        p, y = _probs_labels(probs, labels)
        rows = np.arange(p.shape[0])
        if self.score == "lac":
            return 1.0 - p[rows, y]
        inclusive, _ = self._aps_cumulative(p)
        return inclusive[rows, y]

    # -- fit / predict --------------------------------------------------------------------------
    def fit(self, probs: ArrayLike, labels: ArrayLike) -> ConformalPredictor:
        """Compute ``qhat`` from calibration probabilities ``(n, C)`` and labels ``(n,)``."""
        s = self.nonconformity(probs, labels)
        n = s.shape[0]
        # the 1e-9 guards against float round-up, e.g. (n + 1) * (1 - 0.7) = 3.0000000000000004 for n = 9
        k = math.ceil((n + 1) * (1.0 - self.alpha) - 1e-9)
        if k > n:
            raise ValueError(
                f"conformal calibration needs at least {math.ceil((1 - self.alpha) / self.alpha)} "
                f"examples for alpha={self.alpha} (got {n})"
            )
        self.qhat = float(np.partition(s, k - 1)[k - 1])  # k-th smallest score
        self.num_classes = int(_probs(probs).shape[1])
        self.n_calibration = int(n)
        return self

    def predict_mask(self, probs: ArrayLike) -> np.ndarray:
        """Boolean membership mask ``(N, C)``: ``mask[i, c]`` is True iff class c is in set i."""
        if self.qhat is None or self.num_classes is None:
            raise RuntimeError("ConformalPredictor is not fitted; call fit() first")
        p = _probs(probs)
        if p.shape[1] != self.num_classes:
            raise ValueError(f"fit on {self.num_classes} classes but got probs with {p.shape[1]}")
        if self.score == "lac":
            return (1.0 - p) <= self.qhat
        inclusive, exclusive = self._aps_cumulative(p)
        return (inclusive <= self.qhat) | (exclusive == 0.0)  # exclusive == 0 <=> top-ranked class

    def predict_sets(self, probs: ArrayLike) -> list[list[int]]:
        """Prediction sets as lists of class ids (ascending) for probabilities ``(N, C)``."""
        mask = self.predict_mask(probs)
        return [np.flatnonzero(row).tolist() for row in mask]

    def evaluate(self, probs: ArrayLike, labels: ArrayLike) -> dict[str, float]:
        """Empirical ``coverage``, mean ``set_size`` and ``empty_fraction`` on labelled data."""
        mask = self.predict_mask(probs)
        y = _labels(labels, mask.shape[0], mask.shape[1])
        sizes = mask.sum(axis=1)
        return {
            "coverage": float(mask[np.arange(mask.shape[0]), y].mean()),
            "set_size": float(sizes.mean()),
            "empty_fraction": float((sizes == 0).mean()),
        }

    # -- JSON ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON parameters (``method`` is ``"conformal"``)."""
        if self.qhat is None:
            raise RuntimeError("ConformalPredictor is not fitted; nothing to serialise")
        return {
            "method": "conformal",
            "score": self.score,
            "alpha": self.alpha,
            "qhat": self.qhat,
            "num_classes": self.num_classes,
            "n_calibration": self.n_calibration,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConformalPredictor:
        """Rebuild from :meth:`to_dict` output; ``ValueError`` on missing or ill-typed fields."""
        what = "conformal"
        if not isinstance(d, Mapping):
            raise _err(what, f"expected a JSON object, got {type(d).__name__}")
        if d.get("method") != "conformal":
            raise _err(what, f"field 'method' is {d.get('method')!r}, expected 'conformal'")
        score = _get(d, "score", what)
        if score not in cls.SCORES:
            raise _err(what, f"field 'score' must be one of {cls.SCORES}, got {score!r}")
        alpha = _float_field(d, "alpha", what)
        if not 0.0 < alpha < 1.0:
            raise _err(what, f"field 'alpha' must be in (0, 1), got {alpha!r}")
        obj = cls(alpha=alpha, score=score)
        obj.qhat = _float_field(d, "qhat", what)
        if not 0.0 <= obj.qhat <= 1.0 + _QHAT_SLACK:
            raise _err(what, f"field 'qhat' must be in [0, 1] (a non-conformity score of probabilities), got {obj.qhat!r}")
        obj.num_classes = _int_field(d, "num_classes", what, 2)
        obj.n_calibration = _int_field(d, "n_calibration", what, 1)
        return obj

    def __repr__(self) -> str:
        return f"ConformalPredictor(score={self.score!r}, alpha={self.alpha}, qhat={self.qhat})"
