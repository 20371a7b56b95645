"""Golden messages for issue 19's red team on run folders: the CLI on each case, the exact first line of stderr and
exit 1, and no file written, moved or deleted. Classes: a user's file lost to a fresh run or a --resume, another
command's output replacing a run's own file, and a resumed run that would train and then fail at its end (a folder
where a file belongs, its best weights missing or foreign). Paths are written as TMP/..."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import pytest
from click.testing import CliRunner

from archc.cli import main

SPEC = {"archc": 1, "model": {"name": "tiny"}, "inputs": {"x": {"shape": [4]}}, "task": {"kind": "classification"},
        "layers": [{"id": "fc1", "op": "linear", "out_features": 3}],
        "train": {"epochs": 1, "batch_size": 16}, "data": {"source": "npz:data.npz", "val_fraction": 0.2,
                                                           "test_fraction": 0.2}}


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> SimpleNamespace:
    """One finished 1-epoch run of a 4 -> 3 linear classifier (seconds), its spec and data beside it."""
    root = tmp_path_factory.mktemp("made")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 4)).astype(np.float32)
    np.savez(root / "data.npz", x=x, y=np.argmax(x[:, :3], axis=1))
    (root / "spec.json").write_text(json.dumps(SPEC))
    r = CliRunner().invoke(main, ["train", str(root / "spec.json"), "--out", str(root / "run"), "--quiet",
                                  "--no-optimize"])
    assert r.exit_code == 0, r.output
    (root / "spec2.json").write_text(json.dumps(SPEC | {"train": SPEC["train"] | {"epochs": 2}}))
    _interrupted(root / "spec2.json", root / "run2")
    return SimpleNamespace(root=root, spec=root / "spec.json", run=root / "run", spec2=root / "spec2.json",
                           run2=root / "run2")


def _interrupted(spec: Path, out: Path) -> None:
    """A 2-epoch run stopped after its first epoch's checkpoint (as by Ctrl-C): --resume trains its second."""
    import archc.train.loop as loop
    from archc.train import run

    end_epoch = loop.end_epoch

    def stop_after(*args, **kwargs):
        end_epoch(*args, **kwargs)
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, "end_epoch", stop_after)
        with pytest.raises(KeyboardInterrupt):
            run(spec, out=out, quiet=True, optimize=False)
    assert (out / "train_state.safetensors").exists() and not (out / "result.json").exists()


def _run(tmp: Path, made: SimpleNamespace, unfinished: bool = False) -> Path:
    """A copy of the finished run, or of the run interrupted after epoch 1 of 2 (`unfinished`), as TMP/run."""
    return shutil.copytree(made.run2 if unfinished else made.run, tmp / "run")


Case = Callable[..., list]
CASES: dict[str, tuple[Case, str]] = {}


def case(expected: str):
    def add(fn: Case) -> Case:
        CASES[fn.__name__] = (fn, expected)
        return fn
    return add


# user files lost: a fresh run cleared every file of archc's names in a folder without a run's state
@case("error: --out: 'TMP/out' holds 'model.onnx', which no interrupted run of archc train leaves (choose another "
      "--out, or pass --force to move its files to 'TMP/out.old-1' first)")
def train_into_a_folder_holding_a_users_model(tmp, made):
    (tmp / "out").mkdir()
    (tmp / "out" / "model.onnx").write_bytes(b"a model the user built")
    return ["train", made.spec, "--out", tmp / "out", "--quiet"]


@case("error: --out: 'TMP/out' holds 'best.safetensors', 'report.json', which no interrupted run of archc train "
      "leaves (choose another --out, or pass --force to move its files to 'TMP/out.old-1' first)")
def train_into_a_folder_holding_weights_without_a_spec(tmp, made):
    (tmp / "out").mkdir()
    shutil.copy(made.run / "best.safetensors", tmp / "out")
    shutil.copy(made.run / "report.json", tmp / "out")
    return ["train", made.spec, "--out", tmp / "out", "--quiet"]


# user files lost: --resume of a finished run whose state was removed deleted its model, result and weights
@case("error: --out: 'TMP/run' holds a finished run (result.json) without its train_state.safetensors: --resume has "
      "nothing to continue (choose another --out, or pass --force to move its files to 'TMP/run.old-1' first)")
def resume_a_finished_run_without_its_state(tmp, made):
    run = _run(tmp, made)
    (run / "train_state.safetensors").unlink()
    return ["train", made.spec, "--out", run, "--resume", "--quiet"]


# a run that ends without its model: a folder where the run writes a file was found only at the end
@case("error: --out: expected the run's files in 'TMP/run', received a folder (or other non-file) at "
      "'TMP/run/model.onnx', where the run writes its model.onnx (move it away, then --resume again)")
