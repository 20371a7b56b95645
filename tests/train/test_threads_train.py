"""The training process computes with the threads archc.threads picks, or the ones `--threads` / `[train] threads`
name: read back from torch inside the run (result.json's `threads`, the header line), restored afterwards."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner

import archc.threads as threads
import archc.train as train
from archc.cli import main
from archc.train.devices import share_with_workers, train_threads


def with_threads(path, n):
    spec = json.loads(path.read_text())
    spec["train"]["threads"] = n
    path.write_text(json.dumps(spec))
    return path


def test_the_flag_reaches_torch_in_the_run_and_is_recorded(tiny, tmp_path):
    before = torch.get_num_threads()
    result = train.run(tiny, out=tmp_path / "run", quiet=True, epochs=1, threads=2)
    assert result.threads == 2
    assert json.loads((tmp_path / "run" / "result.json").read_text())["threads"] == 2
    assert torch.get_num_threads() == before  # the caller's count is back


def test_the_spec_key_reaches_torch_and_the_flag_overrides_it(tiny, tmp_path):
    with_threads(tiny, 3)
    assert train.run(tiny, out=tmp_path / "a", quiet=True, epochs=1).threads == 3
    assert train.run(tiny, out=tmp_path / "b", quiet=True, epochs=1, threads=2).threads == 2


def test_the_rule_reaches_torch_when_nothing_is_asked(tiny, tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "cores", lambda: 3)
    monkeypatch.setattr(threads, "load", lambda: 0.0)
    torch.set_num_threads(4)  # torch's own count here is not what a run uses: the cores are
    assert train.run(tiny, out=tmp_path / "idle", quiet=True, epochs=1).threads == 3
    monkeypatch.setattr(threads, "load", lambda: 40.0)  # other work on every core
    assert train.run(tiny, out=tmp_path / "busy", quiet=True, epochs=1).threads == 1


def test_the_header_and_json_say_how_many_and_why(tiny, tmp_path):
    r = CliRunner().invoke(main, ["train", str(tiny), "--out", str(tmp_path / "run"), "--epochs", "1",
                                  "--threads", "2"])
    assert r.exit_code == 0, r.output
    assert "x 1 process(es), 2 threads (--threads)" in r.output
    r = CliRunner().invoke(main, ["train", str(tiny), "--out", str(tmp_path / "run"), "--epochs", "1", "--force",
                                  "--threads", "1", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["threads"] == 1


@pytest.mark.parametrize("value", ["0", "-1", "1025", "many", "2.5"])
def test_a_bad_count_is_one_line_exit_1_before_anything_runs(tiny, tmp_path, value):
    r = CliRunner().invoke(main, ["train", str(tiny), "--out", str(tmp_path / "run"), "--threads", value])
    assert (r.exit_code, r.stderr.splitlines()) == (
        1, [f"error: --threads: expected a thread count from 1 to 1024, received {value!r}"]), r.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", [0, 1025, "2"])
def test_a_bad_spec_key_is_a_spec_error(tiny, tmp_path, value):
    with_threads(tiny, value)
    r = CliRunner().invoke(main, ["validate", str(tiny)])
    assert r.exit_code == 1 and "train.threads" in r.stderr, r.output
    with pytest.raises(Exception, match="threads"):
        train.run(tiny, out=tmp_path / "run", quiet=True)


def test_the_python_api_refuses_a_bad_count(tiny, tmp_path):
    from archc.errors import InputError

    with pytest.raises(InputError, match="--threads: expected a thread count from 1 to 1024, received 0"):
        train.run(tiny, out=tmp_path / "run", quiet=True, threads=0)


def test_loader_workers_lower_an_automatic_count_not_an_asked_one(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "cores", lambda: 4)
    monkeypatch.setattr(threads, "load", lambda: 0.0)
    torch.set_num_threads(4)
    splits = {"train": SimpleNamespace(workers=3), "val": SimpleNamespace()}
    with threads.torch_threads(train_threads(None, None, world=1)):
        assert torch.get_num_threads() == 4
        share_with_workers(splits, world=1)
        assert torch.get_num_threads() == 2 and "3 loader workers" in threads.in_force().reason
    with threads.torch_threads(train_threads(None, 4, world=1)):  # [train] threads = 4: kept
        share_with_workers(splits, world=1)
        assert torch.get_num_threads() == 4


def test_nproc_ranks_get_the_flag(tiny, tmp_path):
    from archc.train.api import worker_args
    from archc.train.recipe import Overrides, prepare

    setup = prepare(tiny, Overrides(), tmp_path / "run")
    assert "--threads" not in worker_args(setup, "cpu", False, True)
    setup.threads = 2
    args = worker_args(setup, "cpu", False, True)
    assert args[args.index("--threads") + 1] == "2"


def test_a_run_with_loader_workers_leaves_them_cores(h, tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "cores", lambda: 4)
    monkeypatch.setattr(threads, "load", lambda: 0.0)
    torch.set_num_threads(4)
    images = h.make_images(tmp_path / "img", n=24)
    spec = h.make_image_spec(tmp_path / "s.json", images, data={"workers": 1}, train={"epochs": 1})
    assert train.run(spec, out=tmp_path / "w1", quiet=True, device="cpu").threads == 3  # 4 cores, 1 worker
    spec = h.make_image_spec(tmp_path / "s0.json", images, data={"workers": 0}, train={"epochs": 1})
    assert train.run(spec, out=tmp_path / "w0", quiet=True, device="cpu").threads == 4
