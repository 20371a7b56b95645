"""Figure 9: diffusion sample quality. The U-Net DDPM (specs/unet_ddpm_digits.toml) samples digits through
`archc infer --num-samples`, and a digits classifier trained by archc (specs/digits_mlp.toml) labels them with ONNX
Runtime; the same figures for the real held-out digits are the reference. Goals (issue 6): of 256 samples, >= 80%
labelled with confidence >= 0.9, and every class appears.

Both models are trained here with `archc.train.run` (what `archc train` runs): the classifier in seconds, the U-Net with
its spec's recipe (300 epochs, minutes: the slowest figure) unless `runs/unet-ddpm-digits/model.onnx` (where
`archc train specs/unet_ddpm_digits.toml` puts it) was trained from the spec as it is now, which is then reused.
Quick mode trains each one epoch and draws 16 DDIM samples in 5 steps: it checks the path, not the quality.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import common

FIGURE = 9
KEY = "diffusion"
TITLE = "Diffusion sample quality: U-Net DDPM samples labelled by a digits classifier"
A, B = "generated samples", "real held-out digits"
GOAL = 0.8
CONFIDENT = 0.9
SAMPLES = 256
DENOISER, CLASSIFIER = "unet_ddpm_digits", "digits_mlp"
TRAINED = common.ROOT / "runs" / "unet-ddpm-digits" / "model.onnx"


def archc(*args: str) -> str:
    """Run the archc command line, failing loudly."""
    done = subprocess.run([sys.executable, "-m", "archc.cli", *args], cwd=common.ROOT, capture_output=True,
                          text=True)
    if done.returncode:
        raise RuntimeError(f"archc {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def train(name: str, out: Path, quick: bool) -> Path:
    """specs/NAME trained with its own recipe (one epoch when quick) into `out`, as `archc train` does; its
    model.onnx. In this process: a second one would pay torch's import again."""
    import archc.train

    archc.train.run(common.spec_path(name), out=out, epochs=1 if quick else None, quiet=True)
    return out / "model.onnx"


def denoiser(work: Path, quick: bool) -> tuple[Path, str]:
    """(model.onnx, where it came from): the user's trained model when it matches the spec, else one trained here."""
    if not quick and TRAINED.exists():
        import onnx

        from archc.pipeline import compile_spec

        meta = {p.key: p.value for p in onnx.load(str(TRAINED), load_external_data=False).metadata_props}
        if meta.get("archc.spec_sha256") == compile_spec(common.spec_path(DENOISER)).sha256:
            return TRAINED, f"reused {TRAINED.relative_to(common.ROOT)} (trained from the spec as it is)"
    start = time.perf_counter()
    path = train(DENOISER, work / DENOISER, quick)
    return path, f"trained here in {time.perf_counter() - start:.0f} s" + (" (1 epoch)" if quick else "")


def labels(classifier, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, label) per image (N, 1, 8, 8) in [0, 1]: the classifier's softmax maximum and argmax."""
    name = next(iter(classifier.inputs))
    logits = next(iter(classifier.run({name: images.astype(np.float32)}, batch_size=1024).values()))
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = z / z.sum(axis=1, keepdims=True)
    return probs.max(axis=1), probs.argmax(axis=1)


def run(quick: bool = False) -> tuple[list[dict], str]:
    from archc.data import load
    from archc.runtime import Model

    work = common.workdir() / "diffusion"
    classifier = Model.open(train(CLASSIFIER, work / CLASSIFIER, quick), device="cpu")
    model, origin = denoiser(work, quick)
    n, how = (16, ["--sampler", "ddim", "--steps", "5"]) if quick else (SAMPLES, ["--sampler", "ddpm"])
    out = work / "samples.npy"
    start = time.perf_counter()
    archc("infer", str(model), "--num-samples", str(n), *how, "--seed", "0", "--output", str(out))
    seconds = time.perf_counter() - start
    gen_conf, gen_label = labels(classifier, np.load(out))   # samples come back in the data's [0, 1]
    real = load("sklearn:digits", task="classification").test
    real_conf, real_label = labels(classifier, real.x)
    gen_classes, real_classes = len(np.unique(gen_label)), len(np.unique(real_label))
    hist = np.bincount(gen_label[gen_conf >= CONFIDENT], minlength=10).tolist()
    confident = float(np.mean(gen_conf >= CONFIDENT))
    rows = [common.row(FIGURE, f"labelled with confidence >= {CONFIDENT} ({n} samples)", confident,
                       float(np.mean(real_conf >= CONFIDENT)), goal=f">= {GOAL}", met=common.at_least(confident, GOAL),
                       note=f"mean confidence {gen_conf.mean():.3f} vs {real_conf.mean():.3f}; confident samples "
                            f"per class {hist}; denoiser {origin}"),
            common.row(FIGURE, "classes among the samples' labels", gen_classes, real_classes, goal="= 10",
                       met=gen_classes == 10, note="every class should appear"),
            common.row(FIGURE, f"sampling time, `archc infer --num-samples {n} {' '.join(how)}`", seconds, None,
                       unit="s", ratio=None, note="ONNX Runtime only, one process (its start included)")]
    sampler = ("DDIM, 5 steps (quick)" if quick else "DDPM ancestral sampling over all T steps")
    details = (f"Classifier: {CLASSIFIER} trained by archc, {np.mean(real_label == real.y):.1%} accurate on the real "
               f"held-out digits (the test split of sklearn:digits). Sampling: {sampler}, seed 0 (`archc infer` "
               "clips the predicted x_0 to [-1, 1] every step).")
    return rows, details
