"""pyproject.toml declares what the code imports, at versions that have what it calls."""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
OWN = {"app", "model"}


def _declared() -> dict[str, str]:
    """Every requirement of the project and its extras: {normalised name: its specifier}."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    declared = {}
    for requirement in requirements:
        name, specifier = re.match(r"([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?(.*)", requirement).groups()
        declared[_normalise(name)] = specifier.strip()
    return declared


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _nodes() -> Iterator[ast.AST]:
    """Every node of every file of app/ and model/."""
    for path in [*(ROOT / "app").rglob("*.py"), *(ROOT / "model").rglob("*.py")]:
        yield from ast.walk(ast.parse(path.read_text(), str(path)))


def _imported_modules() -> set[str]:
    """The top-level modules that app/ and model/ import (at any depth in a file)."""
    modules = set()
    for node in _nodes():
        if isinstance(node, ast.Import):
            modules |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.partition(".")[0])
    return modules - OWN - set(sys.stdlib_module_names)


def _found_by_spec() -> set[str]:
    """The packages app/ and model/ look up by name for their files (importlib.util.find_spec("name"))."""
    found = set()
    for node in _nodes():
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "find_spec"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.add(str(node.args[0].value))
    return found


def test_every_imported_package_is_declared() -> None:
    declared = _declared()
    distributions = metadata.packages_distributions()
    undeclared = sorted(
        module
        for module in _imported_modules()
        if not any(_normalise(d) in declared for d in distributions.get(module, [module]))
    )
    assert undeclared == [], f"imported but not in pyproject.toml: {undeclared}"


def test_torch_minimum_has_the_kernels_the_code_calls() -> None:
    """SDPA's enable_gqa came in torch 2.5, the CPU int4 kernels (_weight_int4pack_mm_for_cpu) in 2.6."""
    minimum = re.search(r">=\s*([0-9.]+)", _declared()["torch"]).group(1)
    assert tuple(int(part) for part in minimum.split(".")[:2]) >= (2, 6)


def test_every_declared_dependency_is_imported() -> None:
    """A requirement nothing imports (qasync was one) only makes installs longer."""
    distributions = metadata.packages_distributions()
    used = _imported_modules() | _found_by_spec()
    imported = {_normalise(d) for module in used for d in distributions.get(module, [module])}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    required = {_normalise(re.match(r"[A-Za-z0-9_.\-]+", r).group()) for r in project["dependencies"]}
    assert sorted(required - imported) == []
