"""A small PNG encoder on zlib + numpy: 8-bit gray, gray+alpha, RGB and RGBA (sample grids). Images are decoded by
Pillow (archc.data.images), which reads every PNG (16-bit, interlaced) and JPEG: the hand-written decoder that
was here had no reason left to stay."""
from __future__ import annotations

import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"


class PNGError(ValueError):
    """The pixels cannot be encoded as PNG; the message says why."""


def _chunk(ctype: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", zlib.crc32(ctype + payload))


def encode_png(pixels: np.ndarray) -> bytes:
    """Encode uint8 (H, W) gray, (H, W, 1|2|3|4) gray/gray+alpha/RGB/RGBA as an 8-bit non-interlaced PNG."""
    p = np.asarray(pixels)
    if p.ndim == 2:
        p = p[:, :, None]
    if p.dtype != np.uint8 or p.ndim != 3 or p.shape[2] not in (1, 2, 3, 4) or 0 in p.shape:
        raise PNGError(f"expected uint8 pixels (H, W) or (H, W, 1..4), received {p.dtype} {list(p.shape)}")
    height, width, channels = p.shape
    color = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = np.concatenate([np.zeros((height, 1), np.uint8), p.reshape(height, width * channels)], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0)  # filter 0 (None) on every row
    return (SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 9))
            + _chunk(b"IEND", b""))
