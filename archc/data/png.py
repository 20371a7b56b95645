"""A small PNG codec on zlib + numpy: decodes 8-bit gray, gray+alpha, RGB, RGBA and palette (non-interlaced);
encodes 8-bit gray, gray+alpha, RGB and RGBA."""
from __future__ import annotations

import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type → samples per pixel in the stored data
# The largest image decoded: 8192 x 8192 (64 Mi pixels, up to 256 MiB as RGBA). The header is checked before any
# pixel is decompressed, so an 875 KB file that declares 30000 x 30000 is refused at once, not after 4.6 GB.
MAX_PIXELS = 8192 * 8192


class PNGError(ValueError):
    """The bytes are not a PNG this decoder handles; the message says why."""


def _chunks(data: bytes):
    """Yield (type, payload) for each chunk, checking lengths and CRCs."""
    pos = len(SIGNATURE)
    while pos < len(data):
        if pos + 8 > len(data):
            raise PNGError("truncated chunk header")
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 8 + length
        if end + 4 > len(data):
            raise PNGError(f"truncated {ctype.decode('latin-1')} chunk")
        payload = data[pos + 8:end]
        (crc,) = struct.unpack(">I", data[end:end + 4])
        if zlib.crc32(ctype + payload) != crc:
            raise PNGError(f"bad CRC in {ctype.decode('latin-1')} chunk")
        yield ctype, payload
        if ctype == b"IEND":
            return
        pos = end + 4
    raise PNGError("missing IEND chunk")


def _paeth_row(line: bytearray, prev: bytes, bpp: int) -> None:
    """Undo the Paeth filter in place (sequential by nature, so plain Python)."""
    for i in range(len(line)):
        a = line[i - bpp] if i >= bpp else 0
        b = prev[i]
        c = prev[i - bpp] if i >= bpp else 0
        p = a + b - c
        pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
        pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
        line[i] = (line[i] + pred) & 0xFF


def _average_row(line: bytearray, prev: bytes, bpp: int) -> None:
    """Undo the Average filter in place."""
    for i in range(len(line)):
        a = line[i - bpp] if i >= bpp else 0
        line[i] = (line[i] + ((a + prev[i]) >> 1)) & 0xFF


def _unfilter(raw: bytes, height: int, stride: int, bpp: int) -> np.ndarray:
    """Reverse the per-scanline filters; Sub and Up are vectorised, Average and Paeth loop."""
    if len(raw) != height * (stride + 1):
        raise PNGError(f"expected {height * (stride + 1)} bytes of image data, received {len(raw)}")
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(height, stride + 1)
    out = np.zeros((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.uint8)
    for r in range(height):
        kind, line = int(rows[r, 0]), rows[r, 1:]
        if kind == 0:
            cur = line.copy()
        elif kind == 1:  # Sub: running sum per byte lane, wrapping at 256
            cur = np.cumsum(line.reshape(-1, bpp), axis=0, dtype=np.uint8).reshape(-1)
        elif kind == 2:  # Up
            cur = line + prev
        elif kind in (3, 4):
            buf = bytearray(line.tobytes())
            (_average_row if kind == 3 else _paeth_row)(buf, prev.tobytes(), bpp)
            cur = np.frombuffer(bytes(buf), dtype=np.uint8)
        else:
            raise PNGError(f"unknown filter type {kind} on row {r}")
        out[r] = cur
        prev = out[r]
    return out


def _inflate(data: bytes, expected: int) -> bytes:
    """zlib-decompress at most one byte past `expected`, so a small stream cannot expand without bound."""
    try:
        return zlib.decompressobj().decompress(data, expected + 1)
    except zlib.error as e:
        raise PNGError(f"corrupt image data ({e})") from None


def decode_png(data: bytes) -> np.ndarray:
    """Decode PNG bytes to uint8 (H, W, C): C is 1 (gray), 2 (gray+alpha), 3 (RGB/palette) or 4 (RGBA)."""
    if not data.startswith(SIGNATURE):
        raise PNGError("not a PNG file (bad signature)")
    header, palette, idat = None, None, []
    for ctype, payload in _chunks(data):
        if ctype == b"IHDR":
            if len(payload) != 13:
                raise PNGError("bad IHDR chunk")
            header = struct.unpack(">IIBBBBB", payload)
        elif ctype == b"PLTE":
            palette = np.frombuffer(payload, dtype=np.uint8).reshape(-1, 3)
        elif ctype == b"IDAT":
            idat.append(payload)
    if header is None or not idat:
        raise PNGError("missing IHDR or IDAT chunk")
    width, height, depth, color, _comp, _filt, interlace = header
    if depth != 8:
        raise PNGError(f"expected 8-bit samples, received {depth}-bit")
    if color not in CHANNELS:
        raise PNGError(f"unknown colour type {color}")
    if interlace:
        raise PNGError("interlaced PNGs are not supported; save it non-interlaced")
    channels = CHANNELS[color]
    if width == 0 or height == 0 or width * height > MAX_PIXELS:
        raise PNGError(f"expected an image of 1 to {MAX_PIXELS:,} pixels (8192 x 8192), received a header "
                       f"declaring {width} x {height}")
    raw = _inflate(b"".join(idat), height * (width * channels + 1))
    pixels = _unfilter(raw, height, width * channels, channels).reshape(height, width, channels)
    if color == 3:
        if palette is None:
            raise PNGError("palette image without a PLTE chunk")
        if pixels.max(initial=0) >= len(palette):
            raise PNGError("palette index out of range")
        pixels = palette[pixels[..., 0]]
    return pixels



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
