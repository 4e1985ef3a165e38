"""The deployment files under deploy/: valid against their schemas, and consistent with how Clickedge runs.

Kubernetes manifests are checked with kubernetes-validate (the Kubernetes API's JSON schemas, bundled
per version, in strict mode: an unknown field is an error) and the compose file with check-jsonschema's
vendored Compose Specification; both work offline. Each validator is also shown to reject a broken copy,
so a pass means something. The rest checks what no schema knows: every stop timeout covers the drain it
waits for (with the settings computed by Clickedge's own configuration loader from the same environment
and configuration file the process would see), probes and Services point at real ports and paths, and
names referenced across files exist.
"""

from __future__ import annotations

import copy
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from collector.config import CollectorConfig
from common import settings
from edge.config import EdgeConfig

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
COMPOSE = DEPLOY / "docker" / "compose.yaml"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
SYSTEMD = DEPLOY / "systemd"
HAPROXY_CFG = DEPLOY / "haproxy" / "haproxy.cfg"

# deploy/kubernetes/README.md promises 1.25 or later; also the newest version the validator knows.
KUBERNETES_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())
# `clickedge edge --workers N` gives its workers this long beyond drain grace + shutdown timeout before it
# kills them (edge/main.py: supervisor.stop_all).
SUPERVISOR_MARGIN = 5.0
SERVICES: dict[str, type] = {"edge": EdgeConfig, "collector": CollectorConfig}
# (kind, name, container, configuration class, configuration file table) of the two long-running pods.
K8S_EDGE = ("StatefulSet", "clickedge-edge", "edge", EdgeConfig, "edge")
K8S_COLLECTOR = ("Deployment", "clickedge-collector", "collector", CollectorConfig, "collector")

Doc = dict[str, Any]


# --- reading the files ----------------------------------------------------------------------------------


def k8s_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def k8s_docs() -> list[Doc]:
    return [doc for path in k8s_files() for doc in yaml.safe_load_all(path.read_text()) if doc]


def k8s_object(kind: str, name: str) -> Doc:
    found = [d for d in k8s_docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name} in {K8S}, found {len(found)}"
    return found[0]


def container(pod_spec: Doc, name: str) -> Doc:
    return next(c for c in pod_spec["containers"] if c["name"] == name)


def pod_and_container(kind: str, name: str, cname: str) -> tuple[Doc, Doc]:
    pod: Doc = k8s_object(kind, name)["spec"]["template"]["spec"]
    return pod, container(pod, cname)


def dockerfile_final_stage() -> list[tuple[str, str]]:
    """The final stage's instructions as (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n(?:\s*#[^\n]*\n)*", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    instructions = [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return instructions[last_from:]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for op, args in dockerfile_final_stage():
        if op == "ENV":
            for item in shlex.split(args):
                name, _, value = item.partition("=")
                env[name] = value
    return env


def image_uid() -> int:
    users = [args for op, args in dockerfile_final_stage() if op == "USER"]
    assert users, "the Dockerfile's final stage sets no USER: the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), f"USER {users[-1]}: use a numeric UID, so runAsNonRoot can verify it"
    return int(uid)


def unit(name: str) -> list[tuple[str, str, str]]:
    """A systemd unit file as (section, key, value) in order; keys may repeat (Environment=)."""
    entries: list[tuple[str, str, str]] = []
    section = ""
    for raw in (SYSTEMD / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{name}: not a key=value line: {raw!r}"
        entries.append((section, key.strip(), value.strip()))
    return entries


def unit_value(entries: list[tuple[str, str, str]], key: str, section: str = "Service") -> str:
    values = [v for s, k, v in entries if s == section and k == key]
    assert values, f"no {key}= in [{section}]"
    return values[-1]


def env_file(path: Path) -> dict[str, str]:
    """KEY=value lines, as systemd's EnvironmentFile= and compose's --env-file read the simple ones."""
    env: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path}: not KEY=value: {raw!r}"
            env[key] = value
    return env


def seconds(value: str | int | float) -> float:
    """A compose duration (30s, 1m30s) or a systemd time span (30, 30s, 1min 30s) in seconds."""
    if isinstance(value, int | float):
        return float(value)
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value.strip())
    assert parts and re.fullmatch(r"(\s*\d+(\.\d+)?\s*[a-z]*)+", value.strip()), f"not a duration: {value!r}"
    return sum(float(n) * units[u or "s"] for n, u in parts)


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default}, ${VAR:?error} and ${VAR}: defaults as written, required values a
    16-character stand-in (as an operator's env file would give)."""

    def sub(match: re.Match[str]) -> str:
        op, arg = match.group(2) or "", match.group(3) or ""
        return arg if op in (":-", "-") else "x" * 16

    return re.sub(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}", sub, value)


