"""An ONNX that takes a row (archc.export.tabular): the preprocessing graph against Table.encode, the reference, in
ONNX Runtime, for every column type, missing rule, indicator, unknown rule and encoding; the wrapped file's metadata;
the export step that wraps a model whose metadata carries a fitted table."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from archc.data.columns import FALSE_TOKENS, MISSING_TOKENS, TRUE_TOKENS, Column, Table, fit
from archc.errors import ExportError
from archc.export import export, tabular
from archc.lower import lower
from archc.pipeline import compile_spec

N = 60


def cells_for(columns: list[Column], n: int = N, seed: int = 0) -> dict[str, list[str]]:
    """Training cells for each column: numbers with missing cells, islands, sexes, years, booleans in every form."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[str]] = {}
    for c in columns:
        if c.type == "numeric":
            out[c.name] = [f"{v:.1f}" for v in rng.normal(40.0, 6.0, n)]
        elif c.type == "boolean":
            out[c.name] = [["yes", "No", "TRUE", "0", "f", "Y"][i % 6] for i in range(n)]
        else:
            out[c.name] = [["Biscoe", "Dream", "Biscoe", "Torgersen", "Biscoe", "Dream"][i % 6] for i in range(n)]
        if c.missing != "error":
            out[c.name] = [v if i % 7 else ["NA", "", "?", "NaN", "null"][i % 5] for i, v in enumerate(out[c.name])]
    return out


def fitted(*columns: Column, name: str = "row") -> Table:
    return fit(name, list(columns), cells_for(list(columns)))


