"""The validate summary: a table of nodes with shapes, parameters and FLOPs, as text or JSON."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from archc.graph.bounds import recorded
from archc.graph.infer import human_bytes
from archc.graph.ir import Graph

if TYPE_CHECKING:
    from archc.data.columns import Column


def rows(graph: Graph) -> list[dict[str, Any]]:
    """One record per input and node."""
    out = [{"node": name, "op": "input", "from": [], "shape": list(t.shape), "dtype": t.dtype,
            "params": 0, "flops": 0} for name, t in graph.inputs.items()]
    for n in graph.nodes:
        op = n.op.name() + (f"+{n.act.name()}" if n.act else "")
        out.append({"node": n.id, "op": op, "from": n.inputs, "shape": list(n.out.shape) if n.out else None,
                    "dtype": n.out.dtype if n.out else None, "params": n.num_params, "flops": n.flops})
    return out


def encoding(c: Column) -> str:
    """How a column reaches the layers: 'one-hot (3)', 'embedding (4 rows x 2)', 'standardized', '0/1'."""
    if c.type == "categorical":
        own = f"one-hot ({c.slots()})" if c.encode == "onehot" else f"embedding ({c.slots() + 1} rows x {c.dim})"
    else:
        own = ("0/1" if c.type == "boolean" else "value") + (", standardized" if c.scaled() else "")
    return own + (" + missing indicator" if c.indicator else "")


def column_rows(graph: Graph, name: str) -> list[dict[str, Any]]:
    """One record per declared column of tabular input `name`: what validate shows and `--json` carries."""
    return [{"name": c.name, "type": c.type, "encoding": encoding(c), "width": c.width(),
             "encoded_width": c.encoded_width(), "missing": c.missing, "unknown": c.unknown,
             "categories": list(c.categories) if c.categories is not None else None,
             "max_categories": c.max_categories} for c in graph.columns.get(name, ())]


def _input(graph: Graph, name: str) -> dict[str, Any]:
    t = graph.inputs[name]
    return {"shape": list(t.shape), "dtype": t.dtype} | (
        {"columns": column_rows(graph, name)} if name in graph.columns else {})


def as_json(graph: Graph, file: str, sha256: str) -> dict[str, Any]:
    memory = {"memory": graph.memory.as_json()} if graph.memory is not None else {}  # validate's figures
    return memory | {"ok": True, "file": file, "model": graph.name, "spec_sha256": sha256,
            "inputs": {k: _input(graph, k) for k in graph.inputs},
            "outputs": {k: {"node": v, "shape": list(graph.type_of(v).shape)} for k, v in graph.outputs.items()},
            "nodes": rows(graph), "total_params": graph.total_params, "total_flops": graph.total_flops,
            "axis_sizes": graph.sizes, "bounds": recorded(graph)}


def _fmt_shape(shape: list | None) -> str:
    return "?" if shape is None else "[" + ", ".join(map(str, shape)) + "]"


def as_text(graph: Graph, after: list[str] | None = None) -> str:
    """A fixed-width table with totals, then the lines `after` (the training memory), bounds and columns."""
    header = ("node", "op", "output shape", "params", "FLOPs")
    body = [(r["node"], r["op"], _fmt_shape(r["shape"]), f"{r['params']:,}", f"{r['flops']:,}") for r in rows(graph)]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    right = (False, False, False, True, True)

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    total = ("total", "", "", f"{graph.total_params:,}", f"{graph.total_flops:,}")
    symbolic = {k: v for k, v in graph.sizes.items()}
    lines = [f"model {graph.name}", line(header), rule, *map(line, body), rule, line(total),
             f"parameters: {graph.total_params:,} ({human_bytes(graph.total_params * 4)} as float32); "
             f"FLOPs per example: {graph.total_flops:,}"
             + (f" (symbolic axes at {', '.join(f'{k}={v}' for k, v in symbolic.items())})" if symbolic else ""),
             "outputs: " + ", ".join(f"{k} {graph.type_of(v).show()}" for k, v in graph.outputs.items())]
    lines += graph.memory.lines()[:1] if graph.memory is not None else []  # the figures (the warnings: stderr)
    return "\n".join(lines + (after or []) + _bounds(graph) + _columns(graph))


def _columns(graph: Graph) -> list[str]:
    """Each tabular input's columns: name, type, encoding, features (a table under one heading line)."""
    lines = []
    for name, columns in graph.columns.items():
        rows = [(r["name"], r["type"], r["encoding"], str(r["width"])) for r in column_rows(graph, name)]
        width = sum(c.width() for c in columns)
        lines.append(f"columns of {name}: {len(columns)} columns -> {graph.inputs[name].features[0]} encoded "
                     f"values -> {width} features")
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines += ["  " + "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                  .rstrip() for r in rows]
    return lines


def _bounds(graph: Graph) -> list[str]:
    """'bounds: seq 1..1024 (layers[1] (pos): max_len = 1024, ...)': what the layers index, one line per axis."""
    lines = []
    for axis, b in recorded(graph)["axes"].items():
        span = f"{b['min']}..{b['max']}" if b["max"] is not None else f"at least {b['min']}"
        lines.append(f"bounds: {axis} {span} ({b['why']})")
    return lines
