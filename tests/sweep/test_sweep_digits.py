"""`archc sweep` on sklearn's digits: 8 trials run as run folders, the best is named, and its spec trains."""
from __future__ import annotations

import json

from click.testing import CliRunner

from archc.cli import main


def test_a_sweep_of_8_trials_names_its_best_and_its_spec_trains(tmp_path, tiny):
    spec, out = tiny(tmp_path / "sweep.json"), tmp_path / "sw"
    r = CliRunner().invoke(main, ["sweep", str(spec), "--trials", "8", "--out", str(out)])
    assert r.exit_code == 0, r.output
    rows = json.loads((out / "results.json").read_text())
    assert [row["trial"] for row in rows] == list(range(8))
    assert {row["state"] for row in rows} <= {"complete", "pruned"}
    complete = [row for row in rows if row["state"] == "complete"]
    best = max(complete, key=lambda row: row["val_accuracy"])  # accuracy: higher is better
    assert f"best: trial {best['trial']} " in r.output and str(out / "best.json") in r.output
    assert (out / "results.csv").read_text().count("\n") == 9  # header + 8 trials
    assert (out / "trials.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for row in rows:  # each trial a normal run folder whose spec holds the trial's values, without [sweep]
        run = out / f"trial-{row['trial']:04d}"
        used = json.loads((run / "spec.json").read_text())
        assert "sweep" not in used and used["params"]["width"] == row["params.width"]
        assert used["train"]["batch_size"] == row["train.batch_size"]
        assert used["train"]["optimizer"]["lr"] == row["train.optimizer.lr"]
        marked = json.loads((run / "trial.json").read_text())
        assert marked["state"] == row["state"]
        assert (run / "result.json").exists() == (row["state"] == "complete")  # a pruned run is not finished
    best_spec = json.loads((out / "best.json").read_text())
    assert "sweep" not in best_spec and best_spec["params"]["width"] == best["params.width"]
    assert best_spec["train"]["optimizer"]["lr"] == best["train.optimizer.lr"]
    r = CliRunner().invoke(main, ["train", str(out / "best.json"), "--out", str(tmp_path / "best"), "--epochs",
                                  "1", "--quiet"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "best" / "model.onnx").exists()
