"""The ONNX Runtime backend: a model object that :func:`bayesian_hf.pipelines.predict`,
:func:`bayesian_hf.evaluation.collect_outputs` and the server use like the PyTorch model.

:class:`OnnxBayesianModel` loads a folder written by ``bayesian-hf export`` (verifying it first, see
:func:`bayesian_hf.onnx_manifest.verify_export`), computes the orderings exactly as the PyTorch model does in eval
mode (:func:`eval_orderings`), runs the graph and applies the calibrator from ``calibration.json`` in numpy, as
``BayesianExpectationForSequenceClassification.forward`` does.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Iterator

import numpy as np
import torch

from .calibration import CALIBRATION_FILENAME, LoadedCalibration, load_calibration
from .configuration_bayesian_expectation import BayesianExpectationConfig
from .modeling_bayesian_expectation import BayesianSequenceClassifierOutput
from .onnx_manifest import ONNX_FILENAME, verify_export
from .orderings import (
    effective_num_orderings,
    example_seeds,
    sample_unit_permutations,
)
from .tokenization import num_units, unit_ids_from_input_ids, validate_unit_ids

logger = logging.getLogger(__name__)


def resolve_unit_ids(config: BayesianExpectationConfig, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     unit_ids: torch.Tensor | None) -> torch.Tensor:
    """``unit_ids`` as the model uses them: derived from the tokens by ``config.unit_segmentation`` when not
    given, and zero on padding (``BayesianExpectationModel.forward``)."""
    if unit_ids is None:
        return unit_ids_from_input_ids(
            input_ids, attention_mask, segmentation=config.unit_segmentation, cls_token_id=config.cls_token_id,
            sep_token_id=config.sep_token_id, pad_token_id=config.pad_token_id,
            sentence_end_token_ids=config.sentence_end_token_ids,
        )
    validate_unit_ids(unit_ids, input_ids.shape)
    return unit_ids.long() * (attention_mask > 0).long()


def eval_orderings(
    config: BayesianExpectationConfig,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    unit_ids: torch.Tensor | None,
    *,
    num_orderings: int | None = None,
    ordering_seed: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(unit_ids, orderings (B, k, M), weights (B, k))`` exactly as ``BayesianExpectationModel.forward`` chooses
    them in eval mode without a generator: per-example seeds from the tokens and ``ordering_seed`` (default
    ``config.ordering_seed``), ``k = min(num_orderings, max m!)``, all ``m!`` orderings enumerated when they fit.
    Passing the result as ``orderings=..., ordering_weights=...`` to the PyTorch model reproduces its output."""
    unit_ids = resolve_unit_ids(config, input_ids, attention_mask, unit_ids)
    units = num_units(unit_ids)
    k = config.num_orderings if num_orderings is None else num_orderings
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"num_orderings must be an integer >= 1, got {num_orderings!r}")
    seed = config.ordering_seed if ordering_seed is None else int(ordering_seed)
    sampled = sample_unit_permutations(
        units,
        effective_num_orderings(units, int(k)),
        seeds=example_seeds(input_ids, attention_mask, seed),
        identity_first=config.identity_first or config.length_adaptive_mixing,
        enumerate_small=not config.length_adaptive_mixing,
    )
    return unit_ids, sampled.permutations, sampled.weights


