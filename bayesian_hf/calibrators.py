"""The built-in calibration methods, least to most flexible, registered on import (docs/design.md §10.1).

:func:`~bayesian_hf.calibration_base.available_methods` lists methods in registration order, so the imports below
stay in flexibility order (not alphabetical).  :func:`~bayesian_hf.calibration_selection.select_calibrator` walks
them in this order; :func:`~bayesian_hf.calibration_artifact.load_calibration` can rebuild any of them.
"""

from __future__ import annotations

# registration order (see above), not alphabetical
# isort: off
from .calibration_base import IdentityCalibrator
from .calibrator_temperature import TemperatureScaling
from .calibrator_platt import PlattScaling
from .calibrator_isotonic import IsotonicCalibration
from .calibrator_histogram import HistogramBinning
# isort: on

__all__ = ["BUILTIN_CALIBRATORS"]

#: Least to most flexible (higher variance): ``none < temperature < platt < isotonic < histogram``.
BUILTIN_CALIBRATORS = (IdentityCalibrator, TemperatureScaling, PlattScaling, IsotonicCalibration, HistogramBinning)
