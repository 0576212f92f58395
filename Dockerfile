# syntax=docker/dockerfile:1
# The bayesian-hf prediction service, CPU only. Build and run (see docs/deployment.md):
#   docker build -t bayesian-hf:0.1.0 .
#   docker run --rm -p 8000:8000 -v "$PWD/outputs/quickstart/model:/model:ro" bayesian-hf:0.1.0
# Two stages: the builder installs everything into a virtual environment; the runtime image copies only that
# environment (no compiler, no pip cache, no source tree) and runs as an unprivileged user. No build argument or
# layer carries a secret: API keys and JWT keys are mounted at run time (docs/deployment.md).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ------------------------------------------------------------------------------------------------------ builder
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first and on its own layer (the slowest download; it changes least often): the CPU build from the PyTorch
# index, pinned like constraints.txt. Without the CPU index pip would pull the multi-GB CUDA build.
# TORCH_INDEX_URL may point at a mirror of that index (it must serve the same CPU wheels).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" torch==2.13.0
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY bayesian_hf ./bayesian_hf
COPY model_cards ./model_cards
COPY configs ./configs
# the package itself with the server and ONNX Runtime extras; constraints.txt keeps the torch installed above
RUN pip install --no-cache-dir -c constraints.txt ".[serve,onnx]" \
    && python -c "import bayesian_hf, limits, onnxruntime, torch; assert torch.__version__.startswith('2.13.0')"

# ------------------------------------------------------------------------------------------------------ runtime
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="bayesian-hf" \
      org.opencontainers.image.description="Bayesian-in-expectation text classifier service (CPU)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --gid 10001 app \
    && useradd --uid 10001 --gid app --home-dir /home/app --create-home --shell /usr/sbin/nologin app
COPY --from=builder /opt/venv /opt/venv
# Every serve setting has a BAYESIAN_HF_* variable (bayesian_hf/serving/settings.py). The model folder is
# mounted read-only at /model; HF_HUB_OFFLINE keeps the container from calling out to a model hub.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    HF_HOME=/home/app/.cache/huggingface \
    BAYESIAN_HF_MODEL=/model \
    BAYESIAN_HF_HOST=0.0.0.0 \
    BAYESIAN_HF_PORT=8000
# DL3064 (sensitive data in ENV) is a false positive: the name contains "TOKEN" (tokenizers), the value is a flag
# hadolint ignore=DL3064
ENV TOKENIZERS_PARALLELISM=false
USER 10001:10001
WORKDIR /home/app
EXPOSE 8000
# liveness only (the process answers); readiness (model loaded) is /ready, which Kubernetes probes separately
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('BAYESIAN_HF_PORT', '8000') + '/health', timeout=4)"]
ENTRYPOINT ["bayesian-hf"]
CMD ["serve"]
