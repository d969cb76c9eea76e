"""The package's imports flow one way: each layer imports only the layers before it, and no module
imports itself back through others (docs/development.md: How the code is laid out).

Read from the source (every import statement, including those inside functions and under
TYPE_CHECKING), so that a cycle cannot hide behind a lazy import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "exporter"

#: In the order data and dependencies flow; a module may import its own layer and those before it.
LAYERS = ["core", "format", "profiles", "sources", "pipeline", "config", "serve", "runtime", "app"]
#: The modules directly under exporter/: the command line.
APP = {"__main__", "cli", "envflags"}


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "exporter":
        return None
    if len(parts) == 1:
        return "core"  # the package itself: its version
    if parts[1] == "simulate":
        return None  # the simulated backends: a program of their own, which the demo runs
    if parts[1] in APP:
        return "app"
    return parts[1]


def _imports(path: Path, module: str) -> set[str]:
    """Every exporter module `path` imports (a name imported from a package counts as its module,
    where there is one)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if _exists(candidate) else base)
    return {name for name in found if name == "exporter" or name.startswith("exporter.")}


def _exists(module: str) -> bool:
    relative = Path(*module.split(".")[1:])
    return (PACKAGE / relative).with_suffix(".py").is_file() or (PACKAGE / relative / "__init__.py").is_file()


def _graph() -> dict[str, set[str]]:
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module(path)
        graph[module] = {name for name in _imports(path, module) if name != module}
    return graph


def test_each_layer_imports_only_the_layers_before_it():
    wrong = []
    for module, imported in _graph().items():
        layer = _layer(module)
        if layer is None:
            continue
        assert layer in LAYERS, f"{module}: exporter/{module.split('.')[1]} is in no layer; add it to LAYERS"
        for name in sorted(imported):
            other = _layer(name)
            if other is None:
                if module != "exporter.runtime.demo" and name.startswith("exporter.simulate"):
                    wrong.append(f"{module} imports {name} (only the demo runs the simulated backends)")
                continue
            if LAYERS.index(other) > LAYERS.index(layer):
                wrong.append(f"{module} ({layer}) imports {name} ({other})")
    assert not wrong, "imports against the flow:\n" + "\n".join(wrong)


def test_no_module_imports_itself_back():
    graph = _graph()
    cycles = []
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for name in sorted(graph.get(module, ())):
            if name not in graph or name == "exporter":
                continue
            if state.get(name) == 1:
                cycles.append(" -> ".join([*path[path.index(name) :], name]))
            elif name not in state:
                visit(name, [*path, name])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("layer", LAYERS[:-1])
def test_every_layer_has_its_folder(layer):
    assert (PACKAGE / layer).is_dir() or layer == "profiles"
