"""Sample images from an exported DDPM denoiser (x_t, t) -> eps with ONNX Runtime and numpy only.

The schedule is read from the model's `archc.diffusion` metadata (T, every beta, the data's range), so sampling
uses exactly the betas training used. Both samplers walk S of the T steps, evenly spaced from T-1 down to 0:

- ddpm: ancestral sampling; with S < T the chain is respaced (Nichol & Dhariwal): each kept step's beta is
  1 - alpha_bar_t / alpha_bar_prev, and the posterior q(x_prev | x_t, x_0) uses the "fixed small" variance.
- ddim: deterministic DDIM (eta = 0): x_prev = sqrt(alpha_bar_prev) x_0 + sqrt(1 - alpha_bar_prev) eps.

The predicted x_0 is clipped to [-1, 1] at every step (and eps recomputed from it). Samples come back in the
data's scale (e.g. [0, 1] for sklearn:digits), so a classifier trained on the same source reads them as they are.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from archc.errors import InputError, ModelError
from archc.runtime.session import Model
import archc.metadata as keys

SAMPLERS = ("ddpm", "ddim")
DDIM_STEPS = 50   # the default number of DDIM steps (DDPM walks all T by default)


@dataclass
class Diffusion:
    """What sampling needs from a model's metadata."""

    alpha_bar: np.ndarray          # (T,) float64, decreasing
    data_range: tuple[float, float]
    image: str                     # the image input's name
    timestep: str                  # the timestep input's name
    shape: tuple[int, ...]         # one image: (C, H, W)

    @property
    def steps(self) -> int:
        return len(self.alpha_bar)

    @classmethod
    def of(cls, model: Model) -> "Diffusion":
        """From `archc.diffusion` metadata; ModelError when the model is not an archc diffusion model."""
        import json

        raw = model.metadata.get(keys.DIFFUSION)
        if raw is None:
            from archc.tasks import REGISTRY
            kinds = " or ".join(repr(k) for k, t in REGISTRY.items() if "sample" in t.modes)
            raise ModelError(f"expected a diffusion model (archc.diffusion metadata), received {model.path!r} "
                             f"of task {(model.task or {}).get('kind')!r}", hint=f"train a spec with [task] kind = "
                             f"{kinds}")
        try:
            meta = json.loads(raw)
        except (ValueError, RecursionError):
            raise ModelError(f"metadata 'archc.diffusion': expected JSON, received {raw[:60]!r}") from None
        betas = np.asarray(meta["betas"], dtype=np.float64)
        image, timestep = meta["image_input"], meta["timestep_input"]
        shape = model.inputs[image].shape[1:]
        if not all(isinstance(d, int) for d in shape):
            raise ModelError(f"expected a fixed image shape, received {list(shape)}")
        lo, hi = meta.get("data_range", [0.0, 1.0])
        return cls(np.cumprod(1 - betas), (float(lo), float(hi)), image, timestep, tuple(shape))  # type: ignore

    def to_data(self, x: np.ndarray) -> np.ndarray:
        """Model scale [-1, 1] -> the data's range, clipped."""
        lo, hi = self.data_range
        return np.clip((x + 1) / 2 * (hi - lo) + lo, lo, hi).astype(np.float32)


def timesteps(total: int, steps: int) -> np.ndarray:
    """`steps` of the timesteps 0..total-1, evenly spaced, increasing, always including 0 and total-1."""
    if not 1 <= steps <= total:
        raise InputError(f"--steps: expected 1..{total} (the model's diffusion steps), received {steps}")
    return np.unique(np.round(np.linspace(0, total - 1, steps)).astype(np.int64))


