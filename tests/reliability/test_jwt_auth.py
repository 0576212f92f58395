"""JWT bearer tokens with scopes (issue 11, item 15): the service built by ``create_app`` with a tiny model, called
through Starlette's TestClient with real tokens (PyJWT, RSA / EC / HMAC keys made here).

Every refusal is checked against a control: the same token builder with valid claims is accepted, so each 401/403
comes from the one thing that was changed (expiry, audience, algorithm, signature, scope, ...)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import pytest

jwt = pytest.importorskip("jwt")
pytest.importorskip("cryptography")
pytest.importorskip("fastapi")

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, rsa  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from bayesian_hf.serving import ServeSettings  # noqa: E402
from bayesian_hf.serving.app import create_app  # noqa: E402
from bayesian_hf.serving.jwt_auth import Authenticator, JwtVerifier  # noqa: E402

AUDIENCE = "bayesian-hf-tests"
ISSUER = "https://issuer.example.test"
API_KEY = "jwt-test-api-key-0123456789"
TEXT = "The room was lovely. Breakfast was cold."
LEAK_MARKERS = ("Traceback", 'File "', "site-packages", "jwt.exceptions", "Error:")


# ------------------------------------------------------------------------------------------------ key material
def _pem_public(private) -> bytes:
    return private.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)


def _pem_private(private) -> bytes:
    return private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """An RSA key pair, two EC P-256 key pairs, an HMAC secret, the files the server reads, and an API key file."""
    folder = tmp_path_factory.mktemp("jwt-keys")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_a, ec_b, ec_other = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    secret = b"s" * 8 + hashlib.sha256(b"jwt tests").hexdigest().encode()  # 72 bytes
    files = {
        "rsa_public": folder / "rsa_public.pem", "secret_file": folder / "secret.txt", "jwks": folder / "jwks.json",
        "api_keys": folder / "api_keys.txt",
    }
    files["rsa_public"].write_bytes(_pem_public(rsa_key))
    files["secret_file"].write_bytes(secret + b"\n")
    jwks = {"keys": []}
    for kid, private in (("ec-a", ec_a), ("ec-b", ec_b)):
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
        jwks["keys"].append({**jwk, "kid": kid, "use": "sig"})
    files["jwks"].write_text(json.dumps(jwks))
    files["api_keys"].write_text(API_KEY + "\n")
    for path in files.values():
        path.chmod(0o600)
    return {"rsa": rsa_key, "ec_a": ec_a, "ec_b": ec_b, "ec_other": ec_other, "secret": secret,
            **{k: str(v) for k, v in files.items()}}


def claims(**overrides) -> dict:
    """Valid claims for the RS256 server (audience and issuer set); ``None`` removes a claim."""
    now = int(time.time())
    values = {"sub": "client-1", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "nbf": now, "exp": now + 300,
              "scope": "predict"}
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unsigned_token(payload: dict, header: dict) -> str:
    """``header.payload.`` with an empty signature (what ``alg: none`` looks like)."""
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}."


def hs256_with_key(payload: dict, key: bytes) -> str:
    """An HS256 token signed by hand (PyJWT refuses to use a PEM key as an HMAC secret, an attacker does not)."""
    signing_input = f"{b64url(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}." \
                    f"{b64url(json.dumps(payload).encode())}"
    signature = hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


# ----------------------------------------------------------------------------------------------------- servers
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, minilm_tokenizer):
    """A tiny random Bayesian model (hidden 32, 2 layers) with the MiniLM tokenizer: authentication does not depend
    on what the model has learnt, only on the service answering."""
    import torch
    from tiny_models import make_tiny_bert

    from bayesian_hf import BayesianExpectationForSequenceClassification

    folder = tmp_path_factory.mktemp("jwt-model")
    bert = make_tiny_bert(folder / "bert", minilm_tokenizer, labels=("negative", "positive"))
    torch.manual_seed(0)
    model = BayesianExpectationForSequenceClassification.from_bert(bert, num_labels=2, num_orderings=2)
    model.save_pretrained(folder / "model")
    minilm_tokenizer.save_pretrained(folder / "model")
    return str(folder / "model")


def start(model_dir: str, **overrides) -> TestClient:
    settings = ServeSettings(model=model_dir, torch_threads=1, max_wait_ms=1, **overrides)
    client = TestClient(create_app(settings), raise_server_exceptions=False)
    client.__enter__()
    deadline = time.monotonic() + 60
    while client.get("/ready").status_code != 200:
        assert time.monotonic() < deadline, client.get("/ready").text
        time.sleep(0.02)
    return client


@pytest.fixture(scope="module")
def rs_server(model_dir, keys):
    """RS256 public key, audience and issuer required, default leeway (30 s)."""
    client = start(model_dir, jwt_public_key_file=keys["rsa_public"], jwt_audience=AUDIENCE, jwt_issuer=ISSUER)
    yield client
    client.__exit__(None, None, None)


def rs_token(keys, **overrides) -> str:
    return jwt.encode(claims(**overrides), keys["rsa"], algorithm="RS256")


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def assert_error(resp, status: int, code: str, token: str | None = None) -> dict:
    """A JSON error with ``code``, no internals, and never the token."""
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["code"] == code, error
    assert error["request_id"] == resp.headers["x-request-id"]
    for marker in LEAK_MARKERS:
        assert marker not in resp.text
    if token is not None:  # nor a long part of it ("def" of "abc.def.ghi" may well be in a hex request id)
        for part in [token] + [p for p in token.split(".") if len(p) >= 16]:
            assert part not in resp.text and part not in resp.headers.get("www-authenticate", "")
    return error


def predict(client, headers: dict):
    return client.post("/predict", json={"text": TEXT}, headers=headers)


# ------------------------------------------------------------------------------------------------------ scopes
def test_predict_scope_opens_predictions_only(rs_server, keys):
    token = rs_token(keys, scope="predict")
    resp = predict(rs_server, bearer(token))
    assert resp.status_code == 200, resp.text
    assert resp.json()["label"] in ("negative", "positive")
    batch = rs_server.post("/batch-predict", json={"texts": [TEXT, "Dreadful."]}, headers=bearer(token))
    assert batch.status_code == 200 and batch.json()["count"] == 2
    for path in ("/model-info", "/drift", "/metrics"):
        resp = rs_server.get(path, headers=bearer(token))
        error = assert_error(resp, 403, "insufficient_scope", token)
        assert "admin" in error["message"]
        challenge = resp.headers["www-authenticate"]
        assert challenge.startswith("Bearer ") and 'error="insufficient_scope"' in challenge
        assert 'scope="admin"' in challenge


@pytest.mark.parametrize("scope_claims", [{"scope": "admin"}, {"scope": None, "scp": ["admin"]},
                                          {"scope": None, "scopes": ["admin", "other"]}])
def test_admin_scope_opens_admin_endpoints_only(rs_server, keys, scope_claims):
    token = rs_token(keys, **scope_claims)
    info = rs_server.get("/model-info", headers=bearer(token))
    assert info.status_code == 200 and info.json()["serving"]["auth_required"] is True
    assert rs_server.get("/drift", headers=bearer(token)).status_code == 200
    metrics = rs_server.get("/metrics", headers=bearer(token))
    assert metrics.status_code == 200 and "bayesian_hf_requests_total" in metrics.text
    assert_error(predict(rs_server, bearer(token)), 403, "insufficient_scope", token)  # scopes are independent


def test_both_scopes_and_no_scope(rs_server, keys):
    both = rs_token(keys, scope="predict admin")
    assert predict(rs_server, bearer(both)).status_code == 200
    assert rs_server.get("/model-info", headers=bearer(both)).status_code == 200
    none = rs_token(keys, scope=None)
    assert_error(predict(rs_server, bearer(none)), 403, "insufficient_scope", none)
    wrong_type = rs_token(keys, scope={"predict": True})
    assert_error(predict(rs_server, bearer(wrong_type)), 401, "invalid_token", wrong_type)


def test_missing_credentials(rs_server, keys):
    for method, path in (("POST", "/predict"), ("POST", "/batch-predict"), ("GET", "/model-info"),
                         ("GET", "/drift"), ("GET", "/metrics")):
        resp = rs_server.request(method, path, json={"text": TEXT} if method == "POST" else None)
        assert_error(resp, 401, "missing_token")
        assert resp.headers["www-authenticate"] == 'Bearer realm="bayesian-hf"'
    # an X-API-Key is no token, and a Basic credential is no bearer
    assert_error(predict(rs_server, {"X-API-Key": rs_token(keys)}), 401, "missing_token")
    assert_error(predict(rs_server, {"Authorization": f"Basic {rs_token(keys)}"}), 401, "missing_token")
    for path in ("/health", "/ready"):  # probes need nothing
        assert rs_server.get(path).status_code == 200


# -------------------------------------------------------------------------------------------------- bad tokens
def _bad_tokens(keys) -> dict[str, tuple[str, str]]:
    now = int(time.time())
    valid = rs_token(keys)
    head, body, sig = valid.split(".")
    other_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = Path(keys["rsa_public"]).read_bytes()
    flipped = b64url(bytes([base64.urlsafe_b64decode(sig + "==")[0] ^ 1]) + base64.urlsafe_b64decode(sig + "==")[1:])
    forged_body = b64url(json.dumps(claims(scope="predict admin", sub="someone-else")).encode())
    return {  # name: (token, word the message must contain)
        "expired": (rs_token(keys, iat=now - 600, nbf=now - 600, exp=now - 120), "expired"),
        "not yet valid": (rs_token(keys, nbf=now + 600, iat=None), "not valid yet"),
        "issued in the future": (rs_token(keys, iat=now + 600), "not valid yet"),
        "no exp": (rs_token(keys, exp=None), "exp"),
        "wrong audience": (rs_token(keys, aud="another-service"), "audience"),
        "no audience": (rs_token(keys, aud=None), "aud"),
        "wrong issuer": (rs_token(keys, iss="https://evil.example.test"), "issuer"),
        "no issuer": (rs_token(keys, iss=None), "iss"),
        "alg none": (unsigned_token(claims(), {"alg": "none", "typ": "JWT"}), "algorithm"),
        "alg None": (unsigned_token(claims(), {"alg": "None", "typ": "JWT"}), "algorithm"),
        "HS256 signed with the RSA public key": (hs256_with_key(claims(), pem), "algorithm"),
        "HS256 signed with the stripped public key": (hs256_with_key(claims(), pem.strip()), "algorithm"),
        "RS384 (not configured)": (jwt.encode(claims(), keys["rsa"], algorithm="RS384"), "algorithm"),
        "signed by another RSA key": (jwt.encode(claims(), other_rsa, algorithm="RS256"), "signature"),
        "tampered signature": (f"{head}.{body}.{flipped}", "signature"),
        "tampered payload": (f"{head}.{forged_body}.{sig}", "signature"),
        "signature removed": (f"{head}.{body}.", "signature"),
        "not a JWT": ("abc.def.ghi", "well-formed"),
        "oversized": (valid + "A" * 9000, "longer"),
    }


def test_control_token_is_accepted(rs_server, keys):
    """The builder of the bad tokens makes a valid token when nothing is changed."""
    assert predict(rs_server, bearer(rs_token(keys))).status_code == 200


def test_bad_tokens_are_401_invalid_token(rs_server, keys):
    for name, (token, word) in _bad_tokens(keys).items():
        resp = predict(rs_server, bearer(token))
        error = assert_error(resp, 401, "invalid_token", token)
        assert word in error["message"], (name, error)
        challenge = resp.headers["www-authenticate"]
        assert challenge.startswith('Bearer realm="bayesian-hf"') and 'error="invalid_token"' in challenge, name
        # the token is refused on the admin endpoints too, before any scope is looked at
        assert_error(rs_server.get("/metrics", headers=bearer(token)), 401, "invalid_token", token)


# ------------------------------------------------------------------------------------------------------- leeway
def test_clock_skew_is_tolerated_up_to_the_leeway_only(model_dir, keys):
    secret = keys["secret"]
    client = start(model_dir, jwt_secret_file=keys["secret_file"], jwt_leeway_s=20)
    try:
        now = int(time.time())

        def hs(**values):
            return jwt.encode({"sub": "c", "scope": "predict", **values}, secret, algorithm="HS256")

        assert predict(client, bearer(hs(exp=now - 5))).status_code == 200  # 5 s late: within 20 s
        assert predict(client, bearer(hs(exp=now + 60, nbf=now + 5))).status_code == 200
        assert_error(predict(client, bearer(hs(exp=now - 60))), 401, "invalid_token")  # 60 s late
        assert_error(predict(client, bearer(hs(exp=now + 120, nbf=now + 60))), 401, "invalid_token")
        # no audience is configured: a token that names one is refused (it was meant for another service)
        assert_error(predict(client, bearer(hs(exp=now + 60, aud="x"))), 401, "invalid_token")
        # an RS256 token cannot be checked against an HMAC secret
        assert_error(predict(client, bearer(jwt.encode({"exp": now + 60, "scope": "predict"}, keys["rsa"],
                                                        algorithm="RS256"))), 401, "invalid_token")
    finally:
        client.__exit__(None, None, None)
    with pytest.raises(ValueError, match="jwt_leeway_s"):
        ServeSettings(model=model_dir, jwt_secret_file=keys["secret_file"], jwt_leeway_s=301)
    with pytest.raises(ValueError, match="jwt_leeway_s"):
        ServeSettings(model=model_dir, jwt_secret_file=keys["secret_file"], jwt_leeway_s=-1)
    assert ServeSettings(model=model_dir, jwt_secret_file=keys["secret_file"], jwt_leeway_s=300).jwt_leeway_s == 300


# -------------------------------------------------------------------------------------------------- ES256 JWKS
def test_es256_tokens_from_a_local_jwks(model_dir, keys):
    client = start(model_dir, jwt_jwks_file=keys["jwks"], jwt_issuer=ISSUER)
    try:
        now = int(time.time())
        payload = {"iss": ISSUER, "sub": "svc", "exp": now + 60, "scope": "predict admin"}

        def es(private, kid):
            return jwt.encode(payload, private, algorithm="ES256", headers={"kid": kid} if kid else None)

        assert predict(client, bearer(es(keys["ec_a"], "ec-a"))).status_code == 200
        assert client.get("/model-info", headers=bearer(es(keys["ec_b"], "ec-b"))).status_code == 200
        for token in (es(keys["ec_b"], "ec-a"),        # signed by B, claims to be A
                      es(keys["ec_other"], "ec-a"),    # a key outside the set
                      es(keys["ec_a"], "ec-unknown"),  # no such kid
                      es(keys["ec_a"], None)):         # several keys: the kid is needed
            assert_error(predict(client, bearer(token)), 401, "invalid_token", token)
        forged = hs256_with_key({**payload}, json.dumps(json.load(open(keys["jwks"]))["keys"][0]).encode())
        assert_error(predict(client, bearer(forged)), 401, "invalid_token", forged)
    finally:
        client.__exit__(None, None, None)


# ----------------------------------------------------------------------------------------- API keys next to JWTs
def test_api_keys_keep_working_next_to_jwts_and_hold_every_scope(model_dir, keys):
    client = start(model_dir, api_key_file=keys["api_keys"], jwt_secret_file=keys["secret_file"])
    try:
        now = int(time.time())
        for headers in ({"X-API-Key": API_KEY}, bearer(API_KEY)):
            assert predict(client, headers).status_code == 200
            for path in ("/model-info", "/drift", "/metrics"):
                assert client.get(path, headers=headers).status_code == 200, path
        token = jwt.encode({"exp": now + 60, "scope": "predict"}, keys["secret"], algorithm="HS256")
        assert predict(client, bearer(token)).status_code == 200
        assert_error(client.get("/metrics", headers=bearer(token)), 403, "insufficient_scope", token)
        assert_error(predict(client, {"X-API-Key": API_KEY + "x"}), 403, "invalid_api_key")
        expired = jwt.encode({"exp": now - 3600, "scope": "predict"}, keys["secret"], algorithm="HS256")
        assert_error(predict(client, bearer(expired)), 401, "invalid_token", expired)
        error = assert_error(client.get("/metrics"), 401, "missing_api_key")
        assert "bearer token" in error["message"]
    finally:
        client.__exit__(None, None, None)


def test_without_auth_metrics_stays_open(model_dir):
    client = start(model_dir)
    try:
        assert client.get("/metrics").status_code == 200
        assert predict(client, {}).status_code == 200
    finally:
        client.__exit__(None, None, None)


# ------------------------------------------------------------------------------------------ start-up validation
def _settings(model_dir, **values) -> ServeSettings:
    return ServeSettings(model=model_dir, **values)


def test_bad_jwt_configuration_fails_at_start(model_dir, keys, tmp_path):
    def write(name, data: bytes | str) -> str:
        path = tmp_path / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        return str(path)

    for values, match in [
        ({"jwt_secret_file": keys["secret_file"], "jwt_algorithms": "none"}, "none"),
        ({"jwt_secret_file": keys["secret_file"], "jwt_algorithms": "XS256"}, "unknown algorithm"),
        ({"jwt_secret_file": keys["secret_file"], "jwt_public_key_file": keys["rsa_public"]}, "at most one"),
        ({"jwt_audience": AUDIENCE}, "without a JWT key"),
    ]:
        with pytest.raises(ValueError, match=match):
            _settings(model_dir, **values)

    small_rsa = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(keys["ec_a"]))  # private: has "d"
    ec_public_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(keys["ec_a"].public_key()))
    cases = [
        ({"jwt_secret_file": write("short", "too-short\n")}, "at least 32"),
        ({"jwt_secret_file": write("pem_secret", _pem_public(keys["rsa"]))}, "PEM key"),
        ({"jwt_secret_file": str(tmp_path / "missing")}, "cannot read"),
        ({"jwt_public_key_file": write("private.pem", _pem_private(keys["rsa"]))}, "private key"),
        ({"jwt_public_key_file": write("garbage.pem", "-----BEGIN PUBLIC KEY-----\nnope\n")}, "not a PEM public key"),
        ({"jwt_public_key_file": write("small.pem", _pem_public(small_rsa))}, "2048"),
        ({"jwt_public_key_file": keys["rsa_public"], "jwt_algorithms": "HS256"}, "cannot be used"),
        ({"jwt_public_key_file": keys["rsa_public"], "jwt_algorithms": "ES256"}, "cannot be used"),
        ({"jwt_secret_file": keys["secret_file"], "jwt_algorithms": "RS256"}, "cannot be used"),
        ({"jwt_jwks_file": write("bad.json", "{not json")}, "not UTF-8 JSON"),
        ({"jwt_jwks_file": write("nokeys.json", '{"keys": []}')}, "no signing keys"),
        ({"jwt_jwks_file": write("oct.json", json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}))}, "symmetric"),
        ({"jwt_jwks_file": write("private.json", json.dumps({"keys": [ec_jwk]}))}, "private key material"),
        ({"jwt_jwks_file": write("badalg.json", json.dumps({"keys": [{**ec_public_jwk, "alg": "RS256"}]}))},
         "not a supported|match"),
    ]
    for values, match in cases:
        with pytest.raises(ValueError, match=match):
            create_app(_settings(model_dir, **values))
    # the valid configurations load
    for values in ({"jwt_secret_file": keys["secret_file"]}, {"jwt_public_key_file": keys["rsa_public"]},
                   {"jwt_jwks_file": keys["jwks"]},
                   {"jwt_public_key_file": keys["rsa_public"], "jwt_algorithms": "PS256"}):
        assert isinstance(Authenticator.from_settings(_settings(model_dir, **values)).jwt, JwtVerifier)


def test_settings_from_environment_and_cli_exit_status(model_dir, keys):
    from bayesian_hf.cli import main

    env = {"BAYESIAN_HF_JWT_PUBLIC_KEY_FILE": keys["rsa_public"], "BAYESIAN_HF_JWT_ALGORITHMS": "RS256, PS256",
           "BAYESIAN_HF_JWT_AUDIENCE": AUDIENCE, "BAYESIAN_HF_JWT_LEEWAY_S": "5",
           "BAYESIAN_HF_JWT_SCOPE_CLAIM": "permissions"}
    settings = ServeSettings.from_sources({"model": model_dir}, env)
    assert settings.jwt_algorithms == ("RS256", "PS256") and settings.jwt_leeway_s == 5
    verifier = JwtVerifier.from_settings(settings)
    assert verifier.algorithms == ("RS256", "PS256") and verifier.scope_claims == ("permissions",)
    token = jwt.encode({"aud": AUDIENCE, "exp": int(time.time()) + 60, "scope": "admin", "permissions": ["predict"]},
                       keys["rsa"], algorithm="PS256")
    assert verifier.verify(token).scopes == {"predict"}  # the configured claim, not "scope"
    with pytest.raises(ValueError, match="BAYESIAN_HF_JWT_LEEWAY_S"):
        ServeSettings.from_sources({"model": model_dir}, {"BAYESIAN_HF_JWT_LEEWAY_S": "soon"})
    assert main(["serve", "--model", model_dir, "--jwt-public-key-file", keys["rsa_public"],
                 "--jwt-algorithms", "HS256"]) == 2
    assert main(["serve", "--model", model_dir, "--jwt-secret-file", keys["secret_file"], "--jwt-leeway", "3600"]) == 2
