"""archc.train's modules import one another without cycles, counting imports inside functions, and none imports
the package itself back (archc.train's __init__ only re-exports)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

TRAIN = Path(__file__).resolve().parents[2] / "archc" / "train"
PACKAGE = "archc.train"


def _imports(path: Path) -> set[str]:
    """The archc.train names a module imports anywhere in it (module level, functions, TYPE_CHECKING)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {n for n in names if n == PACKAGE or n.startswith(PACKAGE + ".")}


GRAPH = {f"{PACKAGE}.{p.stem}" if p.stem != "__init__" else PACKAGE: _imports(p) for p in TRAIN.glob("*.py")}


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m != PACKAGE))
def test_no_module_imports_the_package_back(module):
    assert PACKAGE not in GRAPH[module], f"{module} imports {PACKAGE} itself: import the module that defines it"


def test_no_cycles():
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(module):] + [module]))
        if module in done:
            return
        for dep in sorted(GRAPH.get(module, ())):
            visit(dep, path + [module])
        done.add(module)

    for module in sorted(GRAPH):
        visit(module, [])
    assert "archc.train.batches" in GRAPH and not GRAPH["archc.train.batches"]  # batches needs no other module