def sample(model: Model, num_samples: int, steps: int | None = None, sampler: str = "ddpm", seed: int = 0,
           batch_size: int | None = None) -> np.ndarray:
    """num_samples images (N, C, H, W) float32 in the data's scale, from pure noise drawn with `seed`."""
    if sampler not in SAMPLERS:
        raise InputError(f"expected a sampler {' or '.join(SAMPLERS)}, received {sampler!r}", where="--sampler")
    if num_samples < 1:
        raise InputError(f"expected at least 1 sample, received {num_samples}", where="--num-samples")
    d = Diffusion.of(model)
    default = d.steps if sampler == "ddpm" else min(DDIM_STEPS, d.steps)
    ts = timesteps(d.steps, steps if steps is not None else default)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((num_samples, *d.shape))                              # (N, C, H, W) float64
    t_sig = model.inputs[d.timestep]
    t_dtype = np.int64 if t_sig.dtype == "int64" else np.float32
    for i in range(len(ts) - 1, -1, -1):
        ab = d.alpha_bar[ts[i]]
        ab_prev = d.alpha_bar[ts[i - 1]] if i > 0 else 1.0
        t = np.full((num_samples,) + (1,) * (len(t_sig.shape) - 1), ts[i], dtype=t_dtype)   # (N,) or (N, 1)
        feeds = {d.image: x.astype(np.float32), d.timestep: t}
        eps = next(iter(model.run(feeds, batch_size=batch_size).values())).astype(np.float64)
        x0 = np.clip((x - math.sqrt(1 - ab) * eps) / math.sqrt(ab), -1, 1)         # predicted clean image
        if sampler == "ddim":
            eps = (x - math.sqrt(ab) * x0) / math.sqrt(1 - ab)                      # consistent with the clip
            x = math.sqrt(ab_prev) * x0 + math.sqrt(1 - ab_prev) * eps
        else:
            beta = 1 - ab / ab_prev
            mean = (math.sqrt(ab_prev) * beta * x0 + math.sqrt(1 - beta) * (1 - ab_prev) * x) / (1 - ab)
            var = beta * (1 - ab_prev) / (1 - ab)
            x = mean + (math.sqrt(var) * rng.standard_normal(x.shape) if i > 0 else 0.0)
    return d.to_data(x)


def grid(images: np.ndarray, data_range: tuple[float, float] = (0.0, 1.0), scale: int = 4,
         pad: int = 1) -> np.ndarray:
    """Tile (N, C, H, W) images into one uint8 picture, ceil(sqrt(N)) columns, each pixel scale x scale, gray
    separators: (rows, cols) for one channel, (rows, cols, 3) for RGB (other channel counts show channel 0)."""
    n, c, h, w = images.shape
    lo, hi = data_range
    pixels = np.clip((images - lo) / max(hi - lo, 1e-12) * 255 + 0.5, 0, 255).astype(np.uint8)
    pixels = pixels.transpose(0, 2, 3, 1) if c == 3 else pixels[:, :1].transpose(0, 2, 3, 1)   # (N, H, W, c')
    pixels = pixels.repeat(scale, axis=1).repeat(scale, axis=2)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    th, tw = h * scale + pad, w * scale + pad
    out = np.full((rows * th + pad, cols * tw + pad, pixels.shape[3]), 128, dtype=np.uint8)
    for k in range(n):
        r, col = divmod(k, cols)
        out[pad + r * th: pad + r * th + h * scale, pad + col * tw: pad + col * tw + w * scale] = pixels[k]
    return out[:, :, 0] if out.shape[2] == 1 else out


def write_samples(path: str | Path, images: np.ndarray, data_range: tuple[float, float] = (0.0, 1.0)) -> Path:
    """Write images to `path` (.npy) and their grid beside it (.png), both atomically; returns the PNG's path."""
    from archc.data.png import encode_png
    from archc.util import write_bytes_atomic

    p = Path(path)
    if p.suffix.lower() != ".npy":
        raise InputError(f"expected an .npy output for samples, received {str(p)!r}", where="--output")
    buf = io.BytesIO()
    np.save(buf, images)
    write_bytes_atomic(p, buf.getvalue())
    png = p.with_suffix(".png")
    write_bytes_atomic(png, encode_png(grid(images, data_range)))
    return png
