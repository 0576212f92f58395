"""The tiny models of the integration tests, in one place: a random 2-layer BERT with the real WordPiece
vocabulary (so `from_bert` and `tokenize_with_units` run on it) and a short training loop."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

TINY_BERT = dict(
    vocab_size=30522,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=128,
)


def make_tiny_bert(path: str | os.PathLike[str], tokenizer: Any, *, seed: int = 0,
                   labels: Sequence[str] | None = None) -> str:
    """Save a randomly initialised tiny ``BertForSequenceClassification`` and ``tokenizer`` (an instance or a
    path) into ``path``; ``labels`` names the classes (default ``LABEL_0, LABEL_1``)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    names = {}
    if labels is not None:
        names = {"id2label": dict(enumerate(labels)), "label2id": {n: i for i, n in enumerate(labels)}}
    BertForSequenceClassification(BertConfig(**TINY_BERT, num_labels=len(labels or (0, 1)), **names)).save_pretrained(path)
    if isinstance(tokenizer, (str, Path)):
        tokenizer = AutoTokenizer.from_pretrained(tokenizer)
    tokenizer.save_pretrained(path)
    return str(path)


def train_tiny(model: Any, tokenizer: Any, train: Any, *, steps: int, lr: float = 3e-3, batch_size: int = 16,
               max_length: int = 96, seed: int = 0) -> Any:
    """A few AdamW steps over ``train`` (a split with ``text``/``label``); returns the model in eval mode."""
    import torch

    from bayesian_hf import tokenize_with_units

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    torch.manual_seed(seed)
    model.train()
    for step in range(steps):
        start = (step * batch_size) % len(train)
        batch = train[start : start + batch_size]
        enc = tokenize_with_units(tokenizer, batch["text"], max_length=max_length)
        enc.pop("truncated")
        model(**enc, labels=torch.tensor(batch["label"])).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()
