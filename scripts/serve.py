#!/usr/bin/env python
"""Start the HTTP service: a thin wrapper around ``bayesian-hf serve``.

    python scripts/serve.py --model path/to/model --api-key-file keys.txt --rate-limit 600/minute

Every flag (and its BAYESIAN_HF_* environment variable) is listed by ``python scripts/serve.py --help``;
see docs/serving.md.
"""

import sys

from bayesian_hf.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
