"""The one-way layers of docs/where-things-live.md, read from the package's own imports.

core < data < {answers, networks} < model < {stages, training, evaluation,
inference} < web < api < cli: a module imports only from its own layer or
those below, and the sibling packages of one layer never import each other. Imports inside
functions count too. No import cycle between modules.
"""

import ast
from pathlib import Path

import pytest

import pbn_cli

PACKAGE = Path(pbn_cli.__file__).parent
LAYER = {"core": 0, "data": 1, "answers": 2, "networks": 2, "model": 3, "stages": 4, "training": 4, "evaluation": 4,
         "inference": 4, "web": 5, "api": 6, "cli": 7}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path) -> set[str]:
    """The pbn_cli modules ``path`` imports (``from pkg import sub`` counts as importing ``pkg.sub``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("pbn_cli")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pbn_cli"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in MODULES else node.module)
    return found


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYER else None


def _layer(module: str) -> int:
    package = _package(module)
    return LAYER[package] if package else LAYER["cli"]  # pbn_cli/__init__ and __main__ sit with the CLI


GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def test_every_module_belongs_to_a_layer():
    loose = [m for m in MODULES if _package(m) is None and m not in ("pbn_cli", "pbn_cli.__main__")]
    assert loose == [], f"modules outside the layer packages: {loose}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_layers(module):
    wrong = []
    for target in sorted(GRAPH[module]):
        if target == "pbn_cli":  # the version string
            continue
        if _layer(target) > _layer(module):
            wrong.append(f"{target} (a layer above)")
        elif _layer(target) == _layer(module) in (2, 4) and _package(target) != _package(module):
            wrong.append(f"{target} (a sibling of {_package(module)})")
    assert wrong == [], f"{module} imports " + ", ".join(wrong)


def test_no_import_cycle():
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = "open"
        for target in sorted(GRAPH.get(module, ())):
            if target not in GRAPH or target == module or module.startswith(target + "."):
                continue  # a package's own __init__ is not a cycle
            if state.get(target) == "open":
                return [*path, module, target]
            if target not in state and (cycle := visit(target, [*path, module])):
                return cycle
        state[module] = "done"
        return None

    for module in sorted(GRAPH):
        if module not in state:
            cycle = visit(module, [])
            assert cycle is None, " -> ".join(cycle)


def test_the_check_catches_an_upward_import(tmp_path):
    """The reader itself: an import from a layer above is seen, also inside a function."""
    source = tmp_path / "bad.py"
    source.write_text("def f():\n    from pbn_cli.training.loop import train\n    from pbn_cli.networks import views\n")
    assert _imports(source) == {"pbn_cli.training.loop", "pbn_cli.networks.views"}
    assert _layer("pbn_cli.training.loop") > _layer("pbn_cli.networks.views")
