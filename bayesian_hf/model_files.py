"""What files a model folder holds: the one list of names that saving, loading, pushing and exporting share.

A saved model folder is ``config.json`` + ``model.safetensors`` (or its shards) + the code of
:data:`REMOTE_CODE_FILES` (copied by ``save_pretrained`` for ``trust_remote_code``) + the artifacts that describe
those weights (``calibration.json``, the card and its diagrams, :data:`CARD_FILES`) + the tokenizer. How they are
written, checked and uploaded is ``model_artifacts.py``; how a folder is swapped in atomically is
``folder_integrity.py``. See docs/architecture.md §5.

Names only, no imports: this file travels with the modeling code of a saved model (``trust_remote_code``).
"""

from __future__ import annotations

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
CALIBRATION_FILENAME = "calibration.json"
CARD_FILE = "README.md"
RELIABILITY_PNG = "reliability_diagram.png"
RISK_COVERAGE_PNG = "risk_coverage.png"
POSTERIOR_FIT_FILE = "posterior_fit.json"
SUMMARY_FILE = "summary.json"

#: the model card and the diagrams it shows (written by ``hub.write_model_card``)
CARD_FILES = (CARD_FILE, RELIABILITY_PNG, RISK_COVERAGE_PNG)
#: the tokenizer files a BERT WordPiece tokenizer saves
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
#: files of a model folder that ``push_to_hub`` carries along besides what ``save_pretrained`` writes (the
#: tokenizer files only when no tokenizer is passed); an ONNX export carries :data:`CARD_FILES`
CARRIED_FILES = CARD_FILES + TOKENIZER_FILES
#: artifacts that describe particular weights: kept across a save only when the weights are unchanged
#: (``calibration.json.bak`` / ``.stale``, retired calibrators kept for reference, are never loaded nor pushed)
WEIGHT_BOUND_FILES = (CALIBRATION_FILENAME, *CARD_FILES, POSTERIOR_FIT_FILE, SUMMARY_FILE)

#: the two files ``config.json``'s ``auto_map`` names
MODEL_CODE_FILES = ("modeling_bayesian_expectation.py", "configuration_bayesian_expectation.py")
#: every Python file that travels with a saved model for ``trust_remote_code``: the two of
#: :data:`MODEL_CODE_FILES` and, recursively, every flat sibling they import with ``from .x import``
#: (``transformers.dynamic_module_utils.get_relative_import_files``). No plotting, no Trainer, no serving.
#: ``tests/integration/test_remote_code_files.py`` checks that a save copies exactly these and that a fresh process
#: loads a model from them alone: change this list when the modeling file's imports change.
REMOTE_CODE_FILES = tuple(sorted((
    "calibration_artifact.py",  # calibration.json: the calibrator and conformal predictor of a saved model
    "calibration_base.py",
    "calibrator_histogram.py",
    "calibrator_isotonic.py",
    "calibrator_platt.py",
    "calibrator_temperature.py",
    "calibrators.py",
    "configuration_bayesian_expectation.py",
    "conformal.py",
    "conversion.py",
    "folder_integrity.py",
    "losses.py",
    "metrics.py",  # the metric functions only: plotting and Trainer glue resolve lazily (plotting.py, ...)
    "model_artifacts.py",
    "model_files.py",
    "modeling_bayesian_expectation.py",
    "orderings.py",
    "posterior.py",
    "tokenization.py",
    "uncertainty.py",
)))

#: what a folder must hold to be pushed (the weights may instead be shards named by :data:`WEIGHTS_INDEX_FILE`)
REQUIRED_FILES = (CONFIG_FILE, WEIGHTS_FILE, *MODEL_CODE_FILES)
#: pickle-based formats: never pushed (a pickle runs code when it is loaded)
UNSAFE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".joblib", ".ckpt")
#: training leftovers in an output folder that are never pushed (Trainer checkpoints hold torch pickles)
IGNORED_FOLDERS = ("checkpoint-*", "runs", ".cache")
#: never pushed either: hidden entries (staging/aside folders of a save killed half-way, temp files) and the
#: calibrators an earlier save or a posterior refit replaced
IGNORED_NAMES = (".*", "*.tmp", "*.bak", "*.stale")

__all__ = [
    "CALIBRATION_FILENAME",
    "CARD_FILES",
    "CARRIED_FILES",
    "IGNORED_FOLDERS",
    "IGNORED_NAMES",
    "MODEL_CODE_FILES",
    "RELIABILITY_PNG",
    "REMOTE_CODE_FILES",
    "REQUIRED_FILES",
    "RISK_COVERAGE_PNG",
    "TOKENIZER_FILES",
    "UNSAFE_SUFFIXES",
    "WEIGHT_BOUND_FILES",
]
