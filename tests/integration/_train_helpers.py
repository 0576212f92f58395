"""Helpers of tests/integration/test_training.py: a tiny BERT checkpoint and a launcher for subprocess runs.

Run as a script (``python _train_helpers.py ARGS`` or under ``torchrun``), it trains with
``bayesian_hf.training`` and, through callbacks driven by environment variables:

* ``BHF_TEST_DUMP_DIR``: every rank writes its final parameters to ``rank{R}.safetensors`` there;
* ``BHF_TEST_STEP_SLEEP``: sleep this many seconds after every optimizer step (so a test can kill the
  process while it trains).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from tiny_models import (
    make_tiny_bert as _make_tiny_bert,  # tests/ is on the path: pytest `pythonpath`, PYTHONPATH in scripts
)


def make_tiny_bert(path: str | os.PathLike[str], minilm_path: str, seed: int = 0) -> str:
    """A randomly initialised 2-layer BERT classifier with the MiniLM (bert-base-uncased) tokenizer."""
    return _make_tiny_bert(path, minilm_path, seed=seed)


def tiny_args(model_path: str, output_dir: str | os.PathLike[str], *extra: str) -> list[str]:
    """Flags of a fast run on the tiny BERT and a small embedded dataset (later flags override earlier ones)."""
    return [
        "--model_name_or_path", model_path,
        "--output_dir", str(output_dir),
        "--embedded",
        "--embedded_train_size", "48",
        "--embedded_validation_size", "16",
        "--embedded_calibration_size", "0",
        "--embedded_test_size", "16",
        "--embedded_ood_size", "16",
        "--max_length", "64",
        "--num_train_orderings", "2",
        "--num_orderings", "2",
        "--per_device_train_batch_size", "8",
        "--per_device_eval_batch_size", "16",
        "--learning_rate", "1e-3",
        "--max_steps", "3",
        "--logging_steps", "1",
        "--eval_strategy", "no",
        "--save_strategy", "no",
        "--report_to", "none",
        "--use_cpu",
        "--disable_tqdm", "true",
        "--dataloader_num_workers", "0",
        "--seed", "7",
        *extra,
    ]


def _callbacks():
    from transformers import TrainerCallback

    callbacks = []
    dump_dir = os.environ.get("BHF_TEST_DUMP_DIR")
    sleep = float(os.environ.get("BHF_TEST_STEP_SLEEP", "0") or 0)

    class DumpParameters(TrainerCallback):
        def on_train_end(self, args, state, control, model=None, **kwargs):
            from safetensors.torch import save_file

            tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
            save_file(tensors, str(Path(dump_dir) / f"rank{args.process_index}.safetensors"))

    class Sleep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            time.sleep(sleep)

    if dump_dir:
        callbacks.append(DumpParameters())
    if sleep > 0:
        callbacks.append(Sleep())
    return callbacks


def run(argv: list[str]) -> None:
    from bayesian_hf.training import _setup_logging, finish_distributed, parse_args, run_training

    model_args, data_args, training_args = parse_args(argv)
    _setup_logging(training_args)
    run_training(model_args, data_args, training_args, callbacks=_callbacks(), verbose=False)
    finish_distributed()


if __name__ == "__main__":
    run(sys.argv[1:])
