"""An ONNX model that takes a row: `Table.encode` (archc.data.columns) as ONNX nodes in front of the core model.

The core model reads the encoded row, float32 [batch, Table.width()], under the table's input name. `wrap` gives
it ONE NAMED INPUT PER COLUMN instead, as skl2onnx does for a ColumnTransformer (FloatTensorType / StringTensorType
[None, 1] per column), so a bare ONNX Runtime client scores a row by column name:

- numeric: float64 [batch, 1] (double); NaN is a missing cell.
- categorical and boolean: string [batch, 1], the cell's text with surrounding blanks stripped (as Python's
  `str.strip()`, and as archc's CSV reader gives them: the graph compares whole strings and cannot strip).

In the graph, in the table's layout order (one Concat at the end):

- numeric: missing -> the fitted fill (`Where(IsNaN(x), fill, x)`), then `(v - mean) / std` when scaled, in
  float64, then Cast to float32;
- boolean: ai.onnx.ml LabelEncoder of the true / false / missing tokens to an index into float64 [0, 1, NaN,
  fill] (Gather), then scaled and cast as numeric;
- categorical: LabelEncoder of the categories to their index (the missing tokens to the fill's own index), then
  `Equal` against 0..slots-1 (one-hot: an index outside gives all zeros) or the index as one float (embedding:
  an unknown category gives the reserved index `slots()`);
- indicator: 1.0 where the cell was missing (IsNaN, or a LabelEncoder of the missing tokens), else 0.0.

Precision: the graph computes what the reference computes. `Table.encode` parses a numeric cell to a float64, takes
`(v - mean) / std` in float64 with the fitted float64 statistics and rounds the result once to float32; so does the
graph (a float64 input, float64 constants, one Cast at the end), and the encoded rows agree bit for bit. A float32
input could not: a cell of ~2008 (a year) carries 1.2e-4 of float32 spacing, and a float32 mean another, which
standardizing by a std below 1 magnifies past the parity tolerance (and a column of timestamps around 1.7e9 with a
spread of minutes would lose its information altogether).

Case: the reference takes missing and boolean tokens in any case (`NA`, `na`, `Null`, `TRUE`). StringNormalizer
would lower-case in the graph, but ONNX Runtime builds it on a C++ locale (en_US.UTF-8 by default) that minimal
systems lack; so the LabelEncoders list every upper/lower-case spelling of each token instead (50 missing, 30 true,
42 false spellings), which is exactly Python's `text.lower() in TOKENS` for these ASCII tokens. Categories are
matched exactly (case-sensitive), as in the reference.

What a graph cannot do is raise. The reference refuses some cells (a missing cell under missing = "error", an
unknown category under unknown = "error", a boolean that is no token, a non-finite number); `archc infer` runs
`Table.encode` on the cells first and refuses them with the row and column. A bare client that passes them gets:
an unknown category under "error" encodes as under "ignore" (all zeros, or the reserved embedding index); a
missing categorical cell under missing = "error" the same; a missing numeric or boolean cell under "error", and a
boolean that is no token, NaN (so the outputs are NaN, never a confident answer).
"""
from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from archc.export.fronts import PIXELS_PREFIX, copy_model, rename_values
from archc.data.columns import FALSE_TOKENS, MISSING_TOKENS, ROW_PREFIX, TRUE_TOKENS, Fitted, Table
from archc.errors import ExportError
import archc.metadata as keys
from archc.runtime.tabular import ENCODED_KEY, feeds

if TYPE_CHECKING:
    import onnx

ML_DOMAIN = "ai.onnx.ml"
ML_OPSET = 3            # LabelEncoder-2 (strings to int64 / float), run by every ONNX Runtime archc supports
PREFIX = ROW_PREFIX     # names of the preprocessing nodes and values: archc_row/<column>/<step>
ENCODED = f"{PREFIX}/encoded"  # the encoded row, float32 [batch, Table.width()]: what the core model reads
ATOL = 1e-5             # wrapped model on raw cells vs Table.encode + the core model (both ONNX Runtime)
DTYPES = {"numeric": "float64", "categorical": "str", "boolean": "str"}  # each column's input, numpy names


