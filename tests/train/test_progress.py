"""When stdout is not a terminal (a log file, a pipe), `archc train` still reports progress during an epoch: a
plain line every LINE_EVERY_S (issue 11, item 6), besides the epoch table; ranks other than 0 print nothing."""
from __future__ import annotations

import io
import re
import subprocess
import sys

from rich.console import Console

import archc.train.progress as progress

LINE = re.compile(r"^epoch (\d+)/3  step (\d+)/(\d+)  loss \d+\.\d{4}  accuracy \d\.\d{4}  [\d,]+ samples/s  "
                  r"eta \d+s$")


def test_train_into_a_pipe_prints_progress_lines(h, tmp_path):
    spec = h.make_spec(tmp_path / "s.json", h.make_npz(tmp_path / "d.npz"))  # 3 epochs of 12 steps
    code = ("import sys, archc.train.progress as p; p.LINE_EVERY_S = 0.0; from archc.cli import main; "
            "main(prog_name='archc')")
    r = subprocess.run([sys.executable, "-c", code, "train", str(spec), "--out", str(tmp_path / "run")],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=h.env(), timeout=300)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    steps = [tuple(map(int, m.groups())) for m in map(LINE.match, lines) if m]
    assert steps == [(e, s, 12) for e in (1, 2, 3) for s in range(1, 13)], r.stdout  # every step: interval 0
    rows = [i for i, line in enumerate(lines) if re.match(r"^\s+[123]\s+\d+\.\d{4}\s", line)]
    assert len(rows) == 3 and all(LINE.match(lines[i - 1]) for i in rows)  # each epoch's row after its lines
    assert "\x1b" not in r.stdout  # plain text: no bar, no cursor movement


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lines_come_at_most_every_line_every_s_and_read_stats_only_then(monkeypatch):
    clock, out, calls = Clock(), io.StringIO(), []
    monkeypatch.setattr(progress.time, "perf_counter", clock)
    monkeypatch.setattr(progress, "LINE_EVERY_S", 5.0)
    report = progress.Rich()
    report.console = Console(file=out, highlight=False, soft_wrap=True)  # a StringIO: not a terminal
    report.begin(["header"], "accuracy")
    report.epoch_begin(0, 3, steps=20, done=0)
    for _ in range(12):  # one step a second, 32 examples each
        clock.now += 1.0
        report.step(32, lambda: calls.append(1) or (0.5, 0.75))
    lines = [line for line in out.getvalue().splitlines() if line.startswith("epoch ")]
    assert lines == ["epoch 1/3  step 5/20  loss 0.5000  accuracy 0.7500  32 samples/s  eta 15s",
                     "epoch 1/3  step 10/20  loss 0.5000  accuracy 0.7500  32 samples/s  eta 10s"]
    assert len(calls) == 2  # the stats (a device sync) are read only for a line


def test_ranks_other_than_0_and_quiet_print_nothing(capsys):
    for report in (progress.reporter(quiet=False, main=False), progress.reporter(quiet=True, main=True)):
        report.begin(["header"], "accuracy")
        report.epoch_begin(0, 1, steps=3, done=0)
        for _ in range(3):
            report.step(8, lambda: (0.5, 0.5))
        report.close()
    assert capsys.readouterr().out == ""
