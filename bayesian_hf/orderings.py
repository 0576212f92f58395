"""Exchangeable units and their orderings.

A *unit* is a contiguous token span (a sentence, a ``[SEP]``-ended segment, an evidence passage) that may be
reordered without changing the label in expectation. ``unit_ids`` is a ``(B, S)`` integer tensor: 0 for tokens
that never move ([CLS], the final [SEP] of sentence segmentation, padding), ``1..m`` for the unit a token belongs to.

An ordering is applied through **position ids**, never by moving tokens: the units move as blocks into the
slots the units occupy, order inside a unit is kept, fixed tokens keep their positions. Running BERT with those
position ids is the same computation as running it on the physically reordered tokens and un-permuting the
outputs, because self-attention is permutation-equivariant once positions are part of the input.

This file only imports torch and the standard library: it is copied next to the weights for
``trust_remote_code`` loading.
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import torch

from .configuration_bayesian_expectation import UNIT_SEGMENTATIONS

_MASK32 = 0xFFFFFFFF
_SENTENCE_END = re.compile(r"[.!?\u2026]+[\"'\u201d\u2019)\]]*(?=\s)")
MAX_ENUMERATED_UNITS = 7  # 7! = 5040 orderings; beyond that orderings are always sampled


@dataclass
class Orderings:
    """A set of k orderings per example.

    Attributes:
        permutations: ``(B, k, M)`` long; ``permutations[b, j, s]`` is the 0-based unit placed in slot ``s``.
        weights: ``(B, k)`` float summing to 1 over ``k``: ``1/k`` for sampled orderings, ``1/m!`` for exactly
            enumerated ones (slots beyond ``m!`` get weight 0, so the weighted mean is the exact expectation).
    """

    permutations: torch.Tensor
    weights: torch.Tensor

    @property
    def num_orderings(self) -> int:
        return self.permutations.shape[1]


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


# ----------------------------------------------------------------------------------------------------------
# Orderings
# ----------------------------------------------------------------------------------------------------------


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mix (lowbias32 family) in int64 arithmetic that never overflows."""
    x = x & _MASK32
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _MASK32
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _MASK32
    return (x >> 16) ^ x


def example_seeds(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, seed: int) -> torch.Tensor:
    """A 32-bit seed per example that depends only on its unmasked tokens and ``seed`` (not on the batch)."""
    positions = torch.arange(input_ids.shape[-1], device=input_ids.device)
    token_hash = _hash32(input_ids.long() * 1_000_003 + positions * 7919)
    if attention_mask is not None:
        token_hash = token_hash * attention_mask.long()
    return _hash32(token_hash.sum(-1) + int(seed) * 0x9E3779B1)


def _hashed_uniform(seeds: torch.Tensor, k: int, m: int) -> torch.Tensor:
    """Uniform [0, 1) numbers ``(B, k, m)`` from per-example seeds, independent of the batch shape."""
    j = torch.arange(k, device=seeds.device).view(1, k, 1)
    s = torch.arange(m, device=seeds.device).view(1, 1, m)
    h = _hash32(_hash32(seeds.view(-1, 1, 1) + _hash32(j + 1)) + s * 0x27D4EB2F)
    return h.double() / float(1 << 32)


@lru_cache(maxsize=16)
def _permutation_table(m: int) -> torch.Tensor:
    """All ``m!`` permutations of ``range(m)`` in lexicographic order (identity first)."""
    return torch.tensor(list(itertools.permutations(range(m))), dtype=torch.long).view(-1, m)


def effective_num_orderings(units: torch.Tensor, k: int) -> int:
    """Orderings actually needed: ``min(k, max_b m_b!)`` (a batch of short texts needs fewer than k)."""
    if units.numel() == 0:
        return 1
    m_max = int(units.max())
    if m_max > MAX_ENUMERATED_UNITS:
        return k
    return max(1, min(k, math.factorial(m_max)))