def spellings(tokens: Sequence[str]) -> list[str]:
    """Every upper/lower-case spelling of each token, sorted (the graph's case-insensitive match)."""
    out: set[str] = set()
    for token in tokens:
        out.update("".join(p) for p in itertools.product(*({ch.lower(), ch.upper()} for ch in token)))
    return sorted(out)


def signature(table: Table, batch: str = "batch") -> dict[str, dict[str, Any]]:
    """The wrapped model's inputs as archc.inputs records them: {column: {shape, dtype, column type}}."""
    return {f.name: {"shape": [batch, 1], "dtype": DTYPES[f.column.type], "column": f.column.type}
            for f in table.columns}


# ---- the preprocessing graph ------------------------------------------------------------------------------------

class _Nodes:
    """Nodes and constants of the preprocessing graph, named archc_row/<column>/<step>."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []

    def add(self, column: str, step: str, op: str, inputs: list[str], domain: str = "", **attrs: Any) -> str:
        from onnx import helper

        name = f"{PREFIX}/{column}/{step}"
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, domain=domain, **attrs))
        return name

    def const(self, column: str, step: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        return self.add(column, step, "Constant", [], value=numpy_helper.from_array(value, f"{PREFIX}/{column}/{step}"))

    def labels(self, column: str, step: str, x: str, keys: list[str], values: list, default: Any) -> str:
        """ai.onnx.ml LabelEncoder of strings to int64 (int values) or float32."""
        if len(set(keys)) != len(keys):
            raise ExportError(f"column {column!r}: the preprocessing graph's {step} needs distinct keys, received "
                              f"a key twice (a category spelled as a missing or boolean token)")
        ints = all(isinstance(v, int) for v in values) and isinstance(default, int)
        kind = "int64" if ints else "float"
        return self.add(column, step, "LabelEncoder", [x], domain=ML_DOMAIN, keys_strings=keys,
                        **{f"values_{kind}s": [int(v) if ints else float(v) for v in values],
                           f"default_{kind}": int(default) if ints else float(default)})


def _scaled(n: _Nodes, f: Fitted, v: str) -> str:
    """The column's float32 value of its float64 value v: `(v - mean) / std` in float64 when the column is scaled,
    with the fitted statistics as float64 constants (what Table.encode computes), then one rounding to float32."""
    if f.column.scaled():
        mean = n.const(f.name, "mean", np.array(f.mean, dtype=np.float64))
        std = n.const(f.name, "std", np.array(f.std, dtype=np.float64))
        v = n.add(f.name, "scaled", "Div", [n.add(f.name, "centred", "Sub", [v, mean]), std])
    return n.add(f.name, "value", "Cast", [v], to=1)  # 1: FLOAT


def _numeric(n: _Nodes, f: Fitted) -> list[str]:
    """[value] or [value, indicator] of a numeric column (float64 [N, 1] input, NaN missing)."""
    nan = n.add(f.name, "is_missing", "IsNaN", [f.name])
    v = f.name
    if f.fill is not None:
        fill = n.const(f.name, "fill", np.array(float(f.fill), dtype=np.float64))
        v = n.add(f.name, "imputed", "Where", [nan, fill, f.name])
    out = [_scaled(n, f, v)]
    if f.column.indicator:
        out.append(n.add(f.name, "indicator", "Cast", [nan], to=1))  # 1: FLOAT
    return out


def _indicator(n: _Nodes, f: Fitted) -> list[str]:
    """1.0 where a string cell is a missing token (any case), else 0.0; nothing without indicator = true."""
    if not f.column.indicator:
        return []
    keys = spellings(sorted(MISSING_TOKENS))
    return [n.labels(f.name, "indicator", f.name, keys, [1.0] * len(keys), 0.0)]


def _boolean(n: _Nodes, f: Fitted) -> list[str]:
    """[value] or [value, indicator] of a boolean column: the tokens to 1 / 0, missing to the fill, else NaN (a
    LabelEncoder to an index into float64 [0, 1, NaN, fill], so the fill keeps its float64 digits, as in the
    reference), scaled like a numeric column."""
    true, false = spellings(sorted(TRUE_TOKENS)), spellings(sorted(FALSE_TOKENS))
    keys, values = true + false, [1] * len(true) + [0] * len(false)
    table = [0.0, 1.0, float("nan")]
    if f.fill is not None:
        missing = spellings(sorted(MISSING_TOKENS))
        keys, values = keys + missing, values + [3] * len(missing)
        table.append(float(f.fill))
    index = n.labels(f.name, "index", f.name, keys, values, 2)
    v = n.add(f.name, "number", "Gather", [n.const(f.name, "numbers", np.array(table, dtype=np.float64)), index])
    return [_scaled(n, f, v)] + _indicator(n, f)


def unknown_index(f: Fitted) -> int:
    """The reference's index of an unknown category: the most frequent's, or -1 (none: "ignore", and "error",
    which a graph cannot raise; archc infer refuses it before the run)."""
    if f.column.unknown == "most_frequent" and f.most_frequent is not None:
        return f.categories.index(f.most_frequent)
    return -1


def category_index(f: Fitted, text: str) -> int:
    """The reference's index of a (present) category text: its place, else the unknown rule's."""
    return f.categories.index(text) if text in f.categories else unknown_index(f)


def _categorical(n: _Nodes, f: Fitted) -> list[str]:
    """The one-hot values or the embedding index of a categorical column, then its indicator."""
    unknown = unknown_index(f)
    keys, values = list(f.categories), list(range(len(f.categories)))
    missing = spellings(sorted(MISSING_TOKENS))
    fill = category_index(f, str(f.fill)) if f.fill is not None else unknown  # missing under "error": as unknown
    keys, values = keys + missing, values + [fill] * len(missing)
    slots = f.column.slots()
    if f.column.embeds():
        idx = n.labels(f.name, "index", f.name, keys, [v if v >= 0 else slots for v in values],
                       unknown if unknown >= 0 else slots)
        own = n.add(f.name, "value", "Cast", [idx], to=1)
    else:
        idx = n.labels(f.name, "index", f.name, keys, values, unknown)
        every = n.const(f.name, "slots", np.arange(slots, dtype=np.int64))
        own = n.add(f.name, "onehot", "Cast", [n.add(f.name, "equal", "Equal", [idx, every])], to=1)
    return [own] + _indicator(n, f)


ENCODERS = {"numeric": _numeric, "boolean": _boolean, "categorical": _categorical}


def preprocessing(table: Table, output: str) -> tuple[list["onnx.ValueInfoProto"], list["onnx.NodeProto"]]:
    """The column inputs and the nodes computing `Table.encode` of them into `output`, float32 [N, width]."""
    from onnx import TensorProto, helper

    n = _Nodes()
    parts: list[str] = []
    for f in table.columns:
        parts += ENCODERS[f.column.type](n, f)
    n.nodes.append(helper.make_node("Concat", parts, [output], name=f"{PREFIX}/concat", axis=1))
    kinds = {"numeric": TensorProto.DOUBLE, "categorical": TensorProto.STRING, "boolean": TensorProto.STRING}
    inputs = [helper.make_tensor_value_info(f.name, kinds[f.column.type], ["batch", 1]) for f in table.columns]
    return inputs, n.nodes


# ---- the wrapped model ------------------------------------------------------------------------------------------

def wrap(core: "onnx.ModelProto", table: Table) -> "onnx.ModelProto":
    """`core` (reading the encoded row under `table.input`) with the preprocessing graph in front: one input per
    column; its archc.* metadata kept, archc.inputs the column inputs and archc.columns the table."""
    import json

    import onnx
    from onnx import helper

    core = copy_model(core)
    row = next((i for i in core.graph.input if i.name == table.input), None)
    if row is None:
        raise ExportError(f"expected the model to read the tabular input {table.input!r}, received inputs "
                          f"{[i.name for i in core.graph.input]}")
    dims = row.type.tensor_type.shape.dim
    batch = dims[0].dim_param or "batch" if dims else "batch"
    if len(dims) != 2 or (dims[1].HasField("dim_value") and dims[1].dim_value != table.width()):
        shown = [d.dim_param or d.dim_value for d in dims]
        raise ExportError(f"input {table.input!r}: expected the encoded row [{batch}, {table.width()}] of the "
                          f"fitted columns, received {shown}")
    _free_names(core, table)
    row = next(i for i in core.graph.input if i.name in (table.input, _renamed(table.input)))
    meta = {p.key: p.value for p in core.metadata_props}
    pre = json.loads(meta.get(keys.PREPROCESS, "{}") or "{}")
    inputs, nodes = preprocessing(table, ENCODED)
    if table.input in pre:  # a standardization `archc infer` applied to the row: now the graph's
        nodes += _standardized(pre.pop(table.input), ENCODED, row.name)
        meta[keys.PREPROCESS] = json.dumps(pre)
    else:
        rename_values(core.graph, {row.name: ENCODED})
    for i in inputs:
        i.type.tensor_type.shape.dim[0].dim_param = batch
    encoded = onnx.ValueInfoProto()
    encoded.CopyFrom(row)
    encoded.name = ENCODED
    others = [i for i in core.graph.input if i.name not in (ENCODED, row.name)]
    graph = helper.make_graph(nodes + list(core.graph.node), core.graph.name, inputs + others,
                              list(core.graph.output), list(core.graph.initializer), doc_string=core.graph.doc_string,
                              value_info=list(core.graph.value_info) + [encoded] + ([row] if row.name != ENCODED else []))
    opsets = [o for o in core.opset_import if o.domain != ML_DOMAIN] + [helper.make_opsetid(ML_DOMAIN, ML_OPSET)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=core.ir_version,
                              producer_name=core.producer_name, producer_version=core.producer_version,
                              doc_string=core.doc_string)
    meta[keys.INPUTS] = json.dumps(signature(table, batch))
    meta[keys.COLUMNS] = json.dumps(table.to_json())
    meta[ENCODED_KEY] = json.dumps({"name": table.input, "shape": [batch, table.width()],
                                              "dtype": "float32"})
    helper.set_model_props(model, meta)
    return model



def _renamed(name: str) -> str:
    return f"{PREFIX}/core/{name}"


def _free_names(core: "onnx.ModelProto", table: Table) -> None:
    """Rename the core's values that a column input takes (or that start with PREFIX); a graph output cannot be."""
    outputs = {o.name for o in core.graph.output}
    others = {i.name for i in core.graph.input} - {table.input}
    taken = set(table.names())
    for clash, what in ((taken & outputs, "outputs"), (taken & others, "other inputs")):
        if clash:  # validate refuses these (archc.graph.tabular.clashes): a table from elsewhere may not be checked
            raise ExportError(f"column {sorted(clash)[0]!r}: expected column names other than the model's {what} "
                              f"{sorted(outputs if what == 'outputs' else others)}, received one named like one",
                              hint="rename it or the column, in the spec and the CSV header")
    reserved = sorted(n for n in taken if n.startswith(PREFIX + "/"))
    if reserved:
        raise ExportError(f"column {reserved[0]!r}: expected column names that do not start with '{PREFIX}/' (the "
                          f"preprocessing values' names), received one that does")
    g = core.graph
    names = {v for n in g.node for v in (*n.input, *n.output)} | {t.name for t in g.initializer} \
        | {i.name for i in g.input} | {v.name for v in g.value_info}
    mapping = {v: _renamed(v) for v in names if v in taken or v.startswith(PREFIX + "/")}
    if mapping:
        rename_values(g, mapping)



