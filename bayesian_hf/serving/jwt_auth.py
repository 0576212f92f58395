"""JWT bearer tokens with scopes, next to the static API keys.

A client sends ``Authorization: Bearer <token>``. The token is verified with `PyJWT <https://pyjwt.readthedocs.io>`_
against **one** key source, configured at start-up and read from local files only (nothing is fetched):

- ``jwt_secret_file``: an HMAC secret (HS256 by default; HS384/HS512 on request), at least 32 bytes;
- ``jwt_public_key_file``: a PEM public key (or certificate): RSA (RS256 by default; RS384/RS512/PS256/PS384/PS512
  on request, at least 2048 bits), EC (ES256 on P-256, ES384 on P-384, ES512 on P-521) or Ed25519 (EdDSA);
- ``jwt_jwks_file``: a local JWKS document ``{"keys": [...]}`` of public RSA / EC / OKP keys; a token names its
  key with the ``kid`` header (optional when the set holds one key).

The algorithms a token may use are fixed by the configured key, never read from the token: ``none`` is never
accepted, and an HMAC algorithm is never accepted with a public key (so a token "signed" with the public key as an
HMAC secret -- the HS/RS confusion attack -- is refused). ``jwt_algorithms`` can only narrow or pick within the key's
family; an algorithm outside it fails at start-up.

Claims: ``exp`` is required; ``nbf`` and ``iat`` are checked when present; ``aud`` and ``iss`` are required and
checked when ``jwt_audience`` / ``jwt_issuer`` are set (PyJWT refuses a token carrying an ``aud`` when no audience is
configured). Clock skew is tolerated up to ``jwt_leeway_s`` seconds (at most :data:`MAX_LEEWAY_S`).

Scopes come from the ``scope`` claim (space-separated string), else ``scp`` or ``scopes`` (list or string), or
from the claim named by ``jwt_scope_claim``. ``predict`` opens ``/predict`` and ``/batch-predict``; ``admin`` opens
``/model-info``, ``/drift`` and ``/metrics`` (:data:`REQUIRED_SCOPES`). The scopes are independent: a client that
needs both gets a token with ``"scope": "predict admin"``. Static API keys hold every scope (they open every
endpoint, as before JWT support).

Errors follow RFC 6750: a missing credential is 401 with ``WWW-Authenticate: Bearer realm="bayesian-hf"``, a bad
token 401 ``invalid_token``, a valid token without the scope 403 ``insufficient_scope`` (with the scope it needs).
Messages are fixed strings: they never contain the token, its claims or an exception text.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .auth import ApiKeyAuth, AuthError

logger = logging.getLogger(__name__)

SCOPE_PREDICT = "predict"
SCOPE_ADMIN = "admin"
ALL_SCOPES = frozenset({SCOPE_PREDICT, SCOPE_ADMIN})
REQUIRED_SCOPES: Mapping[str, str] = {
    "/predict": SCOPE_PREDICT,
    "/batch-predict": SCOPE_PREDICT,
    "/model-info": SCOPE_ADMIN,
    "/drift": SCOPE_ADMIN,
    "/metrics": SCOPE_ADMIN,
}
"""The scope each authenticated path needs (``/metrics`` only needs credentials when auth is configured)."""

MAX_LEEWAY_S = 300.0
"""Largest accepted clock-skew tolerance: more would keep expired tokens alive for minutes."""
MAX_TOKEN_BYTES = 8192
"""Longer bearer tokens are refused before any parsing."""
MAX_KEY_FILE_BYTES = 1 << 20
MIN_HMAC_SECRET_BYTES = 32
MIN_RSA_BITS = 2048
DEFAULT_SCOPE_CLAIMS = ("scope", "scp", "scopes")
REALM = "bayesian-hf"

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


def _warn_if_readable(path: str, what: str) -> None:
    try:
        if os.stat(path).st_mode & (stat.S_IRGRP | stat.S_IROTH):
            logger.warning("the %s %s is readable by other users; chmod 600 it", what, path)
    except OSError:  # pragma: no cover
        pass


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
    _warn_if_readable(path, "JWT secret file")
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


# ---------------------------------------------------------------------------------------------- verification
class TokenError(AuthError):
    """An :class:`AuthError` with the RFC 6750 ``WWW-Authenticate`` challenge in ``headers``."""

    def __init__(self, status: int, code: str, message: str, *, scope: str | None = None) -> None:
        super().__init__(status, code, message)
        challenge = f'Bearer realm="{REALM}"'
        if code in ("invalid_token", "insufficient_scope"):
            challenge += f', error="{code}", error_description="{message}"'
        if scope:
            challenge += f', scope="{scope}"'
        self.headers = {"WWW-Authenticate": challenge}


@dataclass(frozen=True)
class Principal:
    """Who made a request: ``id`` names it in rate-limit buckets and logs (``key:<key id>`` for an API key,
    ``jwt:<12 hex digits of SHA-256(iss, sub)>`` for a token; never the credential itself) and ``scopes`` is what
    it may call."""

    id: str
    scopes: frozenset[str]


class JwtVerifier:
    """Verifies bearer JWTs against the configured keys and returns the :class:`Principal` they carry."""

    def __init__(self, keys: list[VerificationKey], *, audience: str | None = None, issuer: str | None = None,
                 leeway_s: float = 0.0, scope_claim: str | None = None) -> None:
        if not keys:
            raise ValueError("JwtVerifier needs at least one key")
        if not 0.0 <= leeway_s <= MAX_LEEWAY_S:
            raise ValueError(f"jwt_leeway_s must be in [0, {MAX_LEEWAY_S:g}], got {leeway_s!r}")
        for key in keys:
            if not key.algorithms or not set(key.algorithms) <= set(key.family) or \
                    (not isinstance(key.key, bytes) and set(key.algorithms) & set(HMAC_ALGORITHMS)):
                raise ValueError(f"key {key.kid or ''} has algorithms {key.algorithms} outside its family")
        self.keys = list(keys)
        self._by_kid = {k.kid: k for k in keys if k.kid is not None}
        self.audience = audience
        self.issuer = issuer
        self.leeway_s = float(leeway_s)
        self.scope_claims = (scope_claim,) if scope_claim else DEFAULT_SCOPE_CLAIMS
        self.required_claims = ["exp"] + (["aud"] if audience else []) + (["iss"] if issuer else [])

    @classmethod
    def from_settings(cls, settings: Any) -> JwtVerifier | None:
        """The verifier of ``settings`` (``None`` when no JWT key source is configured); ``ValueError`` for a bad
        key file or algorithms that do not fit the key."""
        keys = load_verification_keys(settings)
        if not keys:
            return None
        return cls(keys, audience=settings.jwt_audience, issuer=settings.jwt_issuer, leeway_s=settings.jwt_leeway_s,
                   scope_claim=settings.jwt_scope_claim)

    @property
    def algorithms(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(a for k in self.keys for a in k.algorithms))

    def _select_key(self, header: dict[str, Any]) -> VerificationKey:
        kid = header.get("kid")
        if kid is not None:
            if not isinstance(kid, str) or kid not in self._by_kid:
                if len(self.keys) == 1 and not self._by_kid:
                    return self.keys[0]  # one anonymous key: a kid names nothing to choose between
                raise TokenError(401, "invalid_token", "no configured key matches the token's kid")
            return self._by_kid[kid]
        if len(self.keys) == 1:
            return self.keys[0]
        raise TokenError(401, "invalid_token", "the token has no kid header to choose the key")

    def verify(self, token: str) -> Principal:
        """The principal of a valid token; :class:`TokenError` 401 ``invalid_token`` otherwise."""
        import jwt

        def invalid(message: str) -> TokenError:
            return TokenError(401, "invalid_token", message)

        if len(token) > MAX_TOKEN_BYTES:
            raise invalid(f"the token is longer than {MAX_TOKEN_BYTES} bytes")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise invalid("the token is not a well-formed JWT") from None
        key = self._select_key(header)
        if header.get("alg") not in key.algorithms:  # 'none', HS* with a public key, anything not configured
            raise invalid("the token's signing algorithm is not accepted")
        try:
            claims = jwt.decode(token, key.key, algorithms=list(key.algorithms), audience=self.audience,
                                issuer=self.issuer, leeway=self.leeway_s,
                                options={"require": self.required_claims, "verify_signature": True,
                                         "verify_exp": True, "verify_nbf": True, "verify_iat": True,
                                         "verify_aud": True, "verify_iss": True})
        except jwt.ExpiredSignatureError:
            raise invalid("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise invalid("the token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise invalid("the token's audience is not accepted") from None
        except jwt.InvalidIssuerError:
            raise invalid("the token's issuer is not accepted") from None
        except jwt.MissingRequiredClaimError as err:
            claim = err.claim if err.claim in self.required_claims else "required"
            raise invalid(f"the token has no {claim} claim") from None
        except jwt.InvalidSignatureError:
            raise invalid("the token's signature is not valid") from None
        except jwt.PyJWTError:
            raise invalid("the token is not valid") from None
        except Exception:  # a claim PyJWT cannot compare (e.g. a huge exp): still only a bad token
            logger.warning("JWT verification failed unexpectedly", exc_info=True)
            raise invalid("the token is not valid") from None
        scopes = self.scopes_of(claims)
        subject = f"{claims.get('iss')}\x00{claims.get('sub')}" if "sub" in claims else token
        return Principal("jwt:" + hashlib.sha256(subject.encode("utf-8", "surrogateescape")).hexdigest()[:12], scopes)

    def scopes_of(self, claims: Mapping[str, Any]) -> frozenset[str]:
        """The scopes of verified ``claims``: the first present of the scope claims, as a space-separated string
        or a list of strings; no claim = no scope."""
        for name in self.scope_claims:
            if name in claims:
                value = claims[name]
                if isinstance(value, str):
                    return frozenset(value.split())
                if isinstance(value, list) and all(isinstance(v, str) for v in value):
                    return frozenset(s for v in value for s in v.split())
                raise TokenError(401, "invalid_token", "the token's scope claim is neither a string nor a list of "
                                 "strings")
        return frozenset()


# ----------------------------------------------------------------------------------------- both together
class Authenticator:
    """API keys and/or JWTs: who is calling (:meth:`authenticate`) and whether they may call a path
    (:meth:`authorize`)."""

    def __init__(self, api_keys: ApiKeyAuth | None = None, jwt_verifier: JwtVerifier | None = None) -> None:
        if api_keys is None and jwt_verifier is None:
            raise ValueError("Authenticator needs API keys, a JWT key, or both")
        self.api_keys = api_keys
        self.jwt = jwt_verifier

    @classmethod
    def from_settings(cls, settings: Any) -> Authenticator | None:
        """``None`` when neither ``api_key_file`` nor a JWT key source is set; ``ValueError`` for a bad file."""
        api_keys = ApiKeyAuth.from_file(settings.api_key_file) if settings.api_key_file else None
        verifier = JwtVerifier.from_settings(settings)
        if api_keys is None and verifier is None:
            return None
        return cls(api_keys, verifier)

    def _missing(self) -> TokenError:
        if self.api_keys is not None and self.jwt is not None:
            return TokenError(401, "missing_api_key", "an API key or a bearer token is required: send "
                              "'Authorization: Bearer <key or token>' or 'X-API-Key: <key>'")
        if self.api_keys is not None:
            return TokenError(401, "missing_api_key",
                              "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
        return TokenError(401, "missing_token", "a bearer token is required: send 'Authorization: Bearer <token>'")

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        """The caller of a request (lower-cased header names). An API key is tried first (constant time against
        every key) and holds every scope; otherwise a bearer value with the shape of a JWT is verified as one.
        ``AuthError``: 401 ``missing_*`` without a credential, 403 ``invalid_api_key`` for a wrong key, 401
        ``invalid_token`` for a bad token."""
        headers = dict(headers)
        if ApiKeyAuth.presented_key(headers) is None:
            raise self._missing()
        bearer = _bearer_token(headers)
        if self.api_keys is not None:
            try:
                return Principal("key:" + self.api_keys.authenticate(headers), ALL_SCOPES)
            except AuthError:
                if self.jwt is None or bearer is None or bearer.count(".") != 2:
                    raise
        if bearer is None:  # only X-API-Key, and this server has no API keys
            raise self._missing()
        return self.jwt.verify(bearer)  # type: ignore[union-attr]

    @staticmethod
    def authorize(principal: Principal, path: str) -> None:
        """``AuthError`` 403 ``insufficient_scope`` when ``path`` needs a scope the principal lacks."""
        scope = REQUIRED_SCOPES.get(path)
        if scope is not None and scope not in principal.scopes:
            raise TokenError(403, "insufficient_scope", f"this endpoint needs the {scope} scope", scope=scope)

    def check(self, headers: Mapping[str, str], path: str) -> Principal:
        """:meth:`authenticate`, then :meth:`authorize`."""
        principal = self.authenticate(headers)
        self.authorize(principal, path)
        return principal


def _bearer_token(headers: Mapping[str, str]) -> str | None:
    value = headers.get("authorization")
    if value is None:
        return None
    scheme, _, token = value.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None
