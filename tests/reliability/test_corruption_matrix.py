"""Corruption matrix: every file of a saved model folder x {truncated, empty, wrong JSON types, NaN, swapped
labels, huge}. Loading the folder the way the server does (model + calibration.json + checked tokenizer) must
either raise a clear error (`ValueError`/`OSError` with a message, never a bare KeyError/RecursionError/...) or
give a model whose predictions equal the original's -- never a wrong answer."""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
from pathlib import Path

import pytest
from _folders import build_model, observe, save_folder  # noqa: E402

from bayesian_hf.model_files import REMOTE_CODE_FILES  # noqa: E402

KINDS = ("truncate", "empty", "wrong_types", "nan", "swapped_labels", "huge")
HUGE_BYTES = 6 * 1024 * 1024  # over the 4 MiB bound of calibration.json


@pytest.fixture(scope="module")
def original(tmp_path_factory, minilm_tokenizer):
    work = tmp_path_factory.mktemp("matrix")
    folder = save_folder(build_model(minilm_tokenizer, work, seed=0), minilm_tokenizer, work / "model")
    return folder, observe(folder)


def _files() -> list[str]:
    """The files of a saved folder (fixed list so the test ids do not depend on a fixture): the data files and the
    remote code, `model_files.REMOTE_CODE_FILES`."""
    return ["calibration.json", "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            *REMOTE_CODE_FILES]


def _retype(value):
    """A value of another JSON type."""
    if isinstance(value, bool):
        return "yes"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return 7
    if isinstance(value, list):
        return {"0": value[:1]}
    if isinstance(value, dict):
        return [len(value)]
    return []


def _nan_numbers(value):
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return math.nan
    if isinstance(value, list):
        return [_nan_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: _nan_numbers(v) for k, v in value.items()}
    return value


def _safetensors(path: Path):
    from safetensors.torch import load_file, save_file

    return load_file(path), lambda tensors: save_file(tensors, path, metadata={"format": "pt"})


def _corrupt(path: Path, kind: str) -> bool:
    """Apply ``kind`` to ``path``; False when the corruption does not apply to this file type."""
    data = path.read_bytes()
    is_json, is_weights = path.suffix == ".json", path.suffix == ".safetensors"
    if kind == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "huge":
        if is_json:
            doc = json.loads(data)
            doc["zz_padding"] = "x" * HUGE_BYTES
            path.write_text(json.dumps(doc))
        elif is_weights:  # a header length of 2**50 bytes
            path.write_bytes(struct.pack("<Q", 1 << 50) + data[8:])
        else:
            path.write_bytes(data + b"\n" + b"#" * HUGE_BYTES + b"\n")
    elif kind == "wrong_types":
        if is_json:
            doc = json.loads(data)
            path.write_text(json.dumps({k: _retype(v) for k, v in doc.items()} if isinstance(doc, dict) else {}))
        elif is_weights:  # same bytes, another dtype in the header: F32 -> I32
            size = struct.unpack("<Q", data[:8])[0]
            header = data[8 : 8 + size].replace(b'"F32"', b'"I32"')
            path.write_bytes(data[:8] + header + data[8 + size :])
        else:
            return False
    elif kind == "nan":
        if is_json:
            path.write_text(json.dumps(_nan_numbers(json.loads(data))))
        elif is_weights:
            tensors, save = _safetensors(path)
            tensors["bert.embeddings.LayerNorm.weight"][3] = math.nan
            save(tensors)
        else:
            return False
    elif kind == "swapped_labels":
        if path.name == "config.json":
            doc = json.loads(data)
            doc["id2label"] = {"0": doc["id2label"]["1"], "1": doc["id2label"]["0"]}
            path.write_text(json.dumps(doc))
        elif path.name == "calibration.json":
            doc = json.loads(data)
            doc["label2id"] = {name: 1 - i for name, i in doc["label2id"].items()}
            path.write_text(json.dumps(doc))
        elif is_weights:  # the classifier rows of the two classes exchanged
            tensors, save = _safetensors(path)
            for name in ("classifier.weight", "classifier.bias"):
                tensors[name] = tensors[name].flip(0).contiguous()
            save(tensors)
        else:
            return False
    return True


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", _files())
def test_corrupted_file_gives_a_clear_error_or_the_right_answers(original, tmp_path, name, kind):
    source, expected = original
    folder = shutil.copytree(source, tmp_path / "model")
    if not _corrupt(Path(folder) / name, kind):
        pytest.skip(f"{kind} does not apply to {name}")
    try:
        got = observe(folder)
    except (ValueError, OSError) as err:
        message = str(err)
        assert 20 < len(message) < 2000, f"unclear error: {type(err).__name__}: {message[:500]!r}"
        return
    assert got == expected, f"{name} {kind}: loaded, but the answers changed"


def test_matrix_covers_every_file_of_a_saved_folder(original):
    source, _ = original
    assert sorted(os.listdir(source)) == sorted(_files())
