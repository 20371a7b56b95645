"""Ops declare how they treat sequence positions (`Op.positions`), and the KV-cache export trusts it: check the
declaration against the op's own torch module on every conformance example with a sequence axis."""
from __future__ import annotations

import pytest
import torch

from archc.ops import REGISTRY
from archc.ops.base import TensorType

KINDS = {"each", "offset", "attention", "bias", "mixed"}
CASES = [(name, i, ex) for name, cls in sorted(REGISTRY.items()) for i, ex in enumerate(cls.examples)
         if cls.positions in ("each", "offset") and ex.batched and not ex.before and len(ex.inputs) == 1
         and len(ex.inputs[0]) >= 2]


def test_every_op_declares_a_known_kind():
    for name, cls in REGISTRY.items():
        assert cls.positions in KINDS, f"op {name}: positions = {cls.positions!r}"


@pytest.mark.parametrize("name,i,ex", CASES, ids=[f"{n}-{i}" for n, i, _ in CASES])
def test_positionwise_ops_do_not_mix_positions(name, i, ex):
    """Changing positions >= t leaves the outputs at positions < t unchanged (axis 1 is the sequence)."""
    op = REGISTRY[name].model_validate({"op": name, **ex.attrs})
    if op.mixes_positions():
        pytest.skip(f"this instance says it mixes positions: {op.mixes_positions()}")
    (shape,), (dtype,) = ex.inputs, ex.dtypes()
    module = op.to_torch([TensorType(("batch", *shape), dtype)]).eval()
    dims = [3] + [ex.sizes[d] if isinstance(d, str) else d for d in shape]
    if dims[1] < 2:
        pytest.skip("one position")
    torch.manual_seed(i)
    high = ex.sizes[ex.vocab] if isinstance(ex.vocab, str) else ex.vocab
    x = torch.randint(0, high, dims) if dtype == "int64" else torch.randn(*dims)
    y = x.clone()
    t = dims[1] // 2
    y[:, t:] = torch.randint(0, high, y[:, t:].shape) if dtype == "int64" else torch.randn(y[:, t:].shape)
    with torch.no_grad():
        a, b = module(x), module(y)
    assert torch.equal(a[:, :t], b[:, :t]), f"{name}: positions before {t} changed with later ones"
    assert not torch.equal(a, b), f"{name}: the test changed nothing"


BIASES = [(name, i, ex) for name, cls in sorted(REGISTRY.items()) for i, ex in enumerate(cls.examples)
          if cls.positions == "bias" and ex.batched and len(ex.inputs) == 1]


@pytest.mark.parametrize("name,i,ex", BIASES, ids=[f"{n}-{i}" for n, i, _ in BIASES])
def test_position_biases_read_positions_only(name, i, ex):
    """A score bias from positions (`positions = "bias"`, recomputed at the cached positions) reads no value of its
    input, and its entry for a (query, key) pair does not change with the length: [H, n, n] is the top-left corner
    of [H, n + 3, n + 3]."""
    op = REGISTRY[name].model_validate({"op": name, **ex.attrs})
    (shape,) = ex.inputs
    module = op.to_torch([TensorType(("batch", *shape), "float32")]).eval()
    dims = [2] + [ex.sizes[d] if isinstance(d, str) else d for d in shape]
    torch.manual_seed(i)
    with torch.no_grad():
        a, b = module(torch.randn(*dims)), module(torch.randn(*dims))
        longer = module(torch.randn(dims[0], dims[1] + 3, *dims[2:]))
    n = dims[1]
    assert torch.equal(a, b) and torch.equal(longer[:, :n, :n], a), name
    assert a.abs().sum() > 0, f"{name}: the test compared zeros"


def test_an_op_that_mixes_positions_is_declared_so():
    """The declaration must not be a blanket 'each': ops that read along the sequence say 'mixed'."""
    for name in ("lstm", "conv1d", "mean_pool", "concat", "flatten"):
        assert REGISTRY[name].positions == "mixed", name
    assert REGISTRY["softmax"].model_validate({"op": "softmax", "dim": 1}).mixes_positions()
    assert REGISTRY["layernorm"].model_validate({"op": "layernorm", "dims": 2}).mixes_positions()
    assert REGISTRY["attention"].model_validate({"op": "attention", "num_heads": 2}).mixes_positions()
    assert not REGISTRY["attention"].model_validate({"op": "attention", "num_heads": 2, "causal": True}).mixes_positions()
