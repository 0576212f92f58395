"""What the OpenAPI document says about the service: its description, the error responses of each endpoint
(``ERRORS``) and the API key / JWT security schemes (``PROTECTED``, declared here, checked by ``ServiceMiddleware``).
``docs/openapi.json`` is generated from it (``python scripts/export_openapi.py``)."""

from __future__ import annotations

from typing import Any

from fastapi import Security
from fastapi.security import APIKeyHeader, HTTPBearer

from .schemas import ErrorResponse

DESCRIPTION = """Uncertainty-aware text classification with a Bayesian-in-expectation BERT.

Each prediction carries a (calibrated) confidence, probabilities, the uncertainty decomposed into epistemic and
aleatoric parts, the order dispersion, a routing decision (`accept` / `review` / `escalate`) and, when the model
has a conformal calibrator, a prediction set. Concurrent requests are micro-batched into shared forward passes.

When the model's calibration.json has a `drift_reference`, `/drift` compares the recent predictions (a rolling
window) with the calibration data: population stability index, Kolmogorov-Smirnov and Wasserstein per signal, label
shift, and an alert.

When the server was started with an API key file, `/predict`, `/batch-predict`, `/model-info` and `/drift` need
`Authorization: Bearer <key>` or `X-API-Key: <key>` (401 without, 403 with a wrong key). When it was started with a
JWT key (`--jwt-secret-file`, `--jwt-public-key-file` or `--jwt-jwks-file`), `Authorization: Bearer <JWT>` is
accepted too: scope `predict` opens the prediction endpoints, scope `admin` opens `/model-info`, `/drift` and
`/metrics` (401 `invalid_token` for a bad token, 403 `insufficient_scope`); API keys hold every scope. With any
authentication configured, `/metrics` needs credentials too. Errors are JSON
`{"error": {"code", "message", "details", "request_id"}}`. See docs/serving.md.
"""

ERRORS = {
    401: {"model": ErrorResponse, "description": "API key or token missing, or the token is invalid"},
    403: {"model": ErrorResponse, "description": "API key wrong, or the token lacks the scope"},
    408: {"model": ErrorResponse, "description": "the body did not arrive within the body timeout"},
    413: {"model": ErrorResponse, "description": "body, a text, the number of texts or the work (tokens x "
          "orderings) over the limit"},
    415: {"model": ErrorResponse, "description": "Content-Type is not application/json"},
    422: {"model": ErrorResponse, "description": "invalid JSON, wrong types, unknown fields, empty text"},
    429: {"model": ErrorResponse, "description": "rate limit exceeded, or the server is overloaded (code "
          "'overloaded'); see Retry-After"},
    500: {"model": ErrorResponse, "description": "internal error (no details are exposed)"},
    503: {"model": ErrorResponse, "description": "model not loaded yet, or shutting down"},
    504: {"model": ErrorResponse, "description": "request timeout"},
}

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="ApiKeyHeader")
_bearer = HTTPBearer(auto_error=False, scheme_name="BearerKey",
                     description="an API key, or a JWT with scope `predict` (/predict, /batch-predict) or `admin` "
                                 "(/model-info, /drift, /metrics)")


def _documented_security(api_key: str | None = Security(_api_key_header), bearer: Any = Security(_bearer)) -> None:
    """Declares the API key / JWT schemes in the OpenAPI document; they are checked by ServiceMiddleware."""


PROTECTED = [Security(_documented_security)]
"""The ``dependencies`` of a route that needs credentials (for the OpenAPI document only)."""
