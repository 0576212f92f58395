"""Units from text and ids, sampling/enumerating orderings, position ids."""

from __future__ import annotations

import math

import pytest
import torch

from bayesian_hf import tokenize_with_units
from bayesian_hf.orderings import (
    effective_num_orderings,
    example_seeds,
    permuted_position_ids,
    sample_orderings,
    sample_unit_permutations,
    split_sentences,
    unit_ids_from_input_ids,
)


def test_split_sentences_keeps_decimals_and_trailing_text():
    text = "It cost 3.5 dollars. Great value!  Would buy again? maybe"
    spans = [text[a:b].strip() for a, b in split_sentences(text)]
    assert spans == ["It cost 3.5 dollars.", "Great value!", "Would buy again?", "maybe"]


def test_tokenize_with_units_marks_sentences(minilm_tokenizer):
    enc = tokenize_with_units(minilm_tokenizer, ["Good food. Bad service! Fine.", "One sentence only"])
    ids, units = enc["input_ids"], enc["unit_ids"]
    assert set(enc) == {"input_ids", "attention_mask", "token_type_ids", "unit_ids", "truncated"}
    assert units.shape == ids.shape
    tok = minilm_tokenizer
    first = tok.convert_ids_to_tokens(ids[0])
    assert first[0] == "[CLS]" and units[0, 0] == 0
    by_unit = {u: [t for t, v in zip(first, units[0].tolist()) if v == u] for u in (1, 2, 3)}
    assert by_unit == {1: ["good", "food", "."], 2: ["bad", "service", "!"], 3: ["fine", "."]}
    assert units[0][ids[0] == tok.sep_token_id].tolist() == [0]
    assert int(units[1].max()) == 1 and units[1][enc["attention_mask"][1] == 0].eq(0).all()
    assert enc["truncated"].tolist() == [False, False]


def test_tokenize_with_units_sep_mode_and_caller_units(minilm_tokenizer):
    tok = minilm_tokenizer
    enc = tokenize_with_units(tok, ["alpha beta [SEP] gamma [SEP] delta"], segmentation="sep")
    tokens = tok.convert_ids_to_tokens(enc["input_ids"][0])
    units = enc["unit_ids"][0].tolist()
    assert list(zip(tokens, units)) == [
        ("[CLS]", 0), ("alpha", 1), ("beta", 1), ("[SEP]", 1), ("gamma", 2), ("[SEP]", 2), ("delta", 3), ("[SEP]", 3)
    ]
    caller = tokenize_with_units(tok, [["first passage. with two sentences", "second passage"]])
    assert int(caller["unit_ids"].max()) == 2  # caller-given units are not re-split
    none = tokenize_with_units(tok, ["a. b. c."], segmentation="none")
    assert int(none["unit_ids"].max()) == 1


def test_tokenize_with_units_reports_truncation_and_rejects_bad_input(minilm_tokenizer):
    enc = tokenize_with_units(minilm_tokenizer, ["word " * 50 + ". end."], max_length=16)
    assert enc["truncated"].tolist() == [True] and enc["input_ids"].shape[1] == 16
    with pytest.raises(ValueError, match="empty"):
        tokenize_with_units(minilm_tokenizer, ["fine.", "   "])
    with pytest.raises(ValueError, match="segmentation"):
        tokenize_with_units(minilm_tokenizer, ["x"], segmentation="words")
    with pytest.raises(ValueError, match="empty"):
        tokenize_with_units(minilm_tokenizer, [])


def test_unit_ids_from_ids_modes():
    cls, sep, pad, dot = 101, 102, 0, 1012
    ids = torch.tensor([[cls, 5, dot, dot, 6, 7, dot, 8, sep, 9, sep, pad]])
    mask = (ids != pad).long()
    kw = dict(cls_token_id=cls, sep_token_id=sep, pad_token_id=pad, sentence_end_token_ids=[dot])
    sentence = unit_ids_from_input_ids(ids, mask, segmentation="sentence", **kw)
    assert sentence.tolist() == [[0, 1, 1, 1, 2, 2, 2, 3, 0, 4, 0, 0]]
    by_sep = unit_ids_from_input_ids(ids, mask, segmentation="sep", **kw)
    assert by_sep.tolist() == [[0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 0]]
    none = unit_ids_from_input_ids(ids, mask, segmentation="none", **kw)
    assert none.tolist() == [[0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 0]]


