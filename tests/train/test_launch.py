"""--nproc: the launcher prepares the run folder; every worker reads its spec.json (the spec as used) and gets on
its command line only what is not in the spec."""
from __future__ import annotations

import json

from archc.train.api import worker_args
from archc.train.recipe import Overrides, prepare


def test_workers_read_the_spec_as_used_and_get_no_overrides(tiny, tmp_path):
    out = tmp_path / "run"
    setup = prepare(tiny, Overrides(data=None, epochs=2, batch_size=8, lr=0.01, seed=7), out)
    setup.run_dir.prepare(setup.raw, resume=False).release()  # the run would hold its lock until it ends
    args = worker_args(setup, "cpu", resume=True, quiet=True)
    assert args[0] == str(out / "spec.json")
    assert not {"--epochs", "--batch-size", "--lr", "--seed", "--data", "--nproc"} & set(args)
    assert {"--out", "--device", "--resume", "--quiet", "--data-root"} <= set(args)
    root = args[args.index("--data-root") + 1]
    worker = prepare(args[0], Overrides(), args[args.index("--out") + 1], root)
    assert worker.sha256 == setup.sha256 and worker.raw == setup.raw  # --resume's hash check holds on every rank
    assert worker.spec.train.epochs == 2 and worker.spec.train.optimizer.lr == 0.01
    assert worker.run_dir == setup.run_dir and str(worker.data_root) == root


def test_a_python_dict_spec_needs_no_file_of_its_own(tiny, tmp_path):
    raw = json.loads(tiny.read_text())
    setup = prepare(raw, Overrides(epochs=1), tmp_path / "run")
    setup.run_dir.prepare(setup.raw, resume=False).release()  # the run would hold its lock until it ends
    assert worker_args(setup, "auto", resume=False, quiet=False)[0] == str(setup.run_dir.spec)
    assert sorted(p.name for p in setup.run_dir.root.iterdir()) == ["spec.json"]


def test_more_processes_than_the_machine_or_the_batch_hold_is_refused_before_any_starts(tiny, tmp_path):
    """`--nproc 99999999999999999999` on CPU started torchrun with that many workers and hung."""
    import os

    from click.testing import CliRunner

    from archc.cli import main
    from archc.train.api import CPU_RANKS_PER_CORE

    cores = os.cpu_count() or 1
    for nproc, first in [("99999999999999999999", f"error: --nproc: expected at most {CPU_RANKS_PER_CORE * cores} "
                          f"processes on this machine's {cores} cores ({CPU_RANKS_PER_CORE} per core), received "
                          "99999999999999999999"),
                         ("3", "error: --nproc: expected at most batch_size = 2 processes (each takes a share of the "
                          "global batch), received 3")]:
        r = CliRunner().invoke(main, ["train", str(tiny), "--device", "cpu", "--batch-size", "2", "--nproc", nproc,
                                      "--out", str(tmp_path / "run")])
        assert (r.exit_code, r.stderr.splitlines()[:1]) == (1, [first]), r.output
        assert not (tmp_path / "run").exists()
