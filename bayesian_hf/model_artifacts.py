"""The artifacts that travel with a model's weights, behind one mechanism that every save, load and push uses.

The names of what a model folder holds are in ``model_files.py``. This module says how they are written, checked
and uploaded:

* :func:`save_calibration_artifact` / :func:`load_calibration_artifact` — ``calibration.json`` next to the
  weights (JSON, never pickle), bound to their sha256 and to both label maps. ``save_pretrained`` and
  ``from_pretrained`` of the model call them.
* one artifact file (the card, a diagram) is replaced with ``folder_integrity.atomic_file`` (one ``os.replace``);
  the whole folder is swapped by ``folder_integrity.atomic_model_folder``.
* :func:`model_folder_files` — the files of a folder that may leave the machine; refuses an incomplete folder
  and any pickle-based file.
* :func:`upload_model_folder` — ONE commit of exactly those files. Both push paths use it:
  ``model.push_to_hub`` (through :func:`push_model`, which saves into a temporary folder and adds the tokenizer,
  card and diagrams, :data:`~model_files.CARRIED_FILES`) and ``bayesian-hf push`` (``hub.push_model_folder``, a
  folder as it is). So both refuse pickles and both skip temporary and retired files.

Only the standard library, torch, transformers / huggingface_hub and flat siblings are imported: this file
travels with the modeling code of a saved model (``trust_remote_code``).
"""

from __future__ import annotations

import fnmatch
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import HfApi
from transformers.utils import cached_file

from .calibration_artifact import LoadedCalibration, load_calibration, save_calibration
from .folder_integrity import is_transient_name, weight_files, weights_fingerprint
from .model_files import (
    CALIBRATION_FILENAME,
    CARD_FILES,
    CARRIED_FILES,
    IGNORED_FOLDERS,
    IGNORED_NAMES,
    REQUIRED_FILES,
    UNSAFE_SUFFIXES,
    WEIGHTS_FILE,
    WEIGHTS_INDEX_FILE,
)

logger = logging.getLogger(__name__)

#: calibration metadata written into calibration.json next to the calibrator (see docs/serving.md)
CALIBRATION_METADATA_KEYS = (
    "selection", "fit_split", "fallback", "decision_thresholds", "risk_coverage", "drift_reference",
)
#: what ``from_pretrained`` passes on to ``cached_file`` when it looks for ``calibration.json`` and the weights
HUB_KWARGS = ("revision", "cache_dir", "token", "local_files_only", "subfolder")


# ---------------------------------------------------------------------------------------------- calibration.json


def _label_maps(config: Any) -> dict[str, Any]:
    return {"label2id": dict(config.label2id), "id2label": {int(k): str(v) for k, v in config.id2label.items()}}


def save_calibration_artifact(model: Any, save_directory: str | os.PathLike) -> str:
    """Write ``model.calibration`` as ``calibration.json`` (atomically) in ``save_directory``, bound to the sha256
    of the weights saved there, which must be this model's (:func:`check_saved_weights_match`)."""
    if model.calibration is None:
        raise ValueError("no calibrator attached; use set_calibration or bayesian_hf.evaluation.fit_model_calibration")
    check_saved_weights_match(model, save_directory)
    meta = model.calibration.metadata
    return save_calibration(
        os.path.join(save_directory, CALIBRATION_FILENAME),
        model.calibration.calibrator,
        **_label_maps(model.config),
        fit_metrics=dict(meta.get("fit_metrics", {})),
        num_samples=int(meta.get("num_samples", 0)),
        conformal=model.calibration.conformal,
        extra={k: v for k, v in meta.items() if k in CALIBRATION_METADATA_KEYS},
        weights_sha256=weights_fingerprint(save_directory),
    )


def check_saved_weights_match(model: Any, folder: str | os.PathLike) -> None:
    """Raise `ValueError` unless ``folder`` holds safetensors weights whose classifier (and posterior) equal
    ``model``'s: a calibrator bound to other weights would be silently wrong."""
    from safetensors import safe_open

    files = weight_files(folder)
    if not files:
        raise ValueError(f"{folder} holds no model.safetensors: save the model with save_pretrained before its "
                         "calibrator")
    own = {k: v for k, v in model.state_dict().items() if k.startswith(("classifier.", "posterior."))}
    seen = set()
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            for name in set(f.keys()) & set(own):
                seen.add(name)
                stored = f.get_tensor(name).to(device=own[name].device, dtype=own[name].dtype)
                if stored.shape != own[name].shape or not torch.equal(stored, own[name]):
                    raise ValueError(f"the weights in {folder} are not this model's ({name} differs): call "
                                     "save_pretrained(folder) before saving the calibrator")
    if not seen:
        raise ValueError(f"the weights in {folder} have no classifier: they are not this model's")


