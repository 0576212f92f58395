"""The keys JWT bearer tokens are verified with, read at start-up from **one** local key source (nothing is fetched),
each with the algorithms a token signed with it may use.

- ``jwt_secret_file``: an HMAC secret (HS256 by default; HS384/HS512 on request), at least 32 bytes;
- ``jwt_public_key_file``: a PEM public key (or certificate): RSA (RS256 by default; RS384/RS512/PS256/PS384/PS512
  on request, at least 2048 bits), EC (ES256 on P-256, ES384 on P-384, ES512 on P-521) or Ed25519 (EdDSA);
- ``jwt_jwks_file``: a local JWKS document ``{"keys": [...]}`` of public RSA / EC / OKP keys; a token names its
  key with the ``kid`` header (optional when the set holds one key).

The algorithms a token may use are fixed by the configured key, never read from the token: ``none`` is never
accepted, and an HMAC algorithm is never accepted with a public key (so a token "signed" with the public key as an
HMAC secret -- the HS/RS confusion attack -- is refused). ``jwt_algorithms`` can only narrow or pick within the key's
family; an algorithm outside it fails at start-up. Verification is in :mod:`~bayesian_hf.serving.jwt_auth`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from .auth import warn_if_readable

logger = logging.getLogger("bayesian_hf.serving.jwt_auth")  # the name these messages always had

MAX_KEY_FILE_BYTES = 1 << 20
MIN_HMAC_SECRET_BYTES = 32
MIN_RSA_BITS = 2048

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
OKP_ALGORITHMS = ("EdDSA",)
KNOWN_ALGORITHMS = frozenset(HMAC_ALGORITHMS + RSA_ALGORITHMS + tuple(EC_ALGORITHMS.values()) + OKP_ALGORITHMS)


def validate_algorithms(names: tuple[str, ...]) -> tuple[str, ...]:
    """``names`` if every one is a JWS algorithm this server can verify; ``ValueError`` otherwise (``none`` is
    refused with its own message)."""
    for name in names:
        if name.lower() == "none":
            raise ValueError("jwt_algorithms must not contain 'none': unsigned tokens are never accepted")
        if name not in KNOWN_ALGORITHMS:
            raise ValueError(f"jwt_algorithms: unknown algorithm {name!r} "
                             f"(known: {', '.join(sorted(KNOWN_ALGORITHMS))})")
    return names


# ------------------------------------------------------------------------------------------------- key files
@dataclass(frozen=True)
class VerificationKey:
    """One key and the algorithms a token verified with it may use."""

    key: Any
    """``bytes`` (HMAC secret) or a ``cryptography`` public key."""
    algorithms: tuple[str, ...]
    family: tuple[str, ...]
    """Every algorithm this kind of key could verify (``algorithms`` is a subset)."""
    kid: str | None = None


def _read_bounded(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as err:
        raise ValueError(f"cannot read the {what} {path}: {err.strerror or err}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise ValueError(f"the {what} {path} is larger than {MAX_KEY_FILE_BYTES} bytes")
    if not data.strip():
        raise ValueError(f"the {what} {path} is empty")
    return data


def load_hmac_secret(path: str | os.PathLike[str]) -> bytes:
    """The secret in ``path`` (surrounding whitespace and the final newline removed). ``ValueError`` when it is
    shorter than 32 bytes or is a PEM key (use ``jwt_public_key_file`` for those)."""
    path = os.fspath(path)
    secret = _read_bounded(path, "JWT secret file").strip()
    if secret.startswith(b"-----BEGIN"):
        raise ValueError(f"the JWT secret file {path} holds a PEM key, not an HMAC secret: pass public keys with "
                         "--jwt-public-key-file")
    if len(secret) < MIN_HMAC_SECRET_BYTES:
        raise ValueError(f"the JWT secret in {path} has {len(secret)} bytes; HS256 needs at least "
                         f"{MIN_HMAC_SECRET_BYTES} (python -c \"import secrets; print(secrets.token_urlsafe(48))\")")
    warn_if_readable(path, "the JWT secret file", logger)
    return secret


def _family_of_public_key(key: Any, source: str) -> tuple[tuple[str, ...], str]:
    """(the algorithms a public key of this kind verifies, its default algorithm); ``ValueError`` for an
    unsupported kind, an RSA key under 2048 bits or an EC curve without a JWS algorithm."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"{source}: the RSA key has {key.key_size} bits; at least {MIN_RSA_BITS} are required")
        return RSA_ALGORITHMS, "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey):
        alg = EC_ALGORITHMS.get(key.curve.name)
        if alg is None:
            raise ValueError(f"{source}: EC curve {key.curve.name} has no JWS algorithm (use P-256, P-384 or P-521)")
        return (alg,), alg
    if isinstance(key, ed25519.Ed25519PublicKey):
        return OKP_ALGORITHMS, "EdDSA"
    raise ValueError(f"{source}: unsupported key type {type(key).__name__} (use RSA, EC or Ed25519)")


