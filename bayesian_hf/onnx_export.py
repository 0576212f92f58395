"""``bayesian-hf export``: a model folder to ONNX (optionally INT8), in a folder that stays loadable.

What is exported is the whole predictive path of the eval-mode model: the encoder with the expectation over
orderings, the pooler and classifier, and the posterior predictive (the Laplace head's fixed, seeded draws are
constants of the graph). The orderings are graph inputs (``orderings`` ``(B, k, M)`` and their
``ordering_weights`` ``(B, k)``), computed outside the graph exactly as eval mode does
(:func:`bayesian_hf.onnx_runtime.eval_orderings`), so the graph is deterministic and ONNX Runtime and PyTorch
agree. Batch, sequence, ordering and unit axes are dynamic. The calibrator stays outside the graph (numpy, from
the copied ``calibration.json``), like in PyTorch.

The output folder holds ``model.onnx``, ``config.json``, the tokenizer files, ``calibration.json`` (when the
model has one), the model card if any, and ``export_manifest.json``: opset, versions, quantisation, labels and
the sha256 of ``model.onnx`` and ``calibration.json``. :func:`verify_export` (run on every load) refuses a folder
whose files do not match their checksums or whose labels disagree with the config or the calibration.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from typing import Any, Iterator, Sequence

from . import posterior  # the module: its draw function is swapped while tracing
from .folder_integrity import weights_fingerprint
from .inference import token_limit
from .model_files import CALIBRATION_FILENAME, CARD_FILES
from .modeling_bayesian_expectation import BayesianExpectationForSequenceClassification
from .onnx_manifest import (  # noqa: F401  (re-exported: the manifest names and checks were first defined here)
    EXPORT_MANIFEST,
    INPUT_NAMES,
    MANIFEST_FORMAT,
    MANIFEST_VERSION,
    ONNX_FILENAME,
    OUTPUT_NAMES,
    is_onnx_export,
    read_manifest,
    sha256_file,
    verify_export,
)
from .onnx_runtime import eval_orderings
from .version import __version__

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17
FORMATS = ("onnx",)
QUANTIZATIONS = ("int8",)
DYNAMIC_AXES = {
    "input_ids": {0: "batch", 1: "sequence"},
    "attention_mask": {0: "batch", 1: "sequence"},
    "token_type_ids": {0: "batch", 1: "sequence"},
    "unit_ids": {0: "batch", 1: "sequence"},
    "orderings": {0: "batch", 1: "orderings", 2: "units"},
    "ordering_weights": {0: "batch", 1: "orderings"},
    **{name: {0: "batch"} for name in OUTPUT_NAMES},
}
# files copied from the model folder when present (the tokenizer is re-saved through AutoTokenizer)
_CARRIED = CARD_FILES


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch
    import transformers


    return {"bayesian_hf": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def _require_onnx() -> None:
    missing = []
    for name in ("onnx", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ImportError(f"ONNX export needs {', '.join(missing)}: pip install 'bayesian_hf[onnx]'")


class _ExportWrapper:
    """Builds the traced module lazily (torch imported only when exporting)."""

    @staticmethod
    def build(model: Any) -> Any:
        import torch

        class PredictivePath(torch.nn.Module):
            """The eval-mode forward with explicit orderings, returning the tensors of :data:`OUTPUT_NAMES`."""

            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, input_ids, attention_mask, token_type_ids, unit_ids, orderings, ordering_weights):
                out = self.inner(
                    input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                    unit_ids=unit_ids, orderings=orderings, ordering_weights=ordering_weights, return_dict=True,
                )
                return tuple(getattr(out, name) for name in OUTPUT_NAMES)

        return PredictivePath(model).eval()


@contextlib.contextmanager
def _constant_posterior_draws(config: Any) -> Iterator[None]:
    """While tracing, the Laplace head's fixed draws (``posterior.standard_normal_draws``, seeded) are returned as
    tensors computed before the trace, so they enter the graph as constants instead of a seeded generator call
    (which ONNX cannot express). The values are those of the original function."""
    import torch


    original = posterior.standard_normal_draws
    # LaplacePosterior.forward draws (posterior_samples, 2C) in float32 (the logits' dtype promoted to float32)
    shape = (int(config.posterior_samples), 2 * int(config.num_labels))
    precomputed = original(*shape, torch.float32, torch.device("cpu"))

    def constant_draws(num_samples: int, num_classes: int, dtype: Any, device: Any) -> Any:
        if (int(num_samples), int(num_classes)) != shape or dtype != torch.float32:
            raise RuntimeError(f"unexpected posterior draws {(num_samples, num_classes, dtype)} while exporting")
        return precomputed.to(device)

    posterior.standard_normal_draws = constant_draws
    try:
        yield
    finally:
        posterior.standard_normal_draws = original


def _trace_inputs(model: Any) -> dict[str, Any]:
    """Example inputs for tracing: two examples at the longest sequence the model takes (so any size-derived
    constant the tracer may keep is an upper bound), many units, k >= 2 orderings from the eval-mode rule."""
    import torch


    config = model.config
    seq = token_limit(config)
    num_units = max(2, min(12, (seq - 2) // 2))
    gen = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, min(int(config.vocab_size), 1000), (2, seq), generator=gen)
    input_ids[:, 0] = config.cls_token_id if config.cls_token_id is not None else 0
    attention_mask = torch.ones(2, seq, dtype=torch.long)
    attention_mask[1, seq // 2:] = 0  # the second example is padded
    unit_ids = torch.zeros(2, seq, dtype=torch.long)
    body = torch.arange(seq - 2) * num_units // (seq - 2) + 1
    unit_ids[0, 1:-1] = body
    half = seq // 2 - 2
    unit_ids[1, 1 : half + 1] = torch.arange(half) * 3 // max(half, 1) + 1
    num_orderings = max(2, int(config.num_orderings))
    unit_ids, orderings, weights = eval_orderings(config, input_ids, attention_mask, unit_ids, num_orderings=num_orderings)
    if orderings.shape[1] < 2:  # pragma: no cover - num_units >= 2 and k >= 2 always give two orderings
        raise RuntimeError("tracing needs at least two orderings")
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": torch.zeros_like(input_ids),
            "unit_ids": unit_ids, "orderings": orderings, "ordering_weights": weights}


def _validate_request(model_dir: str, output: str, fmt: str, quantize: str | None, opset: int, overwrite: bool) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; supported: {', '.join(FORMATS)}")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ValueError(f"unknown quantization {quantize!r}; supported: {', '.join(QUANTIZATIONS)} (or none)")
    if isinstance(opset, bool) or not isinstance(opset, int) or not 14 <= opset <= 21:
        raise ValueError(f"opset must be an integer in [14, 21], got {opset!r}")
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"model folder {model_dir} does not exist (give a folder written by save_pretrained)")
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise ValueError(f"{model_dir} has no config.json: not a saved model folder")
    if is_onnx_export(model_dir):
        raise ValueError(f"{model_dir} is already an ONNX export; export the PyTorch model folder it came from")
    if os.path.abspath(output) == os.path.abspath(model_dir):
        raise ValueError("--output must be a new folder, not the model folder itself")
    if os.path.exists(output) and (not os.path.isdir(output) or os.listdir(output)) and not overwrite:
        raise ValueError(f"output {output} exists and is not empty; choose a new folder or pass overwrite=True (--overwrite)")


def export_onnx(
    model_dir: str | os.PathLike,
    output: str | os.PathLike,
    *,
    format: str = "onnx",
    quantize: str | None = None,
    opset: int = DEFAULT_OPSET,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export the model folder ``model_dir`` to ``output`` (see the module docstring); returns the manifest.

    Args:
        model_dir: a folder written by ``save_pretrained`` (weights, config, tokenizer, optional calibration.json).
        output: the new folder; it is written in a temporary sibling and moved into place at the end, so a
            failed export leaves nothing half-written.
        format: ``"onnx"`` (the only format).
        quantize: ``None`` (fp32) or ``"int8"`` (ONNX Runtime dynamic quantisation of the MatMul/Gemm weights).
        opset: ONNX opset (14..21).
        overwrite: replace a non-empty ``output``.
    """
    import torch
    from transformers import AutoTokenizer


    model_dir, output = os.fspath(model_dir), os.fspath(output)
    _validate_request(model_dir, output, format, quantize, opset, overwrite)
    _require_onnx()
    model = BayesianExpectationForSequenceClassification.from_pretrained(model_dir).eval()
    config = model.config
    if config.head_type == "counting":
        raise ValueError("the 'counting' head pools a data-dependent number of units and is not exportable; "
                         "export a 'laplace' (default) or 'evidential' model")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    parent = os.path.dirname(os.path.abspath(output)) or "."
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".export-", dir=parent)
    os.chmod(staging, 0o755)  # mkdtemp makes it 0700: the renamed export must be readable by a serving user
    try:
        onnx_path = os.path.join(staging, ONNX_FILENAME)
        calibration = model.calibration
        model.calibration = None  # the calibrator is applied after the graph, in numpy
        try:
            example = _trace_inputs(model)
            wrapper = _ExportWrapper.build(model)
            started = time.perf_counter()
            with torch.no_grad(), _constant_posterior_draws(config), warnings.catch_warnings():
                # the tracer notes every Python-level check it freezes (shape/validity checks of the inputs)
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                torch.onnx.export(
                    wrapper, tuple(example[name] for name in INPUT_NAMES), onnx_path,
                    input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES), dynamic_axes=DYNAMIC_AXES,
                    opset_version=opset, do_constant_folding=True, dynamo=False,
                )
            logger.info("traced and exported to ONNX in %.1fs", time.perf_counter() - started)
        finally:
            model.calibration = calibration
        import onnx

        onnx.checker.check_model(onnx_path)
        if quantize == "int8":
            _quantize_int8(onnx_path)
        config.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        calibration_file = os.path.join(model_dir, CALIBRATION_FILENAME)
        if os.path.isfile(calibration_file):
            shutil.copy(calibration_file, os.path.join(staging, CALIBRATION_FILENAME))
        for name in _CARRIED:
            if os.path.isfile(os.path.join(model_dir, name)):
                shutil.copy(os.path.join(model_dir, name), os.path.join(staging, name))

        manifest = build_manifest(staging, config, opset=opset, quantize=quantize, source=model_dir,
                                  posterior_fitted=bool(getattr(model, "has_posterior", False)),
                                  source_weights_sha256=weights_fingerprint(model_dir))
        with open(os.path.join(staging, EXPORT_MANIFEST), "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=2, sort_keys=True)
        if os.path.exists(output):
            shutil.rmtree(output)
        os.replace(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("exported %s to %s (%s)", model_dir, output, quantize or "fp32")
    return manifest


def _quantize_int8(onnx_path: str) -> None:
    """Dynamic INT8 quantisation (weights int8 per channel, activations quantised at run time) of the MatMul and
    Gemm nodes, after ONNX Runtime's shape-inference pre-processing; replaces ``onnx_path``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    folder = os.path.dirname(onnx_path)
    prepared = os.path.join(folder, "prepared.onnx")
    quantized = os.path.join(folder, "quantized.onnx")
    quant_pre_process(onnx_path, prepared, skip_symbolic_shape=True)
    quantize_dynamic(prepared, quantized, weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul", "Gemm"], nodes_to_exclude=_kept_in_fp32(prepared))
    os.replace(quantized, onnx_path)
    os.remove(prepared)


def _kept_in_fp32(onnx_path: str) -> list[str]:
    """MatMul/Gemm nodes left in fp32 by the INT8 export: the factored embeddings of the k orderings (products with
    the position table and the first block's folded projections, scoped directly under ``bert``), the pooler, the
    classifier and the posterior (the logit variances behind the epistemic uncertainty are small differences that
    8-bit weights distort). They are a small share of the time; the blocks above are quantised."""
    import re

    import onnx

    pattern = re.compile(r"^/inner/bert/MatMul(_\d+)?$|/pooler/|/classifier/|/posterior/")
    graph = onnx.load(onnx_path, load_external_data=False).graph
    names = [node.name for node in graph.node if node.op_type in ("MatMul", "Gemm") and pattern.search(node.name)]
    # the quantiser rewrites a Gemm as "<name>_MatMul" + Add before it looks at the exclusions
    return names + [f"{name}_MatMul" for name in names]


def build_manifest(folder: str, config: Any, *, opset: int, quantize: str | None, source: str,
                   posterior_fitted: bool, source_weights_sha256: str | None = None) -> dict[str, Any]:
    """The manifest of an export folder: format, opset, versions, labels, graph inputs/outputs and checksums."""

    calibration = os.path.join(folder, CALIBRATION_FILENAME)
    return {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_VERSION,
        "onnx_file": ONNX_FILENAME,
        "opset": int(opset),
        "quantization": "int8-dynamic" if quantize == "int8" else None,
        "versions": _versions(),
        "labels": [str(config.id2label[i]) for i in range(config.num_labels)],
        "head_type": config.head_type,
        "posterior_fitted": posterior_fitted,
        "num_orderings": int(config.num_orderings),
        "posterior_samples": int(config.posterior_samples),
        "inputs": list(INPUT_NAMES),
        "outputs": list(OUTPUT_NAMES),
        "sha256": {
            ONNX_FILENAME: sha256_file(os.path.join(folder, ONNX_FILENAME)),
            CALIBRATION_FILENAME: sha256_file(calibration) if os.path.isfile(calibration) else None,
        },
        # the weights the graph was exported from; calibration.json is bound to them (its weights_sha256)
        "source_weights_sha256": source_weights_sha256,
        "source": os.path.basename(os.path.normpath(source)),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def cmd_export(args: Any) -> int:
    """Export a model folder to ONNX (optionally INT8) in a folder `bayesian-hf serve`/`predict` load directly."""
    manifest = export_onnx(args.model, args.output, format=args.format, quantize=args.quantize, opset=args.opset,
                           overwrite=args.overwrite)
    size_mb = os.path.getsize(os.path.join(args.output, ONNX_FILENAME)) / 2**20
    print(f"Exported {args.model} -> {args.output} ({manifest['quantization'] or 'fp32'}, opset {manifest['opset']}, "
          f"{size_mb:.1f} MiB, labels {manifest['labels']})")
    print(f"Serve it:    bayesian-hf serve --model {args.output}   (the ONNX backend is detected from the folder)")
    return 0


def add_export_arguments(parser: Any) -> None:
    """The flags of ``bayesian-hf export``."""
    parser.add_argument("--model", required=True, help="a saved Bayesian model folder")
    parser.add_argument("--format", choices=list(FORMATS), default="onnx")
    parser.add_argument("--quantize", choices=list(QUANTIZATIONS), default=None,
                        help="int8: ONNX Runtime dynamic quantisation (smaller, faster on CPU)")
    parser.add_argument("--output", required=True, help="new folder for model.onnx, config, tokenizer, calibration")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output folder")
    parser.set_defaults(func=cmd_export)


__all__: Sequence[str] = ["EXPORT_MANIFEST", "ONNX_FILENAME", "export_onnx", "read_manifest", "sha256_file", "verify_export"]
