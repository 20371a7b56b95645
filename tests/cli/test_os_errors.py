"""OS and decoding failures are user errors (exit 1, the file named); broken pipes end quietly."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from archc.cli import main

SPECS = Path(__file__).resolve().parents[2] / "specs"
DIGITS = SPECS / "digit_classifier.toml"
SCRIPT = Path(sys.executable).with_name("archc")


def invoke(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def _fail_with(monkeypatch, name: str, code: int) -> None:
    """Make os.<name> fail as a full or read-only disk would (tests may run as root, where chmod does not bind)."""
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, name, fail)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_schema_output_on_a_failing_disk_is_a_user_error(tmp_path, monkeypatch, code):
    _fail_with(monkeypatch, "fsync", code)
    out = tmp_path / "schema.json"
    r = invoke("schema", "-o", out)
    assert r.exit_code == 1, r.output
    assert f"error: {out}: cannot write: {os.strerror(code)}" in r.stderr and "internal error" not in r.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_build_output_in_a_read_only_folder_is_a_user_error(tmp_path, monkeypatch):
    import archc.tempfiles as tempfiles

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path / ".d.onnx.x.tmp"))

    monkeypatch.setattr(tempfiles, "make", read_only)  # where archc makes every temporary file
    r = invoke("build", DIGITS, "-o", tmp_path / "d.onnx")
    assert r.exit_code == 1, r.output
    assert f"error: {tmp_path / 'd.onnx'}: cannot write: Read-only file system" in r.stderr


def test_train_out_under_a_file_is_a_user_error(tmp_path):
    (tmp_path / "afile").write_text("x")
    r = invoke("train", SPECS / "digits_mlp.toml", "--device", "cpu", "--out", tmp_path / "afile" / "run")
    assert r.exit_code == 1, r.output
    assert "afile" in r.stderr and "internal error" not in r.stderr


def test_train_on_a_full_disk_is_a_user_error_naming_the_file(tmp_path, monkeypatch):
    _fail_with(monkeypatch, "fsync", errno.ENOSPC)
    r = invoke("train", SPECS / "digits_mlp.toml", "--device", "cpu", "--epochs", "1", "-q", "--out", tmp_path / "run")
    assert r.exit_code == 1, r.output
    assert f"error: {tmp_path / 'run'}" in r.stderr and "cannot write: No space left on device" in r.stderr


def test_an_os_error_without_a_file_is_still_an_internal_error(monkeypatch):
    import archc.language.schema as schema

    def bug():
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(schema, "json_schema", bug)
    r = invoke("schema")
    assert r.exit_code == 3 and "internal error" in r.stderr


def test_deeply_nested_json_spec_is_a_user_error(tmp_path):
    spec = tmp_path / "deep.json"
    spec.write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
    r = invoke("validate", spec)
    assert r.exit_code == 1 and "nested too deeply" in r.stderr, r.output


def test_a_utf8_bom_is_accepted_in_a_toml_spec(tmp_path):
    spec = tmp_path / "bom.toml"
    spec.write_bytes(b"\xef\xbb\xbf" + DIGITS.read_bytes())
    r = invoke("validate", spec)
    assert r.exit_code == 0, r.output


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("m") / "d.onnx"
    assert invoke("build", DIGITS, "-o", path).exit_code == 0
    return path


def test_unknown_source_scheme_is_named_as_such(model):
    r = invoke("infer", model, "--input", "sklaern:digits")
    assert r.exit_code == 1
    assert "unknown data scheme 'sklaern'" in r.stderr and "did you mean sklearn:" in r.stderr
    assert "file type" not in r.stderr


def test_a_directory_as_model_is_a_user_error(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 28, 28), np.float32))
    r = invoke("infer", tmp_path, "--input", tmp_path / "x.npy")
    assert r.exit_code == 1 and "received a directory" in r.stderr, r.output


@pytest.mark.parametrize("command", ["validate", "build", "train"])
def test_a_directory_as_spec_is_a_user_error(tmp_path, command):
    r = invoke(command, tmp_path)
    assert r.exit_code == 1 and "spec file, received a directory" in r.stderr, r.output


def test_a_huge_npy_header_is_a_user_error(model, tmp_path):
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False,
                                               "shape": (1 << 40, 1, 28, 28)})
    (tmp_path / "bomb.npy").write_bytes(buf.getvalue() + bytes(64))
    r = invoke("infer", model, "--input", tmp_path / "bomb.npy")
    assert r.exit_code == 1 and "header declares shape" in r.stderr, r.output


@pytest.mark.skipif(not SCRIPT.exists(), reason="needs the installed archc script")
def test_broken_pipe_ends_quietly():
    # `archc ops | head -1`: the reader leaves after one line; no traceback, no 'Exception ignored'.
    proc = subprocess.Popen([str(SCRIPT), "ops"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (0, 141) and err == b"", err.decode()


@pytest.mark.parametrize("command", ["build", "schema", "infer"])
def test_a_directory_as_output_is_a_user_error(tmp_path, command, model):
    args = {"build": ("build", DIGITS, "-o", tmp_path), "schema": ("schema", "-o", tmp_path),
            "infer": ("infer", model, "--input", "sklearn:digits", "-o", tmp_path)}[command]
    r = invoke(*args)
    assert r.exit_code == 1, r.output
    assert "expected a file to write, received a directory" in r.stderr and "internal error" not in r.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written into the folder
