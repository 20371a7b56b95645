"""No import cycles among archc's modules, counting imports inside functions (lazy imports) too.

A cycle that only lazy imports close still means two modules that cannot be read, tested or moved apart; the
module-level subset is checked by Python itself at import time.
"""
from __future__ import annotations

import ast
from pathlib import Path

import archc

ROOT = Path(archc.__file__).parent


def _modules() -> dict[str, Path]:
    """{'archc.data.sources': path} for every module and package of archc."""
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path, known: dict[str, Path], typing: bool = False) -> set[str]:
    """archc modules that `name` imports anywhere in its body (TYPE_CHECKING blocks too when `typing`)."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    skip = set() if typing else {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                                 and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    targets: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            subs = {f"{base}.{a.name}" for a in node.names}
            # `from archc.export import genai` imports the module genai (its package's __init__ runs for any import
            # of a module inside it, as for `import archc.export.genai`): the package counts for other names only
            targets |= (subs & set(known)) | ({base} if subs - set(known) else set())
    found = set()
    for t in targets:
        while t and t not in known:  # `from archc.data.sources import load` -> archc.data.sources
            t = t.rpartition(".")[0]
        if t and t != name:
            found.add(t)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
    return found


def import_graph(typing: bool = False) -> dict[str, set[str]]:
    known = _modules()
    return {name: _imports(name, path, known, typing) for name, path in known.items()}


def test_the_checker_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    pkg = tmp_path / "p"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from p.b import g\n")
    (pkg / "b.py").write_text("from . import a\n")
    (pkg / "c.py").write_text("from . import a, VERSION\n")
    known = {"p": pkg / "__init__.py", "p.a": pkg / "a.py", "p.b": pkg / "b.py", "p.c": pkg / "c.py"}
    assert _imports("p.a", known["p.a"], known) == {"p.b"}
    assert _imports("p.b", known["p.b"], known) == {"p.a"}  # a module of the package: the module
    assert _imports("p.c", known["p.c"], known) == {"p", "p.a"}  # a name the package's __init__ defines
    (pkg / "d.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from p.b import g\n")
    known["p.d"] = pkg / "d.py"
    assert _imports("p.d", known["p.d"], known) == set()
    assert _imports("p.d", known["p.d"], known, typing=True) == {"p.b"}


def test_no_import_cycles_in_archc():
    graph = import_graph()
    assert len(graph) > 50  # the walk found the package
    cycles = _cycles(graph)
    assert not cycles, "import cycles (lazy imports included): " + "; ".join(" <-> ".join(c) for c in cycles)


def package_of(module: str) -> str:
    """The package a module belongs to: archc's subpackage ('archc.export.onnx' -> 'archc.export'); a module at
    archc's top level ('archc.pipeline') and archc itself are each their own."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 or (ROOT / parts[-1]).is_dir() and len(parts) == 2 else module


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The import graph between packages (lazy imports included): an edge wherever a module of one imports a
    module of another."""
    out: dict[str, set[str]] = {package_of(m): set() for m in graph}
    for module, targets in graph.items():
        out[package_of(module)] |= {package_of(t) for t in targets} - {package_of(module)}
    return out


def test_the_package_graph_collapses_modules():
    graph = {"archc.a.x": {"archc.b.y"}, "archc.b.y": {"archc.pipeline"}, "archc.pipeline": {"archc.a.z"},
             "archc.a.z": set()}
    assert _cycles(package_graph(graph)) == [["archc.a", "archc.b", "archc.pipeline"]]


def test_the_packages_form_a_dag():
    """The packages' imports form a DAG, lazy and type-only (TYPE_CHECKING) imports included: archc.tasks, which
    graph and language read, takes what it needs from runtime and train through hooks (archc.tasks.hooks) and reads
    their objects through protocols (archc.tasks.views); the ops write ONNX through the protocol archc.ops.base.Emitter,
    not archc.emit's class."""
    packages = package_graph(import_graph(typing=True))
    assert {"archc.tasks", "archc.runtime", "archc.train", "archc.export"} <= set(packages)
    assert not packages["archc.tasks"] & {"archc.runtime", "archc.train", "archc.export"}
    cycles = _cycles(packages)
    assert not cycles, "package import cycles (lazy imports included): " + "; ".join(" <-> ".join(c) for c in cycles)
