"""Service settings: one frozen dataclass, filled from command-line flags, then environment variables, then defaults.

Every field has an environment variable ``BAYESIAN_HF_<FIELD NAME IN CAPITALS>`` (``BAYESIAN_HF_MODEL``,
``BAYESIAN_HF_API_KEY_FILE``, ``BAYESIAN_HF_MAX_BATCH``, ...); a flag given on the command line wins over the
variable. Values are checked once, here, so a bad configuration fails at start-up with a message naming the
setting instead of at the first request.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ENV_PREFIX = "BAYESIAN_HF_"
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


def _split_list(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(str(v).strip() for v in value if str(v).strip())


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected a boolean (true/false), got {value!r}")


@dataclass(frozen=True)
class ServeSettings:
    """Everything the service can be configured with. See ``docs/serving.md`` for the meaning of each limit."""

    model: str = ""
    """Local folder saved with ``save_pretrained`` (weights, tokenizer, optional calibration.json / README.md) or
    a Hub id (resolved through the local cache when ``HF_HUB_OFFLINE=1``)."""
    host: str = "127.0.0.1"
    port: int = 8000
    api_key_file: str | None = None
    """File with one API key per line (``#`` comments allowed). Unset: no authentication."""
    jwt_secret_file: str | None = None
    """HMAC secret (at least 32 bytes) for HS256 JWT bearer tokens; see ``serving/jwt_auth.py``. At most one of
    ``jwt_secret_file``, ``jwt_public_key_file`` and ``jwt_jwks_file``; unset (all three) = no JWT."""
    jwt_public_key_file: str | None = None
    """PEM public key (or certificate) for RS256 / ES256 (ES384, ES512 by curve) / EdDSA tokens."""
    jwt_jwks_file: str | None = None
    """A local JWKS JSON file of public keys (chosen by the token's ``kid``); never fetched from a URL."""
    jwt_algorithms: tuple[str, ...] = ()
    """Accepted JWS algorithms, within the key's family; empty = the key's default (HS256, RS256, ES256 by curve,
    or each JWK's ``alg``). ``none`` and HS* with a public key are never accepted."""
    jwt_audience: str | None = None
    """Required ``aud`` of tokens (unset: tokens carrying an ``aud`` are refused)."""
    jwt_issuer: str | None = None
    """Required ``iss`` of tokens (unset: not checked)."""
    jwt_leeway_s: float = 30.0
    """Clock skew tolerated on ``exp``, ``nbf`` and ``iat``, in seconds (at most 300)."""
    jwt_scope_claim: str | None = None
    """Claim holding the scopes; unset = ``scope`` (space-separated), else ``scp`` or ``scopes`` (lists)."""
    max_batch: int = 32
    """Most texts in one forward pass."""
    max_wait_ms: float = 5.0
    """How long the first queued text waits for others before its forward pass runs."""
    rate_limit: RateLimit | None = None
    """Per API key (per client address without keys), e.g. ``"600/minute"``; ``None`` = off."""
    rate_limit_storage: str = "memory://"
    """Where the rate-limit windows live: ``memory://`` (per process: each replica has its own budget) or a Redis
    URI such as ``redis://redis:6379/0`` (one budget shared by all replicas); see ``serving/rate_limit.py``."""
    request_timeout_s: float = 30.0
    """Queueing + inference deadline of one request; past it the answer is 504."""
    max_text_bytes: int = 10_000
    """Largest text, in UTF-8 bytes (413 above it)."""
    max_texts: int = 64
    """Most texts in one /batch-predict request (413 above it)."""
    max_body_bytes: int | None = None
    """Largest request body; default ``6 * max_texts * max_text_bytes + 64 KiB`` (JSON escapes may take 6 bytes
    per character)."""
    max_num_orderings: int = 64
    """Largest ``num_orderings`` a request may ask for (memory grows with it)."""
    num_orderings: int | None = None
    """Default orderings per text; ``None`` = the model config's ``num_orderings``."""
    max_length: int | None = None
    """Token limit per text (longer texts are truncated and flagged); ``None`` = the model's limit."""
    accept_threshold: float | None = None
    """Default confidence for ``accept``; ``None`` = the thresholds stored in the model's calibration.json
    (``bayesian-hf calibrate --target_risk``), else 0.9."""
    review_threshold: float | None = None
    """Default confidence for ``review`` (below: ``escalate``); ``None`` = stored, else 0.6."""
    cors_origins: tuple[str, ...] = ()
    """Origins allowed to call the API from a browser; empty = no CORS headers."""
    device: str = "cpu"
    torch_threads: int | None = None
    backend: str = "auto"
    """Inference backend: ``auto`` (ONNX when the model folder is a ``bayesian-hf export``, else PyTorch),
    ``torch`` or ``onnx`` (see ``bayesian_hf.backends.load_for_inference``)."""
    compile: bool = False
    """``torch.compile`` the PyTorch model (falls back to eager with a logged warning when it fails)."""
    graceful_timeout_s: float = 30.0
    """After SIGTERM/SIGINT: how long in-flight requests may take to finish; past it they get a JSON 503."""
    max_request_work: int = 262_144
    """Most work one request may ask for, in token-orderings (sum over its texts of tokens x effective orderings);
    413 ``work_too_large`` above it. The default is 64 texts x 512 tokens x 8 orderings."""
    max_pass_work: int = 32_768
    """Most token-orderings (texts x padded tokens x orderings) in one forward pass; larger requests run in
    several passes, interleaved with other requests and cancelled between passes when their caller has gone."""
    max_queue_delay_s: float = 2.0
    """A prediction request whose predicted wait in the batcher queue (queued token-orderings / the measured rate)
    exceeds this is refused at once with 429 ``overloaded`` and a ``Retry-After``, instead of queueing into a 504."""
    header_timeout_s: float = 10.0
    """Seconds a connection may take to send a request's line and headers (also after a keep-alive response);
    past it: 408 and the connection is closed."""
    body_timeout_s: float = 30.0
    """Seconds a request may take to send its whole body; past it: JSON 408 and the connection is closed."""
    keep_alive_s: float = 5.0
    """Seconds an idle keep-alive connection stays open."""
    max_connections: int = 512
    """Open connections + running requests the server accepts (uvicorn's ``limit_concurrency``); above it new
    requests get 503."""
    max_header_bytes: int = 16_384
    """Largest request line + headers (uvicorn's ``h11_max_incomplete_event_size``); above it: 400."""
    enable_docs: bool = False
    """Serve the interactive Swagger UI at ``/docs`` (it loads its scripts from a CDN, so it is off by default for
    offline deployments; ``/openapi.json`` is always served)."""
    log_level: str = "info"
    access_log: bool = True
    shadow_model: str | None = None
    """A second model folder run on a share of the traffic, after the response is sent; its disagreement with the
    served model is counted in /metrics and never changes a response."""
    shadow_fraction: float = 0.1
    """Share of prediction requests also sent to the shadow model (0 < f <= 1)."""
    drift_window: int = 2000
    """Predictions kept in the rolling drift window (when the model's calibration has a ``drift_reference``)."""
    drift_psi_threshold: float = 0.2
    """PSI above which a drift signal raises the alert (with at least ``min(100, drift_window)`` predictions)."""

    # ------------------------------------------------------------------------------------------------ checks
    def __post_init__(self) -> None:
        object.__setattr__(self, "rate_limit", parse_rate_limit(self.rate_limit))
        object.__setattr__(self, "cors_origins", _split_list(self.cors_origins))
        object.__setattr__(self, "jwt_algorithms", _split_list(self.jwt_algorithms))
        from .rate_limit import validate_storage_uri

        object.__setattr__(self, "rate_limit_storage", validate_storage_uri(self.rate_limit_storage))
        checks = [
            ("port", 0 <= self.port <= 65535, "must be in [0, 65535]"),
            ("max_batch", self.max_batch >= 1, "must be >= 1"),
            ("max_wait_ms", math.isfinite(self.max_wait_ms) and self.max_wait_ms >= 0, "must be >= 0"),
            ("request_timeout_s", math.isfinite(self.request_timeout_s) and self.request_timeout_s > 0, "must be > 0"),
            ("max_text_bytes", self.max_text_bytes >= 1, "must be >= 1"),
            ("max_texts", self.max_texts >= 1, "must be >= 1"),
            ("max_body_bytes", self.max_body_bytes is None or self.max_body_bytes >= 1024, "must be >= 1024"),
            ("max_num_orderings", self.max_num_orderings >= 1, "must be >= 1"),
            ("num_orderings", self.num_orderings is None or 1 <= self.num_orderings <= self.max_num_orderings,
             "must be in [1, max_num_orderings]"),
            ("max_length", self.max_length is None or self.max_length >= 8, "must be >= 8"),
            ("accept_threshold", self.accept_threshold is None or 0.0 <= self.accept_threshold <= 1.0,
             "must be in [0, 1]"),
            ("review_threshold", self.review_threshold is None or 0.0 <= self.review_threshold
             <= (self.accept_threshold if self.accept_threshold is not None else 1.0),
             "must be in [0, accept_threshold]"),
            ("torch_threads", self.torch_threads is None or self.torch_threads >= 1, "must be >= 1"),
            ("backend", self.backend in ("auto", "torch", "onnx"), "must be one of auto, torch, onnx"),
            ("graceful_timeout_s", math.isfinite(self.graceful_timeout_s) and self.graceful_timeout_s >= 0,
             "must be >= 0"),
            ("max_request_work", self.max_request_work >= 1, "must be >= 1"),
            ("max_pass_work", self.max_pass_work >= 1, "must be >= 1"),
            ("max_queue_delay_s", math.isfinite(self.max_queue_delay_s) and self.max_queue_delay_s > 0,
             "must be > 0"),
            ("header_timeout_s", math.isfinite(self.header_timeout_s) and self.header_timeout_s > 0, "must be > 0"),
            ("body_timeout_s", math.isfinite(self.body_timeout_s) and self.body_timeout_s > 0, "must be > 0"),
            ("keep_alive_s", math.isfinite(self.keep_alive_s) and self.keep_alive_s > 0, "must be > 0"),
            ("max_connections", self.max_connections >= 1, "must be >= 1"),
            ("max_header_bytes", self.max_header_bytes >= 1024, "must be >= 1024"),
            ("shadow_fraction", math.isfinite(self.shadow_fraction) and 0.0 < self.shadow_fraction <= 1.0,
             "must be in (0, 1]"),
            ("drift_window", 1 <= self.drift_window <= 1_000_000, "must be in [1, 1000000]"),
            ("drift_psi_threshold", math.isfinite(self.drift_psi_threshold) and self.drift_psi_threshold > 0,
             "must be > 0"),
            ("log_level", self.log_level in ("critical", "error", "warning", "info", "debug", "trace"),
             "must be one of critical, error, warning, info, debug, trace"),
        ]
        for name, ok, message in checks:
            if not ok:
                raise ValueError(f"setting {name} {message}, got {getattr(self, name)!r}")
        self._check_jwt()
        for origin in self.cors_origins:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(f"cors origin must be '*' or scheme://host[:port] without a path, got {origin!r}")

    def _check_jwt(self) -> None:
        from .jwt_auth import MAX_LEEWAY_S, validate_algorithms

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
                values[f.name] = _convert(f, flags[f.name])
                continue
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is not None and raw != "":
                try:
                    values[f.name] = _convert(f, raw)
                except ValueError as err:
                    raise ValueError(f"environment variable {ENV_PREFIX + f.name.upper()}: {err}") from None
        unknown = set(flags) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown settings: {sorted(unknown)}")
        return cls(**values)


def _convert(f: dataclasses.Field, value: Any) -> Any:
    kind = str(f.type)
    if f.name == "rate_limit":
        return parse_rate_limit(value)
    if f.name in ("cors_origins", "jwt_algorithms"):
        return _split_list(value)
    if kind.startswith("bool"):
        return _to_bool(value)
    try:
        if kind.startswith("int"):
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        if kind.startswith("float"):
            return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"setting {f.name} must be a {kind.split(' ')[0]}, got {value!r}") from None
    return str(value)