def sample_unit_permutations(
    units: torch.Tensor,
    k: int,
    *,
    max_units: int | None = None,
    generator: torch.Generator | None = None,
    seeds: torch.Tensor | None = None,
    identity_first: bool = False,
    enumerate_small: bool = True,
) -> Orderings:
    """Draw k orderings of the units of each example.

    When ``m! <= k`` all ``m!`` orderings are enumerated (exact expectation, weights ``1/m!``); otherwise k
    orderings are drawn uniformly and independently (weights ``1/k``), from ``generator`` or, when ``seeds``
    (one per example) is given, deterministically from the seeds.
    """
    if k < 1:
        raise ValueError(f"num_orderings must be >= 1, got {k}")
    batch = units.shape[0]
    device = units.device
    m_max = int(max_units if max_units is not None else (units.max() if units.numel() else 0))
    width = max(m_max, 1)
    if seeds is not None:
        keys = _hashed_uniform(seeds, k, width)
    else:
        keys = torch.rand(batch, k, width, generator=generator, dtype=torch.float64, device="cpu").to(device)
    slot = torch.arange(width, device=device)
    empty = slot.view(1, 1, -1) >= units.view(-1, 1, 1)
    keys = torch.where(empty, 2.0 + slot.double().view(1, 1, -1), keys)  # empty slots stay in place
    perms = keys.argsort(dim=-1)
    if identity_first:
        perms[:, 0] = slot
    weights = torch.full((batch, k), 1.0 / k, dtype=torch.float64, device=device)
    if enumerate_small:
        for m in range(0, min(m_max, MAX_ENUMERATED_UNITS) + 1):
            count = math.factorial(m)
            if count > k:
                break
            rows = units == m
            if not bool(rows.any()):
                continue
            table = slot.view(1, -1).repeat(k, 1)
            if m > 0:
                table[:count, :m] = _permutation_table(m).to(device)
            w = torch.zeros(k, dtype=torch.float64, device=device)
            w[:count] = 1.0 / count
            perms[rows] = table
            weights[rows] = w
    return Orderings(permutations=perms, weights=weights)


def permuted_position_ids(
    unit_ids: torch.Tensor, permutations: torch.Tensor, position_ids: torch.Tensor | None = None
) -> torch.Tensor:
    """Position ids ``(B, k, S)`` that realise each ordering.

    Every movable token (unit > 0) takes the position it would have if the units were physically reordered
    into the slots the units occupy; fixed tokens keep theirs. ``position_ids`` (B, S) are the positions of
    the observed order (default ``0..S-1``).
    """
    batch, seq = unit_ids.shape
    k, width = permutations.shape[1], permutations.shape[2]
    device = unit_ids.device
    pos = torch.arange(seq, device=device)
    movable = unit_ids > 0
    slot_of_unit = permutations.argsort(dim=-1)  # (B, k, M): slot of each unit
    unit_index = (unit_ids - 1).clamp(min=0, max=width - 1)
    slot = slot_of_unit.gather(2, unit_index.unsqueeze(1).expand(batch, k, seq))
    fixed_key = seq * (width + 1) + pos
    key_new = torch.where(movable.unsqueeze(1), slot * seq + pos, fixed_key)
    order_new = key_new.argsort(dim=-1)  # tokens in their new order
    order_old = torch.where(movable, pos, fixed_key).argsort(dim=-1)  # slots, ascending
    new_index = torch.empty_like(order_new).scatter_(2, order_new, order_old.unsqueeze(1).expand(batch, k, seq))
    if position_ids is None:
        return new_index
    position_ids = position_ids.expand(batch, seq)
    return position_ids.gather(1, new_index.reshape(batch, k * seq)).view(batch, k, seq)


def sample_orderings(
    unit_ids: torch.Tensor,
    k: int,
    generator: torch.Generator | None = None,
    *,
    seeds: torch.Tensor | None = None,
    identity_first: bool = False,
    position_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Position ids ``(B, k', S)`` and weights ``(B, k')`` for k orderings of the units of each example.

    ``k' = min(k, max_b m_b!)``: when every example has few units, all their orderings fit in fewer slots.
    """
    units = num_units(unit_ids)
    k_eff = effective_num_orderings(units, k)
    orderings = sample_unit_permutations(
        units, k_eff, generator=generator, seeds=seeds, identity_first=identity_first
    )
    return permuted_position_ids(unit_ids, orderings.permutations, position_ids), orderings.weights


def physically_reorder(
    tensor: torch.Tensor, unit_ids: torch.Tensor, permutation: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reorder the units of ONE example's tokens physically (reference implementation for tests/diagnostics).

    Returns the reordered tensor (along dim 0) and ``source_index`` such that ``reordered[i] = tensor[source_index[i]]``.
    """
    seq = unit_ids.shape[0]
    movable_pos = [i for i in range(seq) if int(unit_ids[i]) > 0]
    order = [i for u in permutation for i in range(seq) if int(unit_ids[i]) == u + 1]
    source = list(range(seq))
    for slot_pos, token in zip(movable_pos, order):
        source[slot_pos] = token
    source_index = torch.tensor(source, dtype=torch.long)
    return tensor[source_index], source_index
