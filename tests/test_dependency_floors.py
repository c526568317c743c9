"""The dependency floors in pyproject.toml admit no version with a known defect that jobspec
would meet, and torch.load is only ever called in its safe mode."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parent.parent

# The last version with the defect, and the defect.
KNOWN_BAD = {
    "pyyaml": ("6.0.3", "nested merge keys expand exponentially before anything counts them "
                        "(yaml/pyyaml#937, fixed in 6.0.4)"),
    "tenacity": ("8.1.0", "Retrying calls stop and wait with retry_state= by keyword, which "
                          "retrying.Budget's stop and wait do not take (positional from 8.2)"),
    "torch": ("2.5.1", "torch.load(weights_only=True) can run code from a crafted file "
                       "(CVE-2025-32434, fixed in 2.6.0)"),
}


def requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    listed = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        listed.extend(extra)
    found = {}
    for text in listed:
        requirement = Requirement(text)
        found[requirement.name.lower()] = requirement
    return found


@pytest.mark.parametrize("name", sorted(KNOWN_BAD))
def test_no_floor_admits_a_known_bad_version(name):
    last_bad, defect = KNOWN_BAD[name]
    requirement = requirements()[name]
    assert not requirement.specifier.contains(last_bad, prereleases=True), (
        f"{requirement} admits {name} {last_bad}: {defect}")


def test_torch_load_is_only_called_with_weights_only():
    """weights_only=True is what the torch floor makes safe; any other call unpickles code."""
    calls = 0
    for path in sorted((ROOT / "jobspec").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "torch":
                assert "load" not in {alias.name for alias in node.names}, path
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "load" and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "torch"):
                calls += 1
                keywords = {k.arg: k.value for k in node.keywords}
                safe = keywords.get("weights_only")
                assert isinstance(safe, ast.Constant) and safe.value is True, \
                    f"{path}:{node.lineno}: torch.load without weights_only=True"
    assert calls, "no torch.load call found: the local service's checkpoints moved?"
