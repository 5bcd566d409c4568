"""Generates Python, gRPC and typing stubs from protos/ into gen/ (never committed)."""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc


def _include_dirs() -> list[str]:
    well_known = resources.files("grpc_tools") / "_proto"
    # googleapis-common-protos installs google/api/*.proto beside its modules
    # found, not imported: googleapis-common-protos ships no type information
    spec = importlib.util.find_spec("google.api.annotations_pb2")
    if spec is None or spec.origin is None:
        raise SystemExit("googleapis-common-protos is not installed")
    googleapis_root = Path(spec.origin).resolve().parents[2]
    return [str(well_known), str(googleapis_root)]


def generate(proto_root: Path, out_dir: Path) -> None:
    protos = sorted(str(p) for p in proto_root.rglob("*.proto"))
    if not protos:
        raise SystemExit(f"no .proto files under {proto_root}")
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    bin_dir = Path(sys.executable).parent
    args = [
        "grpc_tools.protoc",
        f"--proto_path={proto_root}",
        *(f"--proto_path={d}" for d in _include_dirs()),
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for generated in out_dir.rglob("*_pb2.py"):
        package_dir = generated.parent
        while package_dir != out_dir:
            (package_dir / "__init__.py").touch()
            package_dir = package_dir.parent
    _vendor_third_party(out_dir)


def _vendor_third_party(out_dir: Path) -> None:
    """Copies the googleapis protos the API imports beside the output so `buf lint` resolves
    imports offline."""
    root = Path(_include_dirs()[1])
    for name in (
        "api/annotations.proto",
        "api/http.proto",
        "api/field_behavior.proto",
        "type/date.proto",
    ):
        target = out_dir / "third_party" / "google" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / "google" / name, target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--proto-root", type=Path, default=Path("protos"))
    parser.add_argument("--out", type=Path, default=Path("gen"))
    ns = parser.parse_args(argv)
    generate(ns.proto_root, ns.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
