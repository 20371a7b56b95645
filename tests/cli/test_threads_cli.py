"""`--threads` on infer and build: ONNX Runtime's session and torch's export run with the count asked, or with
archc.threads' rule when none is; bad counts are one line and exit 1 on every command that takes the flag."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import archc.threads as threads
from archc.cli import main
from archc.runtime import Model

ROOT = Path(__file__).resolve().parents[2]
MLP = ROOT / "specs" / "digits_mlp.toml"


def classifier(path: Path) -> Path:
    """x [batch, 4] -> logits [batch, 3], with the archc metadata infer reads."""
    w = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["logits"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
                              initializer=[numpy_helper.from_array(w, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    for k, v in {"archc.task": {"kind": "classification", "labels": ["a", "b", "c"]},
                 "archc.inputs": {"x": {"shape": ["batch", 4], "dtype": "float32"}}}.items():
        model.metadata_props.add(key=k, value=json.dumps(v))
    onnx.save(model, str(path))
    return path


@pytest.fixture
def opened(monkeypatch):
    """The intra-op thread count of every session `archc infer` opens."""
    seen: list[int] = []
    real = Model.open.__func__

    def spy(cls, *args, **kwargs):
        m = real(cls, *args, **kwargs)
        seen.append(m.session.get_session_options().intra_op_num_threads)
        return m

    monkeypatch.setattr(Model, "open", classmethod(spy))
    return seen


def infer(tmp_path: Path, *flags: str):
    model = classifier(tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", np.ones((2, 4), dtype=np.float32))
    return CliRunner().invoke(main, ["infer", str(model), "--input", str(tmp_path / "x.npy"), *flags])


def test_infer_opens_its_session_with_the_threads_asked(tmp_path, opened):
    r = infer(tmp_path, "--threads", "3")
    assert r.exit_code == 0, r.output
    assert opened == [3]


def test_infer_follows_the_rule_without_the_flag(tmp_path, opened, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "cores", lambda: 3)
    monkeypatch.setattr(threads, "load", lambda: 0.0)
    assert infer(tmp_path).exit_code == 0
    monkeypatch.setattr(threads, "load", lambda: 30.0)  # other work on every core
    assert infer(tmp_path).exit_code == 0
    assert opened == [3, 1]


def test_the_session_options_carry_the_count():
    from archc.runtime.session import session_options

    assert session_options(2).intra_op_num_threads == 2
    assert session_options().intra_op_num_threads == 0  # ORT's own default


def test_build_exports_with_the_threads_asked(tmp_path, monkeypatch):
    import torch

    import archc.export.onnx as onnx_export

    seen: list[int] = []
    real = onnx_export._export

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(onnx_export, "_export", spy)
    monkeypatch.setattr(threads, "load", lambda: 30.0)  # busy: the rule alone would pick one thread
    before = torch.get_num_threads()
    r = CliRunner().invoke(main, ["build", str(MLP), "-o", str(tmp_path / "m.onnx"), "--threads", "2"])
    assert r.exit_code == 0, r.output
    assert seen == [2] and torch.get_num_threads() == before
    r = CliRunner().invoke(main, ["build", str(MLP), "-o", str(tmp_path / "m.onnx")])
    assert r.exit_code == 0, r.output
    assert seen[1] == 1


@pytest.mark.parametrize("command", ["train", "build", "infer"])
@pytest.mark.parametrize("value", ["0", "-3", "1025", "two"])
def test_a_bad_count_is_one_line_and_exit_1(command, value):
    r = CliRunner().invoke(main, [command, "nosuch.file", "--threads", value])
    assert (r.exit_code, r.stderr.splitlines()) == (
        1, [f"error: --threads: expected a thread count from 1 to 1024, received {value!r}"]), r.output


def test_every_command_with_threads_documents_it_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    for name, cmd in main.commands.items():
        if any(p.name == "threads" for p in cmd.params):
            assert f"archc {name}" in readme and "--threads" in readme
    assert "[train] threads" in readme or "threads =" in readme