def load_calibration_artifact(
    model: Any,
    name_or_path: str | os.PathLike,
    *,
    ignore_mismatch: bool = False,
    hub_kwargs: Mapping[str, Any] | None = None,
) -> LoadedCalibration | None:
    """``calibration.json`` of a local folder or Hub repo, checked against ``model``'s label maps and the sha256
    of the weights next to it; ``None`` when there is none (with a warning: outputs are uncalibrated).

    A corrupt file, one fit for other labels or one bound to other weights raises `ValueError` unless
    ``ignore_mismatch`` (then it is returned with a warning, or ``None`` when unreadable)."""
    hub_kwargs = {k: v for k, v in (hub_kwargs or {}).items() if k in HUB_KWARGS}
    path = cached_file(
        name_or_path,
        CALIBRATION_FILENAME,
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
        **hub_kwargs,
    )
    if path is None:
        logger.warning(
            "%s has no %s: probabilities are uncalibrated (fit one with `bayesian-hf calibrate`)",
            name_or_path,
            CALIBRATION_FILENAME,
        )
        return None
    weights = None
    for name in (WEIGHTS_FILE, WEIGHTS_INDEX_FILE):
        found = cached_file(name_or_path, name, _raise_exceptions_for_missing_entries=False,
                            _raise_exceptions_for_connection_errors=False, **hub_kwargs)
        if found is not None:
            weights = weights_fingerprint(os.path.dirname(found))
            break
    try:
        return load_calibration(path, ignore_mismatch=ignore_mismatch, weights_sha256=weights,
                                **_label_maps(model.config))
    except ValueError:
        if not ignore_mismatch:
            raise
        logger.warning("ignoring an unreadable %s at %s", CALIBRATION_FILENAME, path)
        return None


# ---------------------------------------------------------------------------------------------- files


def copy_carried_files(source: str | os.PathLike, folder: str | os.PathLike, names: Iterable[str]) -> list[str]:
    """Copy the files of ``names`` that ``source`` has into ``folder``; returns the names copied."""
    copied = []
    for name in names:
        if os.path.isfile(os.path.join(source, name)):
            shutil.copy(os.path.join(source, name), os.path.join(folder, name))
            copied.append(name)
    return copied


def _ignored(relative: Path) -> bool:
    if any(fnmatch.fnmatch(relative.parts[0], pat) for pat in IGNORED_FOLDERS):
        return True
    return any(fnmatch.fnmatch(part, pat) or is_transient_name(part)
               for part in relative.parts for pat in IGNORED_NAMES)


def model_folder_files(folder: str | os.PathLike) -> list[str]:
    """The files of ``folder`` that may be pushed (everything but :data:`~model_files.IGNORED_FOLDERS`,
    :data:`~model_files.IGNORED_NAMES` and the leftovers of an interrupted save); raises `ValueError` if a file of
    :data:`~model_files.REQUIRED_FILES` is missing (sharded weights with their index count as the weights) or a
    pickle-based file (:data:`~model_files.UNSAFE_SUFFIXES`) is present."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a model folder")
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                   if p.is_file() and not _ignored(p.relative_to(folder)))
    missing = [f for f in REQUIRED_FILES if f not in names and not (f == WEIGHTS_FILE and WEIGHTS_INDEX_FILE in names)]
    if missing:
        raise ValueError(f"{folder} is missing {missing}; save it with save_pretrained first")
    unsafe = [n for n in names if n.endswith(UNSAFE_SUFFIXES)]
    if unsafe:
        raise ValueError(f"refusing to push pickle-based files {unsafe}: artifacts must be JSON or safetensors")
    return names


# ---------------------------------------------------------------------------------------------- pushes


def upload_model_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    commit_message: str,
    private: bool | None = None,
    token: str | None = None,
    commit_description: str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
) -> str:
    """Upload exactly the files :func:`model_folder_files` lists (so never a pickle) in ONE commit, creating the
    repo if needed; returns the commit URL."""
    names = model_folder_files(folder)
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message=commit_message,
                             commit_description=commit_description, revision=revision, create_pr=create_pr,
                             allow_patterns=names)
    return str(getattr(info, "commit_url", info))


def push_model(
    model: Any,
    repo_id: str,
    *,
    tokenizer: Any | None = None,
    card_dir: str | os.PathLike | None = None,
    max_shard_size: int | str | None = "50GB",
    commit_message: str | None = None,
    token: bool | str | None = None,
    **upload: Any,
) -> str:
    """What ``model.push_to_hub`` sends, in one commit: ``model.save_pretrained`` (weights, config, modeling code,
    ``calibration.json``) into a temporary folder, the tokenizer (``tokenizer``, or the tokenizer files of the
    source folder), and the card and its diagrams (:data:`~model_files.CARD_FILES`) from ``card_dir`` (default:
    the local folder the model was loaded from, when it has them); then :func:`upload_model_folder` with
    ``upload`` (``private``, ``commit_description``, ``revision``, ``create_pr``) and a string ``token``."""
    source = card_dir if card_dir is not None else model.name_or_path
    source = str(source) if source and os.path.isdir(str(source)) else None
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder, max_shard_size=max_shard_size)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
        if source:
            copy_carried_files(source, folder, CARD_FILES if tokenizer is not None else CARRIED_FILES)
        return upload_model_folder(folder, repo_id,
                                   commit_message=commit_message or "Upload Bayesian-expectation model",
                                   token=token if isinstance(token, str) else None, **upload)


__all__ = [
    "CALIBRATION_METADATA_KEYS",
    "check_saved_weights_match",
    "copy_carried_files",
    "load_calibration_artifact",
    "model_folder_files",
    "push_model",
    "save_calibration_artifact",
    "upload_model_folder",
]
