"""`archc validate` reports training memory per rank for [train] strategy at --nproc N (archc.memory), torch-free."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from archc.cli import main

ROOT = Path(__file__).resolve().parents[2]


def spec(tmp_path: Path, **train) -> Path:
    """x[16] -> linear(32, relu) -> [block: linear(32, relu), linear(32), add] x 2 -> linear(3)."""
    block = [{"id": "a", "op": "linear", "out_features": 32, "act": "relu"}, {"id": "b", "op": "linear",
             "out_features": 32}, {"id": "o", "op": "add", "from": ["x", "b"]}]
    raw = {"archc": 1, "model": {"name": "m"}, "inputs": {"x": {"shape": [16]}}, "task": {"kind": "classification"},
           "blocks": {"res": {"layers": block}},
           "layers": [{"id": "fc1", "op": "linear", "out_features": 32, "act": "relu"},
                      {"id": "layers", "use": "res", "repeat": 2}, {"id": "out", "op": "linear", "out_features": 3}],
           "train": {"batch_size": 10} | train}
    path = tmp_path / f"s{len(list(tmp_path.iterdir()))}.json"
    path.write_text(json.dumps(raw))
    return path


def memory(path: Path, *flags: str) -> dict:
    r = CliRunner().invoke(main, ["validate", str(path), "--json", *flags])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)["training_memory"]


PARAMS = (16 * 32 + 32) + 2 * 2 * (32 * 32 + 32) + (32 * 3 + 3)
# bytes per example: fc1 and its relu (2 x 32 floats), per block a + relu (2 x 32), b (32), o (32), out (3)
PER_EXAMPLE = 4 * (64 + 2 * (64 + 32 + 32) + 3)


def test_ddp_holds_everything_on_each_rank_and_fsdp_shards_it(tmp_path):
    one = memory(spec(tmp_path))
    assert one["weights"] == one["gradients"] == PARAMS * 4 and one["optimizer"] == PARAMS * 8  # adamw's 2 moments
    assert one["activations"] == PER_EXAMPLE * 10 and one["strategy"] == "ddp"
    assert one["total"] == PARAMS * 16 + PER_EXAMPLE * 10
    ddp = memory(spec(tmp_path), "--nproc", "2")
    assert ddp["weights"] == PARAMS * 4 and ddp["activations"] == PER_EXAMPLE * 5  # the batch is shared, not the model
    fsdp = memory(spec(tmp_path, strategy="fsdp"), "--nproc", "2")
    assert (fsdp["weights"], fsdp["gradients"], fsdp["optimizer"]) == (PARAMS * 2, PARAMS * 2, PARAMS * 4)
    assert fsdp["activations"] == PER_EXAMPLE * 5
    sgd = memory(spec(tmp_path, optimizer={"name": "sgd", "lr": 0.1}))
    assert sgd["optimizer"] == 0 and memory(spec(tmp_path, optimizer={"name": "sgd", "momentum": 0.9}))[
        "optimizer"] == PARAMS * 4


def test_activation_checkpointing_keeps_block_outputs_and_one_block(tmp_path):
    on = memory(spec(tmp_path, activation_checkpointing=True))
    block = 4 * (64 + 32 + 32)
    assert on["activations"] == 10 * (PER_EXAMPLE - 2 * block + 2 * 4 * 32 + block)


def test_the_text_summary_says_it_without_importing_torch(tmp_path):
    path = spec(tmp_path, strategy="fsdp")
    probe = ("import sys; from click.testing import CliRunner; from archc.cli import main; "
             f"r = CliRunner().invoke(main, ['validate', {str(path)!r}, '--nproc', '4']); print(r.output); "
             "assert r.exit_code == 0; assert 'torch' not in sys.modules, 'torch was imported'")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("training memory per rank"))
    assert line.startswith("training memory per rank (fsdp over 4 ranks, 3 examples a batch): weights ")
    assert "adamw state" in line and "activations ~" in line
