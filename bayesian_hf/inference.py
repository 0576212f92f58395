"""The one batch-prediction path: texts -> tokens with units -> forward pass -> per-text outputs.

:func:`predict_outputs` is the package's only code that runs the model over texts (the Trainer's loops aside):
:func:`bayesian_hf.pipelines.predict` (one forward pass, then records), :func:`collect_outputs` (numpy arrays over
a dataset in length-sorted batches: evaluation, calibration, posterior fitting, drift references, A/B comparison)
and, through ``predict``, the server, ``bayesian-hf predict`` and the demo.  The ``uncertainty-classification``
pipeline runs its two pieces, :func:`encode` and :func:`forward`, in its ``preprocess`` and ``_forward``.
:data:`OUTPUT_KEYS`, the per-text outputs a prediction reports, is derived from the output dataclass.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .modeling_bayesian_expectation import BayesianSequenceClassifierOutput
from .tokenization import tokenize_with_units

logger = logging.getLogger(__name__)

#: Fields of the output dataclass that are not one value (or row) per text: the training loss and the per-layer
#: hidden states / attentions.
NOT_PER_TEXT = ("loss", "hidden_states", "attentions")
#: Per-text fields a prediction does not report (the head's internals; ask for them with ``fields=``).
HEAD_INTERNALS = ("concentration", "logit_variance", "features")
#: Every per-text output of :class:`BayesianSequenceClassifierOutput`, in its field order.
PER_TEXT_OUTPUTS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(BayesianSequenceClassifierOutput) if f.name not in NOT_PER_TEXT
)
#: The outputs a prediction reports (``logits``, ``probs``, ``calibrated_probs``, ``epistemic``, ``aleatoric``,
#: ``total``, ``order_dispersion``, ``num_units``): the per-text outputs less the head's internals.
OUTPUT_KEYS: tuple[str, ...] = tuple(name for name in PER_TEXT_OUTPUTS if name not in HEAD_INTERNALS)

#: The uncertainty outputs, one number per text (nats, except ``order_dispersion``: a variance).
UNCERTAINTY_KEYS: tuple[str, ...] = ("epistemic", "aleatoric", "total", "order_dispersion")

#: The most orderings :func:`bayesian_hf.pipelines.predict` and the pipeline run per text, whichever source asks
#: (a call or the model config's ``num_orderings``); the server applies its own ``--max-num-orderings`` the same
#: way.
MAX_NUM_ORDERINGS = 1024


def token_limit(config: Any, max_length: int | None = None) -> int:
    """Tokens per text: ``max_length``, else the model's position limit capped at 512."""
    return max_length or min(config.max_position_embeddings, 512)


def encode(model: Any, tokenizer: Any, texts: Sequence[str], max_length: int | None = None) -> dict[str, torch.Tensor]:
    """Tokenise ``texts`` with the units of the model config's segmentation, truncated to :func:`token_limit`
    (``"truncated"``: a bool per text, the other entries are the model's inputs)."""
    config = model.config
    return tokenize_with_units(tokenizer, list(texts), max_length=token_limit(config, max_length),
                               segmentation=config.unit_segmentation)


def check_has_content(unit_ids: Any) -> None:
    """Raise ``ValueError`` for a text with nothing to classify: no token besides the special ones (text made of
    control, NUL or zero-width characters only), like an empty text. ``unit_ids``: (batch, seq) from
    :func:`~bayesian_hf.tokenization.tokenize_with_units`."""
    empty = (torch.as_tensor(unit_ids) > 0).sum(dim=-1) == 0
    if bool(empty.any()):
        i = int(empty.nonzero()[0, 0])
        raise ValueError(f"text {i} has nothing to classify: no token besides the special ones (only control, NUL "
                         "or zero-width characters?)")


def check_num_orderings(num_orderings: Any) -> int:
    """``num_orderings`` when it is an integer >= 1, else ``ValueError``."""
    if isinstance(num_orderings, bool) or not isinstance(num_orderings, int) or num_orderings < 1:
        raise ValueError(f"num_orderings must be an integer >= 1, got {num_orderings!r}")
    return num_orderings


def resolve_num_orderings(model: Any, num_orderings: int | None = None,
                          max_num_orderings: int = MAX_NUM_ORDERINGS) -> int:
    """The orderings of one call: ``num_orderings``, else the model config's, clamped to ``max_num_orderings``.

    A call asking for more than the limit is an error (the caller chose it); a config asking for more is clamped
    with a warning (a model folder must not make every call allocate ``k`` copies of the activations).
    """
    if num_orderings is not None:
        check_num_orderings(num_orderings)
        if num_orderings > max_num_orderings:
            raise ValueError(f"num_orderings={num_orderings} exceeds the limit of {max_num_orderings}; ask for fewer")
        return num_orderings
    configured = getattr(model.config, "num_orderings", 1)
    if isinstance(configured, bool) or not isinstance(configured, int) or configured < 1:
        raise ValueError(f"the model config's num_orderings must be an integer >= 1, got {configured!r}")
    if configured > max_num_orderings:
        logger.warning("the model config asks for num_orderings=%d; using the limit %d", configured,
                       max_num_orderings)
        return max_num_orderings
    return configured