def identity(width: int, name: str = "row") -> onnx.ModelProto:
    """A core model whose output is the encoded row itself: the wrapped model's output is then the preprocessing."""
    row = helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", width])
    out = helper.make_tensor_value_info("encoded", TensorProto.FLOAT, ["batch", width])
    graph = helper.make_graph([helper.make_node("Identity", [name], ["encoded"])], "core", [row], [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    helper.set_model_props(model, {"archc.task": json.dumps({"kind": "regression", "labels": None})})
    return model


def mlp(width: int, name: str = "row", seed: int = 0) -> onnx.ModelProto:
    """A small core network (float32 weights): Gemm, Relu, Gemm to 3 logits."""
    rng = np.random.default_rng(seed)
    w1, w2 = rng.standard_normal((width, 8)).astype(np.float32), rng.standard_normal((8, 3)).astype(np.float32)
    row = helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", width])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])
    nodes = [helper.make_node("MatMul", [name, "w1"], ["h"]), helper.make_node("Relu", ["h"], ["a"]),
             helper.make_node("MatMul", ["a", "w2"], ["logits"])]
    inits = [onnx.numpy_helper.from_array(w1, "w1"), onnx.numpy_helper.from_array(w2, "w2")]
    return helper.make_model(helper.make_graph(nodes, "core", [row], [out], inits),
                             opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


COLUMNS = {
    "numeric mean": Column("x", "numeric", missing="mean"),
    "numeric median + indicator": Column("x", "numeric", missing="median", indicator=True),
    "numeric most_frequent, unscaled": Column("x", "numeric", missing="most_frequent", scale=False),
    "numeric constant": Column("x", "numeric", missing="constant", fill=-1.5, indicator=True),
    "numeric error": Column("x", "numeric"),
    "boolean most_frequent + indicator": Column("b", "boolean", missing="most_frequent", indicator=True),
    "boolean constant, scaled": Column("b", "boolean", missing="constant", fill="yes", scale=True),
    "boolean error": Column("b", "boolean"),
    "boolean mean (a fill between 0 and 1), scaled": Column("b", "boolean", missing="mean", scale=True),
    "onehot listed, ignore": Column("c", "categorical", categories=("Biscoe", "Dream"), unknown="ignore",
                                    missing="most_frequent"),
    "onehot learned, most_frequent + indicator": Column("c", "categorical", max_categories=4,
                                                        unknown="most_frequent", missing="most_frequent",
                                                        indicator=True),
    "onehot constant fill (a category of its own)": Column("c", "categorical", max_categories=4, unknown="ignore",
                                                           missing="constant", fill="unknown-island"),
    "onehot listed, fill not listed": Column("c", "categorical", categories=("Dream", "Torgersen"),
                                             unknown="ignore", missing="most_frequent"),
    "onehot error": Column("c", "categorical", max_categories=3),
    "embedding ignore + indicator": Column("c", "categorical", max_categories=3, encode="embedding", dim=2,
                                           unknown="ignore", missing="most_frequent", indicator=True),
    "embedding most_frequent": Column("c", "categorical", categories=("Dream", "Biscoe", "Torgersen"),
                                      encode="embedding", dim=4, unknown="most_frequent", missing="most_frequent"),
}


@pytest.mark.parametrize("case", list(COLUMNS))
def test_each_column_rule_matches_table_encode(case):
    """The graph's encoded row equals Table.encode, bit for bit (float64 arithmetic, one rounding to float32 in
    both), on cells with missing tokens in many cases, every category, an unseen one and every boolean spelling
    (where the column accepts them); the checker passes it in full."""
    table = fitted(COLUMNS[case])
    wrapped = tabular.wrap(identity(table.width()), table)
    onnx.checker.check_model(wrapped, full_check=True)
    cells = tabular.sample_cells(table, rows=200, seed=3)
    (got,) = run(wrapped, tabular.feeds(table, cells))
    np.testing.assert_array_equal(got, table.encode(cells))
    assert got.shape == (len(cells[table.names()[0]]), table.width()) and len(got) >= 200


def test_every_column_kind_together_in_layout_order_through_a_network():
    """All the rules in one table: the wrapped network on raw cells == Table.encode + the core network (ORT)."""
    table = fitted(*(Column(f"col{i}", c.type, **{k: getattr(c, k) for k in (
        "missing", "fill", "indicator", "scale", "encode", "dim", "categories", "max_categories", "unknown")})
        for i, c in enumerate(COLUMNS.values()) if c.missing != "error"))
    core = mlp(table.width())
    wrapped = tabular.wrap(core, table)
    worst, cells = tabular.check(wrapped, core.SerializeToString(), table, rows=300)  # ExportError beyond 1e-5
    (ref,) = run(core, {"row": table.encode(cells)})
    assert worst <= 1e-5 * np.abs(ref).max()  # float32 rounding: the logits reach ~50 here
    assert {v for c in cells.values() for v in c} >= {"NA", "", "?", tabular.UNSEEN, "TRUE", "nO"}


def test_columns_of_a_large_mean_keep_their_digits():
    """A year (~2008, std ~0.8), a mass (~4200) and a timestamp (~1.7e9, std ~100 s): float32 cells and float32
    statistics would differ from Table.encode by ~1e-4 in the encoded year (the parity failure of a penguins run)
    and lose the timestamp's spread altogether; the graph standardizes in float64 as the reference does, so the
    encoded rows are identical and a trained-size network over them matches within the tolerance."""
    rng = np.random.default_rng(1)
    cols = [Column("year", "numeric", missing="mean"), Column("mass", "numeric", missing="median", indicator=True),
            Column("seen", "numeric")]
    train = {"year": [str(v) for v in rng.integers(2007, 2010, N)],
             "mass": [f"{v:.0f}" if i % 9 else "NA" for i, v in enumerate(rng.normal(4200, 800, N))],
             "seen": [f"{v:.3f}" for v in 1.7e9 + rng.normal(0, 100, N)]}
    table = fit("row", cols, train)
    cells = tabular.sample_cells(table, rows=500, seed=5)
    (got,) = run(tabular.wrap(identity(table.width()), table), tabular.feeds(table, cells))
    ref = table.encode(cells)
    np.testing.assert_array_equal(got, ref)
    assert np.std(ref[:, 3]) > 0.5  # the timestamps' spread survived standardizing
    year, kept = tabular.feeds(table, cells)["year"][:, 0], table.columns[0]
    f32 = (year.astype(np.float32) - np.float32(kept.mean)) / np.float32(kept.std)
    present = ~np.isnan(year)  # what float32 arithmetic would have given: beyond 1e-5 * |row|
    assert np.abs(f32[present] - ref[present, 0]).max() > 4e-5
    core = mlp(table.width())
    for init in core.graph.initializer:  # trained-size weights amplify any difference in the row
        init.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(init) * 8, init.name))
    worst, _ = tabular.check(tabular.wrap(core, table), core.SerializeToString(), table, rows=500)
    assert worst == 0.0


def test_spellings_are_exactly_python_lower():
    """Every case spelling of the tokens and nothing else: `s.lower() in TOKENS` for each one."""
    for tokens, count in ((MISSING_TOKENS, 50), (TRUE_TOKENS, 30), (FALSE_TOKENS, 42)):
        spelled = tabular.spellings(sorted(tokens))
        assert len(spelled) == count == len(set(spelled))
        assert {s.lower() for s in spelled} == set(tokens)


def test_what_the_graph_does_with_cells_the_reference_refuses():
    """A graph cannot raise: an unknown category under unknown = "error" encodes as under "ignore" (all zeros; the
    reserved embedding index), a missing number under missing = "error" and a boolean that is no token give NaN."""
    onehot = fitted(Column("c", "categorical", max_categories=3))
    (got,) = run(tabular.wrap(identity(onehot.width()), onehot), {"c": np.array([["Mars"], ["Dream"]], object)})
    assert got.tolist() == [[0, 0, 0], [0, 1, 0]]  # Biscoe, Dream, Torgersen by frequency
    emb = fitted(Column("c", "categorical", max_categories=3, encode="embedding", dim=2))
    (got,) = run(tabular.wrap(identity(emb.width()), emb), {"c": np.array([["Mars"], ["NA"]], object)})
    assert got.tolist() == [[3.0], [3.0]]
    num = fitted(Column("x", "numeric"), Column("b", "boolean"))
    (got,) = run(tabular.wrap(identity(num.width()), num),
                 {"x": np.array([[np.nan]], np.float64), "b": np.array([["maybe"]], object)})
    assert np.isnan(got).all()


def test_categories_are_case_sensitive_tokens_are_not():
    table = fitted(Column("c", "categorical", categories=("Dream", "dream"), unknown="ignore", missing="constant",
                          fill="Dream", indicator=True))
    (got,) = run(tabular.wrap(identity(table.width()), table),
                 {"c": np.array([["Dream"], ["dream"], ["NULL"], ["nUlL"], ["DREAM"]], object)})
    assert got.tolist() == [[1, 0, 0], [0, 1, 0], [1, 0, 1], [1, 0, 1], [0, 0, 0]]


def test_metadata_inputs_and_columns():
    """One input per column, named as the column, float64 or string [batch, 1]; archc.inputs lists them with their
    types, archc.columns is the table, the core's own archc.* entries stay."""
    table = fitted(Column("bill", "numeric", missing="median"), Column("island", "categorical", max_categories=3,
                                                                       unknown="ignore"),
                   Column("alive", "boolean"))
    wrapped = tabular.wrap(identity(table.width()), table)
    sess = ort.InferenceSession(wrapped.SerializeToString(), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type, i.shape) for i in sess.get_inputs()] == [
        ("bill", "tensor(double)", ["batch", 1]), ("island", "tensor(string)", ["batch", 1]),
        ("alive", "tensor(string)", ["batch", 1])]
    meta = sess.get_modelmeta().custom_metadata_map
    assert json.loads(meta["archc.inputs"]) == {
        "bill": {"shape": ["batch", 1], "dtype": "float64", "column": "numeric"},
        "island": {"shape": ["batch", 1], "dtype": "str", "column": "categorical"},
        "alive": {"shape": ["batch", 1], "dtype": "str", "column": "boolean"}}
    assert Table.from_json(json.loads(meta["archc.columns"])) == table
    assert json.loads(meta["archc.task"])["kind"] == "regression"
    assert json.loads(meta["archc.encoded_input"]) == {"name": "row", "shape": ["batch", 5], "dtype": "float32"}


