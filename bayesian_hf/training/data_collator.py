"""The data collator: tokenizes the raw ``text`` of each batch with its exchangeable units."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..tokenization import tokenize_with_units


@dataclass
class UnitDataCollator:
    """Tokenizes the raw ``text`` of a batch with its exchangeable units; ignores every other column.

    Returns ``input_ids``, ``attention_mask``, ``token_type_ids``, ``unit_ids`` (unless ``return_unit_ids`` is
    False, e.g. for a plain BERT baseline) and ``labels`` (from ``label`` or ``labels`` when present). Counts the
    examples it has seen and how many ``max_length`` truncated (``num_seen``, ``num_truncated``).
    """

    tokenizer: Any
    max_length: int = 256
    segmentation: str = "sentence"
    return_unit_ids: bool = True
    num_seen: int = 0
    num_truncated: int = 0

    def __call__(self, features: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("empty batch")
        if "text" not in features[0]:
            raise ValueError(f"UnitDataCollator needs a 'text' column, got columns {sorted(features[0])}")
        texts = [f["text"] for f in features]
        batch = tokenize_with_units(self.tokenizer, texts, max_length=self.max_length, segmentation=self.segmentation)
        truncated = batch.pop("truncated")
        self.num_seen += len(texts)
        self.num_truncated += int(truncated.sum())
        if not self.return_unit_ids:
            batch.pop("unit_ids")
        key = "label" if "label" in features[0] else "labels" if "labels" in features[0] else None
        if key is not None:
            batch["labels"] = torch.tensor([int(f[key]) for f in features], dtype=torch.long)
        return batch