def forward(model: Any, inputs: dict[str, torch.Tensor], *, num_orderings: int | None = None,
            seed: int | None = None, fields: Sequence[str] = OUTPUT_KEYS) -> dict[str, torch.Tensor]:
    """One forward pass (inference mode) on the model's device; the ``fields`` the model returned (not None), on
    that device. ``inputs``: :func:`encode`'s entries without ``"truncated"``; ``seed`` replaces the model's
    ordering seed for this call."""
    device = next(model.parameters()).device
    with torch.inference_mode():
        out = model(**{k: v.to(device) for k, v in inputs.items()}, num_orderings=num_orderings, ordering_seed=seed)
    return {name: value for name in fields if (value := getattr(out, name, None)) is not None}


def predict_outputs(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    batch_size: int | None = None,
    num_orderings: int | None = None,
    seed: int | None = None,
    max_length: int | None = None,
    fields: Sequence[str] = OUTPUT_KEYS,
    max_num_orderings: int | None = None,
    require_content: bool = False,
    progress: bool = False,
    desc: str = "predicting",
) -> tuple[dict[str, torch.Tensor], list[bool]]:
    """The model's ``fields`` for ``texts`` (CPU tensors, model dtype, input order) and a truncated flag per text.

    ``batch_size=None``: one forward pass over all texts in their order.  Otherwise length-sorted batches of
    ``batch_size`` (less padding), put back in input order: eval-mode outputs do not depend on the rest of the
    batch, so this changes nothing but the time.  ``require_content``: a text with nothing to tokenise is a
    ``ValueError`` (:func:`check_has_content`, before the forward pass).  ``max_num_orderings``: resolve
    ``num_orderings`` against the model config and that limit (:func:`resolve_num_orderings`) instead of passing it
    to the model as given.
    """
    texts = list(texts)
    if batch_size is None:
        order = np.arange(len(texts))
        batch_size = max(len(texts), 1)
    else:
        order = np.argsort([len(t) for t in texts], kind="stable")
    if max_num_orderings is not None:
        num_orderings = resolve_num_orderings(model, num_orderings, max_num_orderings)
    parts: dict[str, list[torch.Tensor]] = {}
    truncated: list[bool] = []
    starts = range(0, len(texts), batch_size)
    for start in tqdm(starts, desc=desc, disable=not progress, leave=False):
        enc = encode(model, tokenizer, [texts[i] for i in order[start : start + batch_size]], max_length)
        if require_content:
            check_has_content(enc["unit_ids"])
        truncated.extend(enc.pop("truncated").tolist())
        for name, value in forward(model, enc, num_orderings=num_orderings, seed=seed, fields=fields).items():
            parts.setdefault(name, []).append(value.detach().cpu())
    if len(starts) == 1 and (order == np.arange(len(order))).all():  # one pass in input order: nothing to undo
        return {name: chunks[0] for name, chunks in parts.items()}, truncated
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    index = torch.as_tensor(inverse)
    return {name: torch.cat(chunks)[index] for name, chunks in parts.items()}, [truncated[i] for i in inverse]


def collect_outputs(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    batch_size: int = 32,
    num_orderings: int | None = None,
    max_length: int | None = None,
    progress: bool = True,
    fields: Sequence[str] = OUTPUT_KEYS,
    desc: str = "evaluating",
) -> dict[str, np.ndarray]:
    """Run the model over ``texts`` in eval mode (:func:`predict_outputs` in length-sorted batches); returns each
    output field in ``fields`` (default :data:`OUTPUT_KEYS`) stacked as a float32 numpy array."""
    texts = list(texts)
    if not texts:
        raise ValueError("no texts to evaluate")
    model.eval()
    outputs, _ = predict_outputs(model, tokenizer, texts, batch_size=batch_size, num_orderings=num_orderings,
                                 max_length=max_length, fields=fields, progress=progress, desc=desc)
    return {name: value.float().numpy() for name, value in outputs.items()}


__all__ = [
    "MAX_NUM_ORDERINGS",
    "OUTPUT_KEYS",
    "PER_TEXT_OUTPUTS",
    "UNCERTAINTY_KEYS",
    "check_has_content",
    "check_num_orderings",
    "collect_outputs",
    "encode",
    "forward",
    "predict_outputs",
    "resolve_num_orderings",
    "token_limit",
]