# ------------------------------------------------------------------------------------------------ command line
def add_serve_arguments(parser: Any) -> None:
    """The flags of ``bayesian-hf serve``. Every default is ``None`` so that unset flags fall back to the
    ``BAYESIAN_HF_*`` environment variables and then to the dataclass defaults."""
    d = ServeSettings()
    env = lambda name: f"{ENV_PREFIX}{name.upper()}"  # noqa: E731
    add = parser.add_argument
    add("--model", help=f"model folder (save_pretrained + tokenizer) or Hub id [{env('model')}]")
    add("--host", help=f"bind address [{env('host')}, default {d.host}; use 0.0.0.0 only behind a proxy]")
    add("--port", type=int, help=f"[{env('port')}, default {d.port}]")
    add("--api-key-file", dest="api_key_file",
        help=f"file with one API key per line; unset = no authentication [{env('api_key_file')}]")
    add("--max-batch", dest="max_batch", type=int, help=f"most texts per forward pass [{env('max_batch')}, "
        f"default {d.max_batch}]")
    add("--max-wait-ms", dest="max_wait_ms", type=float, help="how long the oldest queued text waits for others "
        f"[{env('max_wait_ms')}, default {d.max_wait_ms:g}]")
    add("--rate-limit", dest="rate_limit", help="per API key (per client address without keys), e.g. 600/minute; "
        f"'off' disables [{env('rate_limit')}, default off]")
    add("--rate-limit-storage", dest="rate_limit_storage", metavar="URI", help="memory:// (per process) or "
        f"redis://host:6379/0 to share the limit across replicas [{env('rate_limit_storage')}, default "
        f"{d.rate_limit_storage}]")
    add("--request-timeout", dest="request_timeout_s", type=float, metavar="SECONDS", help="seconds for queueing + inference, then 504 "
        f"[{env('request_timeout_s')}, default {d.request_timeout_s:g}]")
    add("--max-text-bytes", dest="max_text_bytes", type=int, help="largest text in UTF-8 bytes, 413 above "
        f"[{env('max_text_bytes')}, default {d.max_text_bytes}]")
    add("--max-texts", dest="max_texts", type=int, help="most texts per /batch-predict, 413 above "
        f"[{env('max_texts')}, default {d.max_texts}]")
    add("--max-body-bytes", dest="max_body_bytes", type=int, help="largest request body, 413 above "
        f"[{env('max_body_bytes')}, default 6*max_texts*max_text_bytes + 64 KiB]")
    add("--max-num-orderings", dest="max_num_orderings", type=int, help="largest num_orderings a request may ask "
        f"[{env('max_num_orderings')}, default {d.max_num_orderings}]")
    add("--num-orderings", dest="num_orderings", type=int, help="default orderings per text "
        f"[{env('num_orderings')}, default: the model config's]")
    add("--max-length", dest="max_length", type=int, help="token limit per text; longer texts are truncated and "
        f"flagged [{env('max_length')}, default: the model's]")
    add("--accept-threshold", dest="accept_threshold", type=float, help="default confidence for 'accept' "
        f"[{env('accept_threshold')}, default: calibration.json's decision_thresholds, else 0.9]")
    add("--review-threshold", dest="review_threshold", type=float, help="default confidence for 'review' "
        f"(below: 'escalate') [{env('review_threshold')}, default: calibration.json's, else 0.6]")
    add("--jwt-secret-file", dest="jwt_secret_file", help="HMAC secret (>= 32 bytes) for HS256 JWT bearer tokens "
        f"with scopes predict/admin [{env('jwt_secret_file')}]")
    add("--jwt-public-key-file", dest="jwt_public_key_file", help="PEM public key for RS256/ES256 JWTs "
        f"[{env('jwt_public_key_file')}]")
    add("--jwt-jwks-file", dest="jwt_jwks_file", help="local JWKS JSON file of public keys, chosen by the token's kid "
        f"[{env('jwt_jwks_file')}]")
    add("--jwt-algorithms", dest="jwt_algorithms", help="comma-separated JWS algorithms within the key's family, "
        f"e.g. RS256,PS256 [{env('jwt_algorithms')}, default: the key's]")
    add("--jwt-audience", dest="jwt_audience", help=f"required 'aud' of tokens [{env('jwt_audience')}]")
    add("--jwt-issuer", dest="jwt_issuer", help=f"required 'iss' of tokens [{env('jwt_issuer')}]")
    add("--jwt-leeway", dest="jwt_leeway_s", type=float, metavar="SECONDS", help="clock skew tolerated on exp/nbf/iat, "
        f"at most 300 [{env('jwt_leeway_s')}, default {d.jwt_leeway_s:g}]")
    add("--jwt-scope-claim", dest="jwt_scope_claim", help=f"claim holding the scopes [{env('jwt_scope_claim')}, "
        "default: scope, else scp or scopes]")
    add("--cors-origins", dest="cors_origins", help="comma-separated origins allowed from browsers, e.g. "
        f"https://app.example.com [{env('cors_origins')}, default none]")
    add("--device", help=f"torch device [{env('device')}, default {d.device}]")
    add("--torch-threads", dest="torch_threads", type=int, help=f"torch intra-op threads [{env('torch_threads')}]")
    add("--backend", choices=["auto", "torch", "onnx"],
        help=f"inference backend [{env('backend')}, default {d.backend}: onnx for a `bayesian-hf export` folder]")
    add("--compile", dest="compile", action="store_const", const=True, default=None,
        help=f"torch.compile the PyTorch model, eager fallback if it fails [{env('compile')}=true]")
    add("--graceful-timeout", dest="graceful_timeout_s", type=float, metavar="SECONDS", help="seconds in-flight requests may take "
        f"after SIGTERM [{env('graceful_timeout_s')}, default {d.graceful_timeout_s:g}]")
    add("--max-request-work", dest="max_request_work", type=int, metavar="TOKEN_ORDERINGS", help="most tokens x "
        f"orderings one request may ask for, 413 above [{env('max_request_work')}, default {d.max_request_work}]")
    add("--max-pass-work", dest="max_pass_work", type=int, metavar="TOKEN_ORDERINGS", help="most texts x tokens x "
        f"orderings in one forward pass [{env('max_pass_work')}, default {d.max_pass_work}]")
    add("--max-queue-delay", dest="max_queue_delay_s", type=float, metavar="SECONDS", help="refuse predictions "
        f"with 429 when the predicted queue wait exceeds it [{env('max_queue_delay_s')}, default "
        f"{d.max_queue_delay_s:g}]")
    add("--header-timeout", dest="header_timeout_s", type=float, metavar="SECONDS", help="seconds to send the "
        f"request headers, then 408 [{env('header_timeout_s')}, default {d.header_timeout_s:g}]")
    add("--body-timeout", dest="body_timeout_s", type=float, metavar="SECONDS", help="seconds to send the request "
        f"body, then 408 [{env('body_timeout_s')}, default {d.body_timeout_s:g}]")
    add("--keep-alive", dest="keep_alive_s", type=float, metavar="SECONDS", help="idle keep-alive connection "
        f"timeout [{env('keep_alive_s')}, default {d.keep_alive_s:g}]")
    add("--max-connections", dest="max_connections", type=int, help="open connections + running requests, 503 "
        f"above [{env('max_connections')}, default {d.max_connections}]")
    add("--max-header-bytes", dest="max_header_bytes", type=int, help="largest request line + headers, 400 above "
        f"[{env('max_header_bytes')}, default {d.max_header_bytes}]")
    add("--enable-docs", dest="enable_docs", action="store_const", const=True, default=None,
        help=f"serve the Swagger UI at /docs (loads scripts from a CDN) [{env('enable_docs')}=true, default off]")
    add("--shadow-model", dest="shadow_model", help="a second model folder run on a share of the traffic after "
        f"each response; disagreement goes to /metrics [{env('shadow_model')}, default none]")
    add("--shadow-fraction", dest="shadow_fraction", type=float, help="share of prediction requests sent to the "
        f"shadow model [{env('shadow_fraction')}, default {d.shadow_fraction}]")
    add("--drift-window", dest="drift_window", type=int, help="predictions in the rolling drift window, used when "
        f"the model's calibration.json has a drift_reference [{env('drift_window')}, default {d.drift_window}]")
    add("--drift-psi-threshold", dest="drift_psi_threshold", type=float, help="population stability index above "
        f"which a drift signal raises the alert [{env('drift_psi_threshold')}, default {d.drift_psi_threshold:g}]")
    add("--log-level", dest="log_level", choices=("critical", "error", "warning", "info", "debug"),
        help=f"[{env('log_level')}, default {d.log_level}]")
    add("--no-access-log", dest="access_log", action="store_const", const=False, default=None,
        help=f"do not log every request [{env('access_log')}=false]")


def settings_from_args(args: Any, environ: Mapping[str, str] | None = None) -> ServeSettings:
    """Settings from parsed ``serve`` flags (an ``argparse.Namespace``) + environment variables."""
    names = {f.name for f in dataclasses.fields(ServeSettings)}
    flags = {k: v for k, v in vars(args).items() if k in names}
    settings = ServeSettings.from_sources(flags, environ)
    if not settings.model:
        raise ValueError(f"no model: pass --model PATH or set {ENV_PREFIX}MODEL")
    return settings
