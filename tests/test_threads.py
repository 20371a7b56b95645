"""archc.threads' rule: the thread count it picks for given cores, load, ranks, loader workers and caps, and the
user's counts it accepts or refuses (the machine's own affinity and load are replaced by fixed values)."""
from __future__ import annotations

import math
import os
import sys
import subprocess

import pytest

import archc.threads as threads
from archc.errors import InputError
from archc.threads import MAX_THREADS, choose


@pytest.fixture(autouse=True)
def no_env_cap(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


def pick(**kw) -> int:
    kw.setdefault("load_now", 0.0)
    kw.setdefault("own", 0.0)
    return choose(**kw).threads


def test_an_idle_machine_gets_every_core_it_may_use():
    c = choose(n_cores=8, load_now=0.0, own=0.0)
    assert (c.threads, c.reason, c.asked) == (8, "8 cores", False)
    assert c.line() == "8 threads (8 cores)"
    assert pick(n_cores=1) == 1 and choose(n_cores=1, load_now=0.0, own=0.0).line() == "1 thread (1 core)"


def test_a_busy_machine_gets_the_cores_other_work_leaves_at_least_one():
    assert pick(n_cores=2, load_now=9.0) == 1            # the shared 2-core machine
    assert pick(n_cores=2, load_now=2.0) == 1            # every core held: one thread
    assert pick(n_cores=16, load_now=10.0) == 6          # 6 cores left
    assert pick(n_cores=2, load_now=0.3) == 2            # background noise: 1.7 cores left round to 2
    assert pick(n_cores=2, load_now=0.6) == 1            # 1.4 cores left
    c = choose(n_cores=2, load_now=9.0, own=0.0)
    assert c.reason == "busy: load 9.0 on 2 cores"


def test_the_process_own_share_of_the_load_is_not_other_work():
    assert pick(n_cores=2, load_now=2.0, own=2.0) == 2
    assert pick(n_cores=2, load_now=2.0, own=1.0) == 1


def test_no_load_average_means_not_busy():
    assert pick(n_cores=4, load_now=None) == 4


def test_ranks_share_the_cores_and_what_the_load_leaves():
    assert pick(n_cores=8, ranks=4) == 2
    assert pick(n_cores=2, ranks=4) == 1
    assert choose(n_cores=8, ranks=4, load_now=0.0, own=0.0).reason == "8 cores / 4 processes"
    assert pick(n_cores=8, ranks=2, load_now=4.0) == 2   # 4 cores left, 2 per rank


def test_loader_workers_take_at_most_half_of_the_share():
    assert pick(n_cores=2, workers=1) == 1
    assert pick(n_cores=8, workers=3) == 5
    assert pick(n_cores=4, workers=3) == 2
    assert pick(n_cores=16, workers=8) == 8
    assert pick(n_cores=1, workers=1) == 1
    assert choose(n_cores=8, workers=3, load_now=0.0, own=0.0).reason == "8 cores, 3 loader workers"


def test_a_lower_count_set_before_caps_the_rule(monkeypatch):
    assert pick(n_cores=8, cap=3) == 3
    assert choose(n_cores=8, cap=3, load_now=0.0, own=0.0).reason == "8 cores, torch at 3"
    assert pick(n_cores=2, cap=8) == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    c = choose(n_cores=8, load_now=0.0, own=0.0)
    assert (c.threads, c.reason) == (2, "8 cores, OMP_NUM_THREADS = 2")
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")  # not a count: ignored
    assert pick(n_cores=8) == 8


def test_an_asked_count_is_kept_whatever_the_machine():
    c = choose(5, where="[train] threads", n_cores=2, load_now=50.0, own=0.0)
    assert (c.threads, c.reason, c.asked) == (5, "[train] threads", True)
    assert choose(MAX_THREADS).threads == MAX_THREADS


@pytest.mark.parametrize("bad", [0, -1, MAX_THREADS + 1, True, 2.0, "2"])
def test_a_bad_count_is_one_error_naming_where_it_came_from(bad):
    with pytest.raises(InputError) as e:
        choose(bad, where="--threads")
    assert e.value.line() == f"--threads: expected a thread count from 1 to {MAX_THREADS}, received {bad!r}"


def test_cores_are_the_affinity_mask(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5}, raising=False)
    assert threads.cores() == 3

    def missing(pid):
        raise AttributeError

    monkeypatch.setattr(os, "sched_getaffinity", missing, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert threads.cores() == 6
    assert choose(load_now=0.0, own=0.0).threads == 6


def test_the_machine_defaults_are_read_when_not_given(monkeypatch):
    monkeypatch.setattr(threads, "cores", lambda: 4)
    monkeypatch.setattr(threads, "load", lambda: 12.0)
    monkeypatch.setattr(threads, "own_load", lambda: 0.0)
    assert choose().threads == 1
    monkeypatch.setattr(threads, "load", lambda: 0.0)
    assert choose().threads == 4


def test_own_load_follows_the_load_average_window(monkeypatch):
    monkeypatch.setattr(threads, "_age", lambda: 30.0)
    monkeypatch.setattr(os, "times", lambda: os.times_result((30.0, 0.0, 0.0, 0.0, 0.0)))
    assert threads.own_load() == pytest.approx(1 - math.exp(-0.5))  # one thread for half a window
    monkeypatch.setattr(threads, "_age", lambda: None)
    assert threads.own_load() == 0.0


def test_this_process_age_is_read_from_proc():
    if not sys.platform.startswith("linux"):
        pytest.skip("/proc")
    age = threads._age()
    assert age is not None and 0 < age < 24 * 3600 * 365


def test_torch_threads_sets_restores_and_the_export_keeps_an_asked_count():
    import torch

    before = torch.get_num_threads()
    with threads.torch_threads(choose(3)) as n:
        assert n == torch.get_num_threads() == 3
        assert threads.for_export().threads == 3  # the user's count, even on a busy machine
        threads.replace(choose(2))
        assert torch.get_num_threads() == 2 and threads.in_force().threads == 2
    assert torch.get_num_threads() == before and threads.in_force() is None
    with threads.torch_threads(None) as n:
        assert n == before
    assert threads.for_export().threads <= before  # no asked count in force: the rule, capped by torch's


def test_the_module_imports_no_torch():
    code = "import sys, archc.threads as t; t.choose(); assert 'torch' not in sys.modules; print('ok')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == "ok", r.stderr
