"""Tiny saved model folders for the reliability tests: a random 2-layer BERT (hidden 32) with the real MiniLM
WordPiece tokenizer, converted, given a fitted calibrator and conformal predictor, and saved with its tokenizer;
plus what a caller would observe from a folder (labels, probabilities, calibrated probabilities, sets)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tiny_models import make_tiny_bert  # noqa: E402

TEXTS = [
    "The pasta was superb. Service was painfully slow! We will still come back.",
    "Dreadful film. The plot made no sense.",
    "Lovely room with a view. The breakfast was cold.",
    "Fine.",
]
LABELS = ("negative", "positive")


def build_model(tokenizer: Any, workdir: str | os.PathLike, *, seed: int = 0, calibrated: bool = True) -> Any:
    """A converted tiny Bayesian model whose head gives spread-out probabilities, with a calibrator attached."""
    import numpy as np
    import torch

    from bayesian_hf import BayesianExpectationForSequenceClassification
    from bayesian_hf.calibration import ConformalPredictor, LoadedCalibration, TemperatureScaling

    bert = make_tiny_bert(Path(workdir) / f"bert-{seed}", tokenizer, seed=seed, labels=LABELS)
    model = BayesianExpectationForSequenceClassification.from_bert(bert, num_labels=2, hidden_dropout_prob=0.0,
                                                                   attention_probs_dropout_prob=0.0, num_orderings=2)
    torch.manual_seed(seed)
    with torch.no_grad():
        model.classifier.weight.normal_(0.0, 2.0)
    model.eval()
    if calibrated:
        rng = np.random.default_rng(seed)
        logits = rng.normal(size=(200, 2)) * 2
        labels = (logits[:, 1] + rng.normal(size=200) > logits[:, 0]).astype(int)
        calibrator = TemperatureScaling().fit(logits, labels)
        conformal = ConformalPredictor(alpha=0.2, score="lac").fit(calibrator.transform(logits), labels)
        model.set_calibration(LoadedCalibration(calibrator, conformal, {"fit_metrics": {}, "num_samples": 200}))
    return model


def save_folder(model: Any, tokenizer: Any, folder: str | os.PathLike) -> str:
    """``model.save_pretrained`` + ``tokenizer.save_pretrained`` into ``folder``."""
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def observe(folder: str | os.PathLike) -> dict[str, Any]:
    """Load ``folder`` the way the server does (model with calibration.json, checked tokenizer) and return what a
    caller sees for :data:`TEXTS`: label names, probabilities, calibrated probabilities, conformal sets."""
    import torch

    from bayesian_hf import BayesianExpectationForSequenceClassification, tokenize_with_units
    from bayesian_hf.folder_integrity import load_checked_tokenizer

    model = BayesianExpectationForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = load_checked_tokenizer(folder, model.config)
    enc = tokenize_with_units(tokenizer, TEXTS, max_length=64)
    enc.pop("truncated")
    with torch.no_grad():
        out = model(**enc)
    probs = out.probs.double().numpy()
    calibrated = None if out.calibrated_probs is None else out.calibrated_probs.double().numpy()
    sets = None
    if model.calibration is not None and model.calibration.conformal is not None:
        sets = model.calibration.conformal.predict_sets(calibrated)
    shown = calibrated if calibrated is not None else probs
    return {
        "labels": [model.config.id2label[int(i)] for i in shown.argmax(1)],
        "probs": probs.round(6).tolist(),
        "calibrated": None if calibrated is None else calibrated.round(6).tolist(),
        "sets": sets,
    }