def test_small_unit_counts_are_enumerated_exactly():
    units = torch.tensor([0, 1, 2, 3, 5])
    orderings = sample_unit_permutations(units, 6, generator=torch.Generator().manual_seed(0))
    perms, weights = orderings.permutations, orderings.weights
    torch.testing.assert_close(weights.sum(-1), torch.ones(5, dtype=torch.float64))
    # m = 3: all 3! = 6 distinct orderings, uniform weights
    assert len({tuple(p[:3].tolist()) for p in perms[3]}) == 6
    assert torch.allclose(weights[3], torch.full((6,), 1 / 6, dtype=torch.float64))
    # m = 2: 2 orderings with weight 1/2, the rest weight 0
    assert sorted(weights[2].tolist()) == [0, 0, 0, 0, 0.5, 0.5]
    # m = 5 > enumerable: sampled, weight 1/k; slots of absent units never move
    assert torch.allclose(weights[4], torch.full((6,), 1 / 6, dtype=torch.float64))
    for b, m in enumerate(units.tolist()):
        assert torch.equal(perms[b, :, m:], torch.arange(m, 5).expand(6, -1)), b
        assert torch.equal(perms[b].sort(-1).values, torch.arange(5).expand(6, -1))


def test_effective_num_orderings_trims_to_the_largest_factorial():
    assert effective_num_orderings(torch.tensor([1, 2]), 8) == 2
    assert effective_num_orderings(torch.tensor([1, 3]), 8) == 6
    assert effective_num_orderings(torch.tensor([4]), 8) == 8
    assert effective_num_orderings(torch.tensor([0]), 8) == 1


def test_seeded_orderings_depend_only_on_the_example():
    ids = torch.tensor([[101, 5, 6, 102, 0, 0], [101, 7, 8, 9, 10, 102]])
    mask = (ids != 0).long()
    seeds = example_seeds(ids, mask, seed=0)
    alone = example_seeds(ids[:1, :4], mask[:1, :4], seed=0)
    assert seeds[0] == alone[0]
    assert seeds[0] != seeds[1]
    assert example_seeds(ids, mask, seed=1)[0] != seeds[0]
    units = torch.tensor([7, 7])
    a = sample_unit_permutations(units, 4, seeds=seeds).permutations
    b = sample_unit_permutations(units[:1], 4, seeds=seeds[:1], max_units=9).permutations
    assert torch.equal(a[0], b[0, :, :7])
    assert not torch.equal(a[0], a[1])


def test_uniform_sampling_covers_all_orderings():
    units = torch.full((2000,), 3)
    perms = sample_unit_permutations(units, 1, generator=torch.Generator().manual_seed(0), enumerate_small=False)
    counts = torch.unique(perms.permutations[:, 0], dim=0, return_counts=True)[1]
    assert len(counts) == math.factorial(3)
    assert counts.min() > 2000 / 6 * 0.8


def test_permuted_positions_move_units_as_blocks():
    unit_ids = torch.tensor([[0, 1, 1, 2, 3, 3, 3, 0, 0]])
    perm = torch.tensor([[[2, 0, 1]]])  # slot 0 <- unit 3, slot 1 <- unit 1, slot 2 <- unit 2
    pos = permuted_position_ids(unit_ids, perm)[0, 0]
    assert pos.tolist() == [0, 4, 5, 6, 1, 2, 3, 7, 8]
    offset = permuted_position_ids(unit_ids, perm, torch.arange(9).unsqueeze(0) + 10)[0, 0]
    assert offset.tolist() == [p + 10 for p in pos.tolist()]
    positions, weights = sample_orderings(unit_ids, 4, torch.Generator().manual_seed(0))
    assert positions.shape == (1, 4, 9) and weights.shape == (1, 4)
    assert all(sorted(row.tolist()) == list(range(9)) for row in positions[0])
