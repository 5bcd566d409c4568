"""The Kubernetes manifests (deploy/k8s): the base and both overlays, built with a real
kustomize (kubectl's), validated against the Kubernetes JSON schemas (kubernetes-validate,
offline) and checked for the rules the suite promises: hardened pods, probes, budgets,
autoscalers, network isolation, secrets without values, settings the code reads."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import PurePosixPath

import kubernetes_validate  # type: ignore[import-untyped]
import pytest

from gateway.server import SERVICES as GATEWAY_BACKENDS
from services.privacy.erasure_journal import WRITER_FILES
from services.privacy.settings import JOURNAL_ENV
from services.runtime.config import DEFAULT_ADDRS
from services.runtime.server import LIVENESS_SERVICE
from tests.support.deploy_k8s import (
    K8S,
    K8S_VERSION,
    Doc,
    Endpoint,
    build,
    calls_between_services,
    connection_allowed,
    containers,
    env_helpers,
    is_ours,
    kustomize_command,
    load_yaml_docs,
    module_exists,
    named,
    of_kind,
    pod_labels,
    pod_spec,
    python_module,
    secret_refs,
    selector_matches,
    strip_hash,
    suite_endpoints,
    unknown_env_names,
    workloads,
)

pytestmark = pytest.mark.skipif(
    kustomize_command() is None, reason="needs kustomize (kubectl kustomize) on PATH"
)

TARGETS = ("base", "overlays/local", "overlays/production")
SERVICES = tuple(DEFAULT_ADDRS)  # accounts, points, privacy
GRPC_PORTS = {"accounts": 50051, "points": 50052, "privacy": 50053}
DATABASE_CLIENTS = {*SERVICES, "gateway", "migrate"}
SECRET_TEMPLATE = K8S / "base" / "secrets.template.yaml"
PLACEHOLDER = "REPLACE_ME"
TARGET_REF = {"apiVersion": "apps/v1", "kind": "Deployment"}
METRICS_PORT = "9090"


@pytest.mark.parametrize(
    ("target", "version"),
    [(target, K8S_VERSION) for target in TARGETS]
    # the newest Kubernetes the package knows, for APIs since removed (the overlays hold
    # everything the base does)
    + [(target, kubernetes_validate.latest_version()) for target in TARGETS[1:]],
)
def test_every_manifest_matches_the_kubernetes_schema(target: str, version: str) -> None:
    docs = build(target)
    assert docs
    for doc in docs:
        # strict: an unknown field (a typo) is an error, not silently dropped by the server
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_secret_template_matches_the_kubernetes_schema() -> None:
    for doc in load_yaml_docs(SECRET_TEMPLATE):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_validator_rejects_a_broken_manifest() -> None:
    """A control: the schema check is not vacuous."""
    deployment = named(build("base"), "Deployment", "points")
    broken = {**deployment, "spec": {**deployment["spec"], "replicaz": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


# -- pods -----------------------------------------------------------------------------------


def _check_pod_security(workload: Doc) -> None:
    name = workload["metadata"]["name"]
    spec = pod_spec(workload)
    pod_context = spec.get("securityContext", {})
    assert pod_context.get("runAsNonRoot") is True, name
    assert pod_context.get("runAsUser", 1) != 0, name
    assert pod_context.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
    assert spec.get("automountServiceAccountToken") is False, name
    for container in spec["containers"]:
        context = container.get("securityContext", {})
        assert context.get("allowPrivilegeEscalation") is False, name
        assert context.get("readOnlyRootFilesystem") is True, name
        assert "ALL" in context.get("capabilities", {}).get("drop", []), name
        assert context.get("runAsUser", 1) != 0 and context.get("privileged") is not True, name


@pytest.mark.parametrize("target", TARGETS)
def test_every_pod_is_hardened(target: str) -> None:
    docs = build(target)
    assert workloads(docs)
    for workload in workloads(docs):
        _check_pod_security(workload)


@pytest.mark.parametrize("target", TARGETS)
def test_every_container_has_requests_and_limits(target: str) -> None:
    for workload, container in containers(build(target)):
        resources = container.get("resources", {})
        for kind in ("requests", "limits"):
            assert set(resources.get(kind, {})) >= {"cpu", "memory"}, (
                workload["metadata"]["name"],
                kind,
            )


@pytest.mark.parametrize("target", TARGETS)
def test_the_read_only_root_leaves_tmp_writable(target: str) -> None:
    for workload, container in containers(build(target)):
        if not is_ours(container):
            continue
        volumes = {v["name"]: v for v in pod_spec(workload).get("volumes", [])}
        tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
        assert tmp and "emptyDir" in volumes[tmp[0]["name"]], workload["metadata"]["name"]


@pytest.mark.parametrize("target", TARGETS)
def test_deployments_probe_their_own_grpc_port(target: str) -> None:
    for deployment in of_kind(build(target), "Deployment"):
        (container,) = pod_spec(deployment)["containers"]
        grpc_ports = {p["containerPort"] for p in container["ports"] if p["name"] == "grpc"}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            # the standard gRPC health protocol, not a TCP connect
            assert container[probe]["grpc"]["port"] in grpc_ports, (container["name"], probe)
        # readiness follows the database; liveness must not, or an outage restarts every pod
        assert container["livenessProbe"]["grpc"]["service"] == LIVENESS_SERVICE
        assert container["readinessProbe"]["grpc"].get("service", "") == ""


@pytest.mark.parametrize("target", TARGETS)
def test_every_process_is_a_module_of_this_repository(target: str) -> None:
    for _, container in containers(build(target)):
        if not is_ours(container):
            continue
        command = container["command"]
        module = python_module(command)
        if module is None:  # the migration Job's inline program
            assert command[:2] == ["python", "-c"]
            compile(command[2], "migrate-job", "exec")
            continue
        assert module_exists(module), module


def test_each_service_listens_where_the_others_call_it() -> None:
    docs = build("base")
    config = of_kind(docs, "ConfigMap")[0]["data"]
    for name, port in GRPC_PORTS.items():
        (container,) = pod_spec(named(docs, "Deployment", name))["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env[f"MEMBERSHIP_{name.upper()}_ADDR"] == f"0.0.0.0:{port}"
        assert config[f"MEMBERSHIP_{name.upper()}_ADDR"] == f"{name}:{port}"
        service = named(docs, "Service", name)
        assert {p["port"] for p in service["spec"]["ports"]} >= {port}


def test_services_and_the_gateway_expose_metrics_for_prometheus() -> None:
    docs = build("base")
    for name in (*SERVICES, "gateway"):
        deployment = named(docs, "Deployment", name)
        (container,) = pod_spec(deployment)["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        port = env[f"MEMBERSHIP_{name.upper()}_METRICS_ADDR"].rpartition(":")[2]
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", name
        assert annotations["prometheus.io/port"] == port == METRICS_PORT, name
        assert {str(p["containerPort"]) for p in container["ports"]} >= {port}, name


# -- per Deployment: budget, autoscaler, policy ----------------------------------------------


def _guards_of(docs: tuple[Doc, ...], deployment: Doc) -> dict[str, list[Doc]]:
    """The PodDisruptionBudgets, autoscalers and own NetworkPolicies of a Deployment."""
    name, labels = deployment["metadata"]["name"], pod_labels(deployment)
    return {
        "budgets": [
            p
            for p in of_kind(docs, "PodDisruptionBudget")
            if selector_matches(p["spec"]["selector"], labels)
        ],
        "autoscalers": [
            h
            for h in of_kind(docs, "HorizontalPodAutoscaler")
            if h["spec"]["scaleTargetRef"] == {**TARGET_REF, "name": name}
        ],
        # a policy naming these pods, not only the namespace-wide ones
        "policies": [
            p
            for p in of_kind(docs, "NetworkPolicy")
            if p["spec"]["podSelector"] and selector_matches(p["spec"]["podSelector"], labels)
        ],
    }


@pytest.mark.parametrize("target", TARGETS)
def test_every_deployment_has_a_budget_an_autoscaler_and_a_policy(target: str) -> None:
    docs = build(target)
    deployments = of_kind(docs, "Deployment")
    assert {d["metadata"]["name"] for d in deployments} == {*SERVICES, "gateway"}
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        # the autoscaler owns the replica count; a number here would fight it on every apply
        assert "replicas" not in deployment["spec"], name
        guards = _guards_of(docs, deployment)
        assert len(guards["budgets"]) == 1 and len(guards["autoscalers"]) == 1, name
        # in a database outage every pod is NotReady: unhealthy pods must not block drains
        assert guards["budgets"][0]["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow", name
        assert guards["autoscalers"][0]["apiVersion"] == "autoscaling/v2", name
        assert guards["policies"], name


def test_the_overlays_set_the_replica_bounds() -> None:
    local = of_kind(build("overlays/local"), "HorizontalPodAutoscaler")
    assert all(h["spec"]["minReplicas"] == h["spec"]["maxReplicas"] == 1 for h in local)
    production = of_kind(build("overlays/production"), "HorizontalPodAutoscaler")
    # at least two of everything, so one pod lost or drained never takes a service down
    assert all(2 <= h["spec"]["minReplicas"] < h["spec"]["maxReplicas"] for h in production)


def test_production_spreads_replicas_over_zones_and_nodes() -> None:
    for deployment in of_kind(build("overlays/production"), "Deployment"):
        keys = {c["topologyKey"] for c in pod_spec(deployment)["topologySpreadConstraints"]}
        assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}


# -- network isolation ----------------------------------------------------------------------


def _expected_service_callers() -> set[tuple[str, str]]:
    """The gateway calls every backend; the services call each other where their code does."""
    gateway = {("gateway", backend) for backend, _ in GATEWAY_BACKENDS.values()}
    return gateway | calls_between_services()


def _outsiders() -> list[Endpoint]:
    return [
        Endpoint("pod in another namespace", {"app.kubernetes.io/name": "gateway"}, "other"),
        Endpoint("stray pod", {"app.kubernetes.io/name": "debug"}),
        Endpoint("internet", ip="203.0.113.7"),
    ]


@pytest.mark.parametrize("target", TARGETS)
def test_only_the_gateway_and_calling_services_reach_a_service(target: str) -> None:
    docs = build(target)
    policies, pods = of_kind(docs, "NetworkPolicy"), suite_endpoints(docs)
    expected = _expected_service_callers()
    for service, port in GRPC_PORTS.items():
        for source in [*pods.values(), *_outsiders()]:
            allowed = connection_allowed(policies, source, pods[service], port)
            assert allowed == ((source.name, service) in expected), (source.name, service)


def test_the_call_graph_is_read_from_the_code() -> None:
    # the policies are checked against the code's own calls, so a new call between services
    # cannot go unnoticed; this guards the reading itself
    assert _expected_service_callers() >= {("accounts", "privacy"), ("privacy", "points")}


def test_only_the_suite_reaches_the_local_postgres() -> None:
    docs = build("overlays/local")
    policies, pods = of_kind(docs, "NetworkPolicy"), suite_endpoints(docs)
    for source in [*pods.values(), *_outsiders()]:
        allowed = connection_allowed(policies, source, pods["postgres"], 5432)
        assert allowed == (source.name in DATABASE_CLIENTS), source.name


def test_only_the_suite_reaches_the_production_database() -> None:
    docs = build("overlays/production")
    policies, pods = of_kind(docs, "NetworkPolicy"), suite_endpoints(docs)
    config = of_kind(docs, "ConfigMap")[0]["data"]
    database = Endpoint("pgbouncer", ip=str(ipaddress.ip_address(config["PGHOST"])))
    port = int(config["PGPORT"])
    # what lies outside the namespace is the database firewall's business, not these policies
    stray = Endpoint("stray pod", {"app.kubernetes.io/name": "debug"})
    for source in [*pods.values(), stray]:
        allowed = connection_allowed(policies, source, database, port)
        assert allowed == (source.name in DATABASE_CLIENTS), source.name


@pytest.mark.parametrize("target", TARGETS)
def test_the_gateway_is_the_one_door(target: str) -> None:
    docs = build(target)
    policies, pods = of_kind(docs, "NetworkPolicy"), suite_endpoints(docs)
    caller = Endpoint("ingress controller", {"app": "ingress"}, "ingress")
    assert connection_allowed(policies, caller, pods["gateway"], 8080)
    assert connection_allowed(policies, caller, pods["gateway"], 50050)
    monitoring = Endpoint("prometheus", {"app": "prometheus"}, "monitoring")
    for service in SERVICES:
        assert not connection_allowed(policies, caller, pods[service], GRPC_PORTS[service])
        assert connection_allowed(policies, monitoring, pods[service], 9090)
        assert not connection_allowed(policies, monitoring, pods[service], GRPC_PORTS[service])


@pytest.mark.parametrize("target", TARGETS)
def test_only_monitoring_reaches_the_metrics_ports(target: str) -> None:
    docs = build(target)
    policies, pods = of_kind(docs, "NetworkPolicy"), suite_endpoints(docs)
    monitoring = Endpoint("prometheus", {"app": "prometheus"}, "monitoring")
    ingress = Endpoint("ingress controller", {"app": "ingress"}, "ingress")
    for name in (*SERVICES, "gateway"):
        for source in [monitoring, ingress, *pods.values(), *_outsiders()]:
            allowed = connection_allowed(policies, source, pods[name], int(METRICS_PORT))
            assert allowed == (source is monitoring), (source.name, name)


# -- secrets and settings -------------------------------------------------------------------


def test_the_secret_template_holds_placeholders_only() -> None:
    for secret in load_yaml_docs(SECRET_TEMPLATE):
        assert secret["kind"] == "Secret" and "data" not in secret
        assert set(secret["stringData"].values()) == {PLACEHOLDER}, secret["metadata"]["name"]


@pytest.mark.parametrize("target", ["base", "overlays/production"])
def test_no_secret_is_shipped_where_the_secret_manager_owns_them(target: str) -> None:
    # applying the overlay must never overwrite the real Secrets with anything
    assert not of_kind(build(target), "Secret")


@pytest.mark.parametrize("target", TARGETS)
def test_every_secret_reference_names_a_templated_key(target: str) -> None:
    template = {
        (s["metadata"]["name"], key)
        for s in load_yaml_docs(SECRET_TEMPLATE)
        for key in s["stringData"]
    }
    refs = {(strip_hash(name), key) for name, key in secret_refs(build(target))}
    assert refs and refs <= template, refs - template


def test_the_local_overlay_generates_every_referenced_secret() -> None:
    docs = build("overlays/local")
    generated = {(s["metadata"]["name"], key) for s in of_kind(docs, "Secret") for key in s["data"]}
    assert secret_refs(docs) <= generated, secret_refs(docs) - generated


def test_local_secret_files_stay_out_of_git() -> None:
    ignore = (K8S / "overlays" / "local" / "secrets" / ".gitignore").read_text().split()
    assert "*" in ignore and "!.gitignore" in ignore


@pytest.mark.parametrize("target", TARGETS)
def test_every_setting_is_one_the_code_reads(target: str) -> None:
    docs = build(target)
    names = {k for c in of_kind(docs, "ConfigMap") for k in c.get("data", {})}
    for _, container in containers(docs):
        if is_ours(container):
            helpers = env_helpers(container)
            names.update(e["name"] for e in container.get("env", []) if e["name"] not in helpers)
    assert names and not unknown_env_names(names), unknown_env_names(names)


def test_a_downward_api_helper_counts_only_where_a_later_entry_expands_it() -> None:
    pod_name = {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    uses = {"name": JOURNAL_ENV, "value": "/j/erasure-$(POD_NAME).jsonl"}
    assert env_helpers({"env": [pod_name, uses]}) == {"POD_NAME"}
    assert env_helpers({"env": [uses, pod_name]}) == set()  # not expanded: defined after
    assert env_helpers({"env": [pod_name]}) == set()
    literal = {"name": "POD_NAME", "value": "x"}
    assert env_helpers({"env": [literal, uses]}) == set()


@pytest.mark.parametrize("target", TARGETS)
def test_each_privacy_pod_appends_to_its_own_journal_file(target: str) -> None:
    """Appends from several NFS clients to one file are not atomic: on the shared volume
    each pod writes erasure-<pod name>.jsonl, which the others read at start."""
    privacy = named(build(target), "Deployment", "privacy")
    (container,) = pod_spec(privacy)["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env_helpers(container) == {"POD_NAME"}
    path = PurePosixPath(env[JOURNAL_ENV]["value"])
    assert "$(POD_NAME)" in path.name and path.match(WRITER_FILES)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert str(path.parent) == mounts["erasure-journal"]
    volumes = {v["name"]: v for v in pod_spec(privacy)["volumes"]}
    assert "persistentVolumeClaim" in volumes["erasure-journal"]


def test_the_migration_job_covers_every_schema() -> None:
    job = named(build("base"), "Job", "membership-migrate")
    (container,) = pod_spec(job)["containers"]
    program = container["command"][2]
    for service in SERVICES:
        assert f"from services.{service}.server import SPEC" in program
    assert "from gateway.store import migrate_schema" in program
    assert python_module(container["command"]) is None


def test_the_migration_program_gets_as_far_as_connecting() -> None:
    """Imports and names resolve in the image's layout; only the database is missing."""
    job = named(build("base"), "Job", "membership-migrate")
    (container,) = pod_spec(job)["containers"]
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    done = subprocess.run(
        [sys.executable, "-c", container["command"][2]],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "ConnectionRefusedError" in done.stderr, done.stderr[-2000:]
