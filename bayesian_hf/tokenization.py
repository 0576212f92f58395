"""Text -> exchangeable units: sentence splitting, tokenisation with unit ids, and unit ids derived from token ids.

A *unit* is a contiguous token span (a sentence, a ``[SEP]``-ended segment, an evidence passage) that may be
reordered without changing the label in expectation. ``unit_ids`` is a ``(B, S)`` integer tensor: 0 for tokens
that never move ([CLS], the final [SEP] of sentence segmentation, padding), ``1..m`` for the unit a token belongs to.
How units are reordered is :mod:`bayesian_hf.orderings`' job.

This file only imports torch and the standard library: it is copied next to the weights for
``trust_remote_code`` loading.
"""

from __future__ import annotations

import bisect
import re
from typing import Any, Sequence

import torch

from .configuration_bayesian_expectation import UNIT_SEGMENTATIONS

_SENTENCE_END = re.compile(r"[.!?\u2026]+[\"'\u201d\u2019)\]]*(?=\s)")


def num_units(unit_ids: torch.Tensor) -> torch.Tensor:
    """Number of units per example, ``(B,)`` (the largest unit id; units are numbered from 1)."""
    return unit_ids.amax(dim=-1).clamp(min=0)


def validate_unit_ids(unit_ids: torch.Tensor, input_shape: torch.Size) -> None:
    """Raise ``ValueError`` if ``unit_ids`` cannot describe units of an input of ``input_shape``."""
    if tuple(unit_ids.shape) != tuple(input_shape):
        raise ValueError(
            f"unit_ids has shape {tuple(unit_ids.shape)} but input_ids has shape {tuple(input_shape)}; "
            "they must match (one unit id per token)"
        )
    if unit_ids.dtype.is_floating_point or unit_ids.dtype == torch.bool:
        raise ValueError(f"unit_ids must be an integer tensor, got {unit_ids.dtype}")
    if unit_ids.numel() and int(unit_ids.min()) < 0:
        raise ValueError("unit_ids must be >= 0 (0 = token never moves, 1..m = unit index)")


# ----------------------------------------------------------------------------------------------------------
# Units from token ids (used by the model when the caller gives no unit_ids)
# ----------------------------------------------------------------------------------------------------------


def unit_ids_from_input_ids(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    *,
    segmentation: str,
    cls_token_id: int | None,
    sep_token_id: int | None,
    pad_token_id: int | None,
    sentence_end_token_ids: Sequence[int] = (),
) -> torch.Tensor:
    """Derive ``unit_ids`` from token ids alone, vectorised.

    ``"sentence"``: a unit ends after a run of sentence-final punctuation tokens. ``"sep"``: a unit ends with
    (and includes) a ``[SEP]`` token, so every unit carries its separator. ``"none"``: all content tokens form
    unit 1. [CLS], padding and (for ``"sentence"``/``"none"``) [SEP] are 0. This is the token-level fallback;
    :func:`tokenize_with_units` splits sentences on the text with character offsets and is more precise.
    """
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    valid = attention_mask.bool()
    if pad_token_id is not None:
        valid = valid & (input_ids != pad_token_id)
    is_cls = input_ids == cls_token_id if cls_token_id is not None else torch.zeros_like(valid)
    is_sep = input_ids == sep_token_id if sep_token_id is not None else torch.zeros_like(valid)
    if segmentation == "sep":
        content = valid & ~is_cls
        # a [SEP] closes its unit: unit index = 1 + number of [SEP]s strictly before the token
        seps_before = torch.cumsum(is_sep.long(), dim=-1) - is_sep.long()
        unit = torch.where(content, seps_before + 1, torch.zeros_like(seps_before))
        return _renumber(unit)
    content = valid & ~is_cls & ~is_sep
    if segmentation == "none":
        return content.long()
    if segmentation != "sentence":
        raise ValueError(f"unknown segmentation {segmentation!r}; expected 'sentence', 'sep' or 'none'")
    if len(sentence_end_token_ids):
        ends = torch.isin(input_ids, torch.as_tensor(list(sentence_end_token_ids), device=input_ids.device))
    else:
        ends = torch.zeros_like(content)
    ends = ends & content
    next_is_end = torch.zeros_like(ends)
    next_is_end[:, :-1] = ends[:, 1:]
    boundary = (ends & ~next_is_end) | is_sep  # a run of punctuation, or a [SEP], closes the sentence
    started = torch.cumsum(boundary.long(), dim=-1) - boundary.long()
    unit = torch.where(content, started + 1, torch.zeros_like(started))
    return _renumber(unit)


def _renumber(unit: torch.Tensor) -> torch.Tensor:
    """Make unit ids consecutive 1..m per row (gaps appear when a unit has no token left)."""
    if unit.numel() == 0:
        return unit
    m = int(unit.max())
    if m == 0:
        return unit
    present = torch.zeros(unit.shape[0], m + 1, dtype=torch.long, device=unit.device)
    present.scatter_(1, unit, 1)
    present[:, 0] = 0
    new_index = torch.cumsum(present, dim=-1)
    return torch.where(unit > 0, new_index.gather(1, unit), torch.zeros_like(unit))


