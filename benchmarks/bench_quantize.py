"""Figure 10: int8 and fp16 variants (`archc quantize`): file size and held-out accuracy against the float32 model.

Each model is trained briefly here with its spec's recipe (fewer epochs), exported by `archc train`, then quantized
three ways by archc.export.quantize: int8 dynamic, int8 static (QDQ, calibrated on 512 train-split examples) and
fp16 (float32 inputs and outputs). `a` is the variant's file size, `b` the float32 model's; the note has the test
accuracy before -> after on the same split `archc infer --input SOURCE` scores. Goal: accuracy within 1 point.
The residual CNN's spec reads MNIST (not bundled); it trains here on sklearn's digits upscaled 3x and padded to
28x28 (an .npz), which keeps its shapes and convolutions.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

import common

FIGURE = 10
KEY = "quantize"
TITLE = "Quantized and half-precision variants: size and accuracy"
A, B = "variant (kB)", "float32 model (kB)"
MAX_DROP = 1.0  # accuracy points
METHODS = ("int8-dynamic", "int8-static", "fp16")
# spec -> (epochs in full mode, batch size or None (the spec's), data override or None): brief training, enough
# for a meaningful accuracy (the CNN's own batch of 128 gives 10 steps an epoch on 1,257 images: too few)
MODELS = {"digits_mlp": (10, None, None), "residual_cnn": (6, 32, "digits28"), "vit_digits": (8, None, None)}


def digits28(work: Path) -> str:
    """sklearn's 8x8 digits as 28x28 images (each pixel 3x3, 2 pixels of border) in an .npz source."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.kron(d.images, np.ones((3, 3)))[:, None]                # (N, 1, 24, 24)
    x = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2))).astype(np.float32) / 16.0
    path = work / "digits28.npz"
    np.savez(path, x=x, y=d.target.astype(np.int64))
    return f"npz:{path}"


def train(name: str, work: Path, epochs: int, batch_size: int | None, data: str | None) -> tuple[Path, float]:
    """specs/NAME trained for `epochs` into work/NAME, as `archc train` does: (model.onnx, seconds)."""
    import archc.train

    start = time.perf_counter()
    archc.train.run(common.spec_path(name), out=work / name, epochs=epochs, batch_size=batch_size, data=data,
                      quiet=True, force=True)
    return work / name / "model.onnx", time.perf_counter() - start


def latency(base: Path, variants: list[Path], rounds: int) -> dict[Path, dict[int, float]]:
    """Median seconds per session.run of each model (bare ORT CPU sessions, THREADS intra-op threads) at batch 1
    and 64 of the held-out examples, preprocessed; every model interleaved with the others in each round."""
    from archc.export.quantize import recorded_source
    from archc.runtime import Model
    from archc.runtime.evaluate import load_split

    model = Model.open(base, device="cpu")
    feeds = model.check(load_split(model, recorded_source(model)).feeds)
    out: dict[Path, dict[int, float]] = {p: {} for p in [base, *variants]}
    sessions = {p: common.ort_session(p) for p in out}
    for batch in (1, 64):
        chunk = {k: v[:batch] for k, v in feeds.items()}
        fns = {p: (lambda s=s: s.run(None, chunk)) for p, s in sessions.items()}
        inner = common.inner_for(fns[base], 0.02)
        for p, times in common.interleave(fns, rounds, inner).items():
            out[p][batch] = common.median(times)
    return out


def run(quick: bool = False) -> tuple[list[dict], str]:
    from archc.export.quantize import quantize

    work = common.workdir() / "quantize"
    work.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    notes = []
    for name, (epochs, batch_size, data) in (list(MODELS.items())[:1] if quick else MODELS.items()):
        if common.spec_path(name) is None:
            rows.append(common.skipped(FIGURE, name, "spec not in specs/ yet"))
            continue
        epochs = 1 if quick else epochs
        source = digits28(work) if data == "digits28" else None
        model, seconds = train(name, work, epochs, batch_size, source)
        notes.append(f"{name}: {epochs} epoch(s), {seconds:.0f} s")
        reports = quantize(model, list(METHODS), max_drop=MAX_DROP, force=True)
        speed = latency(model, [Path(r.path) for r in reports], 3 if quick else 15)
        for r in reports:
            ms = {b: (speed[Path(r.path)][b] * 1e3, speed[model][b] * 1e3) for b in (1, 64)}
            before, after = r.before[r.metric], r.after[r.metric]
            held_out = r.data.replace(source, "sklearn digits at 28x28 (.npz)") if source else r.data
            rows.append(common.row(FIGURE, f"{name} {r.method}", r.bytes_after / 1e3, r.bytes_before / 1e3,
                                   goal=f"{r.metric} within {MAX_DROP:g} point", met=r.worse_by <= MAX_DROP,
                                   unit="kB", ratio=r.bytes_after / r.bytes_before,
                                   note=f"{r.metric} {before:.4f} -> {after:.4f} ({(after - before) * 100:+.2f} "
                                        "points); "
                                        f"{r.bytes_before / r.bytes_after:.1f}x smaller; max abs logit diff "
                                        f"{r.max_abs_diff:.1e}; {held_out}; latency batch 1 {ms[1][0]:.3f} vs "
                                        f"{ms[1][1]:.3f} ms, batch 64 {ms[64][0]:.3f} vs {ms[64][1]:.3f} ms"))
    details = ("Trained here: " + "; ".join(notes) + ". Ratio = variant size / float32 size. Latency: variant vs "
               "float32 model, median session.run on ONNX Runtime's CPU provider, interleaved. Accuracy on the "
               "test split `archc infer --input SOURCE` scores; the variants are ONNX Runtime's quantize_dynamic, "
               "quantize_static (QDQ, per-channel int8 weights, uint8 activations) and its float16 converter with "
               "float32 inputs and outputs.")
    return rows, details
