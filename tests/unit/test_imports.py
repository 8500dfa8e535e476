"""The package's import graph: no cycles, no imports inside functions, and layers that only look down:
kernel <- pipeline <- logformat <- output <- settings <- commands <- cli (a module may import from its own layer or
below)."""

import ast
import subprocess
import sys
from pathlib import Path

import socketsnoop

PACKAGE = Path(socketsnoop.__file__).resolve().parent
LAYERS = {"errors": 0, "__init__": 0, "kernel": 1, "pipeline": 2, "logformat": 3, "output": 4, "settings": 5,
          "commands": 6, "cli": 7, "__main__": 8}


def module_name(path):
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(["socketsnoop", *parts])


def imports_of(path):
    """(module-level imports of socketsnoop modules, [line numbers of imports inside a def or class])."""
    tree = ast.parse(path.read_text())
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    top, nested = set(), []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and node not in tree.body:
            nested.append(node.lineno)
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            if base.startswith("socketsnoop"):
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    top.add(full if (PACKAGE / Path(*full.split(".")[1:])).with_suffix(".py").exists()
                            or (PACKAGE / Path(*full.split(".")[1:]) / "__init__.py").exists() else base)
        elif isinstance(node, ast.Import):
            top.update(a.name for a in node.names if a.name.startswith("socketsnoop"))
    return top, nested


def graph():
    return {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def test_no_function_level_imports():
    bad = [f"{m}:{line}" for m, (_, nested) in graph().items() for line in nested]
    assert not bad, f"imports inside functions: {bad}"


def test_no_import_cycles():
    edges = {m: {d for d in deps if d != m} for m, (deps, _) in graph().items()}
    state = {}

    def visit(m, path):
        if state.get(m) == "done":
            return
        assert state.get(m) != "active", "import cycle: " + " -> ".join(path[path.index(m):] + [m])
        state[m] = "active"
        for d in sorted(edges.get(m, ())):
            visit(d, path + [m])
        state[m] = "done"

    for m in sorted(edges):
        visit(m, [])


def layer(module):
    return LAYERS[module.split(".")[1] if "." in module else "__init__"]


def test_layers_only_look_down():
    for m, (deps, _) in graph().items():
        for d in deps:
            assert layer(d) <= layer(m), f"{m} (layer {layer(m)}) imports {d} (layer {layer(d)})"


def test_the_cycle_check_finds_a_cycle():
    """The check itself: a graph with a cycle fails it."""
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}}
    seen, found = set(), []

    def visit(m, path):
        if m in path:
            found.append(path[path.index(m):] + [m])
            return
        if m in seen:
            return
        seen.add(m)
        for d in edges[m]:
            visit(d, path + [m])

    visit("a", [])
    assert found == [["a", "b", "c", "a"]]


def test_the_monitor_does_not_load_the_reports_engine():
    """The command line imports every command; the report's optional engine (duckdb, tens of MB of library) is
    imported only when the fast path runs, not by the live monitor, top or --help."""
    code = "import sys, socketsnoop.cli, socketsnoop.commands.report.engine as e; print('duckdb' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