def test_a_column_named_like_a_core_value_and_one_named_like_an_output():
    """The core's input and internal values give way to a column of their name; a graph output cannot."""
    table = fitted(Column("row", "numeric", missing="mean"), Column("w1", "numeric", missing="mean"))
    core = mlp(table.width())
    wrapped = tabular.wrap(core, table)
    onnx.checker.check_model(wrapped, full_check=True)
    assert tabular.check(wrapped, core.SerializeToString(), table)[0] <= 1e-5
    clash = fitted(Column("logits", "numeric", missing="mean"))
    with pytest.raises(ExportError, match="column 'logits': expected column names other than the model's outputs"):
        tabular.wrap(mlp(clash.width()), clash)


def test_a_core_of_another_width_is_refused():
    table = fitted(Column("x", "numeric", missing="mean"))
    with pytest.raises(ExportError, match=r"input 'row': expected the encoded row \[batch, 1\]"):
        tabular.wrap(mlp(5), table)


def test_a_recorded_row_standardization_moves_into_the_graph():
    """archc.preprocess of the tabular input (what `archc infer` applied to the row) becomes nodes, and leaves the
    metadata, so no client applies it twice."""
    table = fitted(Column("x", "numeric", missing="mean"), Column("y", "numeric", missing="mean", scale=False))
    core = identity(table.width())
    helper.set_model_props(core, {"archc.preprocess": json.dumps({"row": {"mean": [0.5, 2.0], "std": [2.0, 4.0]}})})
    wrapped = tabular.wrap(core, table)
    cells = tabular.sample_cells(table)
    (got,) = run(wrapped, tabular.feeds(table, cells))
    np.testing.assert_allclose(got, (table.encode(cells) - [0.5, 2.0]) / [2.0, 4.0], atol=1e-5)
    assert json.loads({p.key: p.value for p in wrapped.metadata_props}["archc.preprocess"]) == {}


