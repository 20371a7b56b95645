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


def test_trial_and_best_specs_read_a_relative_data_path_from_their_own_folders(tmp_path, tiny, monkeypatch):
    import numpy as np
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    (tmp_path / "specs").mkdir()
    np.savez(tmp_path / "specs" / "digits.npz", x=x[:400].reshape(-1, 1, 8, 8).astype(np.float32), y=y[:400])
    spec = tiny(tmp_path / "specs" / "sweep.json", epochs=1, sweep={"params.width": {"choice": [8, 12]}})
    raw = json.loads(spec.read_text())
    raw["data"]["source"] = "npz:digits.npz"  # beside the spec, which is not the working folder
    spec.write_text(json.dumps(raw))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    r = CliRunner().invoke(main, ["sweep", str(spec), "--trials", "1", "--out", "sw", "-q"])
    assert r.exit_code == 0, r.output
    assert json.loads(open("sw/trial-0000/spec.json").read())["data"]["source"] == "npz:../../../specs/digits.npz"
    assert json.loads(open("sw/best.json").read())["data"]["source"] == "npz:../../specs/digits.npz"
    monkeypatch.chdir(tmp_path)  # elsewhere: each spec still finds its data
    r = CliRunner().invoke(main, ["train", "work/sw/best.json", "--out", "best", "--quiet"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["train", "work/sw/trial-0000/spec.json", "--out", "work/sw/trial-0000",
                                  "--resume", "--quiet"])
    assert r.exit_code == 0, r.output  # a finished run: --resume re-exports it
