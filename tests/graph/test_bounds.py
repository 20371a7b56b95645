"""Axis bounds are a graph fact: what ops index (position tables, embedding rows, select/slice positions, edge
indices) is collected per symbol and per int64 input, and validate checks [axes] and vocab against it."""
from __future__ import annotations

import pytest

from archc.errors import ArchcError
from archc.pipeline import compile_spec


def lm(seq: int | None, max_len: int, vocab: int | str | None = 256, rows: int = 256, between: tuple = ()) -> dict:
    """A GPT-shaped bare architecture: embedding, learned positions, causal attention, tied projection."""
    tokens = {"shape": ["seq"], "dtype": "int64"} | ({"vocab": vocab} if vocab is not None else {})
    spec = {"archc": 1, "model": {"name": "lm"}, "inputs": {"tokens": tokens},
            "layers": [*between, {"id": "emb", "op": "embedding", "num_embeddings": rows, "embedding_dim": 8},
                       {"id": "pos", "op": "pos_embedding", "max_len": max_len},
                       {"op": "attention", "num_heads": 2, "causal": True},
                       {"id": "logits", "op": "tied_linear", "tie": "emb"}]}
    return spec | ({"axes": {"seq": seq}} if seq is not None else {})


def error_of(spec: dict) -> str:
    with pytest.raises(ArchcError) as info:
        compile_spec(spec, name="m.toml")
    return str(info.value)


def test_a_position_table_bounds_seq():
    g = compile_spec(lm(1024, 1024)).graph
    (limit,) = g.axis_limits["seq"]
    assert (limit.where, limit.high) == ("layers[1] (pos)", 1024)
    assert error_of(lm(1025, 1024)) == (
        "m.toml: layers[1] (pos): pos_embedding: expected axis 'seq' of at most 1024 (max_len = 1024, the position "
        "table's rows), received [axes] seq = 1025 (raise max_len, or lower [axes] seq)")


def test_without_an_axes_entry_the_default_size_fits_the_table():
    assert compile_spec(lm(None, 8)).graph.sizes["seq"] == 8        # not archc's default 32
    assert compile_spec(lm(None, 100)).graph.sizes["seq"] == 32


def test_an_input_vocab_larger_than_the_embedding_table_is_located():
    assert error_of(lm(16, 16, vocab=300)) == (
        "m.toml: layers[0] (emb): embedding: expected input 'tokens' with vocab at most 256 (num_embeddings = 256, "
        "the table's rows), received vocab = 300 (inputs.tokens.vocab) (raise num_embeddings, or declare the "
        "input's vocab within it)")


def test_ids_reach_the_table_through_shape_ops():
    """Token ids sliced before the embedding are still the input's values."""
    cut = ({"op": "slice", "start": 0, "end": -1, "id": "prev"},)
    assert "expected input 'tokens' with vocab at most 256" in error_of(lm(16, 16, vocab=257, between=cut))


def test_no_vocab_takes_the_table_size():
    g = compile_spec(lm(16, 16, vocab=None, rows=50)).graph
    assert g.vocab["tokens"] == 50


def test_a_vocab_axis_indexing_a_fixed_table_bounds_that_axis():
    spec = lm(16, 16, vocab="ids", rows=20) | {"axes": {"seq": 16, "ids": 30}}
    spec["inputs"]["tokens"]["shape"] = ["seq"]
    assert "expected axis 'ids' of at most 20 (input 'tokens' has vocab = 'ids' and num_embeddings = 20" in \
        error_of(spec)


def test_slices_and_selects_bound_from_below():
    seq = {"archc": 1, "model": {"name": "s"}, "inputs": {"x": {"shape": ["seq", 4]}}, "axes": {"seq": 3}}
    assert error_of(seq | {"layers": [{"id": "last5", "op": "select", "index": 5}]}) == (
        "m.toml: layers[0] (last5): select: expected axis 'seq' of at least 6 (index = 5), received [axes] seq = 3 "
        "(raise [axes] seq, or select another index)")
    assert "expected axis 'seq' of at least 8 (the slice [0:8])" in \
        error_of(seq | {"layers": [{"op": "slice", "start": 0, "end": 8}]})
    compile_spec(seq | {"layers": [{"op": "slice", "start": -3, "end": -2}]})  # non-empty from seq = 3
    assert "expected axis 'seq' of at least 3 (the slice [-3:-2])" in \
        error_of(seq | {"axes": {"seq": 2}, "layers": [{"op": "slice", "start": -3, "end": -2}]})


def test_a_bound_on_a_derived_axis_applies_to_its_symbol():
    """x[:, :-1] has seq - 1 positions: a table of 16 takes seq = 17, not 18."""
    cut = ({"op": "slice", "start": 0, "end": -1},)
    assert compile_spec(lm(17, 16, between=cut)).graph.sizes["seq"] == 17
    assert "expected axis 'seq-1' of at most 16 (max_len = 16, the position table's rows), received [axes] " \
           "seq = 18, so 'seq-1' = 17" in error_of(lm(18, 16, between=cut))
    assert compile_spec(lm(None, 16, between=cut)).graph.sizes["seq"] == 17  # default: as near 32 as fits


def test_bounds_no_size_meets_are_one_error():
    spec = lm(None, 16)
    spec["layers"].insert(2, {"id": "far", "op": "select", "index": 20, "dim": 1})
    spec["layers"] = spec["layers"][:3]  # emb, pos, far: pos needs seq <= 16, far needs seq >= 21
    assert "expected a size of axis 'seq' that every layer accepts" in error_of(spec)


def graph(vocab: int | str, nodes: int | str = "nodes") -> dict:
    axes = {"nodes": 30, "edges": 90} if nodes == "nodes" or vocab == "nodes" else {"edges": 90}  # [axes] sizes
    return {"archc": 1, "model": {"name": "g"}, "axes": axes,  # only the axes the spec has
            "inputs": {"x": {"shape": [nodes, 4], "batched": False},
                       "edge_index": {"shape": [2, "edges"], "dtype": "int64", "vocab": vocab, "batched": False}},
            "layers": [{"op": "gcn_conv", "from": ["x", "edge_index"], "out_features": 3}]}


def test_edge_indices_must_index_the_nodes_axis():
    compile_spec(graph("nodes"))
    assert error_of(graph("edges")) == (
        "m.toml: layers[0]: gcn_conv: expected input 'edge_index' with vocab = 'nodes' (edge_index holds node "
        "indices into the nodes axis (nodes) of the features), received vocab = 'edges' (inputs.edge_index.vocab) "
        "(declare edge_index with vocab = 'nodes')")
    assert "expected input 'edge_index' with vocab at most 5" in error_of(graph(9, nodes=5))
    compile_spec(graph(5, nodes=5))
    # a fixed vocab indexing a symbolic nodes axis: the nodes axis must hold at least that many
    assert "expected axis 'nodes' of at least 40" in error_of(graph(40))
