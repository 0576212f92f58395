#!/usr/bin/env python
"""Fine-tune a Bayesian-expectation classifier: a thin wrapper around ``bayesian_hf.training.main``.

    python scripts/train.py --config configs/quickstart.yaml --max_steps 20 --output_dir out
    torchrun --nproc_per_node 2 scripts/train.py --config configs/imdb-minilm.yaml
    accelerate launch --config_file configs/accelerate/ddp.yaml scripts/train.py --config configs/imdb-bert-base.yaml

Every flag is listed by ``python scripts/train.py --help`` (the same as ``bayesian-hf train --help``).
"""

import sys

from bayesian_hf.training import main

if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (ValueError, FileNotFoundError) as err:
        print(f"train.py: error: {err}", file=sys.stderr)
        sys.exit(2)
