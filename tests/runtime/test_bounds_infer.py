"""`archc infer` checks inputs against the bounds the model was validated with (recorded as archc.bounds): a
sequence longer than the position table or an id beyond the embedding is one clear input error, not an ONNX
Runtime failure inside the graph (or a one-row table broadcast silently)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from archc.errors import InputError
from archc.export import export
from archc.lower import lower
from archc.pipeline import compile_spec
from archc.runtime import Model


def gpt(max_len: int) -> dict:
    return {"archc": 1, "model": {"name": "gpt"}, "axes": {"seq": max_len},
            "inputs": {"tokens": {"shape": ["seq"], "dtype": "int64", "vocab": 64}},
            "layers": [{"id": "emb", "op": "embedding", "num_embeddings": 64, "embedding_dim": 8},
                       {"id": "pos", "op": "pos_embedding", "max_len": max_len},
                       {"id": "logits", "op": "tied_linear", "tie": "emb"}]}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    out = {}
    for max_len in (1, 12):
        r = compile_spec(gpt(max_len))
        path = tmp_path_factory.mktemp("m") / f"gpt{max_len}.onnx"
        out[max_len] = Model.open(export(r, path, module=lower(r.graph)).path)
    return out


def test_the_bounds_are_recorded(models):
    recorded = json.loads(models[12].metadata["archc.bounds"])
    assert recorded == {"axes": {"seq": {"min": 1, "max": 12, "why": "layers[1] (pos): max_len = 12, the position "
                                                                      "table's rows"}}, "vocab": {"tokens": 64}}


def test_a_sequence_beyond_the_table_is_refused(models):
    assert models[12].run({"tokens": np.zeros((2, 12), np.int64)})["logits"].shape == (2, 12, 64)
    with pytest.raises(InputError) as info:
        models[12].run({"tokens": np.zeros((2, 13), np.int64)})
    assert str(info.value).startswith("input 'tokens': expected axis 'seq' of at most 12, received 13")
    with pytest.raises(InputError):  # one row would broadcast over 3 positions: silently wrong, so refused
        models[1].run({"tokens": np.zeros((1, 3), np.int64)})


def test_ids_beyond_the_vocab_are_refused_on_every_call(models):
    ok = np.zeros((1, 4), np.int64)
    models[12].run({"tokens": ok})
    bad = ok.copy()
    bad[0, 2] = 64  # same shape as a call that passed: the values are still checked
    with pytest.raises(InputError) as info:
        models[12].run({"tokens": bad})
    assert str(info.value) == "input 'tokens': expected ids in 0..63 (the model's vocab), received 64 at example 0, " \
                              "feature 2"
