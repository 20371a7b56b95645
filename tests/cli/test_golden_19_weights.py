"""Golden messages for issue 19's weight classes: a model tensor that two file tensors would fill (the last one
silently won), and nan, inf or mistyped checkpoint tensors that surfaced as "within nan" parity failures or a
"lower the learning rate" divergence. The exact first line of stderr and exit 1; paths written as TMP/..."""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import save_file

from archc.cli import main

SPEC = {"archc": 1, "model": {"name": "golden"}, "inputs": {"x": {"shape": [4]}},
        "layers": [{"id": "fc1", "op": "linear", "out_features": 3}]}
TWICE = ("error: TMP/w.safetensors: --map TMP/m.toml: expected every tensor of the model filled exactly once and "
         "every tensor of the file used, received 1 filled twice: ")
TWICE_HINT = (" (two file tensors for one of the model: `drop` the one not meant (by its name as written), or "
              "narrow strip_prefix or the rules)")
NONFINITE = "error: TMP/w.safetensors: expected finite weights, received nan or inf in 1 tensor: "
NONFINITE_HINT = (" (a checkpoint saved after training diverged holds nan: take an earlier one; a mask that is no "
                  "weight: `drop` it in a --map file)")


def _weights(tmp: Path, **tensors: np.ndarray) -> Path:
    """A checkpoint for SPEC: fc1's tensors (ones), then `tensors` added or replacing them."""
    full = {"fc1.weight": np.ones((3, 4), np.float32), "fc1.bias": np.ones(3, np.float32)}
    save_file(full | tensors, str(tmp / "w.safetensors"))
    return tmp / "w.safetensors"


def _build(tmp: Path, mapping: str | None, **tensors: np.ndarray) -> list:
    (tmp / "s.json").write_text(json.dumps(SPEC))
    args = ["build", tmp / "s.json", "--weights", _weights(tmp, **tensors), "-o", tmp / "m.onnx"]
    if mapping is not None:
        (tmp / "m.toml").write_text("archc_weights = 1\n" + mapping)
        args += ["--map", tmp / "m.toml"]
    return args


def _with(values: list[float], dtype: type = np.float32, shape: tuple[int, ...] = (3, 4)) -> np.ndarray:
    a = np.ones(shape, dtype)
    a.flat[:len(values)] = values
    return a


Case = Callable[[Path], list]
CASES: dict[str, tuple[Case, str]] = {}


def case(expected: str):
    def add(fn: Case) -> Case:
        CASES[fn.__name__] = (fn, expected)
        return fn
    return add


# ---- one model tensor, two file tensors: the second silently replaced the first ----------------------------------
@case(TWICE + "fc1.weight from fc1.weight and from transformer.fc1.weight (as fc1.weight), each by keep[0]"
      + TWICE_HINT)
def strip_prefix_makes_two_names_one(tmp):
    return _build(tmp, 'strip_prefix = ["transformer."]\nkeep = ["fc1.weight", "fc1.bias"]\n',
                  **{"transformer.fc1.weight": np.zeros((3, 4), np.float32)})


@case(TWICE + "fc1.weight from a.w by map[0] and from b.w by map[1]" + TWICE_HINT)
def two_rules_one_target(tmp):
    return _build(tmp, 'drop = ["fc1.weight"]\nkeep = ["fc1.bias"]\n[[map]]\nfrom = "a.w"\nto = "fc1.weight"\n'
                       '[[map]]\nfrom = "b.w"\nto = "fc1.weight"\n',
                  **{"a.w": np.ones((3, 4), np.float32), "b.w": np.zeros((3, 4), np.float32)})


@case(TWICE + "fc1.bias from fc1.bias by keep[0] and from head.bias by map[0]" + TWICE_HINT)
def a_keep_and_a_rule_one_target(tmp):
    return _build(tmp, 'keep = ["fc1.bias", "fc1.weight"]\n[[map]]\nfrom = "head.bias"\nto = "fc1.bias"\n',
                  **{"head.bias": np.zeros(3, np.float32)})


