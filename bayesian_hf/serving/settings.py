"""Service settings: one frozen dataclass, filled from command-line flags, then environment variables, then defaults.

Every setting is declared once, as a field of :class:`ServeSettings` made with :func:`~.options.option`: its type,
default, flag help and check. The ``bayesian-hf serve`` flags (:func:`add_serve_arguments`), the environment
variables ``BAYESIAN_HF_<FIELD NAME IN CAPITALS>`` (``BAYESIAN_HF_MODEL``, ``BAYESIAN_HF_API_KEY_FILE``,
``BAYESIAN_HF_MAX_BATCH``, ...), the conversion of their text and the checks are derived from those fields
(``serving/options.py``); a flag given on the command line wins over the variable. Values are checked once, here,
so a bad configuration fails at start-up with a message naming the setting instead of at the first request.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .jwt_auth import MAX_LEEWAY_S
from .jwt_keys import validate_algorithms
from .options import (
    ENV_PREFIX,
    OneOf,
    Range,
    add_arguments,
    check_fields,
    convert,
    env_name,
    normalize_fields,
    option,
    split_list,
)

__all__ = ["ENV_PREFIX", "RateLimit", "ServeSettings", "add_serve_arguments", "parse_rate_limit",
           "settings_from_args"]

_RATE_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0}


@dataclass(frozen=True)
class RateLimit:
    """``requests`` per ``period_s`` seconds (a moving window, see ``serving/rate_limit.py``)."""

    requests: int
    period_s: float

    @property
    def per_second(self) -> float:
        return self.requests / self.period_s

    def __str__(self) -> str:
        unit = {1.0: "second", 60.0: "minute", 3600.0: "hour"}.get(self.period_s)
        return f"{self.requests}/{unit}" if unit else f"{self.requests}/{self.period_s:g}s"


def parse_rate_limit(value: str | RateLimit | None) -> RateLimit | None:
    """``"120/minute"``, ``"10/s"``, ``"1000/hour"``; ``None``, ``""``, ``"0"`` or ``"off"`` disable the limit."""
    if value is None or isinstance(value, RateLimit):
        return value
    text = str(value).strip().lower()
    if text in ("", "0", "off", "none"):
        return None
    match = re.fullmatch(r"(\d+)\s*/\s*([a-z]+)", text)
    unit = match.group(2) if match else ""
    if unit not in _RATE_UNITS and unit.endswith("s"):
        unit = unit[:-1]  # "minutes" -> "minute"
    if not match or unit not in _RATE_UNITS:
        raise ValueError(f"rate_limit must look like '120/minute' (units: second, minute, hour), got {value!r}")
    requests = int(match.group(1))
    if requests < 1:
        raise ValueError(f"rate_limit needs at least 1 request per period, got {value!r}")
    return RateLimit(requests, _RATE_UNITS[unit])


SHARED_SCHEMES = frozenset({"redis", "rediss", "redis+unix", "redis+sentinel", "redis+cluster", "valkey", "valkeys",
                            "valkey+unix", "valkey+sentinel", "valkey+cluster"})
"""Storage schemes whose budget is shared between processes (see :func:`validate_storage_uri`; the limiter is serving/rate_limit.py)."""
STORAGE_SCHEMES = frozenset({"memory"}) | SHARED_SCHEMES


def validate_storage_uri(uri: str) -> str:
    """``uri`` if its scheme is ``memory`` or one of :data:`SHARED_SCHEMES`; else ``ValueError`` naming them."""
    text = str(uri).strip()
    scheme = urllib.parse.urlparse(text).scheme.lower()
    if scheme not in STORAGE_SCHEMES or "://" not in text:
        raise ValueError(f"rate_limit_storage must be 'memory://' or a Redis URI such as 'redis://host:6379' "
                         f"(schemes: {', '.join(sorted(STORAGE_SCHEMES))}), got {uri!r}")
    return text


def _storage_uri(value: Any) -> str:
    return validate_storage_uri(value)


@dataclass(frozen=True)
class ServeSettings:
    """Everything the service can be configured with, in the order of ``bayesian-hf serve --help``. See
    ``docs/serving.md`` for the meaning of each limit."""

    model: str = option("", "model folder (save_pretrained + tokenizer) or Hub id")
    """Local folder saved with ``save_pretrained`` (weights, tokenizer, optional calibration.json / README.md) or
    a Hub id (resolved through the local cache when ``HF_HUB_OFFLINE=1``)."""
    host: str = option("127.0.0.1", "bind address", shown=", default {default}; use 0.0.0.0 only behind a proxy")
    port: int = option(8000, check=Range(0, 65535))
    api_key_file: str | None = option(None, "file with one API key per line; unset = no authentication")
    """File with one API key per line (``#`` comments allowed). Unset: no authentication."""
    max_batch: int = option(32, "most texts per forward pass", check=Range(1))
    """Most texts in one forward pass."""
    max_wait_ms: float = option(5.0, "how long the oldest queued text waits for others", check=Range(0))
    """How long the first queued text waits for others before its forward pass runs."""
    rate_limit: RateLimit | None = option(
        None, "per API key (per client address without keys), e.g. 600/minute; 'off' disables", shown=", default off",
        parse=parse_rate_limit)
    """Per API key (per client address without keys), e.g. ``"600/minute"``; ``None`` = off."""
    rate_limit_storage: str = option(
        "memory://", "memory:// (per process) or redis://host:6379/0 to share the limit across replicas",
        normalize=_storage_uri, metavar="URI")
    """Where the rate-limit windows live: ``memory://`` (per process: each replica has its own budget) or a Redis
    URI such as ``redis://redis:6379/0`` (one budget shared by all replicas); see ``serving/rate_limit.py``."""
    request_timeout_s: float = option(30.0, "seconds for queueing + inference, then 504", check=Range(0, low_open=True))
    """Queueing + inference deadline of one request; past it the answer is 504."""
    max_text_bytes: int = option(10_000, "largest text in UTF-8 bytes, 413 above", check=Range(1))
    """Largest text, in UTF-8 bytes (413 above it)."""
    max_texts: int = option(64, "most texts per /batch-predict, 413 above", check=Range(1))
    """Most texts in one /batch-predict request (413 above it)."""
    max_body_bytes: int | None = option(
        None, "largest request body, 413 above", shown=", default 6*max_texts*max_text_bytes + 64 KiB",
        check=Range(1024))
    """Largest request body; default ``6 * max_texts * max_text_bytes + 64 KiB`` (JSON escapes may take 6 bytes
    per character)."""
    max_num_orderings: int = option(64, "largest num_orderings a request may ask", check=Range(1))
    """Largest ``num_orderings`` a request may ask for (memory grows with it)."""
    num_orderings: int | None = option(
        None, "default orderings per text", shown=", default: the model config's", check=Range(1, "max_num_orderings"))
    """Default orderings per text; ``None`` = the model config's ``num_orderings``."""
    max_length: int | None = option(
        None, "token limit per text; longer texts are truncated and flagged", shown=", default: the model's",
        check=Range(8))
    """Token limit per text (longer texts are truncated and flagged); ``None`` = the model's limit."""
    accept_threshold: float | None = option(
        None, "default confidence for 'accept'", shown=", default: calibration.json's decision_thresholds, else 0.9",
        check=Range(0, 1))
    """Default confidence for ``accept``; ``None`` = the thresholds stored in the model's calibration.json
    (``bayesian-hf calibrate --target_risk``), else 0.9."""
    review_threshold: float | None = option(
        None, "default confidence for 'review' (below: 'escalate')", shown=", default: calibration.json's, else 0.6",
        check=Range(0, "accept_threshold", unset_high=1))
    """Default confidence for ``review`` (below: ``escalate``); ``None`` = stored, else 0.6."""
    jwt_secret_file: str | None = option(
        None, "HMAC secret (>= 32 bytes) for HS256 JWT bearer tokens with scopes predict/admin")
    """HMAC secret (at least 32 bytes) for HS256 JWT bearer tokens; see ``serving/jwt_auth.py``. At most one of
    ``jwt_secret_file``, ``jwt_public_key_file`` and ``jwt_jwks_file``; unset (all three) = no JWT."""
    jwt_public_key_file: str | None = option(None, "PEM public key for RS256/ES256 JWTs")
    """PEM public key (or certificate) for RS256 / ES256 (ES384, ES512 by curve) / EdDSA tokens."""
    jwt_jwks_file: str | None = option(None, "local JWKS JSON file of public keys, chosen by the token's kid")
    """A local JWKS JSON file of public keys (chosen by the token's ``kid``); never fetched from a URL."""
    jwt_algorithms: tuple[str, ...] = option(
        (), "comma-separated JWS algorithms within the key's family, e.g. RS256,PS256", shown=", default: the key's",
        parse=split_list)
    """Accepted JWS algorithms, within the key's family; empty = the key's default (HS256, RS256, ES256 by curve,
    or each JWK's ``alg``). ``none`` and HS* with a public key are never accepted."""
    jwt_audience: str | None = option(None, "required 'aud' of tokens")
    """Required ``aud`` of tokens (unset: tokens carrying an ``aud`` are refused)."""
    jwt_issuer: str | None = option(None, "required 'iss' of tokens")
    """Required ``iss`` of tokens (unset: not checked)."""
    jwt_leeway_s: float = option(30.0, "clock skew tolerated on exp/nbf/iat, at most 300")
    """Clock skew tolerated on ``exp``, ``nbf`` and ``iat``, in seconds (at most 300)."""
    jwt_scope_claim: str | None = option(None, "claim holding the scopes", shown=", default: scope, else scp or scopes")
    """Claim holding the scopes; unset = ``scope`` (space-separated), else ``scp`` or ``scopes`` (lists)."""
    cors_origins: tuple[str, ...] = option(
        (), "comma-separated origins allowed from browsers, e.g. https://app.example.com", shown=", default none",
        parse=split_list)
    """Origins allowed to call the API from a browser; empty = no CORS headers."""
    device: str = option("cpu", "torch device")
    torch_threads: int | None = option(None, "torch intra-op threads", check=Range(1))
    backend: str = option(
        "auto", "inference backend", shown=", default {default}: onnx for a `bayesian-hf export` folder",
        check=OneOf(("auto", "torch", "onnx")))
    """Inference backend: ``auto`` (ONNX when the model folder is a ``bayesian-hf export``, else PyTorch),
    ``torch`` or ``onnx`` (see ``bayesian_hf.backends.load_for_inference``)."""
    compile: bool = option(False, "torch.compile the PyTorch model, eager fallback if it fails")
    """``torch.compile`` the PyTorch model (falls back to eager with a logged warning when it fails)."""
    graceful_timeout_s: float = option(30.0, "seconds in-flight requests may take after SIGTERM", check=Range(0))
    """After SIGTERM/SIGINT: how long in-flight requests may take to finish; past it they get a JSON 503."""
    max_request_work: int = option(
        262_144, "most tokens x orderings one request may ask for, 413 above", check=Range(1),
        metavar="TOKEN_ORDERINGS")
    """Most work one request may ask for, in token-orderings (sum over its texts of tokens x effective orderings);
    413 ``work_too_large`` above it. The default is 64 texts x 512 tokens x 8 orderings."""
    max_pass_work: int = option(
        32_768, "most texts x tokens x orderings in one forward pass", check=Range(1), metavar="TOKEN_ORDERINGS")
    """Most token-orderings (texts x padded tokens x orderings) in one forward pass; larger requests run in
    several passes, interleaved with other requests and cancelled between passes when their caller has gone."""
    max_queue_delay_s: float = option(
        2.0, "refuse predictions with 429 when the predicted queue wait exceeds it", check=Range(0, low_open=True))
    """A prediction request whose predicted wait in the batcher queue (queued token-orderings / the measured rate)
    exceeds this is refused at once with 429 ``overloaded`` and a ``Retry-After``, instead of queueing into a 504."""
    header_timeout_s: float = option(
        10.0, "seconds to send the request headers, then 408", check=Range(0, low_open=True))
    """Seconds a connection may take to send a request's line and headers (also after a keep-alive response);
    past it: 408 and the connection is closed."""
    body_timeout_s: float = option(30.0, "seconds to send the request body, then 408", check=Range(0, low_open=True))
    """Seconds a request may take to send its whole body; past it: JSON 408 and the connection is closed."""
    keep_alive_s: float = option(5.0, "idle keep-alive connection timeout", check=Range(0, low_open=True))
    """Seconds an idle keep-alive connection stays open."""
    max_connections: int = option(512, "open connections + running requests, 503 above", check=Range(1))
    """Open connections + running requests the server accepts (uvicorn's ``limit_concurrency``); above it new
    requests get 503."""
    max_header_bytes: int = option(16_384, "largest request line + headers, 400 above", check=Range(1024))
    """Largest request line + headers (uvicorn's ``h11_max_incomplete_event_size``); above it: 400."""
    enable_docs: bool = option(
        False, "serve the Swagger UI at /docs (loads scripts from a CDN)", shown="=true, default off")
    """Serve the interactive Swagger UI at ``/docs`` (it loads its scripts from a CDN, so it is off by default for
    offline deployments; ``/openapi.json`` is always served)."""
    shadow_model: str | None = option(
        None, "a second model folder run on a share of the traffic after each response; disagreement goes to /metrics",
        shown=", default none")
    """A second model folder run on a share of the traffic, after the response is sent; its disagreement with the
    served model is counted in /metrics and never changes a response."""
    shadow_fraction: float = option(
        0.1, "share of prediction requests sent to the shadow model", check=Range(0, 1, low_open=True))
    """Share of prediction requests also sent to the shadow model (0 < f <= 1)."""
    drift_window: int = option(
        2000, "predictions in the rolling drift window, used when the model's calibration.json has a drift_reference",
        check=Range(1, 1_000_000))
    """Predictions kept in the rolling drift window (when the model's calibration has a ``drift_reference``)."""
    drift_psi_threshold: float = option(
        0.2, "population stability index above which a drift signal raises the alert", check=Range(0, low_open=True))
    """PSI above which a drift signal raises the alert (with at least ``min(100, drift_window)`` predictions)."""
    log_level: str = option(
        "info", check=OneOf(("critical", "error", "warning", "info", "debug", "trace")),
        choices=("critical", "error", "warning", "info", "debug"))  # "trace" only through the environment
    access_log: bool = option(True, "do not log every request")

    # ------------------------------------------------------------------------------------------------ checks
    def __post_init__(self) -> None:
        normalize_fields(self)  # rate_limit, rate_limit_storage, jwt_algorithms, cors_origins
        check_fields(self)  # each field's own check, in declaration order
        self._check_jwt()
        for origin in self.cors_origins:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(f"cors origin must be '*' or scheme://host[:port] without a path, got {origin!r}")

    def _check_jwt(self) -> None:
        sources = [n for n in ("jwt_secret_file", "jwt_public_key_file", "jwt_jwks_file") if getattr(self, n)]
        if len(sources) > 1:
            raise ValueError(f"set at most one JWT key source, got {', '.join(sources)}")
        if not math.isfinite(self.jwt_leeway_s) or not 0 <= self.jwt_leeway_s <= MAX_LEEWAY_S:
            raise ValueError(f"setting jwt_leeway_s must be in [0, {MAX_LEEWAY_S:g}] seconds, "
                             f"got {self.jwt_leeway_s!r}")
        validate_algorithms(self.jwt_algorithms)
        options = [n for n in ("jwt_algorithms", "jwt_audience", "jwt_issuer", "jwt_scope_claim") if getattr(self, n)]
        if options and not sources:
            raise ValueError(f"{', '.join(options)} set without a JWT key: set jwt_secret_file, jwt_public_key_file "
                             "or jwt_jwks_file")

    @property
    def jwt_enabled(self) -> bool:
        """Whether JWT bearer tokens are accepted (a JWT key source is set)."""
        return bool(self.jwt_secret_file or self.jwt_public_key_file or self.jwt_jwks_file)

    # ----------------------------------------------------------------------------------------------- derived
    @property
    def body_limit(self) -> int:
        if self.max_body_bytes is not None:
            return self.max_body_bytes
        return 6 * self.max_texts * self.max_text_bytes + 64 * 1024

    @property
    def thresholds(self) -> dict[str, float]:
        """The thresholds set on the command line / environment (the others come from the model)."""
        return {key: value for key, value in (("accept", self.accept_threshold), ("review", self.review_threshold))
                if value is not None}

    def public_dict(self) -> dict[str, Any]:
        """The limits a client may see (``/model-info``); no file paths, no keys."""
        return {
            "max_batch": self.max_batch,
            "max_wait_ms": self.max_wait_ms,
            "rate_limit": str(self.rate_limit) if self.rate_limit else None,
            "request_timeout_s": self.request_timeout_s,
            "max_text_bytes": self.max_text_bytes,
            "max_texts": self.max_texts,
            "max_body_bytes": self.body_limit,
            "max_num_orderings": self.max_num_orderings,
            "max_request_work": self.max_request_work,
            "max_pass_work": self.max_pass_work,
            "default_thresholds": self.thresholds,
            "auth_required": self.api_key_file is not None or self.jwt_enabled,
        }

    # ------------------------------------------------------------------------------------------------ sources
    @classmethod
    def from_sources(
        cls, flags: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> ServeSettings:
        """Flags (``None`` = not given) win over ``BAYESIAN_HF_*`` environment variables, which win over defaults."""
        flags = dict(flags or {})
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if flags.get(f.name) is not None:
                values[f.name] = convert(f, flags[f.name])
                continue
            raw = environ.get(env_name(f.name))
            if raw is not None and raw != "":
                try:
                    values[f.name] = convert(f, raw)
                except ValueError as err:
                    raise ValueError(f"environment variable {env_name(f.name)}: {err}") from None
        unknown = set(flags) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown settings: {sorted(unknown)}")
        return cls(**values)


# ------------------------------------------------------------------------------------------------ command line
def add_serve_arguments(parser: Any) -> None:
    """The flags of ``bayesian-hf serve``, one per setting (see :func:`~.options.add_arguments`). Every default is
    ``None`` so that unset flags fall back to the ``BAYESIAN_HF_*`` environment variables and then to the dataclass
    defaults."""
    add_arguments(parser, ServeSettings)


def settings_from_args(args: Any, environ: Mapping[str, str] | None = None) -> ServeSettings:
    """Settings from parsed ``serve`` flags (an ``argparse.Namespace``) + environment variables."""
    names = {f.name for f in dataclasses.fields(ServeSettings)}
    flags = {k: v for k, v in vars(args).items() if k in names}
    settings = ServeSettings.from_sources(flags, environ)
    if not settings.model:
        raise ValueError(f"no model: pass --model PATH or set {env_name('model')}")
    return settings