def effective(
    cls: type[Any], section: str, env: Mapping[str, str], toml: str | None = None, tmp: Path | None = None
) -> Any:
    """The configuration ``clickedge edge``/``collector`` would run with: Clickedge's own loader."""
    file = None
    if toml is not None:
        assert tmp is not None
        path = tmp / f"{section}.toml"
        path.write_text(toml)
        file = settings.read_config_file(path, SERVICES)
    return settings.load(cls, None, env, file=file, section=section)


def stop_time(config: EdgeConfig | CollectorConfig) -> float:
    """The longest a stop may take after SIGTERM."""
    extra = SUPERVISOR_MARGIN if isinstance(config, EdgeConfig) and config.workers > 1 else 0.0
    return config.drain_grace + config.shutdown_timeout + extra


# --- Kubernetes -----------------------------------------------------------------------------------------


def secret_values() -> dict[tuple[str, str], str]:
    """(secret name, key) -> the template's placeholder value."""
    return {
        (doc["metadata"]["name"], key): value
        for doc in yaml.safe_load_all((K8S / "secrets.example.yaml").read_text())
        for key, value in doc.get("stringData", {}).items()
    }


def pod_env(spec: Doc) -> dict[str, str]:
    """The image's environment with the container's applied over it; Secret values from the templates."""
    env = dockerfile_env()
    secrets = secret_values()
    for item in spec.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secrets[(ref["name"], ref["key"])]
    return env


def clickedge_toml() -> str:
    text: str = k8s_object("ConfigMap", "clickedge-config")["data"]["clickedge.toml"]
    return text


