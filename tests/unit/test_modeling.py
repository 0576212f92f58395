"""Model tests on tiny random configs (`model_tester.BayesianExpectationModelTester`): shapes, masks, gradients,
checkpointing, precision, errors."""

from __future__ import annotations

import pytest
import torch
from conftest import make_batch, tiny_config
from model_tester import BayesianExpectationModelTester

from bayesian_hf import (
    BayesianExpectationConfig,
    BayesianExpectationForSequenceClassification,
    BayesianExpectationModel,
)
from bayesian_hf.losses import dirichlet_kl, mdl_loss


@pytest.mark.parametrize(
    "unit_lengths",
    [[[3]], [[2, 2], [4, 1, 1]], [[1, 1, 1, 1, 1, 1, 1, 1], [5], [2, 3]], [[6, 6, 6, 6]]],
)
@pytest.mark.parametrize("k", [1, 3, 8])
def test_output_shapes(unit_lengths, k):
    tester = BayesianExpectationModelTester(unit_lengths, pad_to=max(sum(u) for u in unit_lengths) + 5)
    config, batch = tester.prepare_config_and_inputs()
    # the sizes the shapes are checked against: 3 labels, 2 layers (3 hidden states), hidden 32, 4 heads
    assert (config.num_labels, config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (3, 2, 32, 4)
    tester.create_and_check_for_sequence_classification(config, batch, k)


def test_model_derives_the_same_units_it_is_given():
    tester = BayesianExpectationModelTester([[2, 3, 2], [4, 4]], pad_to=20)  # (a lone "." would join the run before it)
    tester.create_and_check_model(*tester.prepare_config_and_inputs())


def test_return_dict_false_returns_the_output_as_a_tuple():
    tester = BayesianExpectationModelTester([[2, 3, 2], [4, 1]], pad_to=12)
    tester.create_and_check_return_tuple(*tester.prepare_config_and_inputs())


def test_outputs_do_not_depend_on_the_rest_of_the_batch():
    """Padding invariance: a sequence's outputs do not change when other sequences are longer."""
    torch.manual_seed(0)
    model = BayesianExpectationForSequenceClassification(tiny_config()).double().eval()
    alone = make_batch([[3, 2, 2, 2, 2]], seed=3)
    together = make_batch([[3, 2, 2, 2, 2], [5, 5, 5, 5, 5, 5, 5]], seed=3)
    together["input_ids"][0, : alone["input_ids"].shape[1]] = alone["input_ids"][0]
    with torch.no_grad():
        a = model(**alone, num_orderings=8)
        b = model(**together, num_orderings=8)
    for name in ("probs", "epistemic", "aleatoric", "order_dispersion"):
        torch.testing.assert_close(getattr(b, name)[:1], getattr(a, name), rtol=0, atol=1e-10, msg=name)


def test_fixed_seed_gives_identical_outputs_and_training_orderings_vary():
    torch.manual_seed(0)
    model = BayesianExpectationForSequenceClassification(tiny_config())
    batch = make_batch([[2, 3, 2, 2, 2]])
    model.eval()
    with torch.no_grad():
        a, b = model(**batch).probs, model(**batch).probs
    assert torch.equal(a, b)  # eval orderings are deterministic
    model.train()
    torch.manual_seed(1)
    c = model(**batch).probs
    torch.manual_seed(1)
    d = model(**batch).probs
    e = model(**batch).probs
    assert torch.equal(c, d)
    assert not torch.equal(d, e)


def test_loss_reaches_every_parameter():
    tester = BayesianExpectationModelTester([[2, 3, 2], [4, 1]])
    torch.manual_seed(0)  # once: the models below are drawn one after the other from this stream
    for overrides in (
        {},
        {"bayesian_layers": [0, 1], "length_adaptive_mixing": True, "mdl_beta": 0.5},
        {"evidence_weighting": "learned", "collapse_point": "attention"},
        {"head_type": "evidential", "mdl_beta": 0.5},
        {"head_type": "counting"},
    ):
        config, batch = tester.prepare_config_and_inputs(**overrides)
        tester.create_and_check_loss_reaches_every_parameter(config, batch, torch.tensor([0, 2]))


def test_mdl_loss_reduces_to_cross_entropy_at_beta_zero():
    alpha = torch.tensor([[2.0, 0.7, 1.1], [0.6, 3.0, 0.9]])
    labels = torch.tensor([0, 2])
    loss, parts = mdl_loss(alpha, labels, 0.5, beta=0.0)
    logits = torch.log(alpha / alpha.sum(-1, keepdim=True))
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits, labels))
    loss_b, parts_b = mdl_loss(alpha, labels, 0.5, beta=1.0)
    assert float(parts_b["model"]) > 0 and float(loss_b) > float(loss)
    # KL of a distribution from itself is 0
    torch.testing.assert_close(dirichlet_kl(alpha, alpha), torch.zeros(2), atol=1e-6, rtol=0)


def test_mdl_beta_is_annealed_from_zero():
    torch.manual_seed(0)
    model = BayesianExpectationForSequenceClassification(tiny_config(mdl_beta=1.0, mdl_anneal_steps=10)).eval()
    batch = make_batch([[2, 3]])
    labels = torch.tensor([1])
    with torch.no_grad():
        ce = model(**batch, labels=labels).loss
        model.mdl_step = 10
        full = model(**batch, labels=labels).loss
    logits = model(**batch).logits
    torch.testing.assert_close(ce, torch.nn.functional.cross_entropy(logits, labels))
    assert float(full) > float(ce)


