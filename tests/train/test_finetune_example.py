"""The README's example "fine-tuning the zoo's ResNet-18 on an image folder", run as written: its head.py, its spec
(specs/zoo/resnet18.toml with `classes = 3` and the README's tables appended) and its `archc` commands, on a
checkpoint of transformers' ResNetForImageClassification (ResNet-18 layout, random weights, saved locally) and a
dozen generated 64 px JPEGs; only `--epochs 1` (and `--device cpu --quiet`) is added to `archc train`. Also what the
README says of the head: the 1000-way checkpoint into the 3-way spec is one strict-loading error."""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from PIL import Image

from archc.cli import main
from safetensors.numpy import load_file

transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[2]
HEADING = "## Example: fine-tuning the zoo's ResNet-18 on an image folder"
CLASSES = ("cat", "dog", "fox")


def section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(HEADING)
    end = text.find("\n## ", start + len(HEADING))
    return text[start:end if end > 0 else len(text)]


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def checkpoint(folder: Path) -> None:
    """transformers' ResNet-18 (microsoft/resnet-18's config: basic blocks, 1000 labels), random weights, as
    save_pretrained writes it: folder/model.safetensors."""
    import torch

    torch.manual_seed(0)
    config = transformers.ResNetConfig(layer_type="basic", depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512],
                                       embedding_size=64, num_labels=1000, downsample_in_first_stage=False)
    hf = transformers.ResNetForImageClassification(config)
    with torch.no_grad():  # off their init: a weight seen later within 0.01 of the file's came from the file
        for p in hf.parameters():
            p.add_(torch.randn(p.shape) * 0.1)
    hf.save_pretrained(str(folder / "hf"), safe_serialization=True)
    (folder / "hf" / "model.safetensors").rename(folder / "model.safetensors")


def pictures(folder: Path, per_class: int, seed: int) -> None:
    """RGB JPEGs 64x64, one class a colour (learnable, not required to be learnt in one epoch)."""
    rng = np.random.default_rng(seed)
    for k, name in enumerate(CLASSES):
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 90, (64, 64, 3)).astype(np.uint8)
            pixels[..., k] += 160
            Image.fromarray(pixels).save(folder / name / f"{i}.jpg", quality=90)


def archc(line: str, extra: tuple[str, ...] = ()) -> str:
    args = shlex.split(line)
    assert args[0] == "archc", line
    r = CliRunner().invoke(main, args[1:] + list(extra))
    assert r.exit_code == 0, f"{line}\n{r.output}"
    return r.output


def test_readme_finetune_example_runs(tmp_path, monkeypatch):
    text = section()
    (head,) = blocks(text, "python")
    (recipe,) = blocks(text, "toml")
    (commands,) = blocks(text, "sh")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "specs").symlink_to(ROOT / "specs")  # the commands name specs/zoo/... from the repository's root
    checkpoint(tmp_path)
    pictures(tmp_path / "pets", 4, seed=0)
    pictures(tmp_path / "more-pets", 2, seed=1)
    zoo = (ROOT / "specs" / "zoo" / "resnet18.toml").read_text()
    assert zoo.count("classes = 1000") == 1
    (tmp_path / "head.py").write_text(head)
    (tmp_path / "pets.toml").write_text(zoo.replace("classes = 1000", "classes = 3") + "\n" + recipe)

    ran = []
    for line in (raw.strip() for raw in commands.splitlines()):
        if not line or line.startswith("#"):
            continue
        if line == "python head.py":
            subprocess.run([sys.executable, "head.py"], check=True, cwd=tmp_path)
        elif line.startswith("archc train "):
            out = archc(line, ("--epochs", "1", "--device", "cpu", "--quiet"))
        else:
            out = archc(line)
        ran.append(line.split()[:2])
    assert ran == [["python", "head.py"], ["archc", "train"], ["archc", "infer"]]

    run = tmp_path / "runs" / "pets"
    result = json.loads((run / "result.json").read_text())
    assert result["labels"] == list(CLASSES)
    # Fine-tuned from the file (one epoch moves a weight by ~lr per step), not from the spec's seed; the head from
    # head.py's fresh 3-way classifier.
    trained, start = load_file(run / "checkpoint.safetensors"), load_file(tmp_path / "model-3.safetensors")
    pairs = (("conv1.weight", "resnet.embedder.embedder.convolution.weight"),
             ("stages.3.blocks.1.conv2.weight", "resnet.encoder.stages.3.layers.1.layer.1.convolution.weight"),
             ("fc.weight", "classifier.1.weight"))
    for ours, theirs in pairs:
        assert trained[ours].shape == start[theirs].shape
        assert np.abs(trained[ours] - start[theirs]).max() < 0.01, ours
    assert all(start[theirs].std() > 0.05 for _, theirs in pairs[:2])  # not vacuous: far from any init near 0
    assert start["classifier.1.weight"].shape == (3, 512)
    onnx_meta = {p.key: p.value for p in onnx.load(str(run / "model.onnx")).metadata_props}
    assert json.loads(onnx_meta["archc.augment"])["training_only"] is True
    report = json.loads((tmp_path / "more-pets-report" / "report.json").read_text())
    assert [c["label"] for c in report["per_class"]] == list(CLASSES)
    assert [c["support"] for c in report["per_class"]] == [2, 2, 2] and report["examples"] == 6
    assert (tmp_path / "more-pets-report" / "report.png").exists() and "more-pets" in out

    # What the README says of the head: the checkpoint as published (1000 classes) into the 3-way spec, and a
    # mapping that drops the file's head, are each one strict-loading error.
    bad = tmp_path / "nohead.toml"
    zoo_map = (ROOT / "specs" / "zoo" / "resnet.weights.toml").read_text()
    bad.write_text(zoo_map.replace("archc_weights = 1\n", 'archc_weights = 1\ndrop = ["classifier.1.weight", '
                                                          '"classifier.1.bias"]\n', 1))
    for weights, mapping, want in (
            ("model.safetensors", "specs/zoo/resnet.weights.toml",
             "2 mis-shaped: fc.bias: expected [3], received [1000] from classifier.1.bias by map[31], fc.weight: "
             "expected [3, 512], received [1000, 512] from classifier.1.weight by map[30]"),
            ("model.safetensors", str(bad), "2 missing: fc.weight [3, 512], fc.bias [3]")):
        r = CliRunner().invoke(main, ["train", "pets.toml", "--init", weights, "--map", mapping, "--out", "runs/bad",
                                      "--epochs", "1", "--device", "cpu", "--quiet"])
        assert r.exit_code == 1 and "Traceback" not in r.output, r.output
        assert want in r.output and want in text.replace("\n", " "), r.output
