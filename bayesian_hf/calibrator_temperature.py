"""Temperature scaling [``temperature``]: ``softmax(z / T)`` with one ``T > 0`` fitted by NLL (docs/design.md §10.1)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.special import log_softmax

from .calibration_base import Calibrator, _err, _float_field, register_calibrator
from .metrics import NLL_EPS, softmax

__all__ = ["TemperatureScaling"]


@register_calibrator
class TemperatureScaling(Calibrator):
    """``softmax(z / T)`` with ``T > 0`` minimising the NLL of the fit data.

    NLL is unimodal in ``log T`` (it is convex in ``1/T``), so a bounded Brent search over
    ``log T in [log_t_min, log_t_max]`` is deterministic and reliable.  If the optimum found
    is not better than ``T = 1`` on the fit data, ``T = 1`` is kept, so fitting never increases the
    fit-data NLL.  Dividing by a positive constant keeps the argmax, hence accuracy.
    """

    method = "temperature"

    def __init__(self, log_t_min: float = math.log(1e-2), log_t_max: float = math.log(1e3)) -> None:
        super().__init__()
        if not log_t_min < 0.0 < log_t_max:
            raise ValueError("need log_t_min < 0 < log_t_max")
        self.log_t_min, self.log_t_max = float(log_t_min), float(log_t_max)
        self.temperature: float = 1.0

    def _fit(self, z: np.ndarray, y: np.ndarray) -> None:
        try:  # imported when fitting only: scipy.optimize is slow to import and a loaded model never fits
            from scipy.optimize import minimize_scalar
        except ImportError as err:  # pragma: no cover
            raise ImportError("fitting temperature scaling needs scipy (pip install scipy)") from err

        rows, floor = np.arange(z.shape[0]), math.log(NLL_EPS)

        def nll(log_t: float) -> float:
            return float(-np.mean(np.maximum(log_softmax(z / math.exp(log_t), axis=1)[rows, y], floor)))

        res = minimize_scalar(
            nll, bounds=(self.log_t_min, self.log_t_max), method="bounded", options={"xatol": 1e-8}
        )
        log_t = float(res.x)
        self.temperature = math.exp(log_t) if nll(log_t) < nll(0.0) else 1.0

    def _transform(self, z: np.ndarray) -> np.ndarray:
        return softmax(z / self.temperature)

    def _params(self) -> dict[str, Any]:
        return {"temperature": float(self.temperature)}

    def _from_params(self, d: Mapping[str, Any], num_classes: int) -> None:
        t = _float_field(d, "temperature", self.method)
        if t <= 0:
            raise _err(self.method, f"field 'temperature' must be > 0, got {t!r}")
        self.temperature = t