def resume_with_a_folder_where_the_model_goes(tmp, made):
    run = _run(tmp, made, unfinished=True)
    (run / "model.onnx").mkdir()
    return ["train", made.spec2, "--out", run, "--resume", "--quiet"]


@case("error: --out: expected the run's files in 'TMP/run', received a folder (or other non-file) at "
      "'TMP/run/result.json', where the run writes its result.json (move it away, then --resume again)")
def resume_with_a_folder_where_the_result_goes(tmp, made):
    run = _run(tmp, made, unfinished=True)
    (run / "result.json").mkdir()
    return ["train", made.spec2, "--out", run, "--resume", "--quiet"]


# a run that ends without its model: the best weights, read for the test split and the export, were read at the end
@case("error: TMP/run/best.safetensors: expected the best epoch's weights the run recorded, received no such file "
      "(start the run again without --resume (--force moves it aside))")
def resume_without_the_best_weights(tmp, made):
    run = _run(tmp, made, unfinished=True)
    (run / "best.safetensors").unlink()
    return ["train", made.spec2, "--out", run, "--resume", "--quiet"]


@case("error: TMP/run/best.safetensors: expected the weights of this spec's model, received a checkpoint that "
      "differs at fc1.weight")
def resume_with_best_weights_of_another_model(tmp, made):
    from safetensors.numpy import load_file, save_file

    run = _run(tmp, made, unfinished=True)
    tensors = load_file(run / "best.safetensors")
    tensors["fc1.weight"] = np.ascontiguousarray(tensors["fc1.weight"].T)  # [4, 3] for the model's [3, 4]
    save_file(tensors, run / "best.safetensors")
    return ["train", made.spec2, "--out", run, "--resume", "--quiet"]


# exit 3, or silently wrong: a train_state whose scalars or tensors archc did not write, met while restoring it
def _edit_state(run: Path, scalars=None, tensors=None) -> None:
    from safetensors.numpy import save_file
    from safetensors import safe_open

    path = run / "train_state.safetensors"
    with safe_open(str(path), "np") as f:
        arrays, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    body = json.loads(meta["archc.train_state"])
    scalars and scalars(body)
    tensors and tensors(arrays)
    save_file(arrays, str(path), metadata={"archc.train_state": json.dumps(body)})


STATE = "error: TMP/run/train_state.safetensors: expected the training state archc wrote, received one that does not "


@case(STATE + "restore (KeyError: 'state') (start the run again without --resume (--force moves it aside))")
def resume_a_state_whose_optimizer_is_empty(tmp, made):
    run = _run(tmp, made, unfinished=True)
    _edit_state(run, scalars=lambda body: body.update(optimizer={}))
    return ["train", made.spec2, "--out", run, "--resume", "--quiet"]


@case(STATE + "restore (ValueError: history: expected one row per epoch completed (1), received 'x') (start the run "
      "again without --resume (--force moves it aside))")
def resume_a_state_whose_history_is_text(tmp, made):
    run = _run(tmp, made, unfinished=True)
    _edit_state(run, scalars=lambda body: body.update(history="x"))
    return ["train", made.spec2, "--out", run, "--resume", "--quiet"]


@case(STATE + "restore (ValueError: optim.0.exp_avg: expected the shape [3, 4] of parameter 0, received [3]) (start "
      "the run again without --resume (--force moves it aside))")
def resume_a_state_whose_adam_moments_have_another_shape(tmp, made):
    run = _run(tmp, made, unfinished=True)  # torch's load_state_dict takes it: the step would broadcast [3]
    _edit_state(run, tensors=lambda t: t.update({"optim.0.exp_avg": np.zeros(3, np.float32)}))
    return ["train", made.spec2, "--out", run, "--resume", "--quiet"]


@case(STATE + "restore (ValueError: rank.0.rng: expected this rank's rng state, received none) (start the run again "
      "without --resume (--force moves it aside))")
def resume_a_state_without_its_rng(tmp, made):
    run = _run(tmp, made, unfinished=True)
    _edit_state(run, tensors=lambda t: t.pop("rank.0.rng"))
    return ["train", made.spec2, "--out", run, "--resume", "--quiet"]


@case(STATE + "restore (ValueError: model.fc1.weight: expected finite weights, received nan or inf) (start the run "
      "again without --resume (--force moves it aside))")
def resume_a_state_with_nan_weights(tmp, made):
    run = _run(tmp, made, unfinished=True)
    _edit_state(run, tensors=lambda t: t["model.fc1.weight"].fill(np.nan))
    return ["train", made.spec2, "--out", run, "--resume", "--quiet"]