@case(TWICE + "fc1.bias from a.1 and from t.a.1 (as a.1), each by map[0]" + TWICE_HINT)
def strip_prefix_into_a_concatenation(tmp):
    return _build(tmp, 'strip_prefix = ["t."]\nkeep = ["fc1.weight"]\ndrop = ["fc1.bias"]\n'
                       '[[map]]\nfrom = ["a.{i}", "b.{i}"]\nto = "fc{i}.bias"\naxis = 0\n',
                  **{"a.1": np.ones(1, np.float32), "t.a.1": np.zeros(1, np.float32), "b.1": np.ones(2, np.float32)})


@case("error: TMP/m.toml: map[0].from: expected a character other than a digit between two placeholders, "
      "received 'h.{i}{j}' (an index is read as the longest run of digits)")
def placeholders_that_read_one_name_two_ways(tmp):
    return _build(tmp, '[[map]]\nfrom = "h.{i}{j}"\nto = "fc1.{i}.{j}"\n')


@case("error: TMP/w.safetensors: expected a safetensors file, received a header that declares 'fc1.bias' twice "
      "(archc reads safetensors only (never pickle): save with safetensors' save_file)")
def a_header_naming_one_tensor_twice(tmp):
    args = _build(tmp, None)
    header = (b'{"fc1.weight": {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, 48]}, '
              b'"fc1.bias": {"dtype": "F32", "shape": [3], "data_offsets": [48, 60]}, '
              b'"fc1.bias": {"dtype": "F32", "shape": [3], "data_offsets": [60, 72]}}')
    (tmp / "w.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 72)
    return args


# ---- nan, inf and types: named at load, not found by a parity check or a training step -------------------------
@case(NONFINITE + "fc1.weight F32 [3, 4] (2 of 12 values: 1 nan, 1 inf)" + NONFINITE_HINT)
def nan_weights_for_build(tmp):
    return _build(tmp, None, **{"fc1.weight": _with([np.nan, -np.inf])})


@case(NONFINITE + "h.0.w BF16 [3, 4] (1 of 12 values: 1 nan)" + NONFINITE_HINT)
def nan_bf16_weights_through_a_mapping(tmp):
    args = _build(tmp, 'drop = ["fc1.weight"]\nkeep = ["fc1.bias"]\n[[map]]\nfrom = "h.0.w"\nto = "fc1.weight"\n')
    bits = np.full((3, 4), 0x3F80, np.uint16)  # 1.0 in bfloat16
    bits[1, 1] = 0x7FC0  # nan
    header = json.dumps({"fc1.bias": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]},
                         "h.0.w": {"dtype": "BF16", "shape": [3, 4], "data_offsets": [12, 36]}}).encode()
    (tmp / "w.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + np.ones(3, np.float32).tobytes()
                                        + bits.tobytes())
    return args


@case(NONFINITE + "fc1.bias F64 [3] (1 of 3 values: 1 beyond float32's range (inf once loaded))" + NONFINITE_HINT)
def float64_beyond_float32(tmp):
    return _build(tmp, None, **{"fc1.bias": np.array([1.0, 1e39, -2.0])})


@case(NONFINITE + "fc1.weight F32 [256, 64] (1 of 16,384 values: 1 inf)" + NONFINITE_HINT)
def inf_weights_for_train_init(tmp):
    mlp = Path(__file__).resolve().parents[2] / "specs" / "digits_mlp.toml"
    save_file({"fc1.weight": _with([0.0, np.inf], shape=(256, 64)), "fc1.bias": np.zeros(256, np.float32),
               "fc2.weight": np.zeros((128, 256), np.float32), "fc2.bias": np.zeros(128, np.float32),
               "logits.weight": np.zeros((10, 128), np.float32), "logits.bias": np.zeros(10, np.float32)},
              str(tmp / "w.safetensors"))
    return ["train", mlp, "--init", tmp / "w.safetensors", "--out", tmp / "run", "--epochs", "1", "--device", "cpu"]


