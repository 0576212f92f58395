"""Fault injection: SIGKILL `save_pretrained`, `bayesian-hf calibrate` and `bayesian-hf train` at seeded random
moments (a bounded number of kills each) and check the model folder is the old model or the new one -- loadable,
and predicting exactly as one of them -- and that `--resume_from_checkpoint latest` then finishes the run.

The killed work runs in forked children (the parent has imported torch and transformers already, so a child
starts in milliseconds instead of seconds); each child uses one thread."""

from __future__ import annotations

import multiprocessing
import os
import random
import shutil
import signal
import time

import pytest
from _folders import build_model, observe, save_folder  # noqa: E402

FORK = multiprocessing.get_context("fork")
SEED = 20261201


def _child(target, *args) -> None:
    """Run ``target(*args)`` in the child and leave with its status, without running the parent's atexit hooks."""
    import torch

    torch.set_num_threads(1)
    status = 1
    try:
        status = int(target(*args) or 0)
    finally:
        os._exit(status)


def _run(target, *args, kill_after: float | None = None, timeout: float = 120) -> bool:
    """Run ``target(*args)`` in a forked child; SIGKILL it after ``kill_after`` seconds. True when it was killed,
    False when it finished (successfully: a failure is a test error)."""
    proc = FORK.Process(target=_child, args=(target, *args))
    proc.start()
    proc.join(kill_after if kill_after is not None else timeout)
    if proc.is_alive():
        if kill_after is None:
            proc.kill()
            proc.join()
            raise AssertionError(f"{target.__name__} did not finish in {timeout} s")
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        return True
    assert proc.exitcode == 0, f"{target.__name__} failed with exit code {proc.exitcode}"
    return False


def _timed(target, *args) -> float:
    start = time.perf_counter()
    assert not _run(target, *args)
    return time.perf_counter() - start


def _cli(argv: list[str]) -> int:
    from bayesian_hf.cli import main

    return main(argv)


def _save_forever(models, folder) -> int:
    """Save the new model, then the old one, then the new one... into ``folder`` until killed."""
    while True:
        for model in models:
            model.save_pretrained(folder)


def _no_leftovers(folder) -> None:
    names = os.listdir(folder)
    assert not [n for n in names if n.endswith(".tmp")], names


@pytest.fixture(scope="module")
def models(tmp_path_factory, minilm_tokenizer):
    work = tmp_path_factory.mktemp("fault")
    old, new = build_model(minilm_tokenizer, work, seed=0), build_model(minilm_tokenizer, work, seed=1)
    old_folder = save_folder(old, minilm_tokenizer, work / "old")
    new_folder = save_folder(new, minilm_tokenizer, work / "new")
    return {"old": old, "new": new, "old_folder": old_folder, "tokenizer": minilm_tokenizer,
            "expected_old": observe(old_folder), "expected_new": observe(new_folder)}


def test_sigkill_during_save_pretrained_leaves_old_or_new(models, tmp_path):
    rng = random.Random(SEED)
    mid_save = 0
    for attempt in range(6):
        folder = tmp_path / f"model-{attempt}"
        shutil.copytree(models["old_folder"], folder)
        assert _run(_save_forever, (models["new"], models["old"]), str(folder), kill_after=rng.uniform(0.05, 1.5))
        mid_save += any(p.name.startswith(f".{folder.name}.") for p in tmp_path.iterdir())  # a save was cut
        got = observe(folder)  # loads (repairing what the kill left) and predicts
        assert got in (models["expected_old"], models["expected_new"])
        _no_leftovers(folder)
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert mid_save >= 1, "no kill landed inside a save"


@pytest.fixture(scope="module")
def calibration_csv(tmp_path_factory):
    from bayesian_hf.data import LABEL_NAMES, load_exchangeable_reviews

    data = load_exchangeable_reviews(train_size=10, validation_size=10, calibration_size=120, test_size=40,
                                     ood_size=10, seed=0)
    path = tmp_path_factory.mktemp("calib") / "calibration.csv"
    data["calibration"].map(lambda ex: {"label": LABEL_NAMES[ex["label"]]}).to_csv(str(path), index=False)
    return str(path)


def test_sigkill_during_calibrate_leaves_old_or_new(models, calibration_csv, tmp_path):
    def argv(folder):
        return ["calibrate", "--model", str(folder), "--calibration_file", calibration_csv, "--alpha", "0.2"]

    reference = shutil.copytree(models["old_folder"], tmp_path / "reference")
    duration = _timed(_cli, argv(reference))
    expected_new = observe(reference)
    assert expected_new != models["expected_old"]  # the calibrator changed what a caller sees
    rng = random.Random(SEED + 1)
    for attempt in range(3):
        folder = shutil.copytree(models["old_folder"], tmp_path / f"model-{attempt}")
        _run(_cli, argv(folder), kill_after=rng.uniform(0.0, duration))
        assert observe(folder) in (models["expected_old"], expected_new)
        _no_leftovers(folder)


def test_sigkill_during_train_then_resume_gives_old_or_new_then_the_same_model(models, tmp_path, minilm_path):
    from _train_helpers import make_tiny_bert, tiny_args

    from bayesian_hf.training import last_complete_checkpoint

    bert = make_tiny_bert(tmp_path / "bert", minilm_path)

    def argv(out, *extra):
        return ["train", *tiny_args(bert, out, "--max_steps", "4", "--save_strategy", "steps", "--save_steps", "1",
                                    "--embedded_validation_size", "0", "--embedded_ood_size", "0",
                                    "--fit_posterior", "false", *extra)]

    reference = tmp_path / "reference"
    duration = _timed(_cli, argv(reference))
    expected_new = observe(reference)
    rng = random.Random(SEED + 2)
    for attempt in range(2):
        out = shutil.copytree(models["old_folder"], tmp_path / f"run-{attempt}")  # re-training into a used folder
        _run(_cli, argv(out), kill_after=rng.uniform(0.2 * duration, duration))
        assert observe(out) in (models["expected_old"], expected_new)
        resume = ("--resume_from_checkpoint", "latest") if last_complete_checkpoint(out) else ()
        assert not _run(_cli, argv(out, *resume))
        assert observe(out) == expected_new
        _no_leftovers(out)
