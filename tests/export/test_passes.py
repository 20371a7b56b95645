"""archc.export.passes: one pass list that build, train, `archc export` and the pre-training check all run; a new
variant is one pass (its module) and one list entry, and the one report function prints its line."""
from __future__ import annotations

from pathlib import Path

import onnx
import pytest

import archc.export.passes as passes
from archc.export import export, report_lines
from archc.export.passes import EXPORT_PASSES, ExportPass
from archc.pipeline import compile_spec

SPECS = Path(__file__).resolve().parents[2] / "specs"


def compiled():
    from archc.lower import lower

    c = compile_spec(SPECS / "digits_mlp.toml")
    c.module = lower(c.graph, seed=0)
    return c


def test_the_list_names_each_pass_once_with_the_write_before_the_kv_cache():
    names = [p.name for p in EXPORT_PASSES]
    assert len(set(names)) == len(names)
    assert names.index("emit") < names.index("check") < names.index("optimize") < names.index("row front") \
        < names.index("write") < names.index("kv cache")


def test_a_new_variant_is_one_entry(tmp_path, monkeypatch):
    """A variant rewrites the checked model and says so in the report; nothing else is edited."""

    def tag(ctx):
        model = onnx.ModelProto.FromString(ctx.blob)
        onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, "variant": "on"})
        ctx.blob, ctx.rewrite = model.SerializeToString(), True

    variant = ExportPass("tag", tag, lambda ctx: ctx.facts.other.get("tag", False),
                         describe=lambda report: "variant: tagged" if report.path.endswith("v.onnx") else "")
    at = [p.name for p in EXPORT_PASSES].index("write")
    monkeypatch.setattr(passes, "EXPORT_PASSES", EXPORT_PASSES[:at] + [variant] + EXPORT_PASSES[at:])
    report = export(compiled(), tmp_path / "v.onnx", extra_metadata={"tag": True})
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "v.onnx")).metadata_props}
    assert meta["variant"] == "on" and "variant: tagged" in report_lines(report)
    export(compiled(), tmp_path / "plain.onnx")  # its condition does not hold: the file is as before
    assert "variant" not in {p.key for p in onnx.load(str(tmp_path / "plain.onnx")).metadata_props}


@pytest.mark.parametrize("check", [False, True])
def test_the_pre_training_check_runs_the_same_list_with_its_flag(tmp_path, monkeypatch, check):
    ran: list[str] = []
    monkeypatch.setattr(passes, "EXPORT_PASSES", [
        ExportPass(p.name, (lambda run, name: lambda ctx: ran.append(name) or run(ctx))(p.run, p.name), p.when,
                   p.stage, p.describe) for p in EXPORT_PASSES])
    export(compiled(), tmp_path / "m.onnx", optimize=True, kv_cache=True, check=check)
    assert ran[:2] == ["check arguments", "emit"] and "write" in ran
    assert ("optimize" in ran) != check  # no fitted table: the check leaves the optimizer out (it cannot end a run)
    assert "kv cache" in ran if not check else "kv cache" not in ran
