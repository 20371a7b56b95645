"""The command line of the bounds: validate locates an axis or vocab beyond a table (exit 1, one line), and
`archc export` is listed with its options."""
from __future__ import annotations

import json

from click.testing import CliRunner

from archc.cli import main


def gpt(seq: int, max_len: int, vocab: int = 256) -> dict:
    return {"archc": 1, "model": {"name": "gpt"}, "axes": {"seq": seq},
            "inputs": {"tokens": {"shape": ["seq"], "dtype": "int64", "vocab": vocab}},
            "layers": [{"id": "emb", "op": "embedding", "num_embeddings": 256, "embedding_dim": 32},
                       {"id": "pos", "op": "pos_embedding", "max_len": max_len},
                       {"id": "logits", "op": "tied_linear", "tie": "emb"}]}


def validate(tmp_path, spec: dict):
    path = tmp_path / "gpt.json"
    path.write_text(json.dumps(spec))
    return CliRunner().invoke(main, ["validate", str(path)])


def test_validate_locates_a_context_beyond_the_position_table(tmp_path):
    ok = validate(tmp_path, gpt(1024, 1024))
    assert ok.exit_code == 0
    assert ok.output.endswith("bounds: seq 1..1024 (layers[1] (pos): max_len = 1024, the position table's rows)\n")
    result = validate(tmp_path, gpt(1025, 1024))
    assert result.exit_code == 1
    assert result.output == (f"error: {tmp_path / 'gpt.json'}: layers[1] (pos): pos_embedding: expected axis 'seq' of "
                             "at most 1024 (max_len = 1024, the position table's rows), received [axes] seq = 1025 "
                             "(raise max_len, or lower [axes] seq)\n")


def test_validate_locates_a_vocab_beyond_the_embedding_table(tmp_path):
    result = validate(tmp_path, gpt(16, 16, vocab=300))
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "layers[0] (emb): embedding: expected input 'tokens' with vocab at most 256" in result.output


def test_export_is_a_command():
    result = CliRunner().invoke(main, ["export", "--help"])
    assert result.exit_code == 0
    assert "RUN_DIR" in result.output and "--checkpoint" in result.output and "--output" in result.output
