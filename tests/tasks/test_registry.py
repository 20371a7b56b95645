"""The task registry, walked as tests/ops/test_conformance.py walks ops: every registered kind validates,
trains (1 epoch) and exports the example it declares, and `archc infer` runs it in the modes it supports."""
from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from archc.cli import main
from archc.language.schema import json_schema
from archc.tasks import REGISTRY
from archc.tasks.base import MODES

KINDS = sorted(REGISTRY)


def cli(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """kind -> (folder, model.onnx) of its example, trained once per module (one torch thread: the suite runs
    with -n 2 on two cores)."""
    import torch

    from archc import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cache: dict[str, tuple[Path, Path]] = {}

    def get(kind: str) -> tuple[Path, Path]:
        if kind not in cache:
            folder = tmp_path_factory.mktemp(kind)
            example = REGISTRY[kind].example()
            for name, content in example.files.items():
                (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())
            spec = folder / "spec.json"
            spec.write_text(json.dumps(example.spec))
            r = cli("validate", spec)
            assert r.exit_code == 0, r.output
            train.run(spec, out=folder / "run", quiet=True)
            cache[kind] = folder, folder / "run" / "model.onnx"
        return cache[kind]

    yield get
    torch.set_num_threads(threads)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_trains_exports_and_infers_its_example(kind, trained):
    cls = REGISTRY[kind]
    example = cls.example()
    assert example.spec["task"]["kind"] == kind and example.infer, "an example of its own kind, run by infer"
    folder, model = trained(kind)
    assert model.exists()
    meta = {p.key: p.value for p in onnx.load(str(model), load_external_data=False).metadata_props}
    assert json.loads(meta["archc.task"])["kind"] == kind
    flags = {MODES[m] for m in cls.modes}
    for args in example.infer:
        args = tuple(a.replace("{dir}", str(folder)) for a in args)
        assert args[0] in flags, f"{kind}: {args[0]} is not one of its modes {cls.modes}"
        r = cli("infer", model, *args)
        assert r.exit_code == 0, f"{kind} {args}: {r.output}"
        if args[0] == "--input":  # a labelled source: scored by the task's own rule, as train scored it
            assert " split, " in r.output and ": " in r.output.splitlines()[-1], r.output
            metrics = json.loads(cli("infer", model, *args, "--json").output)["metrics"]
            test = json.loads((folder / "run" / "result.json").read_text())["test"]
            assert metrics and cls.metric in metrics, f"{kind}: infer scores {metrics}, train {test}"
            assert metrics[cls.metric] == pytest.approx(test[cls.metric], rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_other_modes_are_refused_naming_the_task_and_its_modes(kind, trained, tmp_path):
    cls = REGISTRY[kind]
    others = {"--prompt": ("--prompt", "x"), "--num-samples": ("--num-samples", "1", "--output", tmp_path / "s.npy"),
              "--input": ("--input", tmp_path / "x.npy")}
    refused = [flag for flag in others if flag not in {MODES[m] for m in cls.modes}]
    if not refused:
        pytest.skip(f"{kind} supports every mode")
    _, model = trained(kind)
    for flag in refused:
        r = cli("infer", model, *others[flag])
        assert r.exit_code == 1, r.output
        assert f"{flag}: expected a" in r.output and f"received a {kind} model, which supports" in r.output
        assert "Traceback" not in r.output


def test_classification_over_a_sequence_is_rejected_by_validate(tmp_path):
    """validate accepted a [batch, seq, classes] classifier that train then rejected; now one rule decides."""
    spec = {"archc": 1, "model": {"name": "seq"}, "inputs": {"x": {"shape": ["seq", 4]}},
            "task": {"kind": "classification"}, "layers": [{"op": "linear", "out_features": 3}]}
    (tmp_path / "s.json").write_text(json.dumps(spec))
    r = cli("validate", tmp_path / "s.json")
    assert r.exit_code == 1
    assert ("s.json: task.kind: classification expects the output 'linear_0' shaped [batch, classes] (float32 "
            "scores), received float32 [batch, seq, 3]") in r.output
    from archc import train
    from archc.errors import SpecError
    with pytest.raises(SpecError, match=r"shaped \[batch, classes\]"):  # train says the same, before any data
        train.run(spec | {"data": {"source": "sklearn:iris"}}, out=tmp_path / "run", quiet=True)
    del spec["task"]  # a bare architecture (no [task], [train], [data]) declares no task: it validates
    (tmp_path / "bare.json").write_text(json.dumps(spec))
    assert cli("validate", tmp_path / "bare.json").exit_code == 0
    (tmp_path / "recipe.json").write_text(json.dumps(spec | {"train": {"epochs": 1}}))  # meant to train: checked
    r = cli("validate", tmp_path / "recipe.json")
    assert r.exit_code == 1 and "without a [task] table the kind is classification" in r.output


def test_loss_is_checked_against_the_kind_at_validate(tmp_path):
    spec = {"archc": 1, "model": {"name": "m"}, "inputs": {"x": {"shape": [4]}}, "task": {"kind": "classification"},
            "layers": [{"op": "linear", "out_features": 3}], "train": {"loss": "mae"}}
    (tmp_path / "s.json").write_text(json.dumps(spec))
    r = cli("validate", tmp_path / "s.json")
    assert r.exit_code == 1
    assert "s.json: train.loss: expected a loss for classification (cross_entropy), received 'mae'" in r.output


def test_unknown_recorded_kind_is_never_scored_by_another_rule(trained, tmp_path):
    """A model whose task this archc does not know (e.g. written by a newer one) is not scored as regression."""
    _, model = trained("classification")
    m = onnx.load(str(model))
    for p in m.metadata_props:
        if p.key == "archc.task":
            p.value = json.dumps({"kind": "binary", "labels": None})
    onnx.save(m, str(tmp_path / "b.onnx"))
    r = cli("infer", tmp_path / "b.onnx", "--input", "sklearn:iris")
    assert r.exit_code == 1 and "expected a model of a known task kind" in r.output and "'binary'" in r.output
    import numpy as np
    np.save(tmp_path / "x.npy", np.zeros((2, 4), np.float32))  # raw outputs for given inputs: still shown
    r = cli("infer", tmp_path / "b.onnx", "--input", tmp_path / "x.npy")
    assert r.exit_code == 0 and "2 example(s)" in r.output, r.output


def test_spec_choices_and_schema_come_from_the_registry():
    schema = json.dumps(json_schema())
    for kind, cls in REGISTRY.items():
        assert f'"{kind}"' in schema
        for loss in cls.losses:
            assert f'"{loss}"' in schema


def test_task_modules_leave_torch_unimported():
    import subprocess
    import sys
    code = ("import sys, archc.pipeline; assert 'numpy' not in sys.modules, 'validate stays numpy-free'\n"
            "import archc.tasks, archc.runtime.evaluate; assert 'torch' not in sys.modules; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_every_data_task_is_one_the_data_registry_feeds():
    """A kind asks the loader for a data task some registered source can feed (None: whatever the data holds)."""
    from archc.data import REGISTRY as SOURCES

    fed = {task for source in SOURCES.values() for task in source.tasks}
    for kind, cls in REGISTRY.items():
        assert cls.data_task is None or cls.data_task in fed, kind
