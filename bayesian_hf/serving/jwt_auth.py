"""JWT bearer tokens with scopes, next to the static API keys.

A client sends ``Authorization: Bearer <token>``. The token is verified with `PyJWT <https://pyjwt.readthedocs.io>`_
against the keys of **one** key source, read at start-up from local files by :mod:`~bayesian_hf.serving.jwt_keys`
(which also fixes the algorithms each key accepts: never ``none``, never HMAC with a public key).

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
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .auth import ApiKeyAuth, AuthError
from .jwt_keys import HMAC_ALGORITHMS, VerificationKey, load_verification_keys, validate_algorithms

__all__ = ["ALL_SCOPES", "Authenticator", "JwtVerifier", "MAX_LEEWAY_S", "Principal", "REQUIRED_SCOPES", "TokenError",
           "validate_algorithms"]  # validate_algorithms: defined in jwt_keys, importable from here as before

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
DEFAULT_SCOPE_CLAIMS = ("scope", "scp", "scopes")
REALM = "bayesian-hf"


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
