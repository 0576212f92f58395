"""Post-hoc calibration and conformal prediction sets (docs/design.md §10): the public facade.

Everything is defined in flat modules, one concern each, and re-exported here so that
``bayesian_hf.calibration`` stays the one import path: :mod:`.calibration_base` (the interface, the registry,
the JSON field validators, :class:`IdentityCalibrator`), one ``calibrator_<method>.py`` per method,
:mod:`.conformal`, :mod:`.calibration_selection` (:func:`select_calibrator`, :func:`calibration_summary`) and
:mod:`.calibration_artifact` (``calibration.json``).

Calibrators map logits ``(N, C)`` to calibrated probabilities ``(N, C)``.  Log-probabilities
count as logits (softmax of log p is p), so the model's ``logits`` output, which is the log of
its predictive distribution, can be passed directly.  ``-inf`` entries (probability 0) are
allowed; NaN and ``+inf`` are rejected.

Every calibrator serialises to plain JSON (lists of floats) through ``to_dict`` /
``calibrator_from_dict``; nothing is ever pickled.  Python floats round-trip through JSON
exactly, so a reloaded calibrator reproduces ``transform`` bit for bit.  Artifacts are read
defensively: corrupt, truncated or mistyped files raise ``ValueError`` naming the bad field.

Methods (``method`` string in brackets):

* :class:`IdentityCalibrator` [``none``]: softmax only; the "do nothing" baseline.
* :class:`TemperatureScaling` [``temperature``]: ``softmax(z / T)``; ``T`` minimises NLL
  (1-D bounded Brent search over ``log T``).  Keeps the argmax, hence accuracy.
* :class:`PlattScaling` [``platt``]: logistic regression ``sigmoid(a * s + b)`` on the logit
  ``s`` of the class probability; binary: one ``(a, b)`` on the class-1 logit (= logit
  difference); ``C > 2``: one-vs-rest per class, then renormalised.
* :class:`IsotonicCalibration` [``isotonic``]: monotone non-decreasing step map of the class
  probability, stored as threshold arrays and applied with ``np.interp``; binary on ``p(class 1)``,
  one-vs-rest + renormalisation for ``C > 2``.
* :class:`HistogramBinning` [``histogram``]: equal-width bins on each class probability
  (one-vs-rest), each bin mapped to its smoothed empirical frequency.
* :class:`ConformalPredictor`: split-conformal prediction sets (LAC / APS) on *probabilities*.

:func:`select_calibrator` picks among them by cross-fitted held-out NLL, ``none`` included, keeping the
least flexible method unless a more flexible one wins by more than its standard error allows, so
calibration is not chosen when it hurts or when its gain is within noise.  :func:`save_calibration` / :func:`load_calibration`
write / read the JSON artifact stored next to the model weights.
"""

from __future__ import annotations

from .calibration_artifact import (
    CALIBRATION_FILENAME,
    FORMAT_VERSION,
    MAX_CALIBRATION_BYTES,
    LoadedCalibration,
    label_mapping_hash,
    labels_hash,
    load_calibration,
    save_calibration,
)
from .calibration_base import (
    Calibrator,
    IdentityCalibrator,
    available_methods,
    calibrator_from_dict,
    make_calibrator,
    register_calibrator,
)
from .calibration_selection import _stratified_folds, calibration_summary, select_calibrator  # noqa: F401
from .calibrator_histogram import HistogramBinning
from .calibrator_isotonic import IsotonicCalibration
from .calibrator_platt import PlattScaling
from .calibrator_temperature import TemperatureScaling
from .conformal import ConformalPredictor

__all__ = [
    "CALIBRATION_FILENAME",
    "FORMAT_VERSION",
    "MAX_CALIBRATION_BYTES",
    "Calibrator",
    "ConformalPredictor",
    "HistogramBinning",
    "IdentityCalibrator",
    "IsotonicCalibration",
    "LoadedCalibration",
    "PlattScaling",
    "TemperatureScaling",
    "available_methods",
    "calibration_summary",
    "calibrator_from_dict",
    "label_mapping_hash",
    "labels_hash",
    "load_calibration",
    "make_calibrator",
    "register_calibrator",
    "save_calibration",
    "select_calibrator",
]