# ----------------------------------------------------------------------------------------------------------
# Units from text
# ----------------------------------------------------------------------------------------------------------


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of ``text`` (split after ``.``, ``!``, ``?`` or ``…`` + whitespace)."""
    spans, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        spans.append((start, match.end()))
        start = match.end()
    if text[start:].strip():
        spans.append((start, len(text)))
    return spans


def tokenize_with_units(
    tokenizer: Any,
    texts: str | Sequence[str] | Sequence[Sequence[str]],
    *,
    max_length: int | None = None,
    segmentation: str = "sentence",
    padding: bool | str = True,
    return_tensors: str | None = "pt",
) -> dict[str, Any]:
    """Tokenize texts and mark their exchangeable units.

    Args:
        tokenizer: a *fast* tokenizer (character offsets are needed to map units to tokens).
        texts: a string, a list of strings, or a list of lists of strings (each inner string is one
            caller-given unit: an evidence passage, a few-shot example...).
        max_length: truncation length (defaults to the tokenizer's ``model_max_length``).
        segmentation: ``"sentence"``, ``"sep"`` (split on the tokenizer's sep token, each unit keeps its
            trailing [SEP]) or ``"none"`` (one unit). Ignored for pre-split units.

    Returns:
        ``input_ids``, ``attention_mask``, ``token_type_ids``, ``unit_ids`` (special tokens and padding get
        unit 0) and ``truncated`` (whether ``max_length`` cut the text), as tensors when ``return_tensors="pt"``.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("tokenize_with_units needs a fast tokenizer (it maps units to tokens by offsets)")
    if segmentation not in UNIT_SEGMENTATIONS:
        raise ValueError(f"segmentation must be one of {UNIT_SEGMENTATIONS}, got {segmentation!r}")
    if isinstance(texts, str):
        texts = [texts]
    if len(texts) == 0:
        raise ValueError("texts is empty")
    sep_token = tokenizer.sep_token or "[SEP]"
    joined: list[str] = []
    spans: list[list[tuple[int, int]]] = []
    for i, item in enumerate(texts):
        if isinstance(item, str):
            if not item.strip():
                raise ValueError(f"text {i} is empty or whitespace")
            if segmentation == "sep":
                parts = [p.strip() for p in item.split(sep_token)]
                text, unit_spans = _join_units([p for p in parts if p], f" {sep_token} ")
            else:
                text = item
                unit_spans = split_sentences(item) if segmentation == "sentence" else [(0, len(item))]
        else:
            parts = [str(p) for p in item]
            if not parts or not any(p.strip() for p in parts):
                raise ValueError(f"text {i} has no non-empty unit")
            glue = f" {sep_token} " if segmentation == "sep" else " "
            text, unit_spans = _join_units([p for p in parts if p.strip()], glue)
        joined.append(text)
        spans.append(unit_spans)

    max_length = max_length or min(int(getattr(tokenizer, "model_max_length", 512)), 512)
    enc = tokenizer(
        joined,
        padding=padding,
        truncation=True,
        max_length=max_length,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
        return_token_type_ids=True,
    )
    sep_id = tokenizer.sep_token_id
    all_units, truncated = [], []
    for row, (text, unit_spans) in enumerate(zip(joined, spans)):
        offsets = enc["offset_mapping"][row]
        special = enc["special_tokens_mask"][row]
        ids = enc["input_ids"][row]
        starts = [s for s, _ in unit_spans]
        units: list[int] = []
        last_end = 0
        for (start, end), is_special, token_id in zip(offsets, special, ids):
            if is_special or start == end:
                # in "sep" mode a [SEP] closes (and belongs to) the unit before it; other special tokens stay fixed
                closes_unit = segmentation == "sep" and token_id == sep_id and units and units[-1] > 0
                units.append(units[-1] if closes_unit else 0)
                continue
            current = bisect.bisect_right(starts, start)
            units.append(current)
            last_end = max(last_end, end)
        all_units.append(units)
        truncated.append(last_end < len(text.rstrip()))
    unit_ids = [_renumber_list(u) for u in all_units]
    out = {
        "input_ids": enc["input_ids"],
        "attention_mask": enc["attention_mask"],
        "token_type_ids": enc["token_type_ids"],
        "unit_ids": unit_ids,
        "truncated": truncated,
    }
    if return_tensors == "pt":
        out = {k: torch.tensor(v) for k, v in out.items()}
    elif return_tensors is not None:
        raise ValueError(f"return_tensors must be 'pt' or None, got {return_tensors!r}")
    return out


def _join_units(parts: Sequence[str], glue: str) -> tuple[str, list[tuple[int, int]]]:
    text, spans = "", []
    for j, part in enumerate(parts):
        start = len(text)
        text += part
        end = len(text)
        if j < len(parts) - 1:
            text += glue
            end = len(text)  # the separator belongs to the unit before it
        spans.append((start, end))
    return text, spans


def _renumber_list(units: list[int]) -> list[int]:
    mapping: dict[int, int] = {}
    for u in units:
        if u > 0 and u not in mapping:
            mapping[u] = len(mapping) + 1
    return [mapping.get(u, 0) for u in units]
