"""The package's layers (README, "Library"): each layer imports only the layers below it, so the
architecture cannot erode silently. Read from the source with ``ast`` (imports inside functions
count too), so nothing is imported to check it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import geofusion

PACKAGE = Path(geofusion.__file__).resolve().parent

#: Layer of every subpackage, bottom (0) to top; modules at the root are layer 0.
LAYERS = {"models": 1, "world": 2, "data": 3, "learning": 4, "verification": 4,
          "downstream": 5, "experiments": 6, "reporting": 7}
#: Same-level layers that must not import each other.
SIDE_BY_SIDE = {frozenset({"learning", "verification"})}
#: Command-line aliases at the root (``python -m geofusion.pipeline``): they may call any
#: layer, and nothing may import them.
ALIASES = {"geofusion.pipeline", "geofusion.headline"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> tuple[str, int]:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in LAYERS:
        return parts[1], LAYERS[parts[1]]
    return "root", 0


def imports_of(path: Path) -> set[str]:
    """Every geofusion module ``path`` imports (``from geofusion import x`` names x)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("geofusion")}
        elif isinstance(node, ast.ImportFrom) and node.module \
                and node.module.startswith("geofusion") and node.level == 0:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                is_module = any((PACKAGE.parent / Path(*candidate.split("."))).with_suffix(s)
                                .exists() for s in (".py",)) \
                    or (PACKAGE.parent / Path(*candidate.split("."))).is_dir()
                found.add(candidate if is_module else node.module)
    return found


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {name: imports_of(path) for name, path in MODULES.items()}


def violation(importer: str, imported: str) -> str | None:
    if imported in ALIASES:
        return "imports a command-line alias; import the module it runs instead"
    if importer in ALIASES:
        return None
    (low_name, low), (high_name, high) = layer_of(imported), layer_of(importer)
    if low > high:
        return f"upward import: {high_name} (layer {high}) imports {low_name} (layer {low})"
    if low == high and low_name != high_name \
            and frozenset({low_name, high_name}) in SIDE_BY_SIDE:
        return f"{high_name} and {low_name} sit side by side and must not import each other"
    return None


@pytest.mark.parametrize("importer", sorted(MODULES))
def test_imports_respect_the_layers(importer):
    problems = [f"{importer} -> {imported}: {why}" for imported in sorted(GRAPH[importer])
                if (why := violation(importer, imported))]
    assert not problems, "\n".join(problems)


def test_checker_flags_upward_and_sideways_imports():
    """The rule itself: a deliberate violation of each kind is reported."""
    assert violation("geofusion.models.resnet", "geofusion.data.preparation")
    assert violation("geofusion.learning.methods", "geofusion.verification.metrics")
    assert violation("geofusion.verification.metrics", "geofusion.learning.training")
    assert violation("geofusion.reporting.plotting", "geofusion.pipeline")
    assert violation("geofusion.downstream.forecasting", "geofusion.learning.training") is None
    assert violation("geofusion.data.preparation", "geofusion.variables") is None


def test_no_import_cycles():
    internal = {name: {m for m in deps if m in MODULES} for name, deps in GRAPH.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in internal[node]:
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(internal):
        if name not in state:
            visit(name)


def test_every_module_is_in_a_known_layer():
    subpackages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert subpackages == set(LAYERS), "add a new subpackage to LAYERS (and to the README)"
