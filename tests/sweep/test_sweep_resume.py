"""A sweep SIGKILLed between trials resumes: finished trials are kept as they are, the one that was running is
marked interrupted and its values run again, and the sweep completes to --trials. A pruned trial is a run folder
marked so, which `archc train --resume` can continue."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def _kill_after(cmd: list[str], env: dict, finished: int, out: Path) -> None:
    """Run the sweep, SIGKILL it once `finished` trials have printed their line and the next one has begun its run
    (its folder holds spec.json, written as training starts)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen, lines, started = 0, [], out / f"trial-{finished:04d}" / "spec.json"
    try:
        for line in proc.stderr:
            lines.append(line)
            seen += line.startswith("trial ")
            if seen == finished:
                deadline = time.monotonic() + 60
                while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.001)
                os.kill(proc.pid, signal.SIGKILL)
                break
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, "".join(lines)[-2000:]
    assert not (out / f"trial-{finished:04d}" / "result.json").exists(), "killed too late: the trial had finished"


def _snapshot(out: Path, trials: list[int]) -> dict[int, tuple]:
    """Each finished trial's result.json and its modification time (a re-run would rewrite them)."""
    files = {n: out / f"trial-{n:04d}" / "result.json" for n in trials}
    return {n: (f.read_text(), f.stat().st_mtime_ns) for n, f in files.items()}


def test_a_killed_sweep_resumes_to_its_trials_without_rerunning_finished_ones(tmp_path, tiny, env):
    spec, out = tiny(tmp_path / "sweep.json", epochs=1), tmp_path / "sw"
    cmd = [sys.executable, "-m", "archc.cli", "sweep", str(spec), "--trials", "3", "--out", str(out)]
    _kill_after(cmd, env, finished=1, out=out)
    rows = json.loads((out / "results.json").read_text())
    assert len(rows) == 1 and rows[0]["state"] == "complete"  # written after each trial
    kept = _snapshot(out, [r["trial"] for r in rows if r["state"] == "complete"])

    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert r.returncode == 1 and "holds a sweep" in r.stderr and "--resume" in r.stderr  # never started over
    r = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "trial 1 was running when the sweep stopped" in r.stderr and "best: trial " in r.stdout
    rows = json.loads((out / "results.json").read_text())
    assert _snapshot(out, list(kept)) == kept  # finished trials reused, not re-run
    states = [r["state"] for r in rows]
    assert states[1] == "interrupted" and sum(s in ("complete", "pruned") for s in states) == 3
    targets = ("params.width", "train.optimizer.lr", "train.batch_size")
    again = [r for r in rows[2:] if all(r[k] == rows[1][k] for k in targets)]
    assert again, "the interrupted trial's values were not run again"
    assert (out / "trial-0001").is_dir() and not (out / "trial-0001" / "result.json").exists()  # left as it was
    assert (out / "best.json").is_file() and (out / "trials.png").is_file()


def test_a_pruned_trial_is_marked_pruned_not_failed_and_its_run_can_resume(tmp_path, tiny):
    from archc.language.sweep import apply
    from archc.sweep.trial import Job, run_job
    from archc.train import run

    raw = json.loads(tiny(tmp_path / "sweep.json", epochs=2).read_text())
    values = {"params.width": 12}

    class Trial:  # stands for Optuna's: prunes after the first epoch
        reported: list = []

        def report(self, value, step):
            self.reported.append((step, value))

        def should_prune(self):
            return True

    trial = Trial()
    job = Job(0, 0, values, apply(raw, values), str(tmp_path / "trial-0000"), "", "")
    outcome = run_job(job, trial)
    assert outcome.state == "pruned" and outcome.epochs == 1 and trial.reported[0][0] == 1
    assert outcome.value == trial.reported[0][1]
    marked = json.loads((tmp_path / "trial-0000" / "trial.json").read_text())
    assert marked["state"] == "pruned" and marked["values"] == values
    assert not (tmp_path / "trial-0000" / "result.json").exists()  # an unfinished run, not a failed one
    result = run(tmp_path / "trial-0000" / "spec.json", out=tmp_path / "trial-0000", resume=True, quiet=True)
    assert result.epochs_run == 2