def _standardized(stats: dict, x: str, out: str) -> list["onnx.NodeProto"]:
    """`(x - mean) / std` of the encoded row (an archc.preprocess entry that `archc infer` used to apply)."""
    from onnx import helper

    n = _Nodes()
    mean = n.const("encoded", "mean", np.asarray(stats.get("mean", 0.0), dtype=np.float32))
    std = n.const("encoded", "std", np.asarray(stats.get("std", 1.0), dtype=np.float32))
    centred = n.add("encoded", "centred", "Sub", [x, mean])
    n.nodes.append(helper.make_node("Div", [centred, std], [out], name=f"{PREFIX}/encoded/scaled"))
    return n.nodes


# ---- parity with the reference ----------------------------------------------------------------------------------

UNSEEN = "archc-unseen-category"  # a category no training split holds


def sample_cells(table: Table, rows: int = 64, seed: int = 0) -> dict[str, list[str]]:
    """At least `rows` rows of raw cells the reference accepts, exercising every rule of every column: numbers
    around the fitted mean, missing tokens in several cases (where the column fills them), every boolean token
    spelling, every category, an unseen category (unless unknown = "error"); as text, as a CSV gives them. Every
    value of each column's pool occurs (so there are more rows when a pool is larger)."""
    rng = np.random.default_rng(seed)
    missing = ["", "NA", "na", "N/A", "NaN", "nan", "null", "NULL", "None", "?"]
    pools: dict[str, list[str]] = {}
    for f in table.columns:
        c = f.column
        if c.type == "numeric":
            pool = [f"{v:.2f}" for v in f.mean + f.std * rng.standard_normal(rows)]
        elif c.type == "boolean":
            pool = spellings(sorted(TRUE_TOKENS)) + spellings(sorted(FALSE_TOKENS))
        else:
            pool = list(f.categories) + ([UNSEEN] if c.unknown != "error" else [])
        pools[f.name] = pool + (missing if f.fill is not None else [])
    n = max([rows, *map(len, pools.values())])
    return {name: [pool[i % len(pool)] for i in rng.permutation(n)] for name, pool in pools.items()}


