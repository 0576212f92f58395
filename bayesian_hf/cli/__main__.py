"""``python -m bayesian_hf.cli`` (and ``torchrun ... -m bayesian_hf.cli``): the ``bayesian-hf`` command."""

import sys

from . import main

sys.exit(main())