def test_gradient_checkpointing_matches_plain_backward():
    torch.manual_seed(0)
    model = BayesianExpectationForSequenceClassification(tiny_config(bayesian_layers=[0, 1])).train()
    batch = make_batch([[2, 3, 2], [4, 1]])
    labels = torch.tensor([0, 1])
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    model(**batch, labels=labels, generator=gen()).loss.backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing
    model(**batch, labels=labels, generator=gen()).loss.backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, plain[n], msg=n)


def test_bf16_autocast_on_cpu_is_finite():
    torch.manual_seed(0)
    model = BayesianExpectationForSequenceClassification(tiny_config()).train()
    batch = make_batch([[2, 3, 2], [4, 1]], pad_to=16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**batch, labels=torch.tensor([0, 1]))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**batch, num_orderings=8)
    for name in ("probs", "epistemic", "aleatoric", "total", "order_dispersion"):
        assert torch.isfinite(getattr(out, name)).all(), name


def test_half_precision_weights_mask_without_overflow():
    torch.manual_seed(0)
    model = BayesianExpectationForSequenceClassification(tiny_config()).to(torch.bfloat16).eval()
    batch = make_batch([[2, 3], [1]], pad_to=12)
    with torch.no_grad():
        out = model(**batch, num_orderings=4)
    assert torch.isfinite(out.probs).all()


def test_factored_first_block_matches_direct_computation():
    """The eval fast path (projections folded through the LayerNorm) equals the direct path."""
    torch.manual_seed(0)
    for collapse in ("context", "attention", "output"):
        model = BayesianExpectationForSequenceClassification(tiny_config(collapse_point=collapse)).double().eval()
        batch = make_batch([[2, 3, 2, 4], [4, 1]], pad_to=20)
        with torch.no_grad():
            fast = model(**batch, num_orderings=5)
            direct = model(**batch, num_orderings=5, output_attentions=True)  # eager path, no factoring
        torch.testing.assert_close(fast.probs, direct.probs, rtol=0, atol=1e-12)
        torch.testing.assert_close(fast.order_dispersion, direct.order_dispersion, rtol=0, atol=1e-12)


def test_bad_inputs_raise_clear_errors():
    torch.manual_seed(0)
    model = BayesianExpectationForSequenceClassification(tiny_config()).eval()
    batch = make_batch([[2, 3]])
    with pytest.raises(ValueError, match="unit_ids has shape"):
        model(input_ids=batch["input_ids"], unit_ids=batch["unit_ids"][:, :-1])
    with pytest.raises(ValueError, match="num_orderings"):
        model(**batch, num_orderings=0)
    with pytest.raises(ValueError, match="labels must be in"):
        model(**batch, labels=torch.tensor([7]))
    with pytest.raises(ValueError, match="permutation"):
        model(**batch, orderings=torch.tensor([[0, 0]]))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(input_ids=torch.ones(1, 80, dtype=torch.long))
    with pytest.raises(ValueError, match="batch_size, sequence_length"):
        model(input_ids=torch.ones(2, 3, 4, dtype=torch.long))


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("bayesian_layers", [2], "outside the encoder"),
        ("bayesian_layers", [], "at least one"),
        ("bayesian_layers", [1, 0], "sorted and unique"),
        ("num_orderings", 0, "num_orderings"),
        ("num_train_orderings", 1.5, "num_train_orderings"),
        ("unit_segmentation", "paragraph", "unit_segmentation"),
        ("collapse_point", "later", "collapse_point"),
        ("prior_concentration", 0.0, "prior_concentration"),
        ("mdl_beta", -1.0, "mdl_beta"),
    ],
)
def test_config_validation_names_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**{field: value})


def test_config_round_trip_and_auto_classes(tmp_path):
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

    config = tiny_config(bayesian_layers=[0, 1], collapse_point="attention", num_orderings=5)
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, BayesianExpectationConfig)
    assert loaded.bayesian_layers == [0, 1] and loaded.collapse_point == "attention" and loaded.num_orderings == 5
    assert isinstance(AutoModel.from_config(loaded), BayesianExpectationModel)
    assert isinstance(AutoModelForSequenceClassification.from_config(loaded), BayesianExpectationForSequenceClassification)


def test_save_and_load_round_trip_is_safetensors_only(tmp_path):
    tester = BayesianExpectationModelTester([[2, 3, 2]])
    tester.create_and_check_save_load(*tester.prepare_config_and_inputs(), tmp_path)


def test_learned_evidence_weights_units_between_zero_and_one(tmp_path):
    torch.manual_seed(0)
    model = BayesianExpectationForSequenceClassification(tiny_config(evidence_weighting="learned")).double().eval()
    assert float(model.evidence_strength.bias) == 2.0  # starts near one pseudo-count per unit
    batch = make_batch([[3, 2, 4], [2, 2]])
    with torch.no_grad():
        out = model(**batch)
    evidence = out.concentration.sum(-1) - model.config.prior_concentration * 3
    assert torch.all(evidence > 0) and torch.all(evidence < out.num_units)
    model.save_pretrained(tmp_path)
    loaded = BayesianExpectationForSequenceClassification.from_pretrained(tmp_path).double().eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).concentration, out.concentration)
