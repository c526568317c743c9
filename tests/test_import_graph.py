"""The package's import graph, read from the source (every import statement, those inside
functions and under TYPE_CHECKING included): no module imports itself back through others, the
client never imports the local service, and the service imports nothing of the client but the
contract both sides speak (jobspec/wire.py)."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.timeout(60)

SERVER = "jobspec.server"
# `jobspec serve` runs the service in the CLI's process (the local backend starts it as
# `python -m jobspec.server` instead, and imports none of it).
CLIENT_MAY_IMPORT = {"jobspec.cli": {"jobspec.server.main"}}
# What the service takes from the client side: the shared contract (wire.py and the conversation
# it carries), everywhere; `jobspec serve`'s
# start-up (main.py) also finds the state directory as the client does and reports errors alike.
SERVICE_MAY_IMPORT = {"jobspec.wire", "jobspec.conversation"}
SERVICE_START_MAY_IMPORT = {"jobspec.server.main": {"jobspec.errors", "jobspec.workspace",
                                                    "jobspec.legacy_state"}}


def modules(root: Path, package: str) -> dict[str, Path]:
    """Every module of ``package`` (a folder under ``root``) by its dotted name."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imported(name: str, path: Path, node: ast.Import | ast.ImportFrom,
              known: dict[str, Path]) -> set[str]:
    """The modules of ``known`` that ``node``, in module ``name`` at ``path``, imports."""
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    else:
        if node.level:  # relative to this module's package
            package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
            base = ".".join(package[:len(package) - node.level + 1] +
                            ([node.module] if node.module else []))
        else:
            base = node.module or ""
        # `from package import module` imports the module; `from module import name`, the module.
        targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                   for alias in node.names]
    found = set()
    for target in targets:
        while target and target not in known:  # `import a.b.c` of a name within a.b
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)
    return found


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Each module of ``package`` → the modules of the package it imports."""
    known = modules(root, package)
    graph = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        graph[name] = set().union(*(_imported(name, path, node, known) for node in ast.walk(tree)
                                    if isinstance(node, (ast.Import, ast.ImportFrom))))
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of imports, as a path that comes back to where it starts; None when none."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        return list(reversed(exc.args[1]))  # graphlib lists it against the imports' direction
    return None


def in_server(module: str) -> bool:
    return module == SERVER or module.startswith(SERVER + ".")


def client_to_server(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{module} imports {imported}" for module, imports in graph.items()
                  if not in_server(module) for imported in imports
                  if in_server(imported) and imported not in CLIENT_MAY_IMPORT.get(module, ()))


def server_to_client(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{module} imports {imported}" for module, imports in graph.items()
                  if in_server(module) for imported in imports
                  if not in_server(imported) and imported != "jobspec"
                  and imported not in SERVICE_MAY_IMPORT
                  and imported not in SERVICE_START_MAY_IMPORT.get(module, ()))


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(ROOT, "jobspec")


def test_the_graph_is_the_package(graph):
    assert {"jobspec.cli", "jobspec.backends.registry", "jobspec.server.app"} <= set(graph)
    assert "jobspec.backends.local" in graph["jobspec.backends.registry"]
    assert "jobspec.wire" in graph["jobspec.server.app"]


def test_no_module_imports_itself_back(graph):
    found = cycle(graph)
    assert found is None, "an import cycle: " + " → ".join(found or [])


def test_the_client_never_imports_the_local_service(graph):
    assert client_to_server(graph) == []


def test_the_local_service_imports_only_the_contract_of_the_client_side(graph):
    assert server_to_client(graph) == []


# --- the graph reader itself, on a package made for it -------------------------------------------


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_cycles_through_relative_late_and_type_checking_imports_are_found(tmp_path):
    write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from . import b\n",
        "pkg/b.py": "def late():\n    from .sub.c import thing\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                        "    from ..a import x\n",
        "pkg/d.py": "import pkg.sub.c\nimport os\n"})
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.a"] == {"pkg.b"}
    assert graph["pkg.b"] == {"pkg.sub.c"}
    assert graph["pkg.sub.c"] == {"pkg.a"}
    assert graph["pkg.d"] == {"pkg.sub.c"}
    found = cycle(graph)
    assert found is not None and found[0] == found[-1]
    assert set(found) == {"pkg.a", "pkg.b", "pkg.sub.c"}
    for before, after in zip(found, found[1:]):
        assert after in graph[before]  # in the direction of the imports

    graph["pkg.sub.c"] = set()
    assert cycle(graph) is None


def test_a_client_module_that_imports_the_service_is_found(tmp_path):
    write(tmp_path, {
        "jobspec/__init__.py": "", "jobspec/wire.py": "",
        "jobspec/backends/__init__.py": "",
        "jobspec/backends/local.py": "from .. import wire\nfrom ..server.handshake import X\n",
        "jobspec/server/__init__.py": "", "jobspec/server/handshake.py": "from ..wire import Y\n",
        "jobspec/server/store.py": "from ..backends import local\n"})
    graph = import_graph(tmp_path, "jobspec")
    assert client_to_server(graph) == ["jobspec.backends.local imports jobspec.server.handshake"]
    assert server_to_client(graph) == ["jobspec.server.store imports jobspec.backends.local"]
