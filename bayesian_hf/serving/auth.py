"""API keys.

Keys come from a file (one per line, ``#`` starts a comment). A request presents its key as
``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. The presented key is compared with *every* configured key
through ``hmac.compare_digest`` on SHA-256 digests, so the time taken depends neither on where a near-miss differs
nor on which key matched. Keys are never logged or exported: they are identified by ``key_id``, the first 12 hex
digits of their SHA-256 digest.

The per-key rate limit lives in :mod:`bayesian_hf.serving.rate_limit`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import stat

logger = logging.getLogger(__name__)

MIN_KEY_LENGTH = 16


class AuthError(Exception):
    """``status`` 401 (no key) or 403 (wrong key)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]


def warn_if_readable(path: str, what: str, log: logging.Logger) -> None:
    """Warn through ``log`` when other users may read the secret file ``path`` (``what`` names it)."""
    try:
        if os.stat(path).st_mode & (stat.S_IRGRP | stat.S_IROTH):
            log.warning("%s %s is readable by other users; chmod 600 it", what, path)
    except OSError:  # pragma: no cover
        pass


def load_api_keys(path: str | os.PathLike[str]) -> list[str]:
    """Read the key file. Raises ``ValueError`` when it has no key, a key shorter than 16 characters, or a key
    with whitespace inside; warns when other users may read it."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as err:
        raise ValueError(f"cannot read API key file {path}: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise ValueError(f"API key file {path} is not UTF-8 text") from None
    keys: list[str] = []
    for number, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        if any(c.isspace() for c in text):
            raise ValueError(f"API key file {path}, line {number}: a key must not contain whitespace")
        if len(text) < MIN_KEY_LENGTH:
            raise ValueError(f"API key file {path}, line {number}: keys must have at least {MIN_KEY_LENGTH} characters")
        keys.append(text)
    if not keys:
        raise ValueError(f"API key file {path} has no keys (one per line, '#' for comments)")
    warn_if_readable(path, "API key file", logger)
    return list(dict.fromkeys(keys))


class ApiKeyAuth:
    """Checks the key of a request against the configured keys in constant time."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ValueError("ApiKeyAuth needs at least one key")
        self._digests = [(hashlib.sha256(k.encode("utf-8")).digest(), key_id(k)) for k in keys]

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> ApiKeyAuth:
        return cls(load_api_keys(path))

    def __len__(self) -> int:
        return len(self._digests)

    @staticmethod
    def presented_key(headers: dict[str, str]) -> str | None:
        """The key from ``Authorization: Bearer`` or ``X-API-Key`` (lower-cased header names), or ``None``."""
        value = headers.get("authorization")
        if value is not None:
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        value = headers.get("x-api-key")
        if value is not None and value.strip():
            return value.strip()
        return None

    def authenticate(self, headers: dict[str, str]) -> str:
        """The key id of the presented key; ``AuthError`` 401 when none is presented, 403 when it is wrong."""
        key = self.presented_key(headers)
        if key is None:
            raise AuthError(401, "missing_api_key", "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
        matched = None
        for known, kid in self._digests:  # no early exit: every key is compared
            if hmac.compare_digest(digest, known):
                matched = kid
        if matched is None:
            raise AuthError(403, "invalid_api_key", "the API key is not valid")
        return matched

