"""A JPEG's EXIF orientation is applied as it is decoded (as viewers show it), and an image without one is decoded
as stored: archc.data.images.decode turns images in place, copying none.

The rotated file is made the way a camera makes it: the pixels stored sideways, with the EXIF Orientation tag
(0x0112) saying how to turn them upright. The image is a left half dark and a right half bright, so upright and
turned differ everywhere, and the expected array is Pillow's own ImageOps.exif_transpose of the same file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from archc.data.images import decode, read_image

ORIENTATION = 0x0112
# Orientation tag value: how the stored pixels were turned from upright (what the decoder undoes)
STORED = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270,
          2: Image.Transpose.FLIP_LEFT_RIGHT}


def upright_image() -> np.ndarray:
    """16 high x 24 wide RGB: the left half dark red, the right half bright green (no symmetry to hide a turn)."""
    a = np.zeros((16, 24, 3), dtype=np.uint8)
    a[:, :12] = (60, 10, 10)
    a[:, 12:] = (20, 230, 40)
    a[:4, :4] = (250, 250, 250)  # a white corner: flips and 180-degree turns differ too
    return a


def write_jpeg(path: Path, orientation: int | None) -> Path:
    im = Image.fromarray(upright_image())
    if orientation is None:
        im.save(path, quality=95)
        return path
    stored = im.transpose(STORED[orientation])
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    stored.save(path, quality=95, exif=exif.tobytes())
    return path


@pytest.mark.parametrize("orientation", [6, 8, 3, 2])
def test_exif_rotated_jpeg_is_decoded_upright(tmp_path: Path, orientation: int) -> None:
    path = write_jpeg(tmp_path / "turned.jpg", orientation)
    with Image.open(path) as raw:
        assert raw.getexif().get(ORIENTATION) == orientation  # the file really is stored turned
        stored = np.asarray(raw.convert("RGB"))
        expected = np.asarray(ImageOps.exif_transpose(raw).convert("RGB"))
    got = decode(path)
    assert got.shape == (16, 24, 3)  # upright: as tall and as wide as the original, not the stored pixels' shape
    np.testing.assert_array_equal(got, expected)
    if orientation in (6, 8):
        assert stored.shape == (24, 16, 3)
    else:
        assert not np.array_equal(got, stored)
    # and the colours sit where the upright image has them (within JPEG's error)
    diff = np.abs(got.astype(int) - upright_image().astype(int))
    assert np.median(diff) <= 6, np.median(diff)
    chw = read_image(path)
    assert chw.shape == (3, 16, 24) and chw[1, 8, 20] > 0.8 and chw[1, 8, 6] < 0.2


def test_jpeg_without_orientation_is_decoded_as_stored(tmp_path: Path) -> None:
    path = write_jpeg(tmp_path / "plain.jpg", None)
    with Image.open(path) as raw:
        assert ORIENTATION not in raw.getexif()
        stored = np.asarray(raw.convert("RGB"))
    np.testing.assert_array_equal(decode(path), stored)


def test_orientation_one_is_kept(tmp_path: Path) -> None:
    """Orientation 1 ('as stored') with EXIF present: nothing turned."""
    path = tmp_path / "one.jpg"
    exif = Image.Exif()
    exif[ORIENTATION] = 1
    Image.fromarray(upright_image()).save(path, quality=95, exif=exif.tobytes())
    with Image.open(path) as raw:
        stored = np.asarray(raw.convert("RGB"))
    np.testing.assert_array_equal(decode(path), stored)