def check(wrapped: "onnx.ModelProto", core: str | bytes, table: Table, rows: int = 64,
          seed: int = 0) -> tuple[float, dict[str, list[str]]]:
    """The wrapped model on raw cells against Table.encode + the core model, both in ONNX Runtime (CPU): the encoded
    row itself and every output; returns the max abs difference and the cells. ExportError beyond ATOL (relative
    to the values' size)."""
    from onnx import helper

    from archc.runtime.session import check_session

    cells = sample_cells(table, rows, seed)
    probe = copy_model(wrapped)  # the encoded row as an extra output: compared before the layers can hide a difference
    probe.graph.output.append(helper.make_tensor_value_info(ENCODED, 1, None))
    try:
        a = check_session(probe.SerializeToString())
        b = check_session(core)
        encoded = table.encode(cells, where="the parity check")
        *got, row = a.run(None, feeds(table, cells))
        ref = b.run(None, {table.input: encoded})
    except Exception as e:  # onnxruntime raises its own exception types
        raise ExportError(f"ONNX Runtime cannot run the model that takes a row: {str(e).splitlines()[0][:300]}") \
            from e
    worst = 0.0
    names = [o.name for o in a.get_outputs()]
    for name, g, r in zip(names, [*got, row], [*ref, encoded]):
        diff = float(np.max(np.abs(np.asarray(g, np.float64) - r))) if r.size else 0.0
        bound = ATOL * max(1.0, float(np.max(np.abs(r))) if r.size else 0.0)
        if not diff <= bound:  # NaN too
            raise ExportError(f"{'the encoded row' if name == ENCODED else f'output {name!r}'}: expected the "
                              f"model that takes a row to match Table.encode + the core model within {bound:.1e}, "
                              f"received a max abs difference of {diff:.3e}")
        worst = max(worst, diff)
    return worst, cells