# ---- the export step --------------------------------------------------------------------------------------------

def row_spec(width: int) -> dict:
    return {"archc": 1, "model": {"name": "rows"}, "inputs": {"row": {"shape": [width]}},
            "task": {"kind": "classification", "labels": ["a", "b", "c"]},
            "layers": [{"op": "linear", "out_features": 8, "act": "relu"}, {"op": "linear", "out_features": 3}]}


def test_export_wraps_a_model_whose_metadata_has_a_fitted_table(tmp_path):
    """export() with `columns` in its metadata writes the model that takes a row (checked against torch first, then
    against Table.encode + that model); without it, the encoded-row model as before."""
    table = fitted(Column("bill", "numeric", missing="median", indicator=True),
                   Column("island", "categorical", max_categories=3, unknown="ignore", missing="most_frequent"),
                   Column("alive", "boolean", missing="most_frequent"))
    compiled = compile_spec(row_spec(table.width()))
    module = lower(compiled.graph, seed=0)
    report = export(compiled, tmp_path / "m.onnx", module=module, extra_metadata={"columns": table.to_json()})
    assert report.row["columns"] == ["bill", "island", "alive"] and report.row["max_abs_diff"] <= 1e-5
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["bill", "island", "alive"]
    plain = export(compiled, tmp_path / "p.onnx", module=module)
    assert plain.row is None
    core = ort.InferenceSession(str(tmp_path / "p.onnx"), providers=["CPUExecutionProvider"])
    cells = {"bill": ["41.5", "NA"], "island": ["Dream", "Atlantis"], "alive": ["Yes", ""]}
    (got,) = sess.run(None, tabular.feeds(table, cells))
    (ref,) = core.run(None, {"row": table.encode(cells)})
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "p.onnx"]


