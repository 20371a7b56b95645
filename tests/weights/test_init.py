"""Fine-tuning from `archc train --init`: the first step's loss is the loaded model's (transformers' loss on the
same windows), and the loss goes down from there."""
from __future__ import annotations

import json

import torch
from click.testing import CliRunner

from archc.cli import main

TEXT = "".join(f"def scale_{i}(values, factor={i % 5}):\n    return [v * factor + {i % 3} for v in values]\n\n"
               for i in range(40))


def _train_windows(spec, source, out):
    """The training split exactly as `archc train` reads it (a token file's windows are stored narrow: ids as int64)."""
    from archc.tasks import objective_for
    from archc.train.dataset import load_checked
    from archc.train.recipe import Overrides, prepare

    setup = prepare(str(spec), Overrides(data=source), out)
    dataset = load_checked(setup, objective_for(setup.spec, setup.graph))
    return torch.from_numpy(dataset.train.x).long(), torch.from_numpy(dataset.train.y).long()


def test_fine_tuning_starts_from_the_loaded_weights(small_gpt2, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    source, out = f"text:{corpus}", tmp_path / "run"
    r = CliRunner().invoke(main, ["train", str(small_gpt2.spec), "--data", source, "--out", str(out), "--epochs", "4",
                                  "--batch-size", "4096", "--lr", "3e-3", "--init", str(small_gpt2.weights),
                                  "--map", str(small_gpt2.mapping), "--quiet"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    x, y = _train_windows(small_gpt2.spec, source, tmp_path / "unused")
    with torch.no_grad():  # one step per epoch (the whole split is one batch): epoch 1's loss is step 1's
        logits = small_gpt2.hf(x).logits
    loaded = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)).item()
    assert abs(rows[0]["train_loss"] - loaded) <= 1e-4 * loaded
    losses = [row["train_loss"] for row in rows]
    assert losses[-1] < losses[0] - 0.1 and all(b < a for a, b in zip(losses, losses[1:]))


def test_a_bad_init_touches_no_run_folder(small_bert, small_gpt2, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["train", str(small_gpt2.spec), "--data", f"text:{corpus}", "--out", str(out),
                                  "--init", str(small_bert.weights), "--map", str(small_gpt2.mapping)])
    assert r.exit_code == 1 and "expected every tensor of the model filled" in r.output, r.output
    assert not out.exists()
    r = CliRunner().invoke(main, ["train", str(small_gpt2.spec), "--map", str(small_gpt2.mapping)])
    assert r.exit_code == 2 and "--map names the mapping" in r.output


def test_nproc_workers_get_the_checkpoint_and_mapping(small_gpt2, tmp_path):
    """--nproc's workers load the same --init through the same --map (absolute: their folder may differ)."""
    from archc.train.api import worker_args
    from archc.train.recipe import Overrides, prepare
    from archc.weights import Init

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    setup = prepare(str(small_gpt2.spec), Overrides(data=f"text:{corpus}"), tmp_path / "run")
    setup.init = Init.open(small_gpt2.weights, small_gpt2.mapping)
    args = worker_args(setup, "cpu", resume=False, quiet=True)
    assert args[args.index("--init") + 1] == str(small_gpt2.weights.resolve())
    assert args[args.index("--map") + 1] == str(small_gpt2.mapping.resolve())