class OnnxBayesianModel:
    """An exported model run by ONNX Runtime, callable like the PyTorch model in eval mode.

    Attributes:
        config: the folder's ``BayesianExpectationConfig`` (``id2label``, ordering settings...).
        calibration: the ``LoadedCalibration`` from ``calibration.json`` (None without one), loaded by the same
            :func:`bayesian_hf.calibration.load_calibration` as the PyTorch model (label hash checked).
        manifest: the export manifest (opset, versions, quantisation, checksums).
        tokenizer: the folder's tokenizer.
        session: the ``onnxruntime.InferenceSession``.
    """

    training = False
    compiled = False
    backend = "onnx"

    def __init__(self, path: str, session: Any, config: BayesianExpectationConfig, calibration: LoadedCalibration | None,
                 manifest: dict[str, Any], tokenizer: Any) -> None:
        self.name_or_path = path
        self.session = session
        self.config = config
        self.calibration = calibration
        self.manifest = manifest
        self.tokenizer = tokenizer
        self.num_labels = config.num_labels

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, num_threads: int | None = None,
                        providers: list[str] | None = None) -> "OnnxBayesianModel":
        """Verify and load an export folder (``ValueError`` for a tampered or mismatched folder)."""
        import onnxruntime as ort

        from .folder_integrity import load_checked_tokenizer

        path = os.fspath(path)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"model folder {path} does not exist")
        config = BayesianExpectationConfig.from_pretrained(path)
        manifest = verify_export(path, config)
        calibration = None
        calibration_path = os.path.join(path, CALIBRATION_FILENAME)
        if os.path.isfile(calibration_path):
            # as from_pretrained: both label maps, and the weights the calibrator was fit on (those exported)
            calibration = load_calibration(
                calibration_path, label2id=dict(config.label2id),
                id2label={int(k): str(v) for k, v in config.id2label.items()},
                weights_sha256=manifest.get("source_weights_sha256"),
            )
            if calibration.calibrator.num_classes not in (None, config.num_labels):
                raise ValueError(f"{path}: the calibrator was fit for {calibration.calibrator.num_classes} classes, "
                                 f"the model has {config.num_labels}")
        else:
            logger.warning("%s has no %s: probabilities are uncalibrated", path, CALIBRATION_FILENAME)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if num_threads:
            options.intra_op_num_threads = int(num_threads)
        options.inter_op_num_threads = 1
        # no busy-waiting of the thread pool between runs: on a small or shared CPU spinning threads take cores
        # from the tokenizer, the server's event loop and any other model in the process
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(os.path.join(path, ONNX_FILENAME), options,
                                       providers=providers or ["CPUExecutionProvider"])
        tokenizer = load_checked_tokenizer(path, config)
        return cls(path, session, config, calibration, manifest, tokenizer)

    # the parts of the nn.Module interface the callers use -------------------------------------------------
    def eval(self) -> "OnnxBayesianModel":
        """No-op (always in inference mode); returns self like ``nn.Module.eval``."""
        return self

    def parameters(self) -> Iterator[torch.Tensor]:
        """A CPU marker tensor: callers read ``next(model.parameters()).device`` to place inputs."""
        yield torch.empty(0)

    def __repr__(self) -> str:
        return f"OnnxBayesianModel({self.name_or_path!r}, quantization={self.manifest.get('quantization')})"

    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        unit_ids: torch.Tensor | None = None,
        *,
        num_orderings: int | None = None,
        ordering_seed: int | None = None,
        **kwargs: Any,
    ) -> BayesianSequenceClassifierOutput:
        """Eval-mode outputs for a tokenized batch (the same arguments and output fields as the PyTorch model)."""
        unsupported = {k for k, v in kwargs.items() if v is not None and k not in ("return_dict",)}
        if unsupported:
            raise ValueError(f"the ONNX backend does not support {sorted(unsupported)}; use the PyTorch backend")
        input_ids = torch.as_tensor(input_ids).long()
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must have shape (batch_size, sequence_length), got {tuple(input_ids.shape)}")
        if input_ids.shape[1] > self.config.max_position_embeddings:
            raise ValueError(f"sequence length {input_ids.shape[1]} exceeds max_position_embeddings="
                             f"{self.config.max_position_embeddings}")
        attention_mask = torch.ones_like(input_ids) if attention_mask is None else torch.as_tensor(attention_mask).long()
        token_type_ids = torch.zeros_like(input_ids) if token_type_ids is None else torch.as_tensor(token_type_ids).long()
        units, orderings, weights = eval_orderings(
            self.config, input_ids, attention_mask, None if unit_ids is None else torch.as_tensor(unit_ids),
            num_orderings=num_orderings, ordering_seed=ordering_seed,
        )
        feeds = {
            "input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy(),
            "token_type_ids": token_type_ids.numpy(), "unit_ids": units.numpy(),
            "orderings": orderings.numpy(), "ordering_weights": weights.numpy(),
        }
        names = self.manifest["outputs"]
        values = dict(zip(names, self.session.run(names, feeds)))
        calibrated = None
        if self.calibration is not None:
            transformed = self.calibration.calibrator.transform(values["logits"].astype(np.float64))
            calibrated = torch.as_tensor(np.asarray(transformed), dtype=torch.float32)
        tensors = {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in values.items()}
        return BayesianSequenceClassifierOutput(
            logits=tensors["logits"], probs=tensors["probs"], calibrated_probs=calibrated,
            epistemic=tensors["epistemic"], aleatoric=tensors["aleatoric"], total=tensors["total"],
            order_dispersion=tensors["order_dispersion"], num_units=tensors["num_units"],
        )


__all__ = ["OnnxBayesianModel", "eval_orderings", "resolve_unit_ids"]