def test_export_refuses_a_table_of_another_width(tmp_path):
    table = fitted(Column("bill", "numeric", missing="median"))
    compiled = compile_spec(row_spec(4))
    with pytest.raises(ExportError, match=r"expected the encoded row \[batch, 1\]"):
        export(compiled, tmp_path / "m.onnx", module=lower(compiled.graph, seed=0),
               extra_metadata={"columns": table.to_json()})
    assert list(tmp_path.iterdir()) == []


def test_fp16_variant_keeps_the_preprocessing_in_float32(tmp_path):
    """`archc quantize --fp16` of a model that takes a row: raw cells beyond fp16's range (65504) are standardized
    in float32 first, so the variant's outputs stay finite and close to the base's."""
    from archc.export import variants

    table = fitted(Column("income", "numeric", missing="median"), Column("c", "categorical", max_categories=3,
                                                                         unknown="ignore", missing="most_frequent"))
    table = Table(table.input, (dataclasses.replace(table.columns[0], mean=120_000.0, std=30_000.0),
                                table.columns[1]))
    wrapped = tabular.wrap(mlp(table.width()), table)
    onnx.save(wrapped, tmp_path / "base.onnx")
    variants.write("fp16", str(tmp_path / "base.onnx"), str(tmp_path / "half.onnx"))
    cells = tabular.sample_cells(table, rows=50)
    feeds = tabular.feeds(table, cells)
    (ref,) = run(wrapped, feeds)
    (got,) = ort.InferenceSession(str(tmp_path / "half.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, ref, atol=0.05 * np.abs(ref).max())


def test_int8_static_variant_leaves_the_preprocessing_unquantized(tmp_path):
    """Static int8 calibrates on the raw cells too: the preprocessing nodes stay float32 (excluded), only the core's
    layers get quantize/dequantize pairs."""
    from archc.export import variants

    table = fitted(Column("income", "numeric", missing="median"), Column("c", "categorical", max_categories=3,
                                                                         unknown="ignore", missing="most_frequent"))
    onnx.save(tabular.wrap(mlp(table.width()), table), tmp_path / "base.onnx")
    calibration = tabular.feeds(table, tabular.sample_cells(table, rows=64))
    variants.write("int8-static", str(tmp_path / "base.onnx"), str(tmp_path / "q.onnx"), calibration)
    q = onnx.load(tmp_path / "q.onnx")
    made = {o: n for n in q.graph.node for o in n.output}
    pre = [n for n in q.graph.node if n.name.startswith(tabular.PREFIX + "/")]
    assert pre and all(made.get(i) is None or made[i].op_type != "DequantizeLinear" for n in pre for i in n.input)
    assert any(n.op_type == "DequantizeLinear" for n in q.graph.node)


def test_archc_export_run_dir_wraps_with_the_table_the_run_recorded(tmp_path):
    """`archc export RUN_DIR` reads the table from the run's export.json (what training recorded as it started)."""
    from click.testing import CliRunner

    from archc.cli import main
    from archc.train.checkpoint import save_weights

    table = fitted(Column("bill", "numeric", missing="median"), Column("alive", "boolean", missing="most_frequent"),
                   Column("island", "categorical", max_categories=3, unknown="ignore", missing="most_frequent"))
    spec = row_spec(table.width())
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    save_weights(tmp_path / "best.safetensors", lower(compile_spec(spec).graph, seed=1), {})
    (tmp_path / "export.json").write_text(json.dumps({"labels": ["a", "b", "c"], "columns": table.to_json()}))
    r = CliRunner().invoke(main, ["export", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "takes a row: 3 column inputs (bill, alive, island); matches Table.encode + the model on " in r.output
    sess = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["bill", "alive", "island"]
    assert json.loads(sess.get_modelmeta().custom_metadata_map["archc.task"])["labels"] == ["a", "b", "c"]
