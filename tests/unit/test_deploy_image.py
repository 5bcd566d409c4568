"""The container image's recipe (deploy/Dockerfile, .dockerignore), parsed with
dockerfile-parse. No engine here builds it: these tests check its structure, run the parts
that can run without one (the dependency extraction, the health probe) and check that
everything it names exists."""

from __future__ import annotations

import fnmatch
import io
import json
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from dockerfile_parse import DockerfileParser  # type: ignore[import-untyped]
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tests.support.deploy_k8s import DEPLOY, ROOT, module_exists, unknown_env_names

DOCKERFILE = DEPLOY / "Dockerfile"
COMPILERS = re.compile(r"\b(build-essential|gcc|g\+\+|clang|make|cc|cpp|libc6-dev)\b")
Instruction = dict[str, Any]


def stages() -> list[list[Instruction]]:
    """The Dockerfile's instructions, one list per FROM."""
    parser = DockerfileParser(fileobj=io.BytesIO(DOCKERFILE.read_bytes()))
    out: list[list[Instruction]] = []
    for instruction in parser.structure:
        if instruction["instruction"] == "FROM":
            out.append([])
        if out and instruction["instruction"] != "COMMENT":
            out[-1].append(instruction)
    return out


def values(stage: list[Instruction], name: str) -> list[str]:
    return [str(i["value"]) for i in stage if i["instruction"] == name]


def final_stage() -> list[Instruction]:
    return stages()[-1]


def healthcheck_argv() -> list[str]:
    (value,) = values(final_stage(), "HEALTHCHECK")
    argv: list[str] = json.loads(value[value.index("CMD") + 3 :])
    return argv


def test_the_image_is_built_in_stages_from_pinned_bases() -> None:
    froms = [values(stage, "FROM")[0] for stage in stages()]
    assert len(froms) >= 2
    for line in froms:
        image = line.split()[0]
        tag = image.partition(":")[2]
        assert (tag and tag != "latest") or "@sha256:" in image, image
    assert froms[-1].startswith("python:3.11-slim-bookworm")


def test_the_final_stage_runs_as_a_numeric_non_root_user() -> None:
    (user,) = values(final_stage(), "USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0


def test_compilers_stay_in_the_builder() -> None:
    builder, final = stages()[0], final_stage()
    assert any("build-essential" in run for run in values(builder, "RUN"))
    for run in values(final, "RUN"):
        assert "pip install" not in run and "apt-get install" not in run, run
        assert not COMPILERS.search(run.replace("--no-create-home", "")), run
    copied = [c for c in values(final, "COPY") if c.startswith("--from=")]
    assert {c.split()[1] for c in copied} == {"/opt/venv", "/app"}


def test_the_generated_code_is_made_as_the_makefile_makes_it() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "-m membership_cli.protogen --proto-root protos --out gen" in makefile
    runs = values(stages()[0], "RUN")
    assert any("-m membership_cli.protogen --proto-root protos --out /app/gen" in r for r in runs)


def test_every_copied_path_exists_and_is_not_ignored() -> None:
    ignored = [
        line.rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    for stage in stages():
        for copy in values(stage, "COPY"):
            if copy.startswith("--from="):
                continue
            source = copy.split()[0]
            assert (ROOT / source).exists(), source
            assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), source


def test_local_state_never_reaches_the_build_context() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for private in (".data/", ".venv/", "gen/", ".git/", "**/secrets/", "tests/"):
        assert private in ignored, private


def test_the_dependency_lists_follow_pyproject(tmp_path: Path) -> None:
    """Runs the builder's extraction step on the real pyproject.toml (paths moved to tmp)."""
    (run,) = [r for r in values(stages()[0], "RUN") if "tomllib" in r]
    command = run.replace("/tmp/", f"{tmp_path}/").replace("python -c", f"{sys.executable} -c")
    (tmp_path / "pyproject.toml").write_bytes((ROOT / "pyproject.toml").read_bytes())
    subprocess.run(["sh", "-c", command], cwd=tmp_path, check=True)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = (tmp_path / "runtime.txt").read_text().splitlines()
    assert runtime == project["dependencies"]
    generator = (tmp_path / "protogen.txt").read_text()
    assert "grpcio-tools" in generator and "mypy-protobuf" in generator


def test_the_default_command_and_probe_name_existing_modules() -> None:
    (cmd,) = values(final_stage(), "CMD")
    argv = json.loads(cmd)
    assert argv[:2] == ["python", "-m"] and module_exists(argv[2])
    program = healthcheck_argv()[2]
    for module in re.findall(r"from ([\w.]+) import", program):
        assert module_exists(module) or (ROOT / module.replace(".", "/")).is_dir(), module


def test_the_settings_the_image_sets_are_read_by_the_code() -> None:
    env_lines = " ".join(values(final_stage(), "ENV"))
    names = set(re.findall(r"\b(MEMBERSHIP_[A-Z0-9_]+)=", env_lines))
    assert names and not unknown_env_names(names)


# -- the HEALTHCHECK, run for real against a gRPC health server -----------------------------


@pytest.fixture
def health_server() -> Iterator[tuple[int, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port, servicer
    finally:
        server.stop(None).wait()


def run_probe(tmp_path: Path, command: str, env: dict[str, str]) -> int:
    """The image's HEALTHCHECK program, with PID 1's command line taken from a file."""
    cmdline = tmp_path / "cmdline"
    cmdline.write_bytes(b"\0".join(part.encode() for part in shlex.split(command)) + b"\0")
    program = healthcheck_argv()[2].replace("/proc/1/cmdline", str(cmdline))
    done = subprocess.run(
        [sys.executable, "-c", program], env={"PATH": "/usr/bin:/bin", **env}, check=False
    )
    return done.returncode


@pytest.mark.parametrize(
    ("command", "variable"),
    [
        ("python -m services.points", "MEMBERSHIP_POINTS_ADDR"),
        ("python -m gateway", "MEMBERSHIP_GATEWAY_GRPC_ADDR"),
    ],
)
def test_the_healthcheck_probes_the_process_it_runs(
    tmp_path: Path,
    health_server: tuple[int, health.HealthServicer],
    command: str,
    variable: str,
) -> None:
    port, servicer = health_server
    env = {variable: f"0.0.0.0:{port}"}
    assert run_probe(tmp_path, command, env) == 0
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert run_probe(tmp_path, command, env) == 1


def test_the_healthcheck_fails_when_nothing_serves(tmp_path: Path) -> None:
    env = {"MEMBERSHIP_ACCOUNTS_ADDR": "0.0.0.0:1"}
    assert run_probe(tmp_path, "python -m services.accounts", env) != 0
