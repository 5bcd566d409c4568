"""deploy/compose.yaml: valid against the Compose Specification's JSON schema (the copy that
check-jsonschema ships, offline), and the suite's rules: only the gateway is published,
every process is health-checked and hardened, start order by health, settings the code
reads. `docker compose` is not installed here, so nothing is started."""

from __future__ import annotations

import copy
import inspect
import json
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from gateway import server as gateway_server
from services.runtime import server as service_server
from tests.support.deploy_k8s import (
    DEPLOY,
    module_exists,
    python_module,
    unknown_env_names,
)

COMPOSE = DEPLOY / "compose.yaml"
SUITE = ("accounts", "points", "privacy", "gateway")
COMPOSE_SCHEMA = "builtin_schemas/vendor/compose-spec.json"
Doc = dict[str, Any]


def compose() -> Doc:
    doc: Doc = yaml.safe_load(COMPOSE.read_text())
    return doc


def schema_errors(doc: Doc) -> list[str]:
    # check-jsonschema vendors the Compose Specification's schema: no network needed
    text = (resources.files("check_jsonschema") / COMPOSE_SCHEMA).read_text()
    validator = jsonschema.Draft202012Validator(
        json.loads(text), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(doc)]


def ours(doc: Doc) -> dict[str, Doc]:
    """The services that run the suite's image."""
    return {
        name: service
        for name, service in doc["services"].items()
        if str(service.get("image", "")).startswith("wallet-membership:")
    }


def test_the_file_matches_the_compose_specification() -> None:
    assert schema_errors(compose()) == []


def test_the_schema_check_rejects_a_broken_file() -> None:
    broken = copy.deepcopy(compose())
    broken["services"]["gateway"]["depends_on"]["accounts"]["condition"] = "service_ready"
    broken["services"]["points"]["restart_policy"] = "always"
    assert len(schema_errors(broken)) >= 2


def test_postgres_is_version_16() -> None:
    image = compose()["services"]["postgres"]["image"]
    assert re.fullmatch(r"postgres:16(\.\d+)?(-\w+)?", image), image


def test_only_the_gateway_is_published() -> None:
    published = {n for n, s in compose()["services"].items() if s.get("ports") or s.get("expose")}
    assert published == {"gateway"}
    for port in compose()["services"]["gateway"]["ports"]:
        assert str(port).startswith("127.0.0.1:"), port


def test_every_process_runs_a_module_of_this_repository() -> None:
    services = ours(compose())
    assert set(services) == {*SUITE, "keys"}
    for name in SUITE:
        module = python_module(services[name]["command"])
        assert module is not None and module_exists(module), name
    keys_program = services["keys"]["command"][2]
    compile(keys_program, "keys", "exec")
    for module in re.findall(r"from ([\w.]+) import", keys_program):
        assert module_exists(module) or module == "pathlib", module


def test_every_long_running_process_is_health_checked_on_its_own_port() -> None:
    doc = compose()
    assert "healthcheck" in doc["services"]["postgres"]
    for name in SUITE:
        service = doc["services"][name]
        probe = service["healthcheck"]["test"][-1]
        compile(probe, name, "exec")
        variable = f"MEMBERSHIP_{name.upper()}_{'GRPC_' if name == 'gateway' else ''}ADDR"
        port = service["environment"][variable].rpartition(":")[2]
        assert f"127.0.0.1:{port}'" in probe and "membership_cli.health" in probe, name


def test_start_order_waits_for_health_not_just_start() -> None:
    doc = compose()
    for name in SUITE:
        depends = doc["services"][name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["keys"]["condition"] == "service_completed_successfully", name
        assert set(depends) <= set(doc["services"]), name
    gateway = doc["services"]["gateway"]["depends_on"]
    for backend in ("accounts", "points", "privacy"):
        assert gateway[backend]["condition"] == "service_healthy", backend


def test_the_processes_migrate_their_own_schemas() -> None:
    """Why there is no migration service: each process migrates at start, under a lock."""
    assert "await migrate(" in inspect.getsource(service_server.start_service)
    assert "await migrate(" in inspect.getsource(gateway_server.start_gateway)


def test_every_process_is_hardened() -> None:
    for name, service in ours(compose()).items():
        assert service.get("read_only") is True, name
        assert service.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in service.get("security_opt", []), name


@pytest.mark.parametrize("name", SUITE)
def test_every_setting_is_one_the_code_reads(name: str) -> None:
    names = set(compose()["services"][name]["environment"])
    assert names and not unknown_env_names(names), unknown_env_names(names)


def test_secrets_are_declared_and_hold_no_values() -> None:
    doc = compose()
    declared = doc["secrets"]
    used = {s for service in doc["services"].values() for s in service.get("secrets", [])}
    assert used <= set(declared)
    # a value comes from the operator's environment or a file, never from this file
    assert all(set(s) <= {"environment", "file"} for s in declared.values())
    password = doc["services"]["accounts"]["environment"]["PGPASSWORD"]
    assert password.startswith("${POSTGRES_PASSWORD:?"), password


def test_the_keys_service_creates_every_key_once(tmp_path: Path) -> None:
    program = compose()["services"]["keys"]["command"][2]
    program = program.replace("/var/lib/membership/keys", str(tmp_path / "keys"))
    env = {"PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", program], env=env, check=True)
    made = {p.name: p.read_bytes() for p in (tmp_path / "keys").iterdir()}
    assert set(made) == {"caller-token-ed25519.pem", "kek-keyring.json", "blind-index.key"}
    subprocess.run([sys.executable, "-c", program], env=env, check=True)
    assert {p.name: p.read_bytes() for p in (tmp_path / "keys").iterdir()} == made
