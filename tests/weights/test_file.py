"""The safetensors reader refuses foreign, truncated and lying files with one ModelError (exit 1), before any
allocation: the header's size, JSON, dtypes, shapes and byte ranges are checked against the file's size."""
from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from archc.cli import main
from archc.errors import ModelError
from archc.weights import check_finite, load_into, read_header

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "specs" / "digits_mlp.toml"


def _raw(path: Path, header: dict, data: bytes = b"") -> Path:
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def test_header_of_a_real_file(tmp_path):
    save_file({"a": torch.zeros(2, 3), "b": torch.ones(4, dtype=torch.int64)}, tmp_path / "ok.safetensors")
    infos = read_header(tmp_path / "ok.safetensors")
    assert {k: (v.dtype, v.shape) for k, v in infos.items()} == {"a": ("F32", (2, 3)), "b": ("I64", (4,))}


@pytest.mark.parametrize("make, says", [
    (lambda p: p.write_bytes(b"\x00\x01"), "shorter than the 8 bytes of a header's length"),
    (lambda p: p.write_bytes(struct.pack("<Q", 10**12) + b"{}"), "header of 1,000,000,000,000 bytes"),
    (lambda p: p.write_bytes(struct.pack("<Q", 4) + b"{]]]"), "not JSON"),
    (lambda p: _raw(p, {"w": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 4_000_000]}}, b"\0" * 16),
     "truncated or corrupt"),
    (lambda p: _raw(p, {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 8),
     "it needs 8"),
    (lambda p: _raw(p, {"w": {"dtype": "Q7", "shape": [1], "data_offsets": [0, 1]}}, b"\0"), "unknown dtype"),
    (lambda p: _raw(p, {"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4), "shape [-1]"),
    (lambda p: _raw(p, ["not", "a", "table"]), "not a JSON object"),
    (lambda p: p.write_bytes(pickle.dumps({"w": [1.0, 2.0]})), "expected a safetensors file"),
])
def test_bad_files_are_model_errors(tmp_path, make, says):
    path = tmp_path / "bad.safetensors"
    make(path)
    with pytest.raises(ModelError, match="expected a safetensors file") as e:
        read_header(path)
    assert says in str(e.value)


def test_a_torch_pickle_is_refused_not_unpickled(tmp_path):
    """torch.save's zip/pickle checkpoints are never opened: no code in a checkpoint runs."""
    path = tmp_path / "model.pt"
    torch.save({"fc1.weight": torch.zeros(2)}, path)
    r = CliRunner().invoke(main, ["build", str(DIGITS), "--weights", str(path), "-o", str(tmp_path / "m.onnx")])
    assert r.exit_code == 1, r.output
    assert "expected a safetensors file" in r.output and "never pickle" in r.output
    assert not (tmp_path / "m.onnx").exists()


def test_missing_file_and_directory(tmp_path):
    for path, says in ((tmp_path / "nope.safetensors", "cannot read"),
                       (tmp_path, "expected a folder holding model.safetensors.index.json or one .safetensors file, "
                                  "received neither")):
        r = CliRunner().invoke(main, ["build", str(DIGITS), "--weights", str(path)])
        assert r.exit_code == 1 and says in r.output, r.output
        assert "Traceback" not in r.output


def test_own_naming_round_trip(tmp_path):
    """Without a mapping the file is in the spec's own naming: an archc checkpoint loads back exactly."""
    from archc import compile as compile_module
    from archc.train.checkpoint import save_weights

    a, b = compile_module(str(DIGITS)), compile_module(str(DIGITS))
    with torch.no_grad():
        for p in a.parameters():
            p.add_(1.5)
    save_weights(tmp_path / "w.safetensors", a, {"step": 1})
    loaded = load_into(b, tmp_path / "w.safetensors")
    assert loaded.tensors == len(a.state_dict()) and loaded.dropped == 0
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), k


def test_map_without_weights_is_a_usage_error(tmp_path):
    r = CliRunner().invoke(main, ["build", str(DIGITS), "--map", "m.toml"])
    assert r.exit_code == 2 and "--map names the mapping" in r.output


def test_a_torch_sequential_with_batchnorm_buffers_loads_through_a_mapping(tmp_path):
    """A torch module's own naming (nn.Sequential indices), its BatchNorm buffers included (running stats and
    the 0-d int64 num_batches_tracked), loads through renames and gives the reference's outputs."""
    from archc import compile as compile_module

    torch.manual_seed(0)
    ref = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 3))
    ref.train()(torch.randn(16, 1, 8, 8))  # running statistics off their init
    ref.eval()
    save_file(ref.state_dict(), tmp_path / "ref.safetensors")
    renames = {"0": "conv", "1": "bn", "4": "fc"}
    rules = "".join(f'[[map]]\nfrom = "{k}"\nto = "{renames[k.split(".")[0]]}.{k.split(".", 1)[1]}"\n'
                    for k in ref.state_dict())
    (tmp_path / "map.toml").write_text("archc_weights = 1\n" + rules)
    spec = {"archc": 1, "model": {"name": "cbr"}, "inputs": {"x": {"shape": [1, 8, 8]}},
            "layers": [{"id": "conv", "op": "conv2d", "out_channels": 4, "kernel_size": 3},
                       {"id": "bn", "op": "batchnorm", "act": "relu"}, {"op": "flatten"},
                       {"id": "fc", "op": "linear", "out_features": 3}]}
    model = compile_module(spec)
    loaded = load_into(model, tmp_path / "ref.safetensors", tmp_path / "map.toml")
    assert loaded.tensors == 9 and int(model.bn.num_batches_tracked) == 1
    x = torch.randn(5, 1, 8, 8)
    assert torch.allclose(model.eval()(x), ref(x), atol=1e-6)


