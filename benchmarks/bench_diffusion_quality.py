"""Diffusion quality benchmark: sample the exported U-Net DDPM with `archc infer` and label the samples with an
archc-trained digits classifier (ONNX Runtime only).

Run: python benchmarks/bench_diffusion_quality.py [--model out/unet_ddpm_digits/model.onnx] [--sampler ddpm]
Targets (issue 6): of 256 samples, >= 80% labelled with confidence >= 0.9, and every class appears. The
classifier (specs/digits_mlp.toml) is trained first when its model is missing; for reference the same figures
are given for the real held-out digits. Writes out/bench_diffusion_quality_SAMPLER_seedS.json, the samples
and their grid (--output, and the .png beside it).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ARCHC = [sys.executable, "-m", "archc.cli"]
CONFIDENT = 0.9


def archc(*args: str) -> str:
    """Run the archc command line (the user's path), failing loudly."""
    done = subprocess.run([*ARCHC, *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"archc {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def figures(classifier, images: np.ndarray) -> dict:
    """Confidence and label histogram of the classifier on images (N, 1, 8, 8) in [0, 1]."""
    from archc.runtime.present import probabilities

    name = next(iter(classifier.inputs))
    out = classifier.run({name: images.astype(np.float32)}, batch_size=1024)
    logits = next(iter(out.values()))
    probs = probabilities(logits, "logits")
    conf, label = probs.max(axis=1), probs.argmax(axis=1)
    hist = np.bincount(label, minlength=10)
    return {"n": len(images), "confident_fraction": float(np.mean(conf >= CONFIDENT)),
            "mean_confidence": float(conf.mean()), "histogram": hist.tolist(),
            "confident_histogram": np.bincount(label[conf >= CONFIDENT], minlength=10).tolist(),
            "every_class": bool((hist > 0).all())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="out/unet_ddpm_digits/model.onnx")
    p.add_argument("--classifier", default="out/digits_mlp/model.onnx")
    p.add_argument("--num-samples", type=int, default=256)
    p.add_argument("--sampler", default="ddpm", choices=["ddpm", "ddim"])
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default="out/diffusion_samples.npy")
    a = p.parse_args()

    from archc.data import load
    from archc.runtime import Model

    if not (ROOT / a.classifier).exists():
        archc("train", "specs/digits_mlp.toml", "--out", str(Path(a.classifier).parent), "--quiet")
    start = time.perf_counter()
    steps = ["--steps", str(a.steps)] if a.steps else []
    archc("infer", a.model, "--num-samples", str(a.num_samples), "--sampler", a.sampler, *steps, "--seed",
          str(a.seed), "--output", a.output)
    seconds = time.perf_counter() - start
    samples = np.load(ROOT / a.output)                   # (N, 1, 8, 8), already in the data's [0, 1]
    classifier = Model.open(ROOT / a.classifier, device="cpu")
    real = load("sklearn:digits", task="classification").test.x
    result = {"model": a.model, "classifier": a.classifier, "sampler": a.sampler, "steps": a.steps,
              "seed": a.seed, "sampling_seconds": round(seconds, 2), "samples": a.output,
              "grid": str(Path(a.output).with_suffix(".png")),
              "generated": figures(classifier, samples), "real_test_digits": figures(classifier, real)}
    g = result["generated"]
    result["targets_met"] = bool(g["confident_fraction"] >= 0.8 and g["every_class"])
    out = ROOT / "out" / f"bench_diffusion_quality_{a.sampler}_seed{a.seed}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
