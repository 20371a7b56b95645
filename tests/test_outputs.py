"""archc.outputs: the lock is read totally, and check_writes refuses outputs that replace or move an input."""
from __future__ import annotations

import os
import random

import pytest

from archc.errors import InputError
from archc.outputs import LOCK, alive, check_writes, holder, read_lock


@pytest.mark.parametrize("pid", [0, -1, -(2**40), 2**31, 10**30])
def test_a_number_that_is_no_pid_is_not_alive(pid):
    assert alive(pid) is False


def test_any_bytes_in_a_lock_read_as_pids_or_as_a_foreign_lock(tmp_path):
    rng = random.Random(0)
    path = tmp_path / LOCK
    for n in range(300):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(12)))
        path.write_bytes(data)
        pids, foreign = read_lock(path)
        assert all(0 < p < 2**31 for p in pids) and (not pids or not foreign)
        holder(tmp_path)  # never raises
    path.write_bytes("١٢٣\n".encode())  # Arabic-Indic digits: str.isdigit accepts them, a pid does not
    assert read_lock(path) == ([], "'١٢٣'")
    path.write_bytes(f"{os.getpid()}\n7\n".encode())
    assert read_lock(path) == ([os.getpid(), 7], "") and holder(tmp_path) == f"pid {os.getpid()}"


def test_check_writes(tmp_path):
    (tmp_path / "in.csv").write_text("a\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.npy").write_text("")
    check_writes({"--input": tmp_path / "in.csv"}, {"--output": tmp_path / "out.csv"})
    check_writes({"--input": tmp_path / "data"}, {"--output": tmp_path / "data" / "new.npy"})  # replaces nothing
    with pytest.raises(InputError, match="which is --input"):
        check_writes({"--input": [None, tmp_path / "in.csv"]}, {"--output": tmp_path / "." / "in.csv"})
    with pytest.raises(InputError, match="a file in --input"):
        check_writes({"--input": tmp_path / "data"}, {"--output": tmp_path / "data" / "x.npy"})
    with pytest.raises(InputError, match="which holds --input"):
        check_writes({"--input": tmp_path / "data" / "x.npy"}, {}, {"--report": tmp_path})
    with pytest.raises(InputError, match="which --force moves aside"):
        check_writes({}, {"--output": tmp_path / "data" / "p.csv"}, {"--report": tmp_path / "data"}, moving=True)
    (tmp_path / "data" / LOCK).write_text(f"{os.getpid()}\n")
    with pytest.raises(InputError, match=r"its folder .* is in use"):
        check_writes({}, {"--output": tmp_path / "data" / "p.csv"})
    check_writes({}, {"--out": tmp_path / "data" / "p.csv"}, locks=False)  # train: its own lock decides


def test_the_report_folder_is_checked_again_when_it_is_moved(tmp_path):
    """A run that started between `infer --report DIR --force`'s first check and the move keeps its folder."""
    from archc.runtime.report import aside

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("{}\n")
    (run / LOCK).write_text(f"{os.getpid()}\n")
    with pytest.raises(InputError, match="is in use"):
        aside(run)
    assert (run / "metrics.jsonl").exists() and not (tmp_path / "run.old-1").exists()
    (run / LOCK).unlink()
    assert aside(run) == tmp_path / "run.old-1"


@pytest.mark.parametrize("content", [b"99999999999999999999999\n", b"-5\n", b"0\n", b"\xff\xfe\x00pid"])
def test_a_run_takes_over_a_lock_that_holds_no_pid_and_says_so(tmp_path, capsys, content):
    from archc.train.run_dir import RunDir

    run = RunDir(tmp_path)
    run.lock_path.write_bytes(content)
    run.prepare({"archc": 1}, resume=False).release()
    assert "taking over a lock that holds" in capsys.readouterr().err and not run.lock_path.exists()
