"""What starting `archc` costs: the command line and the runtime half import neither the compiler (the op registry,
the spec model, the pipeline) nor torch; `archc infer` reads a model with ONNX Runtime and the data sources alone."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "archc.ops", "archc.language.model", "archc.pipeline", "archc.train.api", "archc.graph.ir")


def _loaded(code: str) -> set[str]:
    probe = f"{code}; import json, sys; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_the_command_line_and_the_runtime_import_no_compiler():
    for code in ("import archc.cli", "import archc.cli, archc.runtime; from archc.runtime import Model",
                 "import archc.train.command"):
        loaded = _loaded(code)
        assert not [m for m in HEAVY if m in loaded], (code, [m for m in HEAVY if m in loaded])


def test_stop_after_choices_are_the_pipelines_passes():
    from archc.clihelp import BUILD_PASS_NAMES, PASS_NAMES
    from archc.pipeline import BUILD_PASSES, PASSES, names

    assert list(PASS_NAMES) == names(PASSES) and list(BUILD_PASS_NAMES) == names(BUILD_PASSES)


def test_exporter_choices_are_the_exports():
    from archc.clihelp import EXPORTER_NAMES
    from archc.compiled import BuildOptions
    from archc.export.onnx import DEFAULT_EXPORTER, EXPORTERS

    assert EXPORTER_NAMES == EXPORTERS and BuildOptions().exporter == DEFAULT_EXPORTER == "emit"


def test_archc_train_still_resolves_lazily():
    import archc.train

    assert callable(archc.train.run) and archc.train.RunResult.__name__ == "RunResult"
    loaded = _loaded("import archc.train")
    assert "archc.train.api" not in loaded


# What `archc infer` must leave unimported on its own paths (the runtime half): the compiler and its spec model,
# pydantic (the spec model's and, before archc/data/options.py, the data sources' options) and torch.
NOT_IN_INFER = ("torch", "pydantic", "archc.language", "archc.ops", "archc.graph.ir", "archc.graph.expand",
                "archc.pipeline", "archc.lower", "archc.export", "archc.train.api", "archc.weights", "archc.nn")
INFER_PROBE = """
import json, sys
from click.testing import CliRunner
from archc.cli import main
r = CliRunner().invoke(main, json.loads(sys.argv[1]))
assert r.exit_code == 0, r.output
print(json.dumps(sorted(sys.modules)))
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Untrained models of the kinds `archc infer` runs, exported here (weights do not matter, imports do), and an
    input for each: digits (an image input [1, 8, 8]) with an .npz, a PNG and a folder of class sub-folders; a
    tabular model that takes penguins.csv's columns by name; a tiny byte-level language model."""
    import numpy as np
    from PIL import Image

    from archc.data.columns import Column, fit
    from archc.data.tabular import read_table
    from archc.export import export
    from archc.lower import lower
    from archc.pipeline import compile_spec

    def write(spec, path: Path, **metadata) -> None:  # noqa: ANN001
        compiled = compile_spec(spec)
        export(compiled, path, module=lower(compiled.graph, seed=0), extra_metadata=metadata or None)

    root = tmp_path_factory.mktemp("startup")
    out = {"digits": root / "digits.onnx", "penguins": root / "penguins.onnx", "lm": root / "lm.onnx"}
    write(ROOT / "specs" / "digits_mlp.toml", out["digits"])
    np.savez(root / "x.npz", image=np.zeros((2, 1, 8, 8), np.float32))
    for label in ("3", "7"):
        (root / "digits" / label).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "digits" / label / "a.png")
    csv = ROOT / "specs" / "data" / "penguins.csv"
    columns = [Column("island", "categorical", categories=("Biscoe", "Dream", "Torgersen")),
               Column("bill_length_mm", "numeric", missing="median")]
    table = fit("row", columns, read_table(csv, "penguins.csv").cells, target="species")
    tabular = {"archc": 1, "model": {"name": "p"}, "inputs": {"row": {"shape": [table.width()]}},
               "task": {"kind": "classification", "labels": ["Adelie", "Chinstrap", "Gentoo"]},
               "layers": [{"op": "linear", "out_features": 3}]}
    write(tabular, out["penguins"], columns=table.to_json(), labels=["Adelie", "Chinstrap", "Gentoo"])
    lm = {"archc": 1, "model": {"name": "lm"}, "inputs": {"tokens": {"shape": ["seq"], "dtype": "int64", "vocab": 256}},
          "axes": {"seq": 8}, "task": {"kind": "language_model"},
          "layers": [{"id": "emb", "op": "embedding", "num_embeddings": 256, "embedding_dim": 8},
                     {"id": "logits", "op": "tied_linear", "tie": "emb"}]}
    write(lm, out["lm"])
    return out | {"npz": root / "x.npz", "png": root / "digits" / "3" / "a.png", "folder": root / "digits",
                  "csv": csv}


INFER_CASES = {"npz": ["digits", "--input", "npz"], "png": ["digits", "--input", "png"],
               "folder": ["digits", "--input", "folder", "--json"], "sklearn": ["digits", "--input", "sklearn:digits"],
               "csv": ["penguins", "--input", "csv"], "csv source": ["penguins", "--input", "csv:{csv}"],
               "prompt": ["lm", "--prompt", "hi", "--max-new-tokens", "3"]}


@pytest.mark.parametrize("case", INFER_CASES)
def test_infer_imports_only_the_runtime_half(models: dict[str, Path], case: str):
    """`archc infer` on each common input runs with ONNX Runtime, numpy and the data readers alone."""
    args = ["infer", *(str(models.get(a, a)).format(**models) for a in INFER_CASES[case]), "--device", "cpu"]
    r = subprocess.run([sys.executable, "-c", INFER_PROBE, json.dumps(args)], capture_output=True, text=True,
                       cwd=ROOT)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    loaded = json.loads(r.stdout.splitlines()[-1])
    assert "onnxruntime" in loaded  # the probe ran the model
    heavy = [m for m in loaded if m in NOT_IN_INFER or m.startswith(tuple(f"{h}." for h in NOT_IN_INFER))]
    assert not heavy, (case, heavy)
