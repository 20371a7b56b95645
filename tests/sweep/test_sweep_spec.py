"""[sweep] is checked by `archc validate` as every other table: unknown targets (with did-you-mean), bad ranges,
values the spec refuses, each located; without torch or optuna. And `archc sweep`'s refusals before any work."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from archc.cli import main

ERRORS = [
    ({"params.widht": {"int": [8, 32]}}, "sweep.\"params.widht\": unknown target 'params.widht': [params] has no "
                                         "'widht' (did you mean 'width'?)"),
    ({"trian.epochs": {"int": [1, 2]}}, "unknown target 'trian.epochs': expected params.NAME or train.KEY (did you "
                                        "mean 'train.epochs'"),
    ({"train.optimizer.lrr": {"log_uniform": [1e-4, 1e-2]}}, "sweep.\"train.optimizer.lrr\": unknown target "
                                                             "'train.optimizer.lrr': train.optimizer has no key 'lrr' "
                                                             "(did you mean 'lr'?)"),
    ({"train.epochs.x": {"int": [1, 2]}}, "train.epochs is a value, not a table"),
    ({"params.width": {"int": [64, 8]}}, "sweep.\"params.width\".int: expected [low, high] with low <= high, "
                                         "received [64, 8]"),
    ({"train.optimizer.lr": {"log_uniform": [0.0, 1e-2]}}, "expected a low end > 0 for a log range, received 0.0"),
    ({"params.width": {"int": [8, 64], "step": 8, "log": True}}, "expected no step with log = true"),
    ({"params.width": {"choice": [8, 16], "log": True}}, "sweep.\"params.width\".log: expected no log with choice"),
    ({"params.width": {"choice": [8, 8]}}, "expected distinct values, received [8, 8]"),
    ({"params.width": {"log": True}}, "expected exactly one of int, float, log_uniform, choice, received none"),
    ({"params.width": {"int": [8, 16], "choice": [4]}}, "received int and choice"),
    ({"params.width": {"intt": [8, 16]}}, "sweep.params.width.intt: unknown attribute 'intt' (did you mean 'int'?)"),
    ({"params.width": {"int": [8.5, 16]}}, "sweep.\"params.width\".int[0]: expected an integer, received 8.5"),
    ({"train.optimizer.lr": {"float": [1e-3, "a"]}}, "sweep.\"train.optimizer.lr\".float[1]: expected a finite "
                                                     "number, received 'a'"),
    ({"params.width": {"int": [8]}}, "sweep.\"params.width\".int: expected [low, high], received [8]"),
    ({"params.width": {"choice": [16, 0]}}, "sweep.\"params.width\".choice[1]: 0 fails the spec: layers[1] (fc1)"),
    ({"train.batch_size": {"choice": [32, 0]}}, "sweep.\"train.batch_size\".choice[1]: 0 fails the spec: "
                                                "train.batch_size: expected a value >= 1, received 0"),
    ({"train.schedule": {"choice": ["cosine", "cosin"]}}, "'cosin' fails the spec: train.schedule"),
    ({"train.label_smoothing": {"float": [0.0, 1.0]}}, "sweep.\"train.label_smoothing\".float[1]: 1.0 fails the "
                                                       "spec: train.label_smoothing: expected a value < 1"),
    ({"params": {"width": {"int": [8, 16]}}, "params.width": {"int": [8, 16]}}, "received 'params.width' twice"),
]


def _validate(tmp_path, tiny, sweep) -> tuple[int, str]:
    spec = tiny(tmp_path / "s.json", sweep=sweep)
    r = CliRunner().invoke(main, ["validate", str(spec)])
    return r.exit_code, r.output


@pytest.mark.parametrize("sweep,expected", ERRORS, ids=[str(i) for i in range(len(ERRORS))])
def test_validate_locates_a_bad_sweep_table(tmp_path, tiny, sweep, expected):
    code, output = _validate(tmp_path, tiny, sweep)
    assert code == 1 and expected in output, output
    assert "Traceback" not in output


def test_validate_accepts_nested_tables_and_the_example(tmp_path, tiny):
    from archc.pipeline import compile_spec

    code, output = _validate(tmp_path, tiny, {"params": {"width": {"int": [8, 16]}},
                                              "train": {"optimizer": {"lr": {"float": [1e-3, 1e-2], "log": True}}}})
    assert code == 0, output
    spec = compile_spec(tmp_path / "s.json").spec
    assert list(spec.sweep) == ["params.width", "train.optimizer.lr"]
    assert compile_spec(tiny(tmp_path / "e.json", sweep=None).with_name("e.json")).spec.sweep


def test_a_trials_spec_has_its_values_written_in_and_no_sweep_table():
    from archc.language.sweep import apply

    raw = {"archc": 1, "params": {"width": 4}, "train": {"schedule": "cosine"}, "sweep": {"x": {}}}
    used = apply(raw, {"params.width": 32, "train.optimizer.lr": 0.01, "train.schedule.warmup_epochs": 1.0})
    assert used == {"archc": 1, "params": {"width": 32},
                    "train": {"schedule": {"name": "cosine", "warmup_epochs": 1.0}, "optimizer": {"lr": 0.01}}}
    assert raw["params"]["width"] == 4 and "sweep" in raw  # the sweep's own spec is left as it was


def test_validate_with_a_sweep_table_imports_neither_torch_nor_optuna(tmp_path, tiny):
    spec = tiny(tmp_path / "s.json")
    probe = ("import sys\nfrom click.testing import CliRunner\nfrom archc.cli import main\n"
             f"r = CliRunner().invoke(main, ['validate', {str(spec)!r}])\nassert r.exit_code == 0, r.output\n"
             "print(sorted(m for m in ('torch', 'optuna') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_sweep_refuses_a_spec_without_a_sweep_table_and_a_folder_holding_files(tmp_path, tiny):
    plain = tmp_path / "plain.json"
    raw = json.loads(tiny(tmp_path / "s.json").read_text())
    plain.write_text(json.dumps({k: v for k, v in raw.items() if k != "sweep"}))
    r = CliRunner().invoke(main, ["sweep", str(plain), "--trials", "2", "--out", str(tmp_path / "a")])
    assert r.exit_code == 1 and "expected a [sweep] table" in r.output and not (tmp_path / "a").exists()
    held = tmp_path / "b"
    held.mkdir()
    (held / "best.json").write_text("{}")  # a user's file where the sweep would write
    r = CliRunner().invoke(main, ["sweep", str(tmp_path / "s.json"), "--trials", "2", "--out", str(held)])
    assert r.exit_code == 1 and "best.json" in r.output, r.output
    assert (held / "best.json").read_text() == "{}" and not (held / "study.db").exists()


def test_resume_refuses_another_spec_and_a_folder_in_use(tmp_path, tiny):
    import os

    spec, out = tiny(tmp_path / "s.json"), tmp_path / "sw"
    out.mkdir()
    (out / "study.db").write_bytes(b"")
    (out / "sweep.json").write_text(json.dumps({"spec_sha256": "0" * 64}))
    r = CliRunner().invoke(main, ["sweep", str(spec), "--trials", "2", "--out", str(out), "--resume"])
    assert r.exit_code == 1 and "expected the spec the sweep in" in r.output and "--resume" in r.output, r.output
    (out / "sweep.json").write_text("{")
    r = CliRunner().invoke(main, ["sweep", str(spec), "--trials", "2", "--out", str(out), "--resume"])
    assert r.exit_code == 1 and "sweep.json: expected the sweep's record" in r.output, r.output
    (out / "sweep.json").unlink()
    (out / ".archc.lock").write_text(f"{os.getppid()}\n")  # a live process holds it
    r = CliRunner().invoke(main, ["sweep", str(spec), "--trials", "2", "--out", str(out), "--resume"])
    assert r.exit_code == 1 and "is in use" in r.output and not (out / "sweep.json").exists(), r.output


def test_validate_names_the_search_space_of_the_example():
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "specs" / "digits_sweep.toml"
    r = CliRunner().invoke(main, ["validate", str(example)])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[-1] == (
        "sweep: params.width int [32, 512] log, params.dropout float [0.0, 0.3] step 0.1, train.optimizer.lr "
        "log_uniform [0.0003, 0.01], train.batch_size choice [16, 32, 64]; `archc sweep SPEC --trials N` searches it")


def test_a_broken_params_table_is_not_reported_again_through_sweep(tmp_path, tiny):
    spec = tiny(tmp_path / "s.json", sweep={"params.width": {"int": [8, 64]}, "params.nope": {"int": [1, 2]}})
    raw = json.loads(spec.read_text())
    raw["params"]["width"] = [16]  # not a scalar: [params] is broken
    spec.write_text(json.dumps(raw))
    r = CliRunner().invoke(main, ["validate", str(spec)])
    assert r.exit_code == 1 and "params.width" in r.output, r.output
    assert "unknown target" not in r.output, r.output  # [params] is judged once, where it is