# ---- the export step --------------------------------------------------------------------------------------------

def fitted_table(columns: Any, large: bool = False) -> Table | None:
    """The fitted table the training data gave (archc.metadata.Facts.columns: the Table itself, Table.to_json, or
    its JSON text); None for a model without one."""
    import json

    if columns is None:
        return None
    try:
        table = columns if isinstance(columns, Table) else \
            Table.from_json(json.loads(columns) if isinstance(columns, str) else columns)
    except (ValueError, KeyError, TypeError) as e:
        raise ExportError(f"metadata 'columns': expected a fitted table (Table.to_json), received one that does "
                          f"not read ({type(e).__name__}: {e})") from None
    if large:
        raise ExportError("a model that takes a row: expected weights under 2 GB (one file), received more",
                          hint="tabular models of this size are not supported")
    return table


def describe(row: dict[str, Any] | None) -> str:
    """One line for the CLI and the training log about a model that takes a row ('' for any other model)."""
    if not row:
        return ""
    return (f"takes a row: {len(row['columns'])} column inputs ({', '.join(row['columns'])}); matches Table.encode + "
            f"the model on {row['rows']} rows: max abs diff {row['max_abs_diff']:.2e}")


def takes_a_row(core: "onnx.ModelProto", core_blob: bytes, table: Table) -> tuple[bytes, dict[str, Any]]:
    """The core model (checked against torch, serialized as `core_blob`) wrapped to take a row, checked by
    onnx.checker (full) and against Table.encode + the core in ONNX Runtime: its bytes, and what to report."""
    import onnx

    wrapped = wrap(core, table)
    try:
        onnx.checker.check_model(wrapped, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"onnx.checker rejected the model that takes a row: {str(e).splitlines()[0]}") from e
    worst, cells = check(wrapped, core_blob, table)
    return wrapped.SerializeToString(), {"columns": table.names(), "max_abs_diff": worst,
                                         "rows": len(next(iter(cells.values()), []))}


