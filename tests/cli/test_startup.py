"""What starting `archc` costs: the command line and the runtime half import neither the compiler (the op registry,
the spec model, the pipeline) nor torch; `archc infer` reads a model with ONNX Runtime and the data sources alone."""
from __future__ import annotations

import json
import subprocess
import sys

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


def test_archc_train_still_resolves_lazily():
    import archc.train

    assert callable(archc.train.run) and archc.train.RunResult.__name__ == "RunResult"
    loaded = _loaded("import archc.train")
    assert "archc.train.api" not in loaded
