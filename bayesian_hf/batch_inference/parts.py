"""Parts, manifest and resume: the fingerprint of the model folder, the manifest that binds ``OUTPUT.parts/`` to
one job (input, model, options), where each part lives, which parts are done, and rank 0's wait for the other
ranks' parts."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..backends import resolve_backend
from .options import BatchPredictOptions
from .readers import OUTPUT_FORMATS, InputRows
from .sharding import ShardPlan
from .writers import write_json_atomic

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
METADATA_KEY = b"bayesian_hf.predict"
#: files of a model folder that never change predictions (left out of its fingerprint)
_FINGERPRINT_SKIP_SUFFIXES = (".md", ".png", ".jpg", ".svg", ".log", ".bak")


def model_fingerprint(model_dir: str) -> dict[str, Any]:
    """SHA-256 over the files of a model folder that change predictions (config, weights, tokenizer,
    ``calibration.json``...; not the card or images), by name and content.  The same folder copied to another
    machine has the same fingerprint (modification times are not used)."""
    root = Path(model_dir)
    digest = hashlib.sha256()
    files = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        skip = rel.startswith((".", "runs/", "checkpoint-")) or "/." in rel
        if skip or rel.lower().endswith(_FINGERPRINT_SKIP_SUFFIXES):
            continue
        digest.update(rel.encode() + b"\0")
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                digest.update(chunk)
        digest.update(b"\0")
        files.append(rel)
    return {"sha256": digest.hexdigest(), "files": files}


def build_manifest(options: BatchPredictOptions, inputs: InputRows, model_info: Mapping[str, Any]) -> dict[str, Any]:
    """What the parts are bound to: the input's SHA-256 and row count, the model fingerprint and the options
    that change the output rows.  ``batch_size``, sharding, device and threads are left out: they do not."""
    num_parts = -(-inputs.num_rows // options.part_size)
    manifest = {
        "version": MANIFEST_VERSION,
        "input": {"path": os.path.abspath(options.data), "sha256": inputs.sha256, "num_rows": inputs.num_rows},
        "model": {"path": os.path.abspath(options.model), **model_info},
        "options": {
            "text_column": options.text_column,
            "id_column": options.id_column,
            "num_orderings": options.num_orderings,
            "seed": options.seed,
            "thresholds": options.thresholds,
            "max_length": options.max_length,
            "backend": resolve_backend(options.model, options.backend),  # "auto" resolved: torch or onnx
            "part_size": options.part_size,
        },
        "num_parts": num_parts,
    }
    manifest["key"] = _manifest_key(manifest)
    return manifest


def _manifest_key(manifest: Mapping[str, Any]) -> str:
    """A short hash of what makes two manifests the same job (paths left out: the input and the model may be
    mounted at different places on different machines)."""
    core = {
        "input": {k: manifest["input"][k] for k in ("sha256", "num_rows")},
        "model": {k: v for k, v in manifest["model"].items() if k not in ("path", "files")},
        "options": manifest["options"],
        "num_parts": manifest["num_parts"],
    }
    return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()[:16]


def _describe_mismatch(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    diffs = []
    if old.get("input", {}).get("sha256") != new["input"]["sha256"]:
        diffs.append("the input file changed (sha256)")
    if old.get("model", {}).get("sha256") != new["model"]["sha256"]:
        diffs.append("the model folder changed (fingerprint)")
    for key, value in new["options"].items():
        if old.get("options", {}).get(key) != value:
            diffs.append(f"{key} {old.get('options', {}).get(key)!r} -> {value!r}")
    return "; ".join(diffs) or "different manifest version"


def parts_dir_for(output: str) -> Path:
    """``OUTPUT.parts/``: the parts and the manifest of the job writing ``output``."""
    return Path(output + ".parts")


def part_path(parts_dir: Path, part: int, key: str) -> Path:
    """Part ``part`` of the job whose manifest key is ``key``."""
    return parts_dir / f"part-{part:06d}-{key}.parquet"


def prepare_parts_dir(parts_dir: Path, manifest: dict[str, Any], overwrite: bool, plan: ShardPlan) -> None:
    """Create ``parts_dir`` with ``manifest``, or check the one there.  A different job's manifest is an error
    without ``overwrite``; with it, the manifest is replaced (parts are named by the manifest key, so the other
    job's parts are never mistaken for this one's; this shard deletes its own stale ones)."""
    parts_dir.mkdir(parents=True, exist_ok=True)
    path = parts_dir / MANIFEST_NAME
    tmp = parts_dir / f".{MANIFEST_NAME}.{os.getpid()}.{time.monotonic_ns()}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    try:
        os.link(tmp, path)  # atomic create-if-absent: concurrent shards agree on one manifest
        return
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        old = {}
    if old.get("key") == manifest["key"]:
        return
    if not overwrite:
        raise ValueError(f"{parts_dir} holds the parts of a different job ({_describe_mismatch(old, manifest)}); "
                         "pass --overwrite to start again, or use another --output")
    logger.warning("replacing the manifest in %s (%s)", parts_dir, _describe_mismatch(old, manifest))
    write_json_atomic(path, manifest)
    for stale in parts_dir.glob("part-*.parquet"):
        part = int(stale.name.split("-")[1])
        if part % plan.num_shards == plan.shard_index and not stale.name.endswith(f"-{manifest['key']}.parquet"):
            stale.unlink(missing_ok=True)


def output_is_this_job(output: str, key: str) -> bool:
    """Whether ``output`` is a Parquet file merged by the job with manifest key ``key``."""
    if OUTPUT_FORMATS.get(Path(output).suffix.lower()) != "parquet":
        return False
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_schema(output).metadata or {}
        return json.loads(metadata.get(METADATA_KEY, b"{}")).get("key") == key
    except Exception:  # an unreadable or foreign file is simply not this job's output
        return False


def missing_parts(parts_dir: Path, manifest: Mapping[str, Any]) -> list[int]:
    """The part ids of ``manifest``'s job that are not written yet."""
    return [p for p in range(manifest["num_parts"]) if not part_path(parts_dir, p, manifest["key"]).exists()]


def wait_for_parts(parts_dir: Path, manifest: Mapping[str, Any], timeout: float) -> list[int]:
    """Rank 0 of a launcher group: poll until the other ranks' parts are there (or ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    missing = missing_parts(parts_dir, manifest)
    while missing and time.monotonic() < deadline:
        time.sleep(0.5)
        missing = missing_parts(parts_dir, manifest)
    if missing:
        raise TimeoutError(f"rank 0 waited {timeout:g} s for {len(missing)} part(s) of the other ranks "
                           f"(first: part {missing[0]}); rerun to resume, or merge later with --merge")
    return missing
