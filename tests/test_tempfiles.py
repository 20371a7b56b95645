"""archc.tempfiles: temporaries tracked while they exist, removed by SIGTERM/SIGINT, SIGKILL's swept by the next
write of the same file; the signal handlers are ours only while a temporary exists."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

import archc.tempfiles as tempfiles
from archc.util import write_bytes_atomic


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_next_write_sweeps_what_a_killed_writer_left(tmp_path):
    dead, live = _dead_pid(), os.getpid()
    left = {name: tmp_path / name for name in (
        f".model.onnx.{dead}_0123abcd.tmp",        # a killed writer's: swept
        f".model.onnx.{live}_0123abcd.tmp",        # a running writer's: kept
        f".model.onnx.data.{dead}_0123abcd.tmp",   # another file's: kept
        ".model.onnx.0123abcd.tmp",                # no pid (an older archc's): kept, run folders clear those
        "notes.tmp")}
    for path in left.values():
        path.write_text("x")
    (tmp_path / f".model.onnx.{dead}_fedc4321.tmp").mkdir()  # a killed export's folder (a model with a side file)
    write_bytes_atomic(tmp_path / "model.onnx", b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["model.onnx"] + [n for n in left if not n.startswith(f".model.onnx.{dead}")])


@pytest.fixture
def plain_signals():
    """SIGTERM and SIGINT as a plain Python process has them (a test runner's worker may have changed them)."""
    before = {sig: signal.getsignal(sig) for sig in tempfiles.SIGNALS}
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    for sig, handler in before.items():
        signal.signal(sig, handler)


def test_the_handler_is_ours_only_while_a_temporary_exists(tmp_path, plain_signals):
    with tempfiles.beside(tmp_path / "f") as tmp:
        assert os.path.exists(tmp) and signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    assert not os.path.exists(tmp) and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert list(tmp_path.iterdir()) == []


def test_sigint_removes_the_temporaries_then_interrupts_as_before(tmp_path, plain_signals):
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with tempfiles.beside(tmp_path / "f"), tempfiles.beside(tmp_path / "g", folder=True) as folder:
            (tmp_path / folder.split("/")[-1] / "inside").write_text("x")
            signal.raise_signal(signal.SIGINT)
            time.sleep(5)  # the handler runs as soon as the main thread runs Python again
            pytest.fail("no KeyboardInterrupt")
    assert list(tmp_path.iterdir()) == [] and signal.getsignal(signal.SIGINT) is before


def test_an_ignored_signal_stays_ignored(tmp_path):
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with tempfiles.beside(tmp_path / "f"):
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)