def test_an_unreadable_mapping_is_a_user_error(tmp_path):
    from archc import compile as compile_module
    from archc.train.checkpoint import save_weights

    save_weights(tmp_path / "w.safetensors", compile_module(str(DIGITS)), {})
    (tmp_path / "bad.toml").write_text("archc_weights = 1\n[[map]\nfrom = 'a'\n")
    for mapping, says in ((tmp_path / "bad.toml", "expected a TOML weights mapping"),
                          (tmp_path / "none.toml", "cannot read")):
        r = CliRunner().invoke(main, ["build", str(DIGITS), "--weights", str(tmp_path / "w.safetensors"),
                                      "--map", str(mapping)])
        assert r.exit_code == 1 and f"error: {mapping}: {says}" in r.output, r.output


def test_a_header_that_names_a_tensor_twice_is_refused(tmp_path):
    """JSON keeps the last of two equal keys, so which bytes are "the" tensor would be a guess."""
    text = b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, ' \
           b'"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}'
    path = tmp_path / "twice.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"\0" * 8)
    with pytest.raises(ModelError, match="a header that declares 'w' twice"):
        read_header(path)


FLOATS = [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.float8_e5m2, torch.float8_e4m3fn]


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_nonfinite_values_are_counted_in_every_float_format(tmp_path, monkeypatch, dtype):
    """The torch-free scan of the file's bits counts what torch.isnan/isinf count, chunk by chunk, and names the
    tensor; the finite values of a format (its largest, its smallest, -0, subnormals) pass."""
    import archc.weights.file as file

    monkeypatch.setattr(file, "CHUNK", 7)  # several chunks, the last one short
    info = torch.finfo(torch.float32 if dtype == torch.float64 else dtype)  # float64 beyond float32: the next test
    finite = torch.tensor([0.0, -0.0, info.max, -info.max, info.tiny, info.tiny / 2, 1.5, -3.0],
                          dtype=torch.float64).to(dtype)
    special = [float("nan"), float("-nan"), float("inf"), float("-inf")] * 3
    bad = torch.cat([finite, torch.tensor(special).to(dtype), finite])  # e4m3fn: inf becomes nan on the cast
    nan, inf = int(bad.float().isnan().sum()), int(bad.float().isinf().sum())
    save_file({"ok": finite.repeat(5), "bad": bad, "ints": torch.arange(9)}, tmp_path / "w.safetensors")
    infos = read_header(tmp_path / "w.safetensors")
    check_finite(tmp_path / "w.safetensors", infos, ["ok", "ints"])
    with pytest.raises(ModelError) as e:
        check_finite(tmp_path / "w.safetensors", infos, list(infos))
    counts = ", ".join(f"{n} {k}" for k, n in (("nan", nan), ("inf", inf)) if n)
    assert e.value.message == (f"expected finite weights, received nan or inf in 1 tensor: bad "
                               f"{infos['bad'].dtype} [{len(bad)}] ({nan + inf} of {len(bad)} values: {counts})")


