"""Golden messages for issue 11's failure classes: the CLI on each bad case, the exact first line of stderr and
exit 1 (a user error, never a traceback or exit 3). Paths are written as TMP/... and SPECS/...

Left to other helpers' tests: axis bounds (position tables, vocabularies), class names from the data, the schema.
"""
from __future__ import annotations

import errno
import io
import json
import os
import re
import struct
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from click.testing import CliRunner

from archc.cli import main

SPECS = Path(__file__).resolve().parents[2] / "specs"
DIGITS = SPECS / "digit_classifier.toml"
MLP = SPECS / "digits_mlp.toml"


def _spec(path: Path, layers: list, **top) -> Path:
    path.write_text(json.dumps({"archc": 1, "model": {"name": "golden"}, "inputs": {"x": {"shape": [4]}},
                                "layers": layers} | top))
    return path


def _fail(monkeypatch, module, name: str, code: int) -> None:
    """module.<name> fails as a full or read-only disk would (tests may run as root, where chmod does not bind)."""
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(module, name, fail)


def _png(width: int, height: int, idat: bytes) -> bytes:
    def chunk(ctype: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", zlib.crc32(ctype + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _state(folder: Path, body: str) -> None:
    """A training state file (safetensors) whose JSON scalars are `body`."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({"model.w": np.zeros(2, np.float32)}, str(folder / "train_state.safetensors"),
              metadata={"archc.train_state": body})


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """An exported digit classifier, for `archc infer`."""
    path = tmp_path_factory.mktemp("m") / "d.onnx"
    assert CliRunner().invoke(main, ["build", str(DIGITS), "-o", str(path)]).exit_code == 0
    return path


# ---- the cases: each returns the CLI arguments (and may patch the OS) ---------------------------------------------
Case = Callable[..., list]
CASES: dict[str, tuple[Case, str]] = {}


def case(expected: str):
    def add(fn: Case) -> Case:
        CASES[fn.__name__] = (fn, expected)
        return fn
    return add


# names
@case("error: TMP/s.json: layers[1] (x).id: id 'x' is already the name of an input (ids and input names share one "
      "namespace: rename the layer)")
def id_equal_to_an_input_name(tmp, mp, model):
    return ["validate", _spec(tmp / "s.json", [{"op": "linear", "out_features": 3},
                                               {"id": "x", "op": "linear", "out_features": 2}])]


@case("error: TMP/s.json: layers[1] (a): id 'a' is already used by layers[0] (a) (ids must be unique)")
def id_repeated(tmp, mp, model):
    return ["validate", _spec(tmp / "s.json", [{"id": "a", "op": "linear", "out_features": 3},
                                               {"id": "a", "op": "linear", "out_features": 2}])]


# non-finite inputs
@case("error: input 'image': expected finite numbers, received 1 NaN or inf value(s), the first at example "
      '1, feature (0, 2, 3) (clean or impute the data; in Python, Model.open(path, allow_nonfinite=True) '
      'runs them anyway)')
def nonfinite_input(tmp, mp, model):
    x = np.zeros((3, 1, 28, 28), np.float32)
    x[1, 0, 2, 3] = np.nan
    np.save(tmp / "x.npy", x)
    return ["infer", model, "--input", tmp / "x.npy", "--json"]


# run folders
@case("error: --out: 'TMP/run' holds a finished run (result.json) (choose another --out, or pass --force "
      "to move its files to 'TMP/run.old-1' first, or --resume to re-export it)")
def train_into_a_finished_run(tmp, mp, model):
    (tmp / "run").mkdir()
    (tmp / "run" / "result.json").write_text("{}")
    return ["train", MLP, "--out", tmp / "run", "--device", "cpu"]


@case("error: --out: 'TMP/run' holds an unfinished run (pass --resume to continue it, or choose another "
      "--out, or pass --force to move its files to 'TMP/run.old-1' first)")
def train_into_an_unfinished_run(tmp, mp, model):
    _state(tmp / "run", "{}")
    return ["train", MLP, "--out", tmp / "run", "--device", "cpu"]


@case("error: --out: 'TMP/run' is in use: another archc train (pid PID) is writing it (wait for it to end "
      "or choose another --out; if no run is writing there, remove 'TMP/run/.archc.lock')")
def train_into_a_folder_in_use(tmp, mp, model):
    (tmp / "run").mkdir()
    (tmp / "run" / ".archc.lock").write_text(f"{os.getppid()}\n")  # a live process: the test runner's parent
    return ["train", MLP, "--out", tmp / "run", "--device", "cpu", "--epochs", "1"]


@case("error: TMP/run/train_state.safetensors: expected the training state's JSON scalars, received text that "
      "does not parse (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))")
def resume_a_corrupt_state(tmp, mp, model):
    _state(tmp / "run", "{not json")
    return ["train", MLP, "--out", tmp / "run", "--device", "cpu", "--resume"]


@case("error: --resume: expected the spec and recipe of the interrupted run, received a different one (its hash "
      "differs) (compare with TMP/run/spec.json)")
def resume_with_another_spec(tmp, mp, model):
    _state(tmp / "run", json.dumps({"step": 3, "epoch": 0, "optimizer": {}, "host_rng": {}, "spec_sha256": "0"}))
    return ["train", MLP, "--out", tmp / "run", "--device", "cpu", "--resume", "--epochs", "1"]


# OS and decoding errors
@case('error: TMP/schema.json: cannot write: No space left on device')
def schema_output_on_a_full_disk(tmp, mp, model):
    _fail(mp, os, "fsync", errno.ENOSPC)
    return ["schema", "-o", tmp / "schema.json"]


@case('error: TMP/d.onnx: cannot write: Read-only file system')
def build_output_in_a_read_only_folder(tmp, mp, model):
    import archc.tempfiles as tempfiles
    _fail(mp, tempfiles, "make", errno.EROFS)  # where archc makes every temporary file
    return ["build", DIGITS, "-o", tmp / "d.onnx"]


@case('error: TMP/run/spec.json: cannot write: No space left on device')
def train_on_a_full_disk(tmp, mp, model):
    _fail(mp, os, "fsync", errno.ENOSPC)
    return ["train", MLP, "--device", "cpu", "--epochs", "1", "-q", "--out", tmp / "run"]


@case('error: TMP/afile/run: cannot access: Not a directory')
def train_out_under_a_file(tmp, mp, model):
    (tmp / "afile").write_text("x")
    return ["train", MLP, "--device", "cpu", "--out", tmp / "afile" / "run"]


@case('error: TMP: expected a .toml or .json spec file, received a directory')
def directory_as_spec(tmp, mp, model):
    return ["validate", tmp]


@case("error: expected an .onnx model file, received a directory: 'TMP'")
def directory_as_model(tmp, mp, model):
    np.save(tmp / "x.npy", np.zeros((1, 1, 28, 28), np.float32))
    return ["infer", tmp, "--input", tmp / "x.npy"]


@case("error: --output: expected a file to write, received a directory: 'TMP'")
def directory_as_output(tmp, mp, model):
    return ["build", DIGITS, "-o", tmp]


@case('error: TMP/deep.json: expected a spec of reasonable nesting depth, received one nested too deeply')
def deeply_nested_json_spec(tmp, mp, model):
    (tmp / "deep.json").write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
    return ["validate", tmp / "deep.json"]


@case("error: nosuch:thing: unknown data scheme 'nosuch': expected one of sklearn:, idx:, csv:, npz:, "
      'images:, text:, graph:, jsonl:, parquet:')
def unknown_source_scheme(tmp, mp, model):
    return ["infer", model, "--input", "nosuch:thing"]


# bombs
@case('error: TMP/bomb.npy: could not read the file as .npy: the array: header declares shape '
      '[1099511627776, 1, 28, 28] of float32 (3,448,068,464,705,536 bytes), but the file holds 64 bytes of '
      'data')
def npy_header_declaring_terabytes(tmp, mp, model):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False,
                                               "shape": (1 << 40, 1, 28, 28)})
    (tmp / "bomb.npy").write_bytes(buf.getvalue() + bytes(64))
    return ["infer", model, "--input", tmp / "bomb.npy"]


@case('error: images:TMP/imgs: a/bomb.png: expected a readable image, received one that fails to decode '
      '(expected an image of 1 to 67,108,864 pixels (8192 x 8192), received a header declaring 30000 x '
      '30000)')
def png_declaring_30000_squared(tmp, mp, model):
    for label in ("a", "b"):
        (tmp / "imgs" / label).mkdir(parents=True)
        (tmp / "imgs" / label / "ok.png").write_bytes(_png(28, 28, zlib.compress(bytes(28 * (3 * 28 + 1)))))
    (tmp / "imgs" / "a" / "bomb.png").write_bytes(_png(30000, 30000, zlib.compress(bytes(30000 * 9), 9)))
    return ["infer", model, "--input", f"images:{tmp / 'imgs'}"]


@case('error: TMP/s.json: layers[0]: expected at most 100,000 nodes after expansion, received more (check '
      '`repeat` counts: archc builds and exports up to this many)')
def repeats_expanding_past_the_node_limit(tmp, mp, model):
    blocks = {"b0": {"layers": [{"op": "relu"}]}}
    for i in range(1, 4):
        blocks[f"b{i}"] = {"layers": [{"use": f"b{i - 1}", "repeat": 100}]}
    return ["validate", _spec(tmp / "s.json", [{"use": "b3", "repeat": 100}], blocks=blocks)]


# messages that misled
@case("error: TMP/s.json: params.b: unknown parameter 'c' (parameters in scope: a)")
def param_defined_from_an_unknown_param(tmp, mp, model):
    return ["validate", _spec(tmp / "s.json", [{"op": "linear", "out_features": "$b"}],
                              params={"a": 4, "b": "${c * 2}"})]


def _normal(text: str, tmp: Path) -> str:
    return re.sub(r"pid \d+", "pid PID", text.replace(str(tmp), "TMP").replace(str(SPECS), "SPECS"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_first_line_of_stderr_and_exit_code(name, tmp_path, monkeypatch, model):
    fn, expected = CASES[name]
    args = [str(a) for a in fn(tmp_path, monkeypatch, model)]
    r = CliRunner().invoke(main, args)
    first = _normal(r.stderr.splitlines()[0] if r.stderr else "", tmp_path)
    assert (r.exit_code, first) == (1, expected), r.output