def load_public_key(path: str | os.PathLike[str]) -> Any:
    """The public key of a PEM file (``-----BEGIN PUBLIC KEY-----``, ``RSA PUBLIC KEY`` or a certificate).
    ``ValueError`` for a private key (give the server only the public half), anything else that is not a PEM public
    key, or an unsupported kind of key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    path = os.fspath(path)
    data = _read_bounded(path, "JWT public key file")
    if b"PRIVATE KEY" in data:
        raise ValueError(f"the JWT public key file {path} holds a private key; give the server only the public key "
                         "(openssl pkey -in private.pem -pubout -out public.pem)")
    try:
        if b"-----BEGIN CERTIFICATE" in data:
            key = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise ValueError(f"the JWT public key file {path} is not a PEM public key or certificate "
                         "(-----BEGIN PUBLIC KEY-----)") from None
    _family_of_public_key(key, f"the JWT public key file {path}")
    return key


_PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


def load_jwks(path: str | os.PathLike[str]) -> list[tuple[Any, str, str | None]]:
    """The signing keys of a local JWKS file as ``(public key, algorithm, kid)``. The algorithm is the JWK's
    ``alg`` or, without one, the default of its type (RS256, ES256/384/512 by curve, EdDSA). ``ValueError`` for a
    file that is not a JWKS, a symmetric or private key, a key PyJWT cannot load, duplicate ``kid``s, or several keys
    of which one has no ``kid``. Keys whose ``use`` is not ``sig`` are skipped."""
    import jwt

    path = os.fspath(path)
    raw = _read_bounded(path, "JWKS file")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ValueError(f"the JWKS file {path} is not UTF-8 JSON") from None
    if isinstance(doc, dict) and "kty" in doc:
        doc = {"keys": [doc]}  # a single JWK
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError(f"the JWKS file {path} must be a JSON object with a 'keys' list")
    keys: list[tuple[Any, str, str | None]] = []
    for i, jwk in enumerate(doc["keys"]):
        where = f"the JWKS file {path}, key {i}"
        if not isinstance(jwk, dict):
            raise ValueError(f"{where} is not a JSON object")
        if jwk.get("kty") == "oct":
            raise ValueError(f"{where} is a symmetric (oct) key: pass HMAC secrets with --jwt-secret-file")
        if _PRIVATE_JWK_MEMBERS & set(jwk):
            raise ValueError(f"{where} holds private key material; the server needs only the public key")
        if jwk.get("use") not in (None, "sig"):
            logger.info("%s has use=%r, not 'sig': skipped", where, jwk.get("use"))
            continue
        kid = jwk.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise ValueError(f"{where}: 'kid' must be a string")
        try:
            pyjwk = jwt.PyJWK(jwk)
        except jwt.PyJWTError:
            raise ValueError(f"{where} is not a supported public JWK (kty RSA, EC or OKP with its public "
                             "members)") from None
        family, _ = _family_of_public_key(pyjwk.key, where)
        if pyjwk.algorithm_name not in family:
            raise ValueError(f"{where}: alg {pyjwk.algorithm_name} does not match the key "
                             f"(allowed: {', '.join(family)})")
        keys.append((pyjwk.key, pyjwk.algorithm_name, kid))
    if not keys:
        raise ValueError(f"the JWKS file {path} has no signing keys")
    kids = [kid for _, _, kid in keys]
    if len(keys) > 1 and None in kids:
        raise ValueError(f"the JWKS file {path} has several keys: each needs a 'kid'")
    if len(set(kids)) != len(kids):
        raise ValueError(f"the JWKS file {path} has duplicate 'kid' values")
    return keys


def _narrow(family: tuple[str, ...], default: tuple[str, ...], requested: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(a for a in requested if a in family) if requested else default


def load_verification_keys(settings: Any) -> list[VerificationKey]:
    """The keys of the one configured JWT key source, each with its accepted algorithms (``jwt_algorithms``
    intersected with what the key can verify). ``ValueError`` when a requested algorithm fits no key."""
    if settings.jwt_secret_file or settings.jwt_public_key_file or settings.jwt_jwks_file:
        try:
            import cryptography  # noqa: F401
            import jwt  # noqa: F401
        except ImportError:
            raise ValueError("JWT bearer tokens need PyJWT with cryptography: pip install 'bayesian-hf[serve]' "
                             "(or 'PyJWT[crypto]')") from None
    requested = tuple(settings.jwt_algorithms)
    keys: list[VerificationKey] = []
    if settings.jwt_secret_file:
        keys.append(VerificationKey(load_hmac_secret(settings.jwt_secret_file),
                                    _narrow(HMAC_ALGORITHMS, ("HS256",), requested), HMAC_ALGORITHMS))
        source = "an HMAC secret (--jwt-secret-file)"
    elif settings.jwt_public_key_file:
        key = load_public_key(settings.jwt_public_key_file)
        family, default = _family_of_public_key(key, settings.jwt_public_key_file)
        keys.append(VerificationKey(key, _narrow(family, (default,), requested), family))
        source = "the public key of --jwt-public-key-file"
    elif settings.jwt_jwks_file:
        for key, alg, kid in load_jwks(settings.jwt_jwks_file):
            family, _ = _family_of_public_key(key, settings.jwt_jwks_file)
            accepted = (alg,) if not requested or alg in requested else ()
            keys.append(VerificationKey(key, accepted, family, kid))
        source = "the keys of --jwt-jwks-file"
    else:
        return []
    usable = {a for k in keys for a in k.algorithms}
    unusable = [a for a in requested if a not in usable]
    if unusable:
        allowed = sorted({a for k in keys for a in k.family})
        raise ValueError(f"jwt_algorithms {', '.join(unusable)} cannot be used with {source} "
                         f"(possible: {', '.join(allowed)})")
    return [k for k in keys if k.algorithms]
