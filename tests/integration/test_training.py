"""End-to-end fine-tuning through bayesian_hf.training on a tiny BERT: every data path, label checks, mixed
precision, Bayesian checkpoints as a starting point, real 2-process DDP (torchrun, gloo) and kill + resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import bounded_run
import numpy as np
import pandas as pd
import pytest
import torch
from _train_helpers import make_tiny_bert, tiny_args
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from safetensors.torch import load_file

from bayesian_hf import training
from bayesian_hf.cli import main as cli_main

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

HELPER = str(HERE / "_train_helpers.py")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory, minilm_path):
    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), minilm_path)


def _env(**extra: str) -> dict[str, str]:
    # the helper script imports tests/tiny_models.py: the subprocess gets the pytest `pythonpath` folders
    python_path = os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
               PYTHONPATH=python_path)
    env.pop("BHF_TEST_DUMP_DIR", None)
    env.pop("BHF_TEST_STEP_SLEEP", None)
    env.update(extra)
    return env


def _frame(n: int, seed: int, labels=("bad", "good")) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ys = [labels[i % len(labels)] for i in range(n)]
    rng.shuffle(ys)
    words = {"good": "great lovely superb", "bad": "awful bland dreadful"}
    texts = [
        f"Review {i}. The food was {words.get(str(y), 'fine so-so okay').split()[i % 3]}! We sat by the window."
        for i, y in enumerate(ys)
    ]
    return pd.DataFrame({"review": texts, "rating": ys, "extra": np.arange(n)})


def _write(df: pd.DataFrame, path: Path) -> str:
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    elif path.suffix == ".jsonl":
        df.to_json(path, orient="records", lines=True)
    else:
        df.to_parquet(path, index=False)
    return str(path)


def _check_output(out: Path, label_names: list[str]) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    assert (out / "model.safetensors").exists()
    assert not list(out.glob("*.bin")) and not list(out.glob("pytorch_model*"))  # safetensors + JSON only
    assert (out / "training_args.json").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "bayesian-expectation"
    assert [config["id2label"][str(i)] for i in range(len(label_names))] == label_names
    for metrics in summary["splits"].values():
        for key in ("accuracy", "f1", "nll", "brier", "ece", "adaptive_ece", "aurc", "mean_epistemic"):
            assert key in metrics
    return summary


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_files_through_the_training_entry_point(tmp_path, tiny_bert, suffix):
    train = _write(_frame(40, 0), tmp_path / f"train{suffix}")
    test = _write(_frame(12, 1), tmp_path / f"test{suffix}")
    out = tmp_path / "out"
    run = training.main(
        tiny_args(tiny_bert, out, "--train_file", train, "--test_file", test, "--text_column", "review",
                  "--label_column", "rating", "--embedded", "false", "--validation_split", "0.25",
                  "--eval_splits", "validation", "test")
    )
    summary = _check_output(out, ["bad", "good"])
    assert set(summary["splits"]) == {"validation", "test"}
    assert summary["splits"]["validation"]["n"] == 10 and summary["splits"]["test"]["n"] == 12
    assert run.label2id == {"bad": 0, "good": 1} and run.model.config.label2id == {"bad": 0, "good": 1}
    assert summary["global_step"] == 3


def test_in_memory_datasetdict_and_bayesian_checkpoint_start(tmp_path, tiny_bert):
    features = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "neu", "pos"])})
    def split(n, seed):
        frame = _frame(n, seed, labels=(0, 1, 2))
        return Dataset.from_dict({"text": list(frame["review"]), "label": list(frame["rating"])}, features=features)
    dsd = DatasetDict({"train": split(36, 0), "validation": split(12, 1), "test": split(12, 2)})
    out = tmp_path / "first"
    run = training.main(tiny_args(tiny_bert, out, "--embedded", "false", "--eval_splits", "test",
                                  "--eval_strategy", "steps", "--eval_steps", "2"), dataset=dsd)
    _check_output(out, ["neg", "neu", "pos"])
    assert run.model.config.num_labels == 3
    assert any("eval_nll" in entry for entry in run.trainer.state.log_history)
    # the trained Bayesian checkpoint is detected (model_type) and loaded with from_pretrained, not converted
    again = training.main(tiny_args(str(out), tmp_path / "second", "--embedded", "false", "--eval_splits", "test",
                                    "--num_orderings", "3"), dataset=dsd)
    assert again.model.config.num_orderings == 3 and again.model.config.id2label == run.model.config.id2label
    with pytest.raises(ValueError, match="bayesian_layers"):
        training.main(tiny_args(str(out), tmp_path / "third", "--embedded", "false", "--bayesian_layers", "1"),
                      dataset=dsd)


def test_label_checks_surface_as_clear_errors(tmp_path, tiny_bert, capsys):
    train = _write(_frame(30, 0), tmp_path / "train.csv")
    unseen = _write(_frame(12, 1, labels=("bad", "good", "meh")), tmp_path / "unseen.csv")
    one_class = _write(_frame(12, 2, labels=("good",)), tmp_path / "one.csv")
    base = ["--train_file", train, "--text_column", "review", "--label_column", "rating", "--embedded", "false"]
    with pytest.raises(ValueError, match=r"not seen in train: \['meh'\]"):
        training.main(tiny_args(tiny_bert, tmp_path / "a", *base, "--test_file", unseen))
    # through the command line: exit status 2 and the message on stderr
    code = cli_main(["train", *tiny_args(tiny_bert, tmp_path / "b", *base, "--test_file", one_class)])
    assert code == 2
    assert "only 1 class(es)" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no column"):
        training.main(tiny_args(tiny_bert, tmp_path / "c", "--train_file", train, "--embedded", "false"))


def test_bf16_on_cpu_trains(tmp_path, tiny_bert):
    run = training.main(tiny_args(tiny_bert, tmp_path / "bf16", "--bf16", "--eval_splits", "test"))
    assert run.trainer.args.bf16
    losses = [e["loss"] for e in run.trainer.state.log_history if "loss" in e]
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert np.isfinite(run.summary["splits"]["test"]["nll"])


def test_fp16_on_cpu_is_refused(tmp_path, tiny_bert, capsys):
    with pytest.raises(ValueError, match="fp16=True .*on CPU is refused"):
        training.main(tiny_args(tiny_bert, tmp_path / "fp16", "--fp16"))
    assert cli_main(["train", *tiny_args(tiny_bert, tmp_path / "fp16b", "--fp16")]) == 2
    assert "--bf16 --use_cpu" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 autocast needs a CUDA GPU")
def test_fp16_on_cuda_trains(tmp_path, tiny_bert):
    args = [a for a in tiny_args(tiny_bert, tmp_path / "fp16", "--fp16", "--eval_splits", "test") if a != "--use_cpu"]
    run = training.main(args)
    assert run.trainer.args.fp16 and run.trainer.args.device.type == "cuda"
    losses = [e["loss"] for e in run.trainer.state.log_history if "loss" in e]
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert np.isfinite(run.summary["splits"]["test"]["nll"])


def test_training_logs_uncertainty_and_anneals_mdl_beta(tmp_path, tiny_bert):
    run = training.main(tiny_args(tiny_bert, tmp_path / "logs", "--mdl_beta", "0.2", "--mdl_anneal_steps", "2",
                                  "--report_to", "tensorboard", "--eval_splits", "test", "ood"))
    logs = [e for e in run.trainer.state.log_history if "loss" in e]
    assert [e["mdl_beta"] for e in logs] == pytest.approx([0.0, 0.1, 0.2])  # the beta each step trained with
    for entry in logs:
        assert entry["train_total"] == pytest.approx(entry["train_epistemic"] + entry["train_aleatoric"], rel=1e-4)
        assert entry["train_order_dispersion"] >= 0
    assert run.model.mdl_step >= 2
    assert list((tmp_path / "logs" / "runs").rglob("events.out.tfevents*"))  # TensorBoard
    ood = run.summary["ood_detection"]
    assert ood["ood_in_distribution_split"] == "test" and 0 <= ood["ood_auroc_total"] <= 1
    assert set(run.summary["truncated_fraction"]) == {"train", "validation", "test", "ood"}
    # predictions come by name in a fixed order, with or without labels
    unlabelled = run.trainer.predict(run.datasets["test"].remove_columns("label"))
    assert unlabelled.label_ids is None and len(unlabelled.predictions) == len(training.PREDICTION_KEYS)
    named = training.split_predictions(unlabelled.predictions)
    np.testing.assert_allclose(named["total"], named["epistemic"] + named["aleatoric"], rtol=1e-4, atol=1e-6)
    labelled = run.trainer.predict(run.datasets["test"])
    np.testing.assert_allclose(labelled.predictions[0], unlabelled.predictions[0], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------
# distributed: real 2-process DDP on CPU
# ---------------------------------------------------------------------------------------------------------


def _loss_history(out: Path) -> list[float]:
    state = json.loads((out / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


@pytest.mark.slow
def test_ddp_two_processes_matches_single_process(tmp_path, tiny_bert):
    """torchrun --nproc_per_node 2 (gloo): parameters identical on both ranks, and the logged loss and final
    parameters equal a single process run on the same global batch.

    Determinism: dropout 0, one ordering of one unit (unit_segmentation none, k=1), so nothing random remains,
    and the global batch (2 x 8) is the whole 16-example train split, so every step sees the same examples in
    both runs whatever the sampler order. Left over: float summation order and per-rank padding, hence 1e-5.
    Without `accepts_loss_kwargs = False` Trainer would multiply the DDP loss by the world size (2x)."""
    common = ("--embedded_train_size", "16", "--embedded_validation_size", "0", "--validation_split", "0",
              "--embedded_test_size", "16", "--eval_splits", "test", "--unit_segmentation", "none",
              "--num_train_orderings", "1", "--num_orderings", "1", "--hidden_dropout_prob", "0",
              "--attention_probs_dropout_prob", "0", "--max_steps", "4", "--learning_rate", "3e-3")
    ddp_out, single_out = tmp_path / "ddp", tmp_path / "single"
    ddp_dump, single_dump = tmp_path / "ddp_dump", tmp_path / "single_dump"
    ddp_dump.mkdir()
    single_dump.mkdir()
    ddp = bounded_run.popen(  # its own process group: a timeout below kills the launcher and both ranks
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", HELPER,
         *tiny_args(tiny_bert, ddp_out, *common, "--per_device_train_batch_size", "8")],
        env=_env(BHF_TEST_DUMP_DIR=str(ddp_dump)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    single = bounded_run.run(
        [sys.executable, HELPER, *tiny_args(tiny_bert, single_out, *common, "--per_device_train_batch_size", "16")],
        env=_env(BHF_TEST_DUMP_DIR=str(single_dump)), timeout=300,
    )
    ddp_log = bounded_run.communicate(ddp, timeout=300)[0]
    assert single.returncode == 0, single.stdout[-3000:] + single.stderr[-3000:]
    assert ddp.returncode == 0, ddp_log[-5000:]

    rank0, rank1 = (load_file(str(ddp_dump / f"rank{r}.safetensors")) for r in (0, 1))
    reference = load_file(str(single_dump / "rank0.safetensors"))
    initial = training.load_model_and_tokenizer(
        training.ModelArguments(model_name_or_path=tiny_bert), {"0": 0, "1": 1}
    )[0].state_dict()
    unchanged = []
    for name, tensor in rank0.items():
        assert torch.equal(tensor, rank1[name]), f"{name} differs across ranks"
        assert torch.allclose(tensor, reference[name], atol=1e-5, rtol=1e-4), f"{name}: DDP != single process"
        if not name.startswith("posterior.") and torch.allclose(tensor, initial[name].to(tensor.dtype)):
            unchanged.append(name)  # (posterior.* are buffers fitted after training, not trained parameters)
    # every parameter was trained (DDP ran without find_unused_parameters), except the attention key biases,
    # whose gradient is exactly zero in any BERT (softmax is invariant to a per-query constant q . b_k)
    assert all(name.endswith("attention.self.key.bias") for name in unchanged), unchanged

    ddp_losses, single_losses = _loss_history(ddp_out), _loss_history(single_out)
    assert len(ddp_losses) == len(single_losses) == 4
    np.testing.assert_allclose(ddp_losses, single_losses, rtol=1e-5)
    summary = json.loads((ddp_out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["splits"]["test"]["n"] == 16


# ---------------------------------------------------------------------------------------------------------
# checkpoints: kill mid-run, resume, same weights as an uninterrupted run
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_kill_and_resume_matches_uninterrupted_run(tmp_path, tiny_bert):
    """A run killed (SIGKILL) after its step-4 checkpoint and resumed with --resume_from_checkpoint ends with
    the weights of an uninterrupted run: the checkpoint restores model, optimizer, scheduler and RNG, and the
    training orderings are seeded by the step. Dropout and k=2 sampled orderings of sentence units are on."""
    steps = ("--max_steps", "8", "--save_strategy", "steps", "--save_steps", "2", "--num_train_orderings", "2",
             "--hidden_dropout_prob", "0.1", "--lr_scheduler_type", "linear", "--warmup_steps", "2",
             "--eval_splits", "test")
    killed_out, full_out = tmp_path / "killed", tmp_path / "full"
    proc = subprocess.Popen([sys.executable, HELPER, *tiny_args(tiny_bert, killed_out, *steps)],
                            env=_env(BHF_TEST_STEP_SLEEP="0.5"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    full = subprocess.Popen([sys.executable, HELPER, *tiny_args(tiny_bert, full_out, *steps)], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    marker = killed_out / "checkpoint-4" / "trainer_state.json"
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "no checkpoint-4 in time"
        time.sleep(0.05)
    time.sleep(0.2)  # let the checkpoint files be written completely (trainer_state.json is written last)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (killed_out / "model.safetensors").exists() and not (killed_out / "checkpoint-8").exists()
    full_log = full.communicate(timeout=300)[0]
    assert full.returncode == 0, full_log[-3000:]

    # resume from the last checkpoint ("last" = transformers' get_last_checkpoint)
    resumed = training.main(tiny_args(tiny_bert, killed_out, *steps, "--resume_from_checkpoint", "last"))
    last = killed_out / "checkpoint-8"
    assert resumed.trainer.state.global_step == 8 and last.exists()
    for name in ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"):
        assert (last / name).exists(), name
    resumed_weights = load_file(str(killed_out / "model.safetensors"))
    full_weights = load_file(str(full_out / "model.safetensors"))
    assert resumed_weights.keys() == full_weights.keys()
    for name, tensor in full_weights.items():
        if name in ("posterior.feature_basis", "posterior.class_basis"):
            continue  # eigenvectors of (near-)equal eigenvalues are not unique: compared as the matrices below
        rtol = 1e-3 if name.startswith("posterior.") else 1e-5  # fitted from features that agree to ~1e-6
        assert torch.allclose(resumed_weights[name], tensor, atol=1e-6, rtol=rtol), name

    def moment(weights, which):
        basis, values = weights[f"posterior.{which}_basis"].double(), weights[f"posterior.{which}_eigenvalues"].double()
        return basis @ torch.diag(values) @ basis.T

    for which in ("feature", "class"):
        torch.testing.assert_close(moment(resumed_weights, which), moment(full_weights, which), atol=1e-5, rtol=1e-4)
    full_losses = _loss_history(full_out)
    resumed_losses = [e["loss"] for e in resumed.trainer.state.log_history if "loss" in e]
    np.testing.assert_allclose(resumed_losses[-4:], full_losses[-4:], rtol=1e-5)
