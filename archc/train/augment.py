"""[data.augment] on the training device: random transforms of (B, C, H, W) batches, then mixup / cutmix.

Built on kornia.augmentation (maintained, pure torch, batched on the device, per-sample random parameters):
torchvision.transforms.v2 would be the first choice, but torchvision cannot be installed beside the pinned
torch. Imported only when a spec declares augmentation (it imports torch and kornia).
"""
from __future__ import annotations

from typing import Any

import torch

from archc.language.model import Augment


class Augmenter:
    """x, y = augmenter(x, y, key): x (B, C, H, W) float32 pixels in [0, 1], before normalization; y (B,) int64
    class ids (anything for other kinds, returned as is unless mixing, which needs `classes`). Deterministic
    in `key`; the global torch RNG is left as it was."""

    def __init__(self, spec: Augment, classes: int | None, size: tuple[int, int] | None = None):
        self.spec = spec
        self.classes = classes
        self.size = size
        self._pipes: dict[tuple[int, int], Any] = {}

    @classmethod
    def of(cls, spec: Augment | None, classes: int | None) -> Augmenter | None:
        """The augmenter for a spec's [data.augment], None when nothing is on."""
        if spec is None or not spec.active():
            return None
        if spec.mixing() and (classes is None or classes < 1):
            raise ValueError("mixup / cutmix need the number of classes")  # validate refuses this earlier
        return cls(spec, classes)

    def _pipe(self, hw: tuple[int, int]):
        """The kornia transforms for images of size hw, in torchvision's reference order (geometry, colour,
        policy, erasing); built once per size."""
        if hw not in self._pipes:
            import kornia.augmentation as K
            from kornia.augmentation import auto

            a, ops = self.spec, []
            if a.random_resized_crop is not None:
                ops.append(K.RandomResizedCrop(hw, scale=tuple(a.random_resized_crop.scale),
                                               ratio=tuple(a.random_resized_crop.ratio)))
            if a.hflip:
                ops.append(K.RandomHorizontalFlip(p=a.hflip))
            if a.vflip:
                ops.append(K.RandomVerticalFlip(p=a.vflip))
            if a.rotation:
                ops.append(K.RandomRotation(degrees=a.rotation, p=1.0))
            cj = a.color_jitter
            if cj is not None:
                ops.append(K.ColorJitter(cj.brightness, cj.contrast, cj.saturation, cj.hue, p=cj.p))
            if a.policy == "randaugment":
                ops.append(auto.RandAugment(n=a.policy_n, m=a.policy_m))
            elif a.policy == "trivialaugment":
                ops.append(auto.TrivialAugment())
            if a.random_erasing is not None:
                e = a.random_erasing
                ops.append(K.RandomErasing(scale=tuple(e.scale), ratio=tuple(e.ratio), p=e.p))
            self._pipes[hw] = K.AugmentationSequential(*ops) if ops else None
        return self._pipes[hw]

    def __call__(self, x: torch.Tensor, y: Any, key: int) -> tuple[torch.Tensor, Any]:
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(key)
            pipe = self._pipe((int(x.shape[2]), int(x.shape[3])))
            if pipe is not None:
                x = pipe(x).to(x.dtype)  # (B, C, H, W)
            if self.spec.mixing():
                x, y = self._mix(x, y)
        return x, y

    def _mix(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """timm's Mixup in batch mode: with probability mix_prob, mix each example with the batch reversed, by
        lambda ~ Beta(alpha, alpha) (cutmix: a box of area 1 - lambda, lambda corrected to the box's area).
        kornia's RandomMixUpV2 draws lambda uniformly from a range, so it cannot express Beta(alpha, alpha)."""
        a = self.spec
        soft = y if y.is_floating_point() else torch.nn.functional.one_hot(y.long(), self.classes).float()  # (B, K)
        if float(torch.rand(())) >= a.mix_prob:
            return x, soft
        cut = a.cutmix > 0 and (a.mixup == 0 or float(torch.rand(())) < a.switch_prob)
        alpha = a.cutmix if cut else a.mixup
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        flipped = x.flip(0)
        if cut:
            h, w = x.shape[2], x.shape[3]
            ch, cw = int(h * (1 - lam) ** 0.5), int(w * (1 - lam) ** 0.5)
            cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
            y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
            x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
            x = x.clone()
            x[:, :, y0:y1, x0:x1] = flipped[:, :, y0:y1, x0:x1]
            lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
        else:
            x = x * lam + flipped * (1 - lam)
        return x, soft * lam + soft.flip(0) * (1 - lam)


_DEPENDENT = {"policy_n", "policy_m", "mix_prob", "switch_prob"}  # recorded only with what they qualify


def describe(spec: Augment) -> dict:
    """A JSON-able record of what is on (for the run folder and the ONNX metadata key archc.augment)."""
    kept = ({"policy_n", "policy_m"} if spec.policy == "randaugment" else set()) | \
        ({"mix_prob", "switch_prob"} if spec.mixing() else set())
    on = {k: v for k, v in spec.model_dump(mode="json").items()
          if k in kept or (v != Augment.model_fields[k].default and k not in _DEPENDENT)}
    return {"training_only": True, "library": "kornia", "transforms": on}


def summary(spec: Augment) -> str:
    """One line for the training header: 'augment: hflip 0.5, mixup 0.2 (training only)'."""
    parts = []
    for k, v in describe(spec)["transforms"].items():
        parts.append(k if isinstance(v, dict) else f"{k} {v}")
    return f"augment: {', '.join(parts) or 'off'} (training split only)"
