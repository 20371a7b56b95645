"""archc.metadata: every archc.* key an export writes is declared there, and the data facts survive the forms
they travel in (export.json's record, the ONNX's metadata) unchanged."""
from __future__ import annotations

from pathlib import Path

import onnx

import archc.metadata as keys
from archc.metadata import Facts

ROOT = Path(__file__).resolve().parents[1]
DECLARED = {v for k, v in vars(keys).items() if k.isupper() and isinstance(v, str) and v.startswith(keys.PREFIX)}

FACTS = Facts(training={"best_epoch": 2}, labels=["a", "b"], source="csv:data.csv", preprocess={"x": {"mean": 1.0}},
              target_scale={"y": {"mean": [0.5], "std": [2.0]}}, features=["f1", "f2"], tokenizer={"kind": "bytes"},
              weights={"file": "w.safetensors"}, other={"future": [1, 2]})


def test_each_key_is_declared_once():
    names = [k for k, v in vars(keys).items() if k.isupper() and isinstance(v, str) and v.startswith(keys.PREFIX)]
    assert len({getattr(keys, n) for n in names}) == len(names)  # no two constants spell one key
    assert {keys.PREFIX + name for name in keys.FACT_KEYS} <= DECLARED  # each fact's key is a constant


def test_facts_survive_the_record_and_the_metadata():
    assert Facts.from_record(FACTS.to_record()) == FACTS
    meta = FACTS.to_metadata()
    assert meta[keys.SOURCE] == "csv:data.csv" and keys.TASK not in meta  # labels go into archc.task
    back = Facts.from_metadata(meta | {keys.TASK: '{"kind": "classification", "labels": ["a", "b"]}'})
    assert back == Facts(**{**FACTS.__dict__, "other": {}})  # an undeclared key is not read back as a fact


def test_a_table_is_carried_as_itself_until_written():
    class Table:
        def to_json(self) -> dict:
            return {"columns": 3}

    table = Table()
    facts = Facts(labels=None).merged(Facts(columns=table))
    assert facts.columns is table and "columns" in facts and facts["columns"] is table
    assert facts.to_record()["columns"] == {"columns": 3} and "target_scale" not in facts


def test_an_exported_file_writes_declared_keys_only(tmp_path):
    from archc.pipeline import BUILD_PASSES, BuildOptions, compiled_from, run

    c = compiled_from(ROOT / "specs" / "digits_mlp.toml", options=BuildOptions(output=tmp_path / "m.onnx"))
    c.facts.weights = {"file": "w.safetensors"}
    run(c, BUILD_PASSES)
    written = {p.key for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert keys.WEIGHTS in written and keys.OPTIMIZED in written
    assert written <= DECLARED, sorted(written - DECLARED)
