"""Thin wrapper: `python scripts/calibrate.py --model DIR [...]` == `bayesian-hf calibrate --model DIR [...]`."""

import sys

from bayesian_hf.cli import main

if __name__ == "__main__":
    sys.exit(main(["calibrate", *sys.argv[1:]]))
