"""The house rules of the package, read from the source with ``ast``: every import (also the ones inside
functions and ``importlib.import_module("...")`` calls) goes to the module's own layer or one below, in the
layer order of the README's Layout table; no import circle; no function longer than 100 lines."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "partialface"
README = ROOT / "README.md"
MAX_FUNCTION_LINES = 100


def readme_layers(text: str) -> list[list[str]]:
    """The Layout table's first column, lowest layer first: [["errors", "devices", ...], ...]."""
    marker = text.index("<!-- layers:")
    rows = []
    for line in text[marker:].splitlines()[1:]:
        if not line.startswith("|"):
            if rows:
                break
            continue
        first = line.split("|")[1]
        names = re.findall(r"`([a-z_]+)`", first)
        if names:
            rows.append(names)
    return rows


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """partialface modules that ``name`` imports anywhere in its file (a name imported from a package that is
    itself a module counts as that module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def add(target: str) -> None:
        if target == "partialface" or target.startswith("partialface."):
            found.add(target)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:
                full = f"{target}.{alias.name}"
                add(full if full in known else target)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            add(node.args[0].value)
    found.discard(name)
    return found


def layer_of(name: str, layers: list[list[str]]) -> int:
    """The layer index of a module: that of its first component below ``partialface`` (the package itself
    sits with the facade, ``api``, whose names it will re-export)."""
    parts = name.split(".")
    top = parts[1] if len(parts) > 1 else "api"
    for i, row in enumerate(layers):
        if top in row:
            return i
    raise AssertionError(f"{name}: its top-level name {top!r} is in no layer of the README's Layout table")


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def test_readme_table_lists_every_top_level_name_once() -> None:
    layers = readme_layers(README.read_text(encoding="utf-8"))
    listed = [n for row in layers for n in row]
    assert len(listed) == len(set(listed)), listed
    tops = {p.stem for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    tops |= {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert tops == set(listed), f"in the package, not the README: {tops - set(listed)}; " \
                                f"in the README, not the package: {set(listed) - tops}"


def test_no_module_imports_from_a_layer_above_its_own(graph: dict[str, set[str]]) -> None:
    layers = readme_layers(README.read_text(encoding="utf-8"))
    upward = [f"{m} (layer {layer_of(m, layers)}) imports {d} (layer {layer_of(d, layers)})"
              for m, deps in sorted(graph.items()) for d in sorted(deps) if layer_of(d, layers) > layer_of(m, layers)]
    assert not upward, "\n".join(upward)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return [*path[path.index(dep):], dep]
            if dep not in state:
                cycle = visit(dep)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_find_cycle_on_hand_made_graphs() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": set(), "b": {"c"}, "c": {"b"}}) == ["b", "c", "b"]


def test_imports_of_sees_lazy_relative_and_importlib_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "partialface" / "sub"
    pkg.mkdir(parents=True)
    file = pkg / "mod.py"
    file.write_text(
        "import importlib\nfrom . import other\nfrom partialface.errors import PartialFaceError\n"
        "def f():\n    from partialface.sub.deep import x\n    importlib.import_module('partialface.jobs.demo')\n",
        encoding="utf-8",
    )
    known = {"partialface.sub.other", "partialface.errors", "partialface.sub.deep", "partialface.jobs.demo"}
    got = imports_of("partialface.sub.mod", file, known)
    assert got == known


def test_no_import_circle(graph: dict[str, set[str]]) -> None:
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


def test_no_function_over_100_lines() -> None:
    long = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {n} lines")
    assert not long, "\n".join(long)
