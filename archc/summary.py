"""The validate summary: a table of nodes with shapes, parameters and FLOPs, as text or JSON."""
from __future__ import annotations

from typing import Any

from archc.graph.bounds import recorded
from archc.graph.infer import human_bytes
from archc.graph.ir import Graph


def rows(graph: Graph) -> list[dict[str, Any]]:
    """One record per input and node."""
    out = [{"node": name, "op": "input", "from": [], "shape": list(t.shape), "dtype": t.dtype,
            "params": 0, "flops": 0} for name, t in graph.inputs.items()]
    for n in graph.nodes:
        op = n.op.name() + (f"+{n.act.name()}" if n.act else "")
        out.append({"node": n.id, "op": op, "from": n.inputs, "shape": list(n.out.shape) if n.out else None,
                    "dtype": n.out.dtype if n.out else None, "params": n.num_params, "flops": n.flops})
    return out


def as_json(graph: Graph, file: str, sha256: str) -> dict[str, Any]:
    return {"ok": True, "file": file, "model": graph.name, "spec_sha256": sha256,
            "inputs": {k: {"shape": list(t.shape), "dtype": t.dtype} for k, t in graph.inputs.items()},
            "outputs": {k: {"node": v, "shape": list(graph.type_of(v).shape)} for k, v in graph.outputs.items()},
            "nodes": rows(graph), "total_params": graph.total_params, "total_flops": graph.total_flops,
            "axis_sizes": graph.sizes, "bounds": recorded(graph)}


def _fmt_shape(shape: list | None) -> str:
    return "?" if shape is None else "[" + ", ".join(map(str, shape)) + "]"


def as_text(graph: Graph) -> str:
    """A fixed-width table with totals."""
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
    return "\n".join(lines + _bounds(graph))


def _bounds(graph: Graph) -> list[str]:
    """'bounds: seq 1..1024 (layers[1] (pos): max_len = 1024, ...)': what the layers index, one line per axis."""
    lines = []
    for axis, b in recorded(graph)["axes"].items():
        span = f"{b['min']}..{b['max']}" if b["max"] is not None else f"at least {b['min']}"
        lines.append(f"bounds: {axis} {span} ({b['why']})")
    return lines