def test_float64_loads_rounded_but_never_beyond_float32(tmp_path):
    """float64 rounds to the model's float32 (as torch's copy does); a value that would become inf is named."""
    limit = 2.0 ** 128 - 2.0 ** 103  # rounds to inf; the float64 just below it rounds to float32's max
    ok = torch.tensor([torch.finfo(torch.float32).max, -limit + 2.0 ** 75, 1e-50, 0.1], dtype=torch.float64)
    save_file({"ok": ok, "big": torch.tensor([limit, -1e39, 1.0, float("inf")], dtype=torch.float64)},
              tmp_path / "w.safetensors")
    infos = read_header(tmp_path / "w.safetensors")
    assert torch.isfinite(ok.float()).all()
    check_finite(tmp_path / "w.safetensors", infos, ["ok"])
    with pytest.raises(ModelError, match=r"big F64 \[4\] \(3 of 4 values: 1 inf, 2 beyond float32's range"):
        check_finite(tmp_path / "w.safetensors", infos, ["big", "ok"])


def test_nonfinite_init_is_named_before_the_model_is_built(tmp_path):
    """--weights (and --init, which opens the file the same way) name the tensor; a `drop`ped one is not read."""
    from archc.weights import Init

    w = torch.ones(3, 4)
    w[1, 2] = float("nan")
    save_file({"a.fc1.weight": w, "a.fc1.bias": torch.ones(3), "mask": torch.full((2,), float("-inf"))},
              tmp_path / "w.safetensors")
    (tmp_path / "m.toml").write_text('archc_weights = 1\nstrip_prefix = ["a."]\nkeep = ["fc1.weight", "fc1.bias"]\n'
                                     'drop = ["mask"]\n')
    with pytest.raises(ModelError, match=r"in 1 tensor: a.fc1.weight F32 \[3, 4\] \(1 of 12 values: 1 nan\)"):
        Init.open(tmp_path / "w.safetensors", tmp_path / "m.toml")


def test_a_json_file_is_named_as_one_and_a_header_of_123_bytes_is_not(tmp_path):
    """A sharded checkpoint's index.json is JSON, not safetensors; a real file whose header length's low byte is
    '{' (123) still loads."""
    (tmp_path / "index.json").write_text('{"metadata": {}, "weight_map": {"w": "model-00001-of-00002.safetensors"}}')
    with pytest.raises(ModelError, match="received a JSON file") as e:
        read_header(tmp_path / "index.json")
    assert "sharded checkpoint" in e.value.hint
    for pad in range(200):
        header = {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "__metadata__": {"p": "x" * pad}}
        if len(json.dumps(header)) % 256 == ord("{"):
            break
    path = _raw(tmp_path / "w.safetensors", header, b"\0" * 4)
    assert path.read_bytes()[:1] == b"{" and read_header(path)["w"].shape == (1,)


def test_only_tensors_the_mapping_reads_are_checked_finite(tmp_path):
    """A -inf mask no rule reads is reported as an extra tensor (drop it), not as bad weights."""
    from archc.weights import Init

    model = torch.nn.Linear(4, 3)
    save_file({"a.weight": torch.ones(3, 4), "a.bias": torch.ones(3), "a.causal_mask": torch.full((2,), -float("inf"))},
              tmp_path / "w.safetensors")
    (tmp_path / "m.toml").write_text('archc_weights = 1\nstrip_prefix = ["a."]\nkeep = ["weight", "bias"]\n')
    init = Init.open(tmp_path / "w.safetensors", tmp_path / "m.toml")
    with pytest.raises(ModelError, match=r"1 extra: a.causal_mask \[2\]"):
        init.load(model)
    with pytest.raises(ModelError, match=r"in 1 tensor: a.causal_mask F32 \[2\] \(2 of 2 values: 2 inf\)"):
        Init.open(tmp_path / "w.safetensors")  # in the model's own naming every tensor is read
