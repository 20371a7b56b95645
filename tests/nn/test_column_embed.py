"""The tabular embedding front (op column_embed) against a hand-written torch module (an nn.Embedding per
embedding column, the other values passed on, concatenated in column order), lowered and through ONNX Runtime."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from archc.data.columns import Fitted, Table
from archc.export import export
from archc.lower import lower
from archc.pipeline import compile_spec

COLUMNS = {
    "size": {"type": "numeric", "missing": "mean", "indicator": True},
    "city": {"type": "categorical", "categories": ["a", "b", "c", "d"], "encode": "embedding", "dim": 3,
             "unknown": "ignore"},
    "flag": "boolean",
    "kind": {"type": "categorical", "categories": ["x", "y"]},
    "year": {"type": "categorical", "categories": ["2007", "2008", "2009"], "encode": "embedding", "dim": 2,
             "missing": "most_frequent", "indicator": True},
}


def spec() -> dict:
    return {"archc": 1, "model": {"name": "tab"}, "inputs": {"row": {"columns": COLUMNS}},
            "layers": [{"op": "identity"}]}


class Reference(nn.Module):
    """By hand: [size, size?, city idx, flag, kind x2, year idx, year?] -> [size, size?, city x3, flag, kind x2,
    year x2, year?]."""

    def __init__(self) -> None:
        super().__init__()
        self.city = nn.Embedding(5, 3)
        self.year = nn.Embedding(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[:, 0:2], self.city(x[:, 2].long()), x[:, 3:6], self.year(x[:, 6].long()), x[:, 7:8]],
                         dim=1)


def rows() -> np.ndarray:
    """Encoded rows by the numpy reference (Table.encode), with an unknown city and missing cells."""
    from archc.language.columns import tabular
    from archc.pipeline import check_spec

    cols = tabular(check_spec(spec()))["row"]
    fitted = []
    for c in cols:
        cats = c.categories or ()
        fill = {"size": 1.5, "year": "2008"}.get(c.name)
        fitted.append(Fitted(c, cats, fill, 2.0 if c.name == "size" else 0.0, 4.0 if c.name == "size" else 1.0,
                             cats[0] if cats else None))
    table = Table("row", tuple(fitted))
    cells = {"size": ["1", "NA", "7.5", "3", "0"], "city": ["a", "d", "zzz", "b", "c"],
             "flag": ["yes", "no", "1", "0", "true"], "kind": ["x", "y", "y", "x", "x"],
             "year": ["2009", "", "2007", "2008", "NA"]}
    return table.encode(cells)


def test_front_equals_the_hand_written_module_in_torch_and_onnx(tmp_path):
    c = compile_spec(spec())
    assert c.graph.inputs["row"].shape == ("batch", 8) and c.graph.nodes[0].out.shape == ("batch", 11)
    module = lower(c.graph, seed=0)
    ref = Reference()
    front = module.get_submodule("row.columns")
    ref.city.weight.data.copy_(front.tables[0].weight.data)
    ref.year.weight.data.copy_(front.tables[1].weight.data)
    x = torch.from_numpy(rows())
    assert x[2, 2].item() == 4.0  # the unknown city: the reserved index slots()
    expected = ref(x)
    torch.testing.assert_close(module(x), expected, rtol=0, atol=0)
    c.module = module
    report = export(c, tmp_path / "tab.onnx", module=module)
    sess = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {"row": x.numpy()})
    np.testing.assert_allclose(got, expected.detach().numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("value", [-1.0, 5.0, 1e9, float("nan"), 2.4])
def test_a_value_that_is_no_index_reads_the_unknown_row(value):
    c = compile_spec({"archc": 1, "model": {"name": "t"}, "layers": [{"op": "identity"}], "inputs": {"row": {
        "columns": {"k": {"type": "categorical", "categories": ["a", "b", "c", "d"], "encode": "embedding",
                          "dim": 2}}}}})
    module = lower(c.graph, seed=0)
    table = module.get_submodule("row.columns").tables[0].weight
    out = module(torch.tensor([[value]]))
    row = 2 if value == 2.4 else 4  # a near-index rounds; anything else is the reserved unknown row
    torch.testing.assert_close(out[0], table[row])

