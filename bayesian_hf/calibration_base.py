"""The calibrator interface, the method registry, the JSON field validators and the identity calibrator
(docs/design.md §10.1).

A calibrator maps logits ``(N, C)`` to calibrated probabilities ``(N, C)``; log-probabilities count as logits
(softmax of log p is p).  ``-inf`` entries (probability 0) are allowed; NaN and ``+inf`` are rejected.  Every
calibrator serialises to plain JSON through ``to_dict`` / :func:`calibrator_from_dict` (never pickled); the
validators here turn a corrupt, truncated or mistyped artifact into a ``ValueError`` naming the bad field.

To add a method: subclass :class:`Calibrator` in its own ``calibrator_<name>.py``, set ``method``, implement
``_fit`` / ``_transform`` / ``_params`` / ``_from_params`` and decorate it with :func:`register_calibrator`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

import numpy as np

# relative imports of named modules, so transformers copies them with this file for trust_remote_code
from .metrics import _labels, class_matrix, softmax

__all__ = [
    "Calibrator",
    "IdentityCalibrator",
    "available_methods",
    "calibrator_from_dict",
    "make_calibrator",
    "register_calibrator",
]

ArrayLike = Any
C = TypeVar("C", bound="Calibrator")


# ----------------------------------------------------------------------------------------------
# validation helpers
# ----------------------------------------------------------------------------------------------
def _logits(logits: ArrayLike) -> np.ndarray:
    z = class_matrix(logits, "logits")
    if np.any(np.isnan(z)) or np.any(z == np.inf):
        raise ValueError("logits contain NaN or +inf")
    if np.any(np.all(z == -np.inf, axis=1)):
        raise ValueError("a row of logits is all -inf")
    return z


def _class_scores(z: np.ndarray) -> np.ndarray:
    """The class probabilities a one-vs-rest method calibrates: ``p(class 1)`` ``(N, 1)`` when binary, else ``(N, C)``."""
    p = softmax(z)
    return p[:, 1:2] if z.shape[1] == 2 else p


def _ovr_classes(num_classes: int) -> list[int]:
    """The classes with a one-vs-rest map: ``[1]`` when binary, else every class."""
    return [1] if num_classes == 2 else list(range(num_classes))


def _renormalise(q: np.ndarray) -> np.ndarray:
    """Row-normalise one-vs-rest scores; rows that are all zero become uniform."""
    s = q.sum(axis=1, keepdims=True)
    uniform = np.full_like(q, 1.0 / q.shape[1])
    return np.where(s > 0, q / np.where(s > 0, s, 1.0), uniform)


def _binary_or_ovr(p_scores: np.ndarray, binary: bool) -> np.ndarray:
    """Assemble probabilities from calibrated class-1 score (binary) or per-class OvR scores."""
    if binary:
        p1 = np.clip(p_scores[:, 0], 0.0, 1.0)
        return np.stack([1.0 - p1, p1], axis=1)
    return _renormalise(np.clip(p_scores, 0.0, 1.0))


def _err(cls: str, msg: str) -> ValueError:
    return ValueError(f"corrupt or invalid {cls} calibrator artifact: {msg}")


def _get(d: Mapping[str, Any], key: str, what: str) -> Any:
    if key not in d:
        raise _err(what, f"missing field {key!r}")
    return d[key]


def _int_field(d: Mapping[str, Any], key: str, what: str, minimum: int) -> int:
    v = _get(d, key, what)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise _err(what, f"field {key!r} must be an integer >= {minimum}, got {v!r}")
    return v


def _float_field(d: Mapping[str, Any], key: str, what: str) -> float:
    v = _get(d, key, what)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _err(what, f"field {key!r} must be a finite number, got {v!r}")
    return float(v)


def _float_list(v: Any, key: str, what: str, length: int | None = None) -> np.ndarray:
    if not isinstance(v, list) or not all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v
    ):
        raise _err(what, f"field {key!r} must be a list of finite numbers")
    if length is not None and len(v) != length:
        raise _err(what, f"field {key!r} must have {length} entries, got {len(v)}")
    return np.asarray(v, dtype=np.float64)


def _list_of_float_lists(d: Mapping[str, Any], key: str, what: str, n_lists: int) -> list[np.ndarray]:
    v = _get(d, key, what)
    if not isinstance(v, list) or len(v) != n_lists:
        raise _err(what, f"field {key!r} must be a list of {n_lists} lists")
    return [_float_list(x, f"{key}[{i}]", what) for i, x in enumerate(v)]


def _floats(a: np.ndarray) -> list[float]:
    return [float(x) for x in np.asarray(a, dtype=np.float64).reshape(-1)]


# ----------------------------------------------------------------------------------------------
# base class + registry
# ----------------------------------------------------------------------------------------------
_REGISTRY: dict[str, type[Calibrator]] = {}


def register_calibrator(cls: type[C]) -> type[C]:
    """Class decorator: make ``cls`` loadable by :func:`calibrator_from_dict` under ``cls.method``."""
    if not getattr(cls, "method", None):
        raise TypeError(f"{cls.__name__} must define a non-empty class attribute 'method'")
    _REGISTRY[cls.method] = cls
    return cls


def available_methods() -> tuple[str, ...]:
    """Names of the registered calibration methods."""
    return tuple(_REGISTRY)


def _check_known(method: Any) -> None:
    if method not in _REGISTRY:
        raise ValueError(f"unknown calibration method {method!r}; known methods: {sorted(_REGISTRY)}")


class Calibrator:
    """Common interface: ``fit(logits, labels) -> self``, ``transform(logits) -> probs``, JSON I/O.

    Subclasses set ``method`` and implement ``_fit``, ``_transform``, ``_params`` and
    ``_from_params``; the base class does validation, the class-count check and the envelope.
    """

    method: ClassVar[str] = ""

    def __init__(self) -> None:
        self.num_classes: int | None = None

    # -- public API ---------------------------------------------------------------------------
    def fit(self: C, logits: ArrayLike, labels: ArrayLike) -> C:
        """Fit on logits ``(N, C)`` and integer labels ``(N,)``; returns ``self``."""
        z = _logits(logits)
        y = _labels(labels, z.shape[0], z.shape[1])
        self._fit(z, y)
        self.num_classes = int(z.shape[1])
        return self

    def transform(self, logits: ArrayLike) -> np.ndarray:
        """Calibrated probabilities ``(N, C)`` (float64, rows sum to 1) for logits ``(N, C)``."""
        if self.num_classes is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() first")
        z = _logits(logits)
        if z.shape[1] != self.num_classes:
            raise ValueError(
                f"{type(self).__name__} was fit on {self.num_classes} classes but got logits with "
                f"{z.shape[1]} classes"
            )
        return self._transform(z)

    def fit_transform(self, logits: ArrayLike, labels: ArrayLike) -> np.ndarray:
        """``fit`` then ``transform`` on the same logits."""
        return self.fit(logits, labels).transform(logits)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON parameters: ``{"method": ..., "num_classes": ..., <method parameters>}``."""
        if self.num_classes is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted; nothing to serialise")
        return {"method": self.method, "num_classes": self.num_classes, **self._params()}

    @classmethod
    def from_dict(cls: type[C], d: Mapping[str, Any]) -> C:
        """Rebuild from :meth:`to_dict` output; ``ValueError`` on missing or ill-typed fields."""
        if not isinstance(d, Mapping):
            raise _err(cls.method, f"expected a JSON object, got {type(d).__name__}")
        if d.get("method") != cls.method:
            raise _err(cls.method, f"field 'method' is {d.get('method')!r}, expected {cls.method!r}")
        obj = cls()
        num_classes = _int_field(d, "num_classes", cls.method, 2)
        obj._from_params(d, num_classes)
        obj.num_classes = num_classes
        return obj

    def __repr__(self) -> str:
        if self.num_classes is None:
            return f"{type(self).__name__}(unfitted)"
        return f"{type(self).__name__}(num_classes={self.num_classes})"

    # -- to implement -------------------------------------------------------------------------
    def _fit(self, z: np.ndarray, y: np.ndarray) -> None:
        raise NotImplementedError

    def _transform(self, z: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _params(self) -> dict[str, Any]:
        raise NotImplementedError

    def _from_params(self, d: Mapping[str, Any], num_classes: int) -> None:
        raise NotImplementedError


def calibrator_from_dict(d: Mapping[str, Any]) -> Calibrator:
    """Rebuild any registered calibrator from its ``to_dict`` output, dispatching on ``d["method"]``."""
    if not isinstance(d, Mapping):
        raise ValueError(f"calibrator artifact must be a JSON object, got {type(d).__name__}")
    method = d.get("method")
    if not isinstance(method, str):
        raise ValueError(f"calibrator artifact has no string field 'method' (got {method!r})")
    _check_known(method)
    return _REGISTRY[method].from_dict(d)


def make_calibrator(method: str, **kwargs: Any) -> Calibrator:
    """Construct an unfitted calibrator by method name (``"none"``, ``"temperature"``, ...)."""
    _check_known(method)
    return _REGISTRY[method](**kwargs)


# ----------------------------------------------------------------------------------------------
# the baseline
# ----------------------------------------------------------------------------------------------
@register_calibrator
class IdentityCalibrator(Calibrator):
    """No calibration: ``softmax(logits)``.  The baseline every method must beat."""

    method = "none"

    def _fit(self, z: np.ndarray, y: np.ndarray) -> None:
        pass

    def _transform(self, z: np.ndarray) -> np.ndarray:
        return softmax(z)

    def _params(self) -> dict[str, Any]:
        return {}

    def _from_params(self, d: Mapping[str, Any], num_classes: int) -> None:
        pass
