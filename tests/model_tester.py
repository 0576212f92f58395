"""`BayesianExpectationModelTester`: the tiny-config model tester of the unit tests, in the style of transformers'
``BertModelTester`` (a tiny config, ``prepare_config_and_inputs`` and ``create_and_check_*`` methods that build a
model and assert what every model of this kind must satisfy).

The tiny configuration and batches are ``conftest.tiny_config`` (hidden 32, 2 layers, 4 heads, vocabulary 99,
3 labels) and ``conftest.make_batch`` (``[CLS] unit_1 ... unit_m [SEP] [PAD]...`` with known unit ids).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from conftest import make_batch, tiny_config

from bayesian_hf import (
    BayesianExpectationConfig,
    BayesianExpectationForSequenceClassification,
    BayesianExpectationModel,
)

PICKLE_SUFFIXES = (".bin", ".pt", ".pkl", ".pickle")
UNCERTAINTY_FIELDS = ("epistemic", "aleatoric", "total", "order_dispersion")


class BayesianExpectationModelTester:
    """Builds tiny models and inputs and checks them; one instance per test (``tester = ...Tester()``)."""

    def __init__(
        self,
        unit_lengths: Sequence[Sequence[int]] = ((2, 3, 2), (4, 1)),
        pad_to: int | None = None,
        seed: int = 0,
        hidden_size: int = 32,
        num_hidden_layers: int = 2,
        num_attention_heads: int = 4,
        num_labels: int = 3,
    ) -> None:
        self.unit_lengths = [list(u) for u in unit_lengths]
        self.pad_to = pad_to
        self.seed = seed
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_labels = num_labels

    # ------------------------------------------------------------------------------------------ config and inputs

    def get_config(self, **overrides: Any) -> BayesianExpectationConfig:
        """``conftest.tiny_config`` with this tester's sizes and ``overrides``."""
        sizes = dict(hidden_size=self.hidden_size, num_hidden_layers=self.num_hidden_layers,
                     num_attention_heads=self.num_attention_heads, num_labels=self.num_labels)
        return tiny_config(**{**sizes, **overrides})

    def prepare_inputs(self, unit_lengths: Sequence[Sequence[int]] | None = None, pad_to: int | None = None,
                       seed: int | None = None) -> dict[str, torch.Tensor]:
        """``input_ids``, ``attention_mask`` and the true ``unit_ids`` of a batch (``conftest.make_batch``)."""
        lengths = [list(u) for u in unit_lengths] if unit_lengths is not None else self.unit_lengths
        return make_batch(lengths, pad_to=self.pad_to if pad_to is None else pad_to,
                          seed=self.seed if seed is None else seed)

    def prepare_config_and_inputs(self, **overrides: Any) -> tuple[BayesianExpectationConfig, dict[str, torch.Tensor]]:
        return self.get_config(**overrides), self.prepare_inputs()

    def create_model(self, config: BayesianExpectationConfig | None = None, *, base: bool = False,
                     seed: int | None = 0) -> Any:
        """A freshly initialised model (``torch.manual_seed(seed)`` first unless ``seed`` is None), in train mode
        as constructed: the classifier, or the encoder alone with ``base=True``."""
        if seed is not None:
            torch.manual_seed(seed)
        model_class = BayesianExpectationModel if base else BayesianExpectationForSequenceClassification
        return model_class(config if config is not None else self.get_config())

    # ------------------------------------------------------------------------------------------ checks

    def create_and_check_for_sequence_classification(self, config: BayesianExpectationConfig,
                                                     inputs: dict[str, torch.Tensor], num_orderings: int) -> Any:
        """Every output has its documented shape (with hidden states and attention maps), the probabilities sum
        to 1 and are the softmax of the logits, and the logits are finite. Returns the output."""
        model = self.create_model(config).eval()
        with torch.no_grad():
            out = model(**inputs, num_orderings=num_orderings, output_hidden_states=True, output_attentions=True)
        b, s = inputs["input_ids"].shape
        c, heads = config.num_labels, config.num_attention_heads
        assert out.logits.shape == out.probs.shape == out.concentration.shape == (b, c)
        for name in ("epistemic", "aleatoric", "total", "order_dispersion", "num_units"):
            assert getattr(out, name).shape == (b,), name
        assert len(out.hidden_states) == config.num_hidden_layers + 1
        assert out.hidden_states[-1].shape == (b, s, config.hidden_size)
        assert len(out.attentions) == config.num_hidden_layers and out.attentions[0].shape == (b, heads, s, s)
        torch.testing.assert_close(out.probs.sum(-1), torch.ones(b))
        torch.testing.assert_close(torch.softmax(out.logits, -1), out.probs)
        assert torch.isfinite(out.logits).all()
        return out

    def create_and_check_model(self, config: BayesianExpectationConfig, inputs: dict[str, torch.Tensor]) -> None:
        """The encoder derives from the token ids exactly the units the batch was built with."""
        model = self.create_model(config, base=True).eval()
        inputs = dict(inputs)
        given = inputs.pop("unit_ids")
        derived = model.resolve_unit_ids(inputs["input_ids"], inputs["attention_mask"])
        assert torch.equal(derived, given)

    def create_and_check_return_tuple(self, config: BayesianExpectationConfig, inputs: dict[str, torch.Tensor]) -> None:
        """``return_dict=False`` (``@can_return_tuple``) returns the non-None fields of the output, in order, for
        the classifier and the encoder."""
        for base in (False, True):
            model = self.create_model(config, base=base).eval()
            with torch.no_grad():
                as_dict = model(**inputs)
                as_tuple = model(**inputs, return_dict=False)
            assert isinstance(as_tuple, tuple)
            expected = as_dict.to_tuple()
            assert len(as_tuple) == len(expected)
            for got, want in zip(as_tuple, expected):
                torch.testing.assert_close(got, want, rtol=0, atol=0)

    def create_and_check_loss_reaches_every_parameter(self, config: BayesianExpectationConfig,
                                                      inputs: dict[str, torch.Tensor], labels: torch.Tensor) -> None:
        """In train mode the loss has a finite gradient for every parameter."""
        model = self.create_model(config, seed=None).train()
        out = model(**inputs, labels=labels)
        out.loss.backward()
        no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
        assert not no_grad, no_grad

    def create_and_check_save_load(self, config: BayesianExpectationConfig, inputs: dict[str, torch.Tensor],
                                   folder: Path) -> None:
        """``save_pretrained`` writes safetensors, config and the remote code, no pickle; ``from_pretrained``
        gives bit-identical probabilities."""
        model = self.create_model(config).eval()
        model.save_pretrained(folder)
        files = sorted(p.name for p in Path(folder).iterdir())
        assert "model.safetensors" in files and "config.json" in files
        assert "modeling_bayesian_expectation.py" in files and "configuration_bayesian_expectation.py" in files
        assert not [f for f in files if f.endswith(PICKLE_SUFFIXES)]
        loaded = BayesianExpectationForSequenceClassification.from_pretrained(folder).eval()
        with torch.no_grad():
            torch.testing.assert_close(loaded(**inputs).probs, model(**inputs).probs, rtol=0, atol=0)
