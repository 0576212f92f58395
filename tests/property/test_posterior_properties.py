"""Properties of the Laplace posterior head (docs/model.md, "The posterior"), float64 on tiny configs.

Each fails on a head whose evidence is counted (confidence capped by the number of units), on a constant
uncertainty, or on a posterior that silently outlives the weights it was fitted for.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import fit_random_posterior, make_batch, tiny_config
from hypothesis import given, settings
from hypothesis import strategies as st

from bayesian_hf import BayesianExpectationConfig, BayesianExpectationForSequenceClassification
from bayesian_hf.posterior import laplace_bridge, sample_predictive, standard_normal_draws


def _model(seed=0, **overrides):
    torch.manual_seed(seed)
    return BayesianExpectationForSequenceClassification(tiny_config(**overrides)).double().eval()


def _sharp(model, scale=3.0):
    with torch.no_grad():
        model.classifier.weight.normal_(0.0, scale, generator=torch.Generator().manual_seed(1))
    return model


def test_unfitted_laplace_head_is_the_classifier_softmax():
    """Plain BERT is a special case: no posterior -> softmax(classifier(pooler(expectation of [CLS])))."""
    model = _sharp(_model())
    batch = make_batch([[3, 2, 4], [2, 2], [6]], seed=3)
    with torch.no_grad():
        out = model(**batch, num_orderings=1, orderings=torch.arange(3).view(1, 3))
        expected = torch.softmax(model.classifier(out.features), -1)
    torch.testing.assert_close(out.probs, expected, rtol=0, atol=1e-12)
    assert torch.all(out.epistemic == 0)
    torch.testing.assert_close(out.aleatoric, out.total)
    torch.testing.assert_close(torch.softmax(out.logits, -1), out.probs, rtol=0, atol=1e-12)


def test_one_unit_confidence_is_not_capped():
    """The counting head caps a one-unit text at (alpha0 + 1) / (C alpha0 + 1); the Laplace head does not."""
    batch = make_batch([[5]], seed=4)
    laplace, counting = _sharp(_model(), 8.0), _sharp(_model(head_type="counting"), 8.0)
    with torch.no_grad():
        top_laplace = float(laplace(**batch).probs.max())
        top_counting = float(counting(**batch).probs.max())
    cap = (0.5 + 1) / (3 * 0.5 + 1)
    assert top_counting <= cap + 1e-12
    assert top_laplace > 0.95


@settings(max_examples=60, deadline=None)
@given(
    logits=st.lists(st.floats(-8, 8), min_size=2, max_size=5),
    scale=st.floats(0.0, 5.0),
    seed=st.integers(0, 1000),
)
def test_mutual_information_is_non_negative_and_decomposes(logits, scale, seed):
    m = torch.tensor([logits], dtype=torch.float64)
    c = m.shape[-1]
    tril = scale * torch.randn(1, c, 2 * c, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    out = sample_predictive(m, tril, standard_normal_draws(64, 2 * c, torch.float64, m.device))
    assert float(out["total"] - out["aleatoric"]) >= -1e-12
    torch.testing.assert_close(out["epistemic"] + out["aleatoric"], out["total"], rtol=0, atol=1e-12)
    torch.testing.assert_close(out["probs"].sum(-1), torch.ones(1, dtype=torch.float64))
    if scale == 0.0:
        assert float(out["epistemic"]) <= 1e-12
        torch.testing.assert_close(out["probs"], torch.softmax(m, -1), rtol=0, atol=1e-12)


def test_laplace_bridge_matches_the_softmax_ratio_for_two_classes_and_grows_with_certainty():
    m = torch.tensor([[1.3, -0.4]], dtype=torch.float64)
    alpha = laplace_bridge(m, torch.tensor([[0.2, 0.2]], dtype=torch.float64))
    torch.testing.assert_close(alpha[0, 0] / alpha[0, 1], torch.exp(m[0, 0] - m[0, 1]))
    tighter = laplace_bridge(m, torch.tensor([[0.02, 0.02]], dtype=torch.float64))
    assert float(tighter.sum()) > float(alpha.sum())


def test_fitted_posterior_spreads_the_logits_and_grows_away_from_the_data():
    model = _sharp(_model())
    fit_random_posterior(model, num_examples=20, prior_precision=0.5)
    batch = make_batch([[1], [2, 2], [3, 2, 4], [2, 2, 2, 2, 2], [4, 4]], seed=9)
    with torch.no_grad():
        out = model(**batch)
        features = out.features
        near = model.posterior.eigen_variances(features).sum(-1)
        far = model.posterior.eigen_variances(10 * features).sum(-1)
    assert torch.all(out.epistemic >= 0) and float(out.epistemic.std()) > 1e-4
    assert torch.all(out.logit_variance > 0)
    assert torch.all(far > near)  # variance grows (quadratically) along the feature directions
    # the unfitted model, same weights: no epistemic part
    model.reset_posterior()
    with torch.no_grad():
        assert torch.all(model(**batch).epistemic == 0)


def test_more_data_shrinks_the_epistemic_part():
    batch = make_batch([[2, 3], [4], [3, 3, 3]], seed=5)
    values = []
    for n in (10, 100, 1000, 10000):
        model = _sharp(_model())
        fit_random_posterior(model, num_examples=n)
        with torch.no_grad():
            values.append(model(**batch).epistemic)
    for small, large in zip(values, values[1:]):
        assert torch.all(large < small)


def test_posterior_fitted_for_other_weights_is_refused(tmp_path):
    model = _sharp(_model())
    fit_random_posterior(model)
    batch = make_batch([[2, 3]], seed=1)
    with torch.no_grad():
        before = model(**batch)
    model.save_pretrained(tmp_path)
    reloaded = BayesianExpectationForSequenceClassification.from_pretrained(tmp_path).double().eval()
    assert reloaded.has_posterior
    with torch.no_grad():
        again = reloaded(**batch)
    torch.testing.assert_close(again.probs, before.probs, rtol=0, atol=1e-6)
    torch.testing.assert_close(again.epistemic, before.epistemic, rtol=0, atol=1e-6)
    with torch.no_grad():
        reloaded.classifier.bias.add_(0.1)
    with pytest.raises(ValueError, match="fitted for other classifier weights"):
        reloaded(**batch)
    reloaded.reset_posterior()
    with torch.no_grad():
        assert torch.all(reloaded(**batch).epistemic == 0)


def test_config_written_before_head_type_loads_the_counting_head():
    legacy = tiny_config().to_dict()
    legacy.pop("head_type")
    legacy["evidence_weighting"] = "count"
    assert BayesianExpectationConfig.from_dict(legacy).head_type == "counting"
    assert BayesianExpectationConfig().head_type == "laplace"
    with pytest.raises(ValueError, match="head_type"):
        tiny_config(head_type="magic")
    with pytest.raises(ValueError, match="posterior_samples"):
        tiny_config(posterior_samples=3)


def test_posterior_hyperparameters_are_validated():
    model = _model()
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="prior_precision"):
            model.posterior.set_hyperparameters(bad)
    with pytest.raises(ValueError, match="order_scale"):
        model.posterior.set_hyperparameters(1.0, -0.5)


def test_evidential_head_is_a_dirichlet_with_learned_evidence():
    model = _sharp(_model(head_type="evidential"))
    batch = make_batch([[5], [2, 2, 2]], seed=2)
    with torch.no_grad():
        out = model(**batch)
    strength = out.concentration.sum(-1)
    assert torch.all(strength > 3 * model.config.prior_concentration)
    torch.testing.assert_close(out.probs, out.concentration / strength.unsqueeze(-1))
    assert torch.all(out.epistemic > 0)
