"""A model that takes uint8 pixels (archc.export.pixels) under `archc infer`: images and image sources are read as
for the plain model (float32 [N, C, H, W] in [0, 1], converted to its channels and size), then handed over as the
8-bit [N, H, W, C] pixels the file takes. The graph does the /255 and the normalization: `archc.preprocess` holds
no entry for that input, so nothing is normalized twice."""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from archc.data.lazy import Lazy, is_lazy
import archc.metadata as keys

if TYPE_CHECKING:
    from archc.tasks.base import Labelled

META = keys.PIXELS  # archc.export.pixels writes it


def record(model: Any) -> dict[str, Any] | None:
    """What the file's pixel front does (archc.pixels: input, shape [batch, H, W, C], mean/std); None without one."""
    return keys.pixel_front(model.metadata)


def float_shape(model: Any) -> tuple[str, tuple[int, int, int]] | None:
    """The pixel input's name and the (C, H, W) its images are read to; None for a model without a pixel front."""
    return keys.pixel_input(model.metadata)


def to_pixels(x: np.ndarray) -> np.ndarray:
    """float32 [..., C, H, W] in [0, 1] -> uint8 [..., H, W, C]: exact for 8-bit images (x = v / 255); a resized or
    converted image's values are rounded to the nearest step."""
    scaled = np.rint(np.clip(np.asarray(x, np.float32), 0, 1) * np.float32(255)).astype(np.uint8)
    return np.ascontiguousarray(np.moveaxis(scaled, -3, -1))


class _Pixels:
    """A Reader over a lazy float image split giving each example as uint8 [H, W, C] (picklable)."""

    def __init__(self, images: Lazy) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def read(self, i: int) -> np.ndarray:
        return to_pixels(self.images.read(i))

    def where(self, i: int) -> str:
        return self.images.where(i)


def as_pixels(model: Any, data: Labelled) -> Labelled:
    """`data` with its float images of the pixel input as uint8 pixels (lazy ones stay lazy); as given for any
    other model or input."""
    shape = float_shape(model)
    x = data.feeds.get(shape[0]) if shape is not None else None
    if x is None or tuple(x.shape[1:]) != shape[1] or np.dtype(x.dtype).kind != "f":  # type: ignore[index]
        return data
    name, (c, h, w) = shape  # type: ignore[misc]
    pixels = Lazy(_Pixels(x), (h, w, c), np.uint8) if is_lazy(x) else to_pixels(x)
    return replace(data, feeds={**data.feeds, name: pixels})