def _in_front(node: "onnx.NodeProto") -> bool:
    """Whether a node is preprocessing in front of the network: a row's (archc_row/) or pixels' (archc_pixels/)."""
    return node.name.startswith((PREFIX + "/", PIXELS_PREFIX + "/"))


def preprocessing_nodes(path: str) -> list[str]:
    """The names of a model file's preprocessing nodes (none unless it takes a row or pixels)."""
    import onnx

    return [n.name for n in onnx.load(path, load_external_data=False).graph.node if _in_front(n)]


def around_core(model: "onnx.ModelProto", transform: Any) -> "onnx.ModelProto":
    """`transform(core)` of a model that takes a row or pixels, with its preprocessing put back in front unchanged
    (an fp16 conversion must not see raw cells: 120,000 overflows float16 before it is standardized);
    `transform(model)` of any other model."""
    g = model.graph
    pre = [n for n in g.node if _in_front(n)]
    if not pre:
        return transform(model)
    made = {v for n in pre for v in n.output}
    core = copy_model(model)
    del core.graph.node[:]
    core.graph.node.extend(n for n in g.node if not _in_front(n))
    read = [v for n in core.graph.node for v in n.input if v in made]
    typed = {v.name: v for v in g.value_info}
    columns = {v for n in pre for v in n.input}
    del core.graph.input[:]
    core.graph.input.extend([typed[v] for v in dict.fromkeys(read)] + [i for i in g.input if i.name not in columns])
    out = transform(core)
    inputs = [i for i in g.input if i.name in columns] + [i for i in out.graph.input if i.name not in made]
    del out.graph.input[:]
    out.graph.input.extend(inputs)
    nodes = pre + list(out.graph.node)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    if not any(o.domain == ML_DOMAIN for o in out.opset_import):
        out.opset_import.append(onnx_opset(ML_DOMAIN, ML_OPSET))
    return out


def onnx_opset(domain: str, version: int) -> "onnx.OperatorSetIdProto":
    from onnx import helper

    return helper.make_opsetid(domain, version)