def prestop_seconds(spec: Doc) -> float:
    command = spec["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] in ("sleep", "/bin/sleep") and len(command) == 2, command
    return float(command[1])


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_manifests_match_the_api_schemas(version: str) -> None:
    docs = k8s_docs()
    assert len(docs) >= 10
    for doc in docs:
        # Raises ValidationError (a wrong or unknown field) or SchemaNotFoundError (an unknown kind or apiVersion).
        kubernetes_validate.validate(doc, version, strict=True)


def _misspell_probe(doc: Doc) -> None:
    spec = doc["spec"]["template"]["spec"]["containers"][0]
    spec["readinesProbe"] = spec.pop("readinessProbe")


def _grace_as_text(doc: Doc) -> None:
    doc["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "30"


def _unknown_api_version(doc: Doc) -> None:
    doc["apiVersion"] = "apps/v1beta9"


def _claim_without_size(doc: Doc) -> None:
    doc["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] = {"size": "2Gi"}


@pytest.mark.parametrize("breakage", [_misspell_probe, _grace_as_text, _unknown_api_version, _claim_without_size])
def test_kubernetes_validator_rejects_a_broken_manifest(breakage: Callable[[Doc], None]) -> None:
    edge = k8s_object("StatefulSet", "clickedge-edge")
    kubernetes_validate.validate(edge, KUBERNETES_VERSIONS[0], strict=True)
    broken = copy.deepcopy(edge)
    breakage(broken)
    with pytest.raises((kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError)):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


def test_kustomization_lists_every_manifest_but_the_secret_templates() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    wanted = {p.name for p in k8s_files() if not p.name.endswith(".example.yaml")}
    assert set(listed) == wanted
    assert "secrets.example.yaml" not in listed  # a placeholder applied by mistake would become the secret
    images = {image["name"] for image in kustomization["images"]}
    templates = [d["spec"]["template"] for d in k8s_docs() if "template" in d.get("spec", {})]
    used = {c["image"] for t in templates for c in t["spec"]["containers"]}
    assert used <= images, f"images not set by the kustomization: {used - images}"


def test_kubernetes_names_and_selectors_resolve() -> None:
    docs = k8s_docs()
    kinds = ("StatefulSet", "Deployment", "Job")
    workloads = {(d["kind"], d["metadata"]["name"]): d for d in docs if d["kind"] in kinds}
    secrets = secret_values()
    config_maps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    for (kind, name), workload in workloads.items():
        template = workload["spec"]["template"]
        selector = workload["spec"].get("selector", {}).get("matchLabels", {})
        assert selector.items() <= template["metadata"]["labels"].items(), f"{kind} {name}: selector"
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == image_uid(), f"{kind} {name}: runAsUser is not the image's"
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        claims = {c["metadata"]["name"] for c in workload["spec"].get("volumeClaimTemplates", [])}
        for c in pod["containers"]:
            for mount in c.get("volumeMounts", []):
                assert mount["name"] in volumes or mount["name"] in claims, f"{name}: no volume {mount['name']}"
            for item in c.get("env", []):
                if "valueFrom" in item:
                    ref = item["valueFrom"]["secretKeyRef"]
                    assert (ref["name"], ref["key"]) in secrets, f"{name}: {ref} is not in secrets.example.yaml"
        for volume in volumes.values():
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps
            if "secret" in volume:
                assert any(s == volume["secret"]["secretName"] for s, _ in secrets)
    pods = [w["spec"]["template"] for w in workloads.values() if w["kind"] != "Job"]
    for doc in docs:
        if doc["kind"] == "Service":
            targets = [p for p in pods if doc["spec"]["selector"].items() <= p["metadata"]["labels"].items()]
            assert targets, f"Service {doc['metadata']['name']} selects no pods"
            names = {p["name"] for t in targets for c in t["spec"]["containers"] for p in c["ports"]}
            for port in doc["spec"]["ports"]:
                assert port["targetPort"] in names, f"Service {doc['metadata']['name']}: {port['targetPort']}"
        if doc["kind"] == "PodDisruptionBudget":
            labels = doc["spec"]["selector"]["matchLabels"].items()
            assert any(labels <= p["metadata"]["labels"].items() for p in pods), doc["metadata"]["name"]
    edge = workloads[("StatefulSet", "clickedge-edge")]
    governing = k8s_object("Service", edge["spec"]["serviceName"])
    assert governing["spec"]["clusterIP"] == "None"
    hpa = k8s_object("HorizontalPodAutoscaler", "clickedge-edge")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("StatefulSet", "clickedge-edge")
    assert "replicas" not in edge["spec"], "the autoscaler owns the edge's replicas; a value here resets it on apply"
    # Every edge pod must be able to get CPU figures for the autoscaler.
    assert container(edge["spec"]["template"]["spec"], "edge")["resources"]["requests"]["cpu"]


def test_kubernetes_configuration_file_is_what_clickedge_accepts(tmp_path: Path) -> None:
    toml = clickedge_toml()
    for kind, name, cname, cls, section in (K8S_EDGE, K8S_COLLECTOR):
        pod, spec = pod_and_container(kind, name, cname)
        env = pod_env(spec)
        config = effective(cls, section, env, toml, tmp_path)
        mounts = {m["mountPath"]: m["name"] for m in spec["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        # The file CLICKEDGE_CONFIG names is the ConfigMap's key, where the ConfigMap is mounted.
        config_path = Path(env["CLICKEDGE_CONFIG"])
        assert volumes[mounts[str(config_path.parent)]]["configMap"]["name"] == "clickedge-config"
        assert config_path.name == "clickedge.toml"
        # The key file is the Secret's keys.json, where the Secret is mounted.
        assert config.key_path.name == "keys.json"
        assert volumes[mounts[str(config.key_path.parent)]]["secret"]["secretName"] == "clickedge-keys"
        assert config.port == spec["ports"][0]["containerPort"]
        assert config.host == "0.0.0.0", f"{name} must listen on all addresses in a pod"
        if cls is EdgeConfig:
            service = k8s_object("Service", "clickedge-collector")
            assert config.collector_url == f"http://clickedge-collector:{service['spec']['ports'][0]['port']}"


@pytest.mark.parametrize(("kind", "name", "cname", "cls", "section"), [K8S_EDGE, K8S_COLLECTOR])
def test_kubernetes_pods_stop_within_their_grace_period(
    kind: str, name: str, cname: str, cls: type[Any], section: str, tmp_path: Path
) -> None:
    pod, spec = pod_and_container(kind, name, cname)
    config = effective(cls, section, pod_env(spec), clickedge_toml(), tmp_path)
    needed = prestop_seconds(spec) + stop_time(config)
    assert pod["terminationGracePeriodSeconds"] > needed, (
        f"{name}: terminationGracePeriodSeconds {pod['terminationGracePeriodSeconds']} does not cover "
        f"preStop + drain grace + shutdown timeout = {needed}"
    )
    # The preStop pause lets endpoints and load balancers forget the pod before it stops listening.
    assert prestop_seconds(spec) >= 3


def test_kubernetes_probes_and_scraping() -> None:
    for kind, name, cname, _, _ in (K8S_EDGE, K8S_COLLECTOR):
        template = k8s_object(kind, name)["spec"]["template"]
        spec = container(template["spec"], cname)
        ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
        assert spec["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert spec["livenessProbe"]["httpGet"]["path"] == "/healthz"
        for probe in ("readinessProbe", "livenessProbe"):
            assert spec[probe]["httpGet"]["port"] in ports
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert int(annotations["prometheus.io/port"]) in ports.values()
        assert annotations["prometheus.io/path"] == "/metrics"
        assert spec["securityContext"]["readOnlyRootFilesystem"] is True
        assert spec["resources"]["limits"]["memory"]


def test_kubernetes_edge_spool_is_a_persistent_volume_per_pod(tmp_path: Path) -> None:
    edge = k8s_object("StatefulSet", "clickedge-edge")
    _, spec = pod_and_container(*K8S_EDGE[:3])
    config = effective(EdgeConfig, "edge", pod_env(spec), clickedge_toml(), tmp_path)
    claims = {c["metadata"]["name"]: c for c in edge["spec"]["volumeClaimTemplates"]}
    spool = (config.spool_dir or config.data_dir / "spool").resolve()
    mounted = [m for m in spec["volumeMounts"] if spool.is_relative_to(m["mountPath"]) and m["name"] in claims]
    assert mounted, f"the spool ({spool}) is not on a volumeClaimTemplate"
    assert claims[mounted[0]["name"]]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert edge["spec"]["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}


# --- docker ---------------------------------------------------------------------------------------------


def check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def compose() -> Doc:
    doc: Doc = yaml.safe_load(COMPOSE.read_text())
    return doc


def compose_env(service: Doc) -> dict[str, str]:
    env = dockerfile_env()
    env.update({k: interpolate(str(v)) for k, v in service.get("environment", {}).items()})
    return env


def test_compose_file_matches_the_compose_specification() -> None:
    result = check_compose(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        ("  stop_grace_period: 30s\n", "  stop_grace_perod: 30s\n", "stop_grace_perod"),
        ("condition: service_completed_successfully", "condition: service_done", "depends_on"),
        ("      interval: 5s\n", "      interval: [5s]\n", "interval"),
    ],
)
def test_compose_validator_rejects_a_broken_file(old: str, new: str, complaint: str, tmp_path: Path) -> None:
    text = COMPOSE.read_text()
    assert old in text
    broken = tmp_path / "compose.yaml"
    broken.write_text(text.replace(old, new))
    result = check_compose(broken)
    assert result.returncode != 0 and complaint in result.stdout, result.stdout + result.stderr


def test_compose_stop_grace_periods_cover_the_drain() -> None:
    services = compose()["services"]
    edges = [name for name, s in services.items() if s.get("command") == ["edge"]]
    assert len(edges) >= 2
    for name in edges:
        config = effective(EdgeConfig, "edge", compose_env(services[name]))
        grace = seconds(services[name]["stop_grace_period"])
        assert grace > stop_time(config), f"{name}: stop_grace_period {grace}s <= {stop_time(config)}s"
        assert config.host == "0.0.0.0"
    collector = services["collector"]
    config = effective(CollectorConfig, "collector", compose_env(collector))
    assert seconds(collector["stop_grace_period"]) > stop_time(config)


def test_compose_edges_have_a_spool_volume_each_and_are_haproxys_backends() -> None:
    doc = compose()
    services = doc["services"]
    edges = {name: s for name, s in services.items() if s.get("command") == ["edge"]}
    spool_volumes = []
    for name, service in edges.items():
        config = effective(EdgeConfig, "edge", compose_env(service))
        spool = config.spool_dir or config.data_dir / "spool"
        mounts = [v.split(":") for v in service["volumes"]]
        holding = [src for src, dst, *_ in mounts if spool.is_relative_to(dst)]
        assert len(holding) == 1 and holding[0] in doc["volumes"], f"{name}: the spool is not on a named volume"
        spool_volumes.append(holding[0])
        assert service["healthcheck"]["test"]
    assert len(set(spool_volumes)) == len(spool_volumes), "two edges share a spool volume"
    # deploy/haproxy/haproxy.cfg balances over these names, on the edges' port.
    servers = re.findall(r"^\s*server\s+\S+\s+([\w.-]+):(\d+)", HAPROXY_CFG.read_text(), re.M)
    assert servers
    for host, port in servers:
        assert host in edges, f"haproxy.cfg names {host}, which compose.yaml does not run"
        assert int(port) == effective(EdgeConfig, "edge", compose_env(edges[host])).port
    haproxy = services["haproxy"]
    assert "../haproxy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in haproxy["volumes"]
    # The edges believe X-Forwarded-For from the compose network alone, which is where HAProxy is.
    subnet = interpolate(doc["networks"]["default"]["ipam"]["config"][0]["subnet"])
    for service in edges.values():
        assert [str(n) for n in effective(EdgeConfig, "edge", compose_env(service)).trusted_proxies] == [subnet]


def test_compose_collector_starts_after_the_migration() -> None:
    services = compose()["services"]
    assert services["migrate"]["command"] == ["migrate"]
    depends = services["collector"]["depends_on"]
    assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert depends["postgres"]["condition"] == "service_healthy"
    assert services["postgres"]["healthcheck"]["test"]


def test_dockerfile_final_stage_runs_as_a_fixed_non_root_user() -> None:
    final = dockerfile_final_stage()
    assert image_uid() != 0
    assert ("ENTRYPOINT", '["clickedge"]') in final
    volumes = [args for op, args in final if op == "VOLUME"]
    assert any("/var/lib/clickedge" in v for v in volumes)
    assert dockerfile_env()["CLICKEDGE_DATA_DIR"] == "/var/lib/clickedge"
    assert compose()["x-clickedge"]["user"] == f"{image_uid()}:{image_uid()}"


def test_dockerignore_keeps_what_the_build_needs() -> None:
    lines = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
    ignored = {line.strip().rstrip("/") for line in lines}
    for needed in (
        "pyproject.toml",
        "README.md",
        "schema.sql",
        "clickedge",
        "edge",
        "collector",
        "links",
        "common",
        "*",
        "**",
    ):
        assert needed not in ignored


# --- systemd --------------------------------------------------------------------------------------------


def unit_env(entries: list[tuple[str, str, str]]) -> dict[str, str]:
    """Environment= first, then the EnvironmentFile= files (which win), as systemd applies them; the
    files are read from the examples shipped here."""
    env: dict[str, str] = {}
    for _, key, value in entries:
        if key == "Environment":
            name, _, val = value.partition("=")
            env[name] = val
    for _, key, value in entries:
        if key == "EnvironmentFile":
            name = Path(value.lstrip("-")).name
            example = SYSTEMD / f"{Path(name).stem}.env.example"
            if example.exists():
                env.update({k: v for k, v in env_file(example).items() if v})
            else:
                assert value.startswith("-"), f"EnvironmentFile={value} is required but has no example here"
    return env


@pytest.mark.parametrize(
    ("name", "cls", "section"),
    [("clickedge-edge@.service", EdgeConfig, "edge"), ("clickedge-collector.service", CollectorConfig, "collector")],
)
def test_systemd_units_stop_within_their_timeout(name: str, cls: type[Any], section: str) -> None:
    entries = unit(name)
    env = unit_env(entries)
    env.setdefault("CLICKEDGE_INGEST_SECRET", "x" * 16)  # the example leaves secrets for the operator
    config = effective(cls, section, env)
    timeout = seconds(unit_value(entries, "TimeoutStopSec"))
    assert timeout > stop_time(config), f"{name}: TimeoutStopSec {timeout}s <= {stop_time(config)}s"
    assert unit_value(entries, "KillSignal") == "SIGTERM"
    # Only the main process gets SIGTERM; it stops its own children in order (edge workers side by side).
    assert unit_value(entries, "KillMode") == "mixed"
    assert unit_value(entries, "Restart") == "on-failure"
    # The state directory is where the data dir (and so the spool) lives.
    state = unit_value(entries, "StateDirectory").replace("%i", "main")
    data_dir = Path(env["CLICKEDGE_DATA_DIR"].replace("%i", "main"))
    assert data_dir == Path("/var/lib") / state


UNITS = ["clickedge-edge@.service", "clickedge-collector.service", "clickedge-migrate.service"]


@pytest.mark.parametrize("name", UNITS)
def test_systemd_units_are_hardened(name: str) -> None:
    entries = unit(name)
    assert unit_value(entries, "User") == "clickedge"
    assert unit_value(entries, "DynamicUser") == "no"
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "CapabilityBoundingSet": "",
        "LockPersonality": "yes",
    }.items():
        assert unit_value(entries, key) == value, f"{name}: {key}="
    assert unit_value(entries, "ExecStart").startswith("/opt/clickedge/bin/clickedge ")


def test_systemd_collector_runs_the_migration_first() -> None:
    collector = unit("clickedge-collector.service")
    after = " ".join(v for s, k, v in collector if s == "Unit" and k == "After").split()
    wants = " ".join(v for s, k, v in collector if s == "Unit" and k in ("Wants", "Requires")).split()
    assert "clickedge-migrate.service" in after and "clickedge-migrate.service" in wants
    migrate = unit("clickedge-migrate.service")
    assert unit_value(migrate, "Type") == "oneshot"
    assert unit_value(migrate, "ExecStart").split()[-1] == "migrate"


def test_the_commands_the_deploy_files_give_for_making_keys_work(tmp_path: Path) -> None:
    # What no schema checks: the commands themselves. Each makes the key file where it says it does.
    init = compose()["services"]["keys-init"]["command"][0]
    documented = [
        init.replace("/etc/clickedge/keys/keys.json", str(tmp_path / "compose" / "keys.json")),
        f"clickedge keys create --activate --keys-file {tmp_path / 'k8s' / 'keys.json'}",
    ]
    for text in (
        (ROOT / "deploy" / "kubernetes" / "secrets.example.yaml").read_text(),
        (ROOT / "deploy" / "systemd" / "README.md").read_text(),
    ):
        assert "clickedge keys create --activate --keys-file" in text
    bin_dir = Path(sys.executable).parent
    for command in documented:
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
        result = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, env=env, check=False)
        assert result.returncode == 0, (command, result.stderr)
    assert (tmp_path / "compose" / "keys.json").stat().st_size > 0
    assert (tmp_path / "k8s" / "keys.json").stat().st_size > 0
    again = subprocess.run(["/bin/sh", "-c", documented[0]], capture_output=True, text=True, check=False)
    assert again.returncode == 0 and "created" not in again.stdout  # the compose step runs once