# silently wrong weights: a run's spec.json replaced by one whose shapes still fit exported its weights as another model
@case("error: TMP/run/spec.json: expected the spec the run trained (hash HASH…, as the run recorded it), received a "
      "spec.json whose hash is HASH… (put back the run's own spec.json, or export a weights file with --checkpoint "
      "FILE)")
def export_a_run_whose_spec_was_replaced(tmp, made):
    run = _run(tmp, made)
    spec = json.loads((run / "spec.json").read_text())
    spec["layers"][0]["act"] = "gelu"  # same parameters, another function
    (run / "spec.json").write_text(json.dumps(spec))
    return ["export", run, "-o", tmp / "m.onnx", "--no-optimize"]


# a run that ends without its model: --out inside an images folder became a class of the data a resumed run re-reads
@case("error: --out: expected a run folder outside the data folder 'TMP/imgs', received 'TMP/imgs/run' "
      "(a resumed run reads its data again (and a split read per batch is read again for the report): its files "
      "would join them; choose another --out)")
def train_into_the_image_folder_it_reads(tmp, made):
    for c in ("a", "b"):
        (tmp / "imgs" / c).mkdir(parents=True)
        for i in range(10):
            np.save(tmp / "imgs" / c / f"{i}.npy", np.full((1, 2, 2), i + (c == "b"), np.float32))
    spec = SPEC | {"inputs": {"x": {"shape": [1, 2, 2]}},
                   "layers": [{"op": "flatten"}, {"id": "fc1", "op": "linear", "out_features": 2}]}
    (tmp / "im.json").write_text(json.dumps(spec))
    return ["train", tmp / "im.json", "--data", f"images:{tmp / 'imgs'}", "--out", tmp / "imgs" / "run", "--quiet"]


# a message that names no cause: an empty weights file "declared a header of -1 bytes"
@case("error: TMP/empty.safetensors: expected a safetensors file, received a file of 0 bytes, shorter than the 8 "
      "bytes of a header's length (archc reads safetensors only (never pickle): save with safetensors' save_file)")
def init_from_an_empty_file(tmp, made):
    (tmp / "empty.safetensors").write_bytes(b"")
    return ["train", made.spec, "--init", tmp / "empty.safetensors", "--out", tmp / "out", "--quiet"]


# user files lost: another command's output replaced a run's own file
@case("error: --output: expected a file that is none of a run's own files, received 'TMP/run/train_state.safetensors', "
      "the train_state.safetensors of the run in 'TMP/run' (writing it would replace the run's file: name another "
      "file)")
def export_over_the_runs_resume_state(tmp, made):
    run = _run(tmp, made, unfinished=True)
    return ["export", run, "-o", run / "train_state.safetensors", "--no-optimize"]


@case("error: --output: expected a file that is none of a run's own files, received 'TMP/run/best.safetensors', "
      "the best.safetensors of the run in 'TMP/run' (writing it would replace the run's file: name another file)")
def export_last_over_the_best_weights(tmp, made):
    run = _run(tmp, made)
    return ["export", run, "--checkpoint", "last", "-o", run / "best.safetensors", "--no-optimize"]


@case("error: --output: expected a file that is none of a run's own files, received 'TMP/run/metrics.jsonl', the "
      "metrics.jsonl of the run in 'TMP/run' (writing it would replace the run's file: name another file)")
def build_over_the_runs_metrics(tmp, made):
    run = _run(tmp, made)
    return ["build", made.spec, "-o", run / "metrics.jsonl", "--no-optimize"]


# silently wrong, or exit 3 later: a corrupt export.json made a model.onnx whose preprocessing infer skips or trips on
def _export_json(run: Path, preprocess) -> None:
    metadata = json.loads((run / "export.json").read_text())
    (run / "export.json").write_text(json.dumps(metadata | {"preprocess": preprocess}))


@case("error: TMP/run/export.json: preprocess: expected the statistics of the model's inputs (x), received 'img'")
def export_with_preprocessing_of_no_input(tmp, made):
    run = _run(tmp, made)
    _export_json(run, {"img": {"mean": 0.5, "std": 2.0}})  # infer would skip it: raw inputs, wrong predictions
    return ["export", run, "-o", tmp / "m.onnx", "--no-optimize"]


@case("error: TMP/run/export.json: preprocess: x.std: expected a finite number or a non-empty list of them, "
      "received 'a'")
def export_with_preprocessing_that_is_text(tmp, made):
    run = _run(tmp, made)
    _export_json(run, {"x": {"mean": 0.5, "std": "a"}})
    return ["export", run, "-o", tmp / "m.onnx", "--no-optimize"]


