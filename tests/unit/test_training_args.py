"""Argument parsing, recipes, checks, collator and metrics of the bayesian_hf.training package (no training here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from transformers import EvalPrediction, TrainingArguments

from bayesian_hf import training
from bayesian_hf.training import (
    PREDICTION_KEYS,
    UnitDataCollator,
    check_training_args,
    load_yaml_config,
    make_bayesian_compute_metrics,
    parse_args,
    split_predictions,
)

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ["quickstart", "imdb-minilm", "imdb-bert-base"]


def _write_yaml(tmp_path, values: dict) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_yaml_gives_defaults_and_flags_override(tmp_path):
    config = _write_yaml(
        tmp_path,
        {
            "bayesian_layers": [0, 1],
            "num_train_orderings": 3,
            "embedded": True,
            "max_steps": 100,
            "learning_rate": 3.0e-5,
            "output_dir": str(tmp_path / "from_yaml"),
            "report_to": "none",
            "use_cpu": True,
        },
    )
    model_args, data_args, args = parse_args(
        ["--config", config, "--max_steps", "20", "--output_dir", str(tmp_path / "out"), "--bayesian_layers", "1"]
    )
    assert args.max_steps == 20 and args.output_dir == str(tmp_path / "out")  # overridden
    assert args.learning_rate == pytest.approx(3e-5)  # from the YAML
    assert model_args.bayesian_layers == [1] and model_args.num_train_orderings == 3
    assert data_args.embedded is True
    # a boolean from the YAML can be switched off on the command line
    _, data_args, _ = parse_args(["--config", config, "--embedded", "false"])
    assert data_args.embedded is False


def test_flags_without_config_and_defaults(tmp_path):
    model_args, data_args, args = parse_args(["--train_file", "x.csv", "--output_dir", str(tmp_path), "--use_cpu"])
    assert model_args.model_name_or_path is None and model_args.bayesian_layers is None
    assert data_args.train_file == "x.csv" and data_args.validation_split == pytest.approx(0.1)
    assert data_args.eval_splits == ["validation", "test", "ood"]


def test_unknown_yaml_key_is_a_clear_error(tmp_path):
    config = _write_yaml(tmp_path, {"learning_rte": 1e-4, "max_steps": 3})
    with pytest.raises(ValueError, match=r"unknown config key\(s\): 'learning_rte' \(did you mean 'learning_rate'\?\)"):
        parse_args(["--config", config])
    bad = tmp_path / "list.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="mapping"):
        parse_args(["--config", str(bad)])
    with pytest.raises(FileNotFoundError):
        parse_args(["--config", str(tmp_path / "missing.yaml")])


def test_unknown_flag_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"unknown argument\(s\): '--no_such_flag', '1'"):
        parse_args(["--output_dir", str(tmp_path), "--no_such_flag", "1"])
    with pytest.raises(ValueError, match="did you mean '--max_steps'"):
        parse_args(["--output_dir", str(tmp_path), "--max_stesp", "3"])


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipes_parse(recipe):
    path = ROOT / "configs" / f"{recipe}.yaml"
    load_yaml_config(path)  # every key is known
    model_args, data_args, args = parse_args(["--config", str(path), "--use_cpu", "--report_to", "none"])
    assert args.metric_for_best_model == "nll" and args.greater_is_better is False
    assert args.load_best_model_at_end
    if recipe == "quickstart":
        assert data_args.embedded and model_args.model_name_or_path is None
        assert model_args.num_train_orderings == 4
    else:
        assert data_args.dataset_name == "imdb" and not data_args.embedded
    if recipe == "imdb-bert-base":
        assert model_args.model_name_or_path == "bert-base-uncased"


def test_greater_is_better_follows_the_metric_unless_given(tmp_path):
    out = ["--output_dir", str(tmp_path), "--use_cpu"]
    for metric, expected in [("nll", False), ("eval_ece", False), ("accuracy", True), ("auroc_error", True)]:
        _, _, args = parse_args(out + ["--metric_for_best_model", metric])
        assert args.greater_is_better is expected, metric
    _, _, args = parse_args(out + ["--metric_for_best_model", "nll", "--greater_is_better", "true"])
    assert args.greater_is_better is True


def test_fp16_on_cpu_is_refused(tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), fp16=True, use_cpu=True, report_to="none")
    with pytest.raises(ValueError, match="fp16=True .*on CPU is refused.*--bf16 --use_cpu"):
        check_training_args(args)


def test_bf16_on_cpu_needs_use_cpu_with_a_hint(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="add --use_cpu"):
        parse_args(["--output_dir", str(tmp_path), "--bf16"])
    _, _, args = parse_args(["--output_dir", str(tmp_path), "--bf16", "--use_cpu"])
    assert check_training_args(args).bf16


def test_check_training_args_defaults(tmp_path):
    args = check_training_args(TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none"))
    assert args.ddp_find_unused_parameters is False  # every parameter receives a gradient
    assert args.remove_unused_columns is False  # the collator needs the raw text
    assert args.label_names == ["labels"]
    explicit = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, ddp_find_unused_parameters=True)
    assert check_training_args(explicit).ddp_find_unused_parameters is True


def test_accelerate_configs_load():
    from accelerate.commands.config.config_args import load_config_from_file

    ddp = load_config_from_file(str(ROOT / "configs" / "accelerate" / "ddp.yaml"))
    assert str(ddp.distributed_type).endswith("MULTI_GPU")
    fsdp = load_config_from_file(str(ROOT / "configs" / "accelerate" / "fsdp.yaml"))
    assert str(fsdp.distributed_type).endswith("FSDP")
    layers = fsdp.fsdp_config["fsdp_transformer_layer_cls_to_wrap"]
    assert "BayesianExpectationLayer" in layers and "BertStyleLayer" in layers


def test_collator_tokenizes_text_with_units_and_ignores_other_columns(minilm_tokenizer):
    collator = UnitDataCollator(minilm_tokenizer, max_length=12, segmentation="sentence")
    features = [
        {"text": "Great food. Slow service! Would come back.", "label": 1, "domain": "x", "noise_rate": 0.1},
        {"text": "Awful.", "label": 0, "domain": "y", "noise_rate": 0.0},
    ]
    batch = collator(features)
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "unit_ids", "labels"}
    assert batch["labels"].tolist() == [1, 0]
    assert batch["unit_ids"][0].max() == 3 and batch["unit_ids"][1].max() == 1
    assert collator.num_seen == 2 and collator.num_truncated == 0
    collator(features[:1] * 2)
    short = UnitDataCollator(minilm_tokenizer, max_length=6)
    short(features)
    assert short.num_truncated == 1
    plain = UnitDataCollator(minilm_tokenizer, return_unit_ids=False)
    assert "unit_ids" not in plain(features)
    with pytest.raises(ValueError, match="'text' column"):
        collator([{"sentence": "x", "label": 0}])


def _bayesian_predictions(n=60, seed=0):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet([1.0, 1.0], size=n)
    labels = (rng.random(n) < probs[:, 1]).astype(np.int64)
    epistemic = rng.random(n) * 0.1
    total = -(probs * np.log(probs)).sum(1)
    arrays = {
        "logits": np.log(probs),
        "probs": probs,
        "epistemic": epistemic,
        "aleatoric": total - epistemic,
        "total": total,
        "order_dispersion": rng.random(n) * 1e-3,
        "num_units": rng.integers(1, 6, n).astype(np.float64),
    }
    return tuple(arrays[k] for k in PREDICTION_KEYS), labels


def test_compute_metrics_on_bayesian_outputs():
    preds, labels = _bayesian_predictions()
    metrics = make_bayesian_compute_metrics()(EvalPrediction(predictions=preds, label_ids=labels))
    for key in ("accuracy", "f1", "nll", "brier", "ece", "adaptive_ece", "auroc_error", "aurc",
                "mean_epistemic", "mean_aleatoric", "mean_total", "mean_order_dispersion", "mean_num_units"):
        assert np.isfinite(metrics[key]), key
    probs = preds[1]
    assert metrics["accuracy"] == pytest.approx(np.mean(probs.argmax(1) == labels))
    assert metrics["nll"] == pytest.approx(-np.mean(np.log(probs[np.arange(len(labels)), labels])))
    assert metrics["mean_epistemic"] == pytest.approx(preds[2].mean())
    # error detection is scored by total uncertainty (the entropy), which for 2 classes ranks like 1 - max prob
    from bayesian_hf.metrics import error_detection_auroc

    assert metrics["auroc_error"] == pytest.approx(error_detection_auroc(preds[4], probs.argmax(1) == labels))
    # a calibrated_probs array appended by a model with a calibrator gets its own metrics
    calibrated = make_bayesian_compute_metrics()(EvalPrediction(predictions=preds + (probs,), label_ids=labels))
    assert calibrated["calibrated_nll"] == pytest.approx(metrics["nll"])


def test_compute_metrics_on_plain_logits_and_bad_inputs():
    preds, labels = _bayesian_predictions()
    metrics = make_bayesian_compute_metrics()(EvalPrediction(predictions=preds[0] + 3.0, label_ids=labels))
    assert metrics["accuracy"] == pytest.approx(np.mean(preds[1].argmax(1) == labels))
    assert "mean_epistemic" not in metrics and metrics["mean_total"] > 0
    with pytest.raises(ValueError, match="expected the arrays"):
        split_predictions(preds[:3])
    with pytest.raises(ValueError, match="entries"):
        split_predictions(preds[:2] + (preds[2][:5],) + preds[3:])


def test_cli_train_help_and_errors(capsys, tmp_path):
    from bayesian_hf.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--num_train_orderings" in out and "--config" in out and "--per_device_train_batch_size" in out
    config = _write_yaml(tmp_path, {"not_a_field": 1})
    assert main(["train", "--config", config]) == 2
    assert "unknown config key" in capsys.readouterr().err
    assert main(["train", "--output_dir", str(tmp_path), "--use_cpu", "--report_to", "none"]) == 2
    assert "no training data" in capsys.readouterr().err


def test_quickstart_config_is_found():
    assert training.quickstart_config_path() == ROOT / "configs" / "quickstart.yaml"
