"""Orderings of the exchangeable units (the units themselves come from :mod:`bayesian_hf.tokenization`, whose
names are re-exported here).

An ordering is applied through **position ids**, never by moving tokens: the units move as blocks into the
slots the units occupy, order inside a unit is kept, fixed tokens keep their positions. Running BERT with those
position ids is the same computation as running it on the physically reordered tokens and un-permuting the
outputs, because self-attention is permutation-equivariant once positions are part of the input.

This file only imports torch and the standard library: it is copied next to the weights for
``trust_remote_code`` loading.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import torch

from .tokenization import (  # noqa: F401  (re-exported: the text -> units step, public since the first release)
    num_units,
    split_sentences,
    tokenize_with_units,
    unit_ids_from_input_ids,
    validate_unit_ids,
)

_MASK32 = 0xFFFFFFFF
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