@case("error: TMP/run/export.json: preprocess: x.mean: expected one value per channel of [batch, 4], received 2")
def export_with_preprocessing_of_other_channels(tmp, made):
    run = _run(tmp, made)
    _export_json(run, {"x": {"mean": [0.5, 1.0], "std": [1.0, 2.0]}})
    return ["export", run, "-o", tmp / "m.onnx", "--no-optimize"]


@case("error: TMP/run/export.json: labels: expected null or a list of distinct class names, received 'abc'")
def export_with_labels_that_are_text(tmp, made):
    run = _run(tmp, made)  # the model would have printed classes a, b and c
    metadata = json.loads((run / "export.json").read_text())
    (run / "export.json").write_text(json.dumps(metadata | {"labels": "abc"}))
    return ["export", run, "-o", tmp / "m.onnx", "--no-optimize"]


@case("error: TMP/m.onnx: metadata 'archc.preprocess': x.std: expected a finite number or a non-empty list of them, "
      "received 'a'")
def infer_a_model_whose_preprocessing_is_text(tmp, made):
    import onnx

    model = onnx.load(made.run / "model.onnx")
    props = {p.key: p.value for p in model.metadata_props}
    props["archc.preprocess"] = json.dumps({"x": {"mean": 0.5, "std": "a"}})  # was exit 3 (a ValueError) at the run
    onnx.helper.set_model_props(model, props)
    onnx.save(model, tmp / "m.onnx")
    np.save(tmp / "x.npy", np.zeros((2, 4), np.float32))
    return ["infer", tmp / "m.onnx", "--input", tmp / "x.npy"]


@case("error: TMP/m.onnx: metadata 'archc.task': labels: expected null or a list of distinct class names, received "
      "['a', 'a', 'b']")
def infer_a_model_whose_labels_repeat(tmp, made):
    import onnx

    model = onnx.load(made.run / "model.onnx")
    props = {p.key: p.value for p in model.metadata_props}
    props["archc.task"] = json.dumps({"kind": "classification", "labels": ["a", "a", "b"]})  # two classes printed "a"
    onnx.helper.set_model_props(model, props)
    onnx.save(model, tmp / "m.onnx")
    np.save(tmp / "x.npy", np.zeros((2, 4), np.float32))
    return ["infer", tmp / "m.onnx", "--input", tmp / "x.npy"]


def _same_file(recorded: dict, run: Path) -> dict:
    """export.json with its source (relative to the run folder it was written for) resolved: a copied run rewrites
    it relative to the copy, naming the same file."""
    if isinstance(recorded.get("source"), str) and recorded["source"].startswith("npz:"):
        recorded["source"] = str((run / recorded["source"][4:]).resolve())
    return recorded


def _snapshot(folder: Path) -> dict:
    return {p: (p.read_bytes() if p.is_file() else "dir") for p in folder.rglob("*")}


@pytest.mark.parametrize("name", sorted(CASES))
def test_first_line_of_stderr_and_exit_code(name, tmp_path, made):
    fn, expected = CASES[name]
    args = [str(a) for a in fn(tmp_path, made)]
    before = _snapshot(tmp_path)
    r = CliRunner().invoke(main, args)
    first = (r.stderr.splitlines()[0] if r.stderr else "").replace(str(tmp_path), "TMP")
    first = re.sub(r"(hash (?:is )?)[0-9a-f]{12}…", r"\1HASH…", first)
    assert (r.exit_code, first) == (1, expected), r.output
    after = _snapshot(tmp_path)
    for p in (tmp_path / "run" / "spec.json", tmp_path / "run" / "export.json"):  # rewritten as used: same content
        if p in before and p in after:
            old, new = json.loads(before.pop(p)), json.loads(after.pop(p))
            assert old == new or _same_file(old, made.run) == _same_file(new, p.parent)
    assert after == before  # nothing written, moved or deleted


def test_force_moves_a_users_files_aside_and_a_killed_runs_leftovers_are_cleared(tmp_path, made):
    """--force moves files no interrupted run leaves to DIR.old-1 (nothing deleted); what a run killed before its
    first checkpoint leaves (spec.json, export.json, best.safetensors) is cleared without --force."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"mine")
    r = CliRunner().invoke(main, ["train", str(made.spec), "--out", str(out), "--quiet", "--force", "--no-optimize"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out.old-1" / "model.onnx").read_bytes() == b"mine"
    killed = tmp_path / "killed"
    killed.mkdir()
    for name in ("spec.json", "export.json", "best.safetensors"):
        shutil.copy(made.run / name, killed)
    r = CliRunner().invoke(main, ["train", str(made.spec), "--out", str(killed), "--quiet", "--no-optimize"])
    assert r.exit_code == 0 and (killed / "result.json").exists(), r.output
