"""Helpers for the deploy/ tests: kustomize builds, the manifests' workloads, a small
NetworkPolicy evaluator and the environment variables the code reads."""

from __future__ import annotations

import functools
import importlib.util
import ipaddress
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg.connect_utils
import yaml

from services.runtime.config import DEFAULT_ADDRS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
LOCAL_SECRETS = K8S / "overlays" / "local" / "secrets"
MAKE_SECRETS = K8S / "overlays" / "local" / "make_secrets.py"
NAMESPACE = "membership"
# the oldest Kubernetes the manifests promise (gRPC probes are GA since 1.27)
K8S_VERSION = "1.30.0"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")
IMAGE = "wallet-membership"

Doc = dict[str, Any]


# -- building -------------------------------------------------------------------------------


def kustomize_command() -> list[str] | None:
    """A real kustomize: kubectl's built-in one, or the standalone binary."""
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    return None


def load_make_secrets() -> Any:
    """The local overlay's secret generator, loaded from its file (deploy/ is no package)."""
    spec = importlib.util.spec_from_file_location("deploy_make_secrets", MAKE_SECRETS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def build(target: str) -> tuple[Doc, ...]:
    """`kustomize build deploy/k8s/<target>` on a copy of deploy/k8s, so the local overlay's
    git-ignored secret files can be generated for it without touching the work tree."""
    command = kustomize_command()
    assert command is not None, "no kustomize (kubectl) on PATH"
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "k8s"
        shutil.copytree(K8S, copy, ignore=shutil.ignore_patterns("secrets"))
        if target == "overlays/local":
            load_make_secrets().write_all(copy / "overlays" / "local" / "secrets")
        out = subprocess.run(
            [*command, str(copy / target)], capture_output=True, text=True, check=False
        )
    assert out.returncode == 0, f"kustomize build {target} failed:\n{out.stderr}"
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def load_yaml_docs(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


# -- reading manifests ----------------------------------------------------------------------


def of_kind(docs: tuple[Doc, ...] | list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: tuple[Doc, ...] | list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_spec(workload: Doc) -> Doc:
    spec: Doc = workload["spec"]["template"]["spec"]
    return spec


def pod_labels(workload: Doc) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def workloads(docs: tuple[Doc, ...]) -> list[Doc]:
    return [d for d in docs if d["kind"] in WORKLOAD_KINDS]


def is_ours(container: Doc) -> bool:
    """A container running the suite's image (not, say, the local PostgreSQL)."""
    image = str(container["image"])
    return image.rsplit("/", 1)[-1].split(":", 1)[0] == IMAGE


def containers(docs: tuple[Doc, ...]) -> Iterator[tuple[Doc, Doc]]:
    for workload in workloads(docs):
        for container in pod_spec(workload)["containers"]:
            yield workload, container


def python_module(command: list[str]) -> str | None:
    """`X` of a `python -m X ...` command."""
    if len(command) >= 3 and command[0] == "python" and command[1] == "-m":
        return command[2]
    return None


def module_exists(module: str) -> bool:
    """A runnable module of this repository (`python -m` needs a __main__ for a package)."""
    path = ROOT.joinpath(*module.split("."))
    return (path / "__main__.py").is_file() or path.with_suffix(".py").is_file()


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        value, values = labels.get(expr["key"]), expr.get("values", [])
        ok = {
            "In": value in values,
            "NotIn": value not in values,
            "Exists": value is not None,
            "DoesNotExist": value is None,
        }[expr["operator"]]
        if not ok:
            return False
    return True


def secret_refs(docs: tuple[Doc, ...]) -> set[tuple[str, str]]:
    """(Secret name, key) pairs the workloads read, from env and from volumes."""
    refs: set[tuple[str, str]] = set()
    for workload, container in containers(docs):
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                refs.add((ref["name"], ref["key"]))
        for volume in pod_spec(workload).get("volumes", []):
            secret = volume.get("secret")
            if secret:
                refs.update((secret["secretName"], i["key"]) for i in secret.get("items", []))
    return refs


def strip_hash(name: str) -> str:
    """A generated object's name without kustomize's content-hash suffix."""
    return re.sub(r"-[a-z0-9]{10}$", "", name)


# -- NetworkPolicy evaluation ---------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """Something that sends or receives: a pod (labels, namespace) or an outside address."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    namespace: str = NAMESPACE
    ip: str | None = None


def _peer_matches(peer: Mapping[str, Any], endpoint: Endpoint) -> bool:
    if "ipBlock" in peer:
        if endpoint.ip is None:
            return False
        address = ipaddress.ip_address(endpoint.ip)
        block = peer["ipBlock"]
        excluded = any(address in ipaddress.ip_network(e) for e in block.get("except", []))
        return address in ipaddress.ip_network(block["cidr"]) and not excluded
    if endpoint.ip is not None:
        return False
    if "namespaceSelector" in peer:
        ns_labels = {"kubernetes.io/metadata.name": endpoint.namespace}
        if not selector_matches(peer["namespaceSelector"], ns_labels):
            return False
    elif endpoint.namespace != NAMESPACE:
        return False
    return selector_matches(peer.get("podSelector", {}), endpoint.labels)


def _rule_allows(rule: Mapping[str, Any], peers_key: str, other: Endpoint, port: int) -> bool:
    ports = rule.get("ports")
    if ports and not any(p.get("port") == port for p in ports):
        return False
    peers = rule.get(peers_key)
    return not peers or any(_peer_matches(p, other) for p in peers)


def _side_allows(
    policies: list[Doc], direction: str, subject: Endpoint, other: Endpoint, port: int
) -> bool:
    """Whether `subject`'s policies let traffic go to (Egress) / come from (Ingress) `other`."""
    if subject.ip is not None or subject.namespace != NAMESPACE:
        return True  # outside the namespace: these policies do not isolate it
    selecting = [
        p
        for p in policies
        if direction in p["spec"].get("policyTypes", [])
        and selector_matches(p["spec"]["podSelector"], subject.labels)
    ]
    if not selecting:
        return True
    rules_key, peers_key = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    return any(
        _rule_allows(rule, peers_key, other, port)
        for p in selecting
        for rule in p["spec"].get(rules_key, [])
    )


def connection_allowed(policies: list[Doc], source: Endpoint, dest: Endpoint, port: int) -> bool:
    """Both sides must allow a connection: the source's egress and the destination's ingress."""
    return _side_allows(policies, "Egress", source, dest, port) and _side_allows(
        policies, "Ingress", dest, source, port
    )


def suite_endpoints(docs: tuple[Doc, ...]) -> dict[str, Endpoint]:
    """Every workload's pods, by their app.kubernetes.io/name."""
    out = {}
    for workload in workloads(docs):
        labels = pod_labels(workload)
        name = labels["app.kubernetes.io/name"]
        out[name] = Endpoint(name, labels)
    return out


# -- what the code reads --------------------------------------------------------------------

CODE_DIRS = ("services", "gateway", "membership_cli")
_LITERAL = re.compile(r"""["'](MEMBERSHIP_[A-Z0-9_]+)["']""")
# f"MEMBERSHIP_{name.upper()}_ADDR": one variable per service
_PER_SERVICE = re.compile(r"""f["']MEMBERSHIP_\{[^}]*\}(_[A-Z0-9_]+)["']""")
_LIBPQ = re.compile(r"""os\.(?:environ\.get|getenv)\(\s*['"](PG[A-Z]+)['"]""")


@functools.cache
def env_names_read_by_code() -> frozenset[str]:
    names: set[str] = set()
    for folder in CODE_DIRS:
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            names.update(_LITERAL.findall(text))
            for suffix in _PER_SERVICE.findall(text):
                names.update(f"MEMBERSHIP_{s.upper()}{suffix}" for s in DEFAULT_ADDRS)
    return frozenset(names)


@functools.cache
def libpq_names_read_by_asyncpg() -> frozenset[str]:
    """The PG* variables asyncpg falls back to for what DATABASE_URL leaves out."""
    source = Path(asyncpg.connect_utils.__file__).read_text()
    return frozenset(_LIBPQ.findall(source))


# Kubernetes-only helpers: filled from the downward API for other entries to expand as
# $(NAME); the code never reads them (privacy's per-pod erasure journal file)
DOWNWARD_HELPERS = {"POD_NAME": "metadata.name"}


def env_helpers(container: Mapping[str, Any]) -> set[str]:
    """The container's downward-API helpers that a later env entry expands, and only those:
    a helper nothing expands is an unknown setting like any other."""
    env = container.get("env", [])
    helpers = set()
    for index, entry in enumerate(env):
        field_path = entry.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        name = entry["name"]
        if DOWNWARD_HELPERS.get(name) != field_path:
            continue
        # Kubernetes expands $(VAR) only from entries defined before
        if any(f"$({name})" in str(later.get("value", "")) for later in env[index + 1 :]):
            helpers.add(name)
    return helpers


def unknown_env_names(names: set[str]) -> set[str]:
    known = env_names_read_by_code() | libpq_names_read_by_asyncpg() | {"DATABASE_URL"}
    return names - known


_CALL = re.compile(r"""addr_of\(\s*["'](\w+)["']\s*\)""")


def calls_between_services() -> set[tuple[str, str]]:
    """(caller, callee) pairs: where a service's code opens a channel to another's address."""
    edges: set[tuple[str, str]] = set()
    for service in DEFAULT_ADDRS:
        for path in (ROOT / "services" / service).rglob("*.py"):
            edges.update((service, callee) for callee in _CALL.findall(path.read_text()))
    return {(a, b) for a, b in edges if a != b}
