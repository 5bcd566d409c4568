"""The layering of docs/architecture.md in executable form: which module is in which layer
(by its path alone), what each layer may import, and the import graph to find cycles in.

Read by tests/unit/test_architecture.py; `python -m tests.support.architecture` prints every
violation of the tree (or of the folders given), one per line, for working through them."""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).parents[2]
SERVICES = ("accounts", "points", "privacy")
# runtime modules with no I/O of their own: what pure domain modules may use
PURE_RUNTIME = frozenset({"services.runtime.errors", "services.runtime.names"})
# a string that is SQL: a statement keyword followed by what only SQL puts after it
SQL = re.compile(
    r"\b(SELECT\s+[\w*(]|INSERT\s+INTO|UPDATE\s+[\w.]+\s+SET|DELETE\s+FROM|CREATE\s+TABLE)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Module:
    name: str  # dotted, e.g. services.points.domain.earning
    path: Path
    layer: str  # main, wiring, server, proto, ports, domain, store, use_case, runtime, gateway
    service: str  # accounts, points, privacy, runtime, gateway


@dataclass(frozen=True)
class Import:
    target: str  # dotted module name as written (or resolved from a relative import)
    line: int


def layer_of(path: Path) -> tuple[str, str]:
    """(service, layer) of a module by its path under the repository."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[0] == "gateway":
        return "gateway", "gateway"
    service, rest = parts[1], parts[2:]
    if service == "runtime":
        return "runtime", "runtime"
    stem = rest[-1]
    if rest[0] in ("domain", "store"):
        return service, rest[0]
    if stem == "__main__":
        return service, "main"
    if stem == "server":
        return service, "wiring"
    if stem.startswith("server_"):
        return service, "server"
    if stem == "proto" or stem.startswith("proto_"):
        return service, "proto"
    if stem == "ports" or stem.startswith("ports_"):
        return service, "ports"
    return service, "use_case"


def modules(folders: tuple[str, ...] = ("services", "gateway")) -> list[Module]:
    found = []
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.name == "__init__.py":
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            service, layer = layer_of(path)
            found.append(Module(name, path, layer, service))
    return found


def _runtime_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Imports that run: `if TYPE_CHECKING:` blocks are for the type checker only."""
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node


def imports_of(module: Module) -> list[Import]:
    tree = ast.parse(module.path.read_text(encoding="utf-8"))
    found = []
    package = module.name.rsplit(".", 1)[0]
    for node in _runtime_imports(tree):
        if isinstance(node, ast.Import):
            found += [Import(alias.name, node.lineno) for alias in node.names]
            continue
        base = node.module or ""
        if node.level:
            anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            base = f"{anchor}.{base}" if base else anchor
        # `from x import y` may name a module y of package x
        found += [Import(f"{base}.{alias.name}", node.lineno) for alias in node.names]
        found.append(Import(base, node.lineno))
    return found


def sql_lines(module: Module) -> list[int]:
    tree = ast.parse(module.path.read_text(encoding="utf-8"))
    return sorted(
        {
            node.lineno
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and SQL.search(node.value)
        }
    )


# where the environment is read: the runtime's settings (and the tracer's, which the
# OpenTelemetry variables configure) and the gateway's entry point; everything else is given
# its settings
ENVIRONMENT_READERS = frozenset(
    {"services.runtime.config", "services.runtime.tracing", "gateway.server"}
)


def environment_lines(module: Module) -> list[int]:
    """Lines reading os.environ or os.getenv (or importing them from os)."""
    tree = ast.parse(module.path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in ("environ", "getenv")
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
        ):
            found.add(node.lineno)
        if (
            isinstance(node, ast.ImportFrom)
            and node.module == "os"
            and any(alias.name in ("environ", "getenv") for alias in node.names)
        ):
            found.add(node.lineno)
    return sorted(found)


def _is_pb(target: str) -> bool:
    return target.rsplit(".", maxsplit=1)[-1].endswith(("_pb2", "_pb2_grpc")) or target.startswith(
        ("google.protobuf", "google.rpc", "grpc_status")
    )


def _is_grpc(target: str) -> bool:
    return target == "grpc" or target.startswith(("grpc.", "grpc_health", "grpc_reflection"))


def _service_module(target: str) -> tuple[str, str] | None:
    """(service, dotted rest) of an import of one of the suite's packages."""
    parts = target.split(".")
    if parts[0] == "gateway":
        return "gateway", ".".join(parts[1:])
    if parts[0] == "services" and len(parts) > 1:
        return parts[1], ".".join(parts[2:])
    return None


def _layer_of_target(target: str, known: dict[str, Module]) -> str | None:
    found = known.get(target)
    return None if found is None else found.layer


FORBIDDEN_LAYERS = {
    # what each layer may not import from its own service
    "domain": {"store", "use_case", "server", "proto", "ports", "wiring", "main"},
    "store": {"use_case", "server", "proto", "ports", "wiring", "main"},
    "use_case": {"server", "proto", "wiring", "main"},
    "ports": {"store", "use_case", "server", "proto", "wiring", "main"},
    "proto": {"store", "use_case", "server", "ports", "wiring", "main"},
    "server": {"store", "wiring", "main"},
}


def violations(module: Module, known: dict[str, Module]) -> list[str]:
    """Each forbidden import (and SQL where it has no place), as `path:line: what`."""
    where = module.path.relative_to(ROOT) if module.path.is_relative_to(ROOT) else module.path
    found = []
    for imp in imports_of(module):
        problem = _problem(module, imp.target, known)
        if problem:
            found.append(f"{where}:{imp.line}: {problem}")
    if _sql_forbidden(module):
        found += [f"{where}:{line}: SQL outside store/" for line in sql_lines(module)]
    if module.name not in ENVIRONMENT_READERS:
        found += [
            f"{where}:{line}: reads the environment outside the settings"
            for line in environment_lines(module)
        ]
    return sorted(set(found))


def _sql_forbidden(module: Module) -> bool:
    """A service's SQL lives in its store/ package; the gateway's in gateway/store.py."""
    if module.service in SERVICES:
        return module.layer != "store"
    if module.service == "gateway":
        return module.name not in ("gateway.store", "gateway.keys")
    return False


def _problem(module: Module, target: str, known: dict[str, Module]) -> str:
    layer = module.layer
    owner = _service_module(target)
    if owner is not None and owner[0] != module.service:
        if module.service == "gateway" and owner[0] == "runtime":
            return ""
        if owner[0] == "runtime" and module.service in SERVICES:
            if layer == "domain" and target not in PURE_RUNTIME and target in known:
                return f"pure module imports {target} (not pure runtime)"
            return ""
        return f"{module.service} imports {target} (services talk through stubs only)"
    if layer == "domain":
        if _is_grpc(target) or _is_pb(target):
            return f"pure module imports {target}"
        if target == "asyncpg" or target.startswith("asyncpg."):
            return f"pure module imports {target}"
    if layer in ("store", "use_case") and (_is_grpc(target) or _is_pb(target)):
        return f"{layer} module imports {target}"
    if layer in ("server", "proto") and (target == "asyncpg" or target.startswith("asyncpg.")):
        return f"{layer} module imports {target}"
    target_layer = _layer_of_target(target, known)
    if target_layer in FORBIDDEN_LAYERS.get(layer, set()):
        return f"{layer} module imports {target} ({target_layer})"
    return ""


def cycles(found: list[Module]) -> list[list[str]]:
    """Import cycles among the suite's modules (strongly connected components > 1)."""
    known = {m.name: m for m in found}
    graph = {
        m.name: sorted(
            {i.target for i in imports_of(m) if i.target in known and i.target != m.name}
        )
        for m in found
    }
    return [sorted(c) for c in _components(graph) if len(c) > 1]


def _components(graph: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components, iteratively (no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[list[str]] = []
    counter = 0
    for start, first_edges in graph.items():
        if start in index:
            continue
        work = [(start, iter(first_edges))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            advanced = False
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(graph[nxt])))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                result.append(component)
    return result


def report(folders: tuple[str, ...] = ("services", "gateway")) -> list[str]:
    found = modules(folders)
    known = {m.name: m for m in modules()}
    lines = [v for m in found for v in violations(m, known)]
    lines += ["cycle: " + " -> ".join(c) for c in cycles(found)]
    return lines


if __name__ == "__main__":
    for line in report(tuple(sys.argv[1:]) or ("services", "gateway")):
        print(line)
