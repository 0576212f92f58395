"""Properties of docs/design.md §4, §5.7, §7 and §9: each of these fails on a no-op or biased implementation.

All in float64, eval mode, dropout off, on tiny random configs.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from conftest import fit_random_posterior, make_batch, tiny_config
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import BertConfig, BertModel

from bayesian_hf import BayesianExpectationForSequenceClassification, BayesianExpectationModel
from bayesian_hf.orderings import permuted_position_ids, physically_reorder
from bayesian_hf.uncertainty import dirichlet_uncertainty


def _model(cls=BayesianExpectationForSequenceClassification, seed=0, **overrides):
    torch.manual_seed(seed)
    return cls(tiny_config(**overrides)).double().eval()


def _all_orderings(m: int) -> torch.Tensor:
    return torch.tensor(list(itertools.permutations(range(m))))


def _bert_from(model: BayesianExpectationModel) -> BertModel:
    """A plain transformers BertModel with the same weights (the reference implementation)."""
    c = model.config
    bert = BertModel(
        BertConfig(
            vocab_size=c.vocab_size, hidden_size=c.hidden_size, num_hidden_layers=c.num_hidden_layers,
            num_attention_heads=c.num_attention_heads, intermediate_size=c.intermediate_size,
            max_position_embeddings=c.max_position_embeddings, type_vocab_size=c.type_vocab_size,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=c.pad_token_id,
        )
    ).double().eval()
    missing = bert.load_state_dict(model.state_dict(), strict=False)
    assert not [k for k in missing.missing_keys if not k.endswith(("position_ids", "token_type_ids"))]
    return bert


# ---------------------------------------------------------------------------------------------------------- 3.1


@settings(max_examples=25, deadline=None)
@given(lengths=st.lists(st.integers(1, 4), min_size=2, max_size=4), seed=st.integers(0, 10_000))
def test_position_id_ordering_equals_physical_reordering(lengths, seed):
    """Running BERT with ordering-pi position ids == running it on the physically reordered tokens, then
    un-permuting (the units move as blocks, order inside a unit kept)."""
    batch = make_batch([lengths], seed=seed)
    bert = _bert_from(_model(BayesianExpectationModel))
    perm = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(seed))
    positions = permuted_position_ids(batch["unit_ids"], perm.view(1, 1, -1))[:, 0]
    with torch.no_grad():
        via_positions = bert(input_ids=batch["input_ids"], position_ids=positions).last_hidden_state[0]
        reordered, source = physically_reorder(batch["input_ids"][0], batch["unit_ids"][0], perm.tolist())
        physical = bert(input_ids=reordered.unsqueeze(0)).last_hidden_state[0]
    unpermuted = torch.empty_like(physical)
    unpermuted[source] = physical
    torch.testing.assert_close(via_positions, unpermuted, rtol=0, atol=1e-10)
    if not torch.equal(perm, torch.arange(len(lengths))):
        assert not torch.equal(positions, torch.arange(positions.shape[-1]).unsqueeze(0))


# ---------------------------------------------------------------------------------------------------------- (a)


def _predecessor_dispersion(model: BayesianExpectationModel, batch, k: int) -> float:
    """The predecessor's no-op: permute hidden states AFTER the position embeddings were added, run the block,
    un-permute. Self-attention undoes it exactly, so its 'dispersion' is ~0 whatever the positions."""
    emb = model.embeddings
    ids = batch["input_ids"]
    with torch.no_grad():
        h = emb.LayerNorm(emb.word_embeddings(ids) + emb.position_embeddings(torch.arange(ids.shape[1])) + emb.token_type_embeddings(torch.zeros_like(ids)))
        layer = model.encoder.layer[0]
        mask = torch.zeros(1, 1, 1, ids.shape[1], dtype=h.dtype)
        outs = []
        for j in range(k):
            perm = torch.randperm(ids.shape[1], generator=torch.Generator().manual_seed(j))
            out, _ = super(type(layer), layer).forward(h[:, perm], mask)  # plain block on permuted states
            restored = torch.empty_like(out)
            restored[:, perm] = out
            outs.append(restored)
        stacked = torch.stack(outs)
    return float(stacked.var(dim=0, unbiased=False).mean())


def test_order_dispersion_no_op_guard():
    batch = make_batch([[3, 2, 4]], seed=1)
    model = _model(BayesianExpectationModel, collapse_point="output")
    with torch.no_grad():
        real = model(**batch, num_orderings=6).order_dispersion
        model.embeddings.position_embeddings.weight.zero_()
        zeroed = model(**batch, num_orderings=6).order_dispersion
    assert float(real) > 1e-8, "orderings must change the representation when positions are real"
    assert float(zeroed) < 1e-10, "without position embeddings the orderings must be indistinguishable"
    # the guard would catch the predecessor: its permutation-after-positions dispersion is a no-op
    assert _predecessor_dispersion(_model(BayesianExpectationModel), batch, 6) < 1e-10


@pytest.mark.parametrize("collapse_point", ["context", "attention", "output"])
def test_dispersion_positive_for_every_collapse_point(collapse_point):
    batch = make_batch([[3, 2], [2, 2, 2, 2]], seed=2)
    model = _model(collapse_point=collapse_point)
    with torch.no_grad():
        out = model(**batch, num_orderings=4)
        single = make_batch([[5]], seed=2)
        one_unit = model(**single, num_orderings=4)
    assert (out.order_dispersion > 1e-8).all()
    assert float(one_unit.order_dispersion) == 0.0  # a single unit has a single ordering


# ---------------------------------------------------------------------------------------------------------- (b)


def test_sampled_mean_is_unbiased_for_exact_mean():
    """Mean over k sampled orderings -> exact mean over all m! orderings, within Monte-Carlo error."""
    m, k, repeats = 4, 5, 400  # 4! = 24 > k, so orderings are sampled
    model = _model(BayesianExpectationModel, collapse_point="output", bayesian_layers=[1])
    one = make_batch([[2, 3, 2, 2]], seed=3)
    with torch.no_grad():
        exact = model(**one, orderings=_all_orderings(m)).last_hidden_state[0]
        many = {key: v.repeat(repeats, 1) for key, v in one.items()}
        estimates = model(**many, num_orderings=k, generator=torch.Generator().manual_seed(0)).last_hidden_state
    spread = estimates.std(dim=0)
    valid = spread > 1e-9
    z = (estimates.mean(dim=0) - exact)[valid] / (spread[valid] / math.sqrt(repeats))
    assert valid.sum() > 50
    assert float(z.abs().max()) < 5.0
    # and the estimator actually varies (it is not returning the exact mean or a constant)
    assert float(spread.max()) > 1e-6


def test_enumeration_is_exact_when_k_covers_all_orderings():
    model = _model(BayesianExpectationModel, collapse_point="output")
    one = make_batch([[2, 3, 2]], seed=4)
    with torch.no_grad():
        exact = model(**one, orderings=_all_orderings(3)).last_hidden_state
        enumerated = model(**one, num_orderings=6).last_hidden_state
        more = model(**one, num_orderings=10, generator=torch.Generator().manual_seed(1)).last_hidden_state
    torch.testing.assert_close(enumerated, exact, rtol=0, atol=1e-12)
    torch.testing.assert_close(more, exact, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------- (c)


def test_order_variance_falls_like_one_over_k():
    """Slope of log Var(mean of k) vs log k in [-1.15, -0.85] over >= 200 repeats (i.i.d. sampling with
    replacement, so no finite-population correction applies)."""
    model = _model(BayesianExpectationModel, collapse_point="output", bayesian_layers=[1])
    one = make_batch([[2, 2, 3, 2, 2, 2]], seed=5)  # 6! = 720 orderings, k <= 32 are sampled
    repeats = 300
    many = {key: v.repeat(repeats, 1) for key, v in one.items()}
    ks = [1, 2, 4, 8, 16, 32]
    variances = []
    with torch.no_grad():
        for i, k in enumerate(ks):
            est = model(**many, num_orderings=k, generator=torch.Generator().manual_seed(100 + i)).last_hidden_state
            variances.append(float(est.var(dim=0).mean()))
    slope = np.polyfit(np.log(ks), np.log(variances), 1)[0]
    assert -1.15 <= slope <= -0.85, (slope, variances)


# ---------------------------------------------------------------------------------------------------------- (d)


@pytest.mark.parametrize("collapse_point", ["context", "attention", "output"])
def test_exact_expectation_invariant_to_unit_order_and_padding(collapse_point):
    lengths = [2, 4, 3]
    model = _model(collapse_point=collapse_point)
    batch = make_batch([lengths], seed=6)
    perm = [2, 0, 1]
    reordered_ids, source = physically_reorder(batch["input_ids"][0], batch["unit_ids"][0], perm)
    reordered = make_batch([[lengths[p] for p in perm]], seed=6)
    reordered["input_ids"] = reordered_ids.unsqueeze(0)
    padded = make_batch([lengths], pad_to=batch["input_ids"].shape[1] + 9, seed=6)
    with torch.no_grad():
        base = model(**batch, num_orderings=6, output_hidden_states=True)
        moved = model(**reordered, num_orderings=6, output_hidden_states=True)
        pad = model(**padded, num_orderings=6)
    torch.testing.assert_close(moved.probs, base.probs, rtol=0, atol=1e-10)
    torch.testing.assert_close(moved.epistemic, base.epistemic, rtol=0, atol=1e-10)
    torch.testing.assert_close(moved.order_dispersion, base.order_dispersion, rtol=0, atol=1e-10)
    last_moved, last_base = moved.hidden_states[-1][0], base.hidden_states[-1][0]
    torch.testing.assert_close(last_moved, last_base[source], rtol=0, atol=1e-10)
    torch.testing.assert_close(pad.probs, base.probs, rtol=0, atol=1e-10)
    torch.testing.assert_close(pad.order_dispersion, base.order_dispersion, rtol=0, atol=1e-10)


def test_a_single_realization_is_not_invariant():
    """Control for (d): with k = 1 and the identity ordering, reordering the units DOES change the output,
    so the invariance above comes from the expectation, not from a model that ignores order."""
    lengths = [2, 4, 3]
    model = _model()
    batch = make_batch([lengths], seed=6)
    reordered_ids, _ = physically_reorder(batch["input_ids"][0], batch["unit_ids"][0], [2, 0, 1])
    reordered = make_batch([[3, 2, 4]], seed=6)
    reordered["input_ids"] = reordered_ids.unsqueeze(0)
    identity = torch.arange(3).view(1, 3)
    with torch.no_grad():
        a = model(**batch, orderings=identity).probs
        b = model(**reordered, orderings=identity).probs
    assert float((a - b).abs().max()) > 1e-9


# ---------------------------------------------------------------------------------------------------------- (e)


@pytest.mark.parametrize("layers", [[0], [1], [0, 1]])
def test_identity_ordering_reproduces_bert(layers):
    model = _model(BayesianExpectationModel, bayesian_layers=layers)
    bert = _bert_from(model)
    batch = make_batch([[3, 2, 4], [2, 2]], seed=7)
    with torch.no_grad():
        ours = model(**batch, orderings=torch.arange(3).view(1, 3), output_hidden_states=True)
        ref = bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
    valid = batch["attention_mask"].bool()
    for mine, theirs in zip(ours.hidden_states, ref.hidden_states):
        torch.testing.assert_close(mine[valid], theirs[valid], rtol=0, atol=1e-10)
    torch.testing.assert_close(ours.pooler_output, ref.pooler_output, rtol=0, atol=1e-10)


# ---------------------------------------------------------------------------------------------------------- (f)


def test_counting_head_counts_units_and_ignores_their_order():
    model = _model(head_type="counting")
    batch = make_batch([[3, 2, 4], [2, 2], [6]], seed=8)
    with torch.no_grad():
        out = model(**batch, num_orderings=6)
    prior = model.config.prior_concentration * model.config.num_labels
    torch.testing.assert_close(out.concentration.sum(-1) - prior, torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(out.num_units, torch.tensor([3, 2, 1]))
    # invariance of the sufficient statistics to the order of the units
    reordered_ids, _ = physically_reorder(batch["input_ids"][0], batch["unit_ids"][0], [1, 2, 0])
    moved = make_batch([[2, 4, 3]], seed=8)
    moved["input_ids"] = reordered_ids.unsqueeze(0)
    with torch.no_grad():
        again = model(**moved, num_orderings=6)
    torch.testing.assert_close(again.concentration[0], out.concentration[0], rtol=0, atol=1e-10)


@settings(max_examples=60, deadline=None)
@given(
    alpha=st.lists(st.floats(0.01, 50.0), min_size=2, max_size=6),
)
def test_mutual_information_is_non_negative_and_decomposes(alpha):
    a = torch.tensor([alpha], dtype=torch.float64)
    u = dirichlet_uncertainty(a)
    raw_mi = u["total"] - u["aleatoric"]
    assert float(raw_mi) >= -1e-12
    torch.testing.assert_close(u["epistemic"] + u["aleatoric"], u["total"], rtol=0, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(vote=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=5), prior=st.floats(0.1, 2.0))
def test_epistemic_falls_as_consistent_units_are_added(vote, prior):
    v = torch.tensor(vote, dtype=torch.float64) + 1e-3
    v = v / v.sum()
    epistemic = [float(dirichlet_uncertainty((prior + n * v).unsqueeze(0))["epistemic"]) for n in range(0, 40, 4)]
    assert all(b < a for a, b in zip(epistemic, epistemic[1:])), epistemic
    # no posterior spread left: MI -> 0
    assert float(dirichlet_uncertainty((prior + 1e6 * v).unsqueeze(0))["epistemic"]) < 1e-5


def test_uncertainty_is_not_constant():
    model = _model()
    with torch.no_grad():  # a head that asserts something (a fresh 0.02-std head votes ~uniformly)
        model.classifier.weight.normal_(0.0, 5.0, generator=torch.Generator().manual_seed(0))
        model.bert.pooler.dense.weight.normal_(0.0, 0.2, generator=torch.Generator().manual_seed(1))
    fit_random_posterior(model, num_examples=5, prior_precision=0.1)
    batch = make_batch([[1], [2, 2], [3, 2, 4], [2, 2, 2, 2, 2], [4, 4]], seed=9)
    with torch.no_grad():
        out = model(**batch, num_orderings=4)
    for name in ("epistemic", "aleatoric", "total"):
        assert float(getattr(out, name).std()) > 1e-3, name
    assert float(out.order_dispersion.std()) > 1e-6
    with torch.no_grad():
        single = model(**batch, num_orderings=1)
    assert torch.all(single.order_dispersion == 0)
