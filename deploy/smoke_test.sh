#!/usr/bin/env bash
# Smoke test of the container image: build it, run it with a model folder and an API key, check /health, /ready,
# /predict (with and without the key), /metrics, the non-root user and the image's HEALTHCHECK, then stop it with
# SIGTERM and check that it exits cleanly (before the runtime's kill).
#
#   deploy/smoke_test.sh MODEL_DIR [IMAGE]
#
# MODEL_DIR: a folder written by `bayesian-hf train`/`quickstart` (save_pretrained + tokenizer, calibration.json
# optional) or by `bayesian-hf export --format onnx`. IMAGE defaults to bayesian-hf:smoke.
# Environment: RUNTIME=docker|podman (default: the first one found), PORT (host port, default 18000),
# SKIP_BUILD=1 (test an image built before), BUILD_ARGS / RUN_ARGS (extra flags for build / run),
# READY_TIMEOUT (seconds to wait for the model to load, default 300).
set -euo pipefail

cd "$(dirname "$0")/.."
MODEL_DIR=${1:?usage: deploy/smoke_test.sh MODEL_DIR [IMAGE]}
IMAGE=${2:-bayesian-hf:smoke}
PORT=${PORT:-18000}
READY_TIMEOUT=${READY_TIMEOUT:-300}
RUNTIME=${RUNTIME:-$(command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 && echo docker || echo podman)}
NAME=bayesian-hf-smoke-$$
URL=http://127.0.0.1:$PORT
WORK=$(mktemp -d)
KEY=smoke-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')

command -v "$RUNTIME" >/dev/null || { echo "no container runtime ($RUNTIME) found" >&2; exit 2; }
command -v curl >/dev/null || { echo "curl is needed" >&2; exit 2; }
[ -d "$MODEL_DIR" ] || { echo "model folder $MODEL_DIR does not exist" >&2; exit 2; }
MODEL_DIR=$(cd "$MODEL_DIR" && pwd)
# the server runs as uid 10001: every file of the model must be readable by others (safetensors writes
# model.safetensors with mode 0600, so a folder saved by another user is not)
unreadable=$(find "$MODEL_DIR" \( -type f ! -perm -o=r \) -o \( -type d ! -perm -o=rx \) | head -5)
[ -z "$unreadable" ] || { echo "not readable by the container user: $unreadable ... (run: chmod -R a+rX $MODEL_DIR)" >&2; exit 2; }

cleanup() {
    "$RUNTIME" rm -f "$NAME" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; "$RUNTIME" logs "$NAME" 2>&1 | tail -40 >&2 || true; exit 1; }
step() { echo "== $*"; }

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    step "build $IMAGE with $RUNTIME"
    # podman's default OCI image format drops HEALTHCHECK; the docker format keeps it
    format=""
    [ "$RUNTIME" = podman ] && format="--format docker"
    # shellcheck disable=SC2086  # BUILD_ARGS is a list of flags
    "$RUNTIME" build $format ${BUILD_ARGS:-} -t "$IMAGE" .
fi

step "run (read-only root filesystem, model and key file mounted read-only)"
printf '%s\n' "$KEY" > "$WORK/api_keys"
chmod 0444 "$WORK/api_keys"  # the container user (uid 10001) reads it
# shellcheck disable=SC2086  # RUN_ARGS is a list of flags
"$RUNTIME" run -d --name "$NAME" -p "127.0.0.1:$PORT:8000" \
    --read-only --tmpfs /tmp --tmpfs /home/app:rw,mode=1777 \
    -v "$MODEL_DIR:/model:ro" -v "$WORK/api_keys:/run/secrets/api_keys:ro" \
    -e BAYESIAN_HF_API_KEY_FILE=/run/secrets/api_keys -e BAYESIAN_HF_RATE_LIMIT=100/minute \
    ${RUN_ARGS:-} "$IMAGE" >/dev/null

step "wait for /ready (up to ${READY_TIMEOUT} s)"
deadline=$((SECONDS + READY_TIMEOUT))
until [ "$(curl -s -o /dev/null -w '%{http_code}' "$URL/ready")" = 200 ]; do
    [ "$("$RUNTIME" inspect -f '{{.State.Running}}' "$NAME")" = true ] || fail "the container exited"
    case "$(curl -s "$URL/ready")" in *'"failed"'*) fail "the model failed to load: $(curl -s "$URL/ready")";; esac
    [ $SECONDS -lt $deadline ] || fail "not ready after ${READY_TIMEOUT} s: $(curl -s "$URL/ready")"
    sleep 1
done
echo "ready after $SECONDS s"

step "GET /health"
[ "$(curl -s "$URL/health")" = '{"status":"ok"}' ] || fail "/health: $(curl -s "$URL/health")"

step "POST /predict"
body='{"text": "The film was a quiet, beautiful surprise."}'
code=$(curl -s -o "$WORK/predict.json" -w '%{http_code}' -H "X-API-Key: $KEY" -H 'Content-Type: application/json' \
    -d "$body" "$URL/predict")
[ "$code" = 200 ] || fail "/predict answered $code: $(cat "$WORK/predict.json")"
python3 - "$WORK/predict.json" <<'PY' || fail "/predict body: $(cat "$WORK/predict.json")"
import json, math, sys
answer = json.load(open(sys.argv[1]))
assert isinstance(answer["label"], str) and 0.0 <= answer["score"] <= 1.0, answer
assert answer["decision"] in ("accept", "review", "escalate"), answer
assert math.isclose(sum(answer["probabilities"].values()), 1.0, abs_tol=1e-4), answer
print("prediction:", answer["label"], round(answer["score"], 4), answer["decision"])
PY
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' -d "$body" "$URL/predict")
[ "$code" = 401 ] || fail "/predict without a key answered $code, expected 401"

step "GET /metrics"
curl -s -o "$WORK/metrics.txt" -H "X-API-Key: $KEY" "$URL/metrics"
grep -q '^bayesian_hf_predictions_total' "$WORK/metrics.txt" || fail "/metrics has no predictions: $(head -c 300 "$WORK/metrics.txt")"

step "non-root user"
uid=$("$RUNTIME" exec "$NAME" python -c 'import os; print(os.getuid())')
[ "$uid" != 0 ] || fail "the server runs as root"
echo "uid $uid"

step "image HEALTHCHECK command"
if [ "$RUNTIME" = podman ]; then
    podman healthcheck run "$NAME" || fail "podman healthcheck run failed"
else
    cmd=$(docker inspect -f '{{json .Config.Healthcheck.Test}}' "$NAME")
    python3 -c 'import json,sys; t=json.loads(sys.argv[1]); sys.exit(0 if t and t[0]=="CMD" and "/health" in t[-1] else 1)' "$cmd" \
        || fail "unexpected HEALTHCHECK $cmd"
    docker exec "$NAME" python -c "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])[-1])' "$cmd")" \
        || fail "the HEALTHCHECK command failed"
fi

step "SIGTERM: graceful stop"
"$RUNTIME" stop -t 40 "$NAME" >/dev/null
status=$("$RUNTIME" inspect -f '{{.State.ExitCode}}' "$NAME")
# 0, or 143 where the server re-raises SIGTERM and is not PID 1; 137 would mean it was killed after the grace period
case "$status" in 0|143) echo "exit code $status";; *) fail "exit code $status after SIGTERM";; esac

echo "SMOKE TEST PASSED ($RUNTIME, $IMAGE)"