@case("error: TMP/s.json: layers[1] (fc2): output 'fc2' at batch 1: expected finite values from torch on the example "
      "inputs, received 2 nan or inf of 2 (weights or activations beyond float32's range (large weights, an "
      "overflowing exp or pow), or a nan the model computes (log or sqrt of a negative))")
def finite_weights_whose_outputs_overflow(tmp):
    """Every weight finite (1e30), their product not: the parity check said "within nan"."""
    spec = SPEC | {"layers": SPEC["layers"] + [{"id": "fc2", "op": "linear", "out_features": 2}]}
    (tmp / "s.json").write_text(json.dumps(spec))
    big = {"fc1.weight": np.full((3, 4), 1e30, np.float32), "fc1.bias": np.zeros(3, np.float32),
           "fc2.weight": np.full((2, 3), 1e30, np.float32), "fc2.bias": np.zeros(2, np.float32)}
    save_file(big, str(tmp / "w.safetensors"))
    return ["build", tmp / "s.json", "--weights", tmp / "w.safetensors", "-o", tmp / "m.onnx"]


@case("error: TMP/s.json: layers[1] (out): output 'out' at batch 1: expected finite values from torch on the example "
      "inputs, received 3 nan or inf of 3 (weights or activations beyond float32's range (large weights, an "
      "overflowing exp or pow), or a nan the model computes (log or sqrt of a negative); found by exporting the model "
      "before training (trained-size weights, the data's fitted columns and target scale): the run would have ended "
      "here)")
def finite_init_whose_loss_overflows(tmp):
    """Finite weights (1e30) whose outputs are not: it said "lower the learning rate" after the first step; the
    export check before training (on the --init weights) now names the output, before any step."""
    rng = np.random.default_rng(0)
    np.savez(tmp / "d.npz", x=rng.standard_normal((40, 4)).astype(np.float32), y=np.arange(40) % 3)
    spec = SPEC | {"task": {"kind": "classification"}, "train": {"epochs": 1, "batch_size": 8},
                   "data": {"source": f"npz:{tmp / 'd.npz'}"},
                   "layers": SPEC["layers"] + [{"id": "out", "op": "linear", "out_features": 3}]}
    (tmp / "s.json").write_text(json.dumps(spec))
    save_file({"fc1.weight": np.full((3, 4), 1e30, np.float32), "fc1.bias": np.zeros(3, np.float32),
               "out.weight": np.full((3, 3), 1e30, np.float32), "out.bias": np.zeros(3, np.float32)},
              str(tmp / "w.safetensors"))
    return ["train", tmp / "s.json", "--init", tmp / "w.safetensors", "--out", tmp / "run", "--device", "cpu"]


def _run_folder(tmp: Path) -> Path:
    (tmp / "run").mkdir()
    (tmp / "run" / "spec.json").write_text(json.dumps(SPEC))
    return tmp / "run"


@case(NONFINITE + "fc1.bias F32 [3] (1 of 3 values: 1 nan)" + NONFINITE_HINT)
def nan_checkpoint_for_export(tmp):
    return ["export", _run_folder(tmp), "--checkpoint", _weights(tmp, **{"fc1.bias": _with([np.nan], shape=(3,))}),
            "-o", tmp / "e.onnx"]


@case("error: TMP/w.safetensors: expected the weights of this spec's model, received a checkpoint that differs at "
      "fc1.weight (int64 for the model's float32)")
def integer_checkpoint_for_export(tmp):
    return ["export", _run_folder(tmp), "--checkpoint", _weights(tmp, **{"fc1.weight": np.ones((3, 4), np.int64)}),
            "-o", tmp / "e.onnx"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_first_line_of_stderr_and_exit_code(name, tmp_path):
    fn, expected = CASES[name]
    args = [str(a) for a in fn(tmp_path)]
    r = CliRunner().invoke(main, args)
    first = (r.stderr.splitlines()[0] if r.stderr else "").replace(str(tmp_path), "TMP")
    assert (r.exit_code, first) == (1, expected), r.output
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "e.onnx").exists()
    assert not (tmp_path / "run").exists() or (tmp_path / "run" / "spec.json").exists()  # no run folder made
