"""`images:DIR`: one sub-folder per class holding .png or .npy images."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from archc.data.arrays import from_arrays
from archc.data.base import Example, Source, Splits, register
from archc.data.dataset import Dataset
from archc.data.png import PNGError, decode_png
from archc.util import load_arrays
from archc.errors import DataError
from archc.labels import CLASSES

EXTENSIONS = (".png", ".npy")


def _to_chw(a: np.ndarray) -> np.ndarray:
    """(H, W) → (1, H, W); (H, W, C) → (C, H, W) when the last axis looks like channels."""
    if a.ndim == 2:
        return a[None]
    if a.ndim == 3 and a.shape[0] not in (1, 2, 3, 4) and a.shape[-1] in (1, 2, 3, 4):
        return np.transpose(a, (2, 0, 1))
    if a.ndim == 3:
        return a
    raise ValueError(f"expected a 2-D or 3-D image, received shape {list(a.shape)}")


def read_image(path: Path) -> np.ndarray:
    """One image as float32 (C, H, W) in [0, 1] for integer pixels; raises ValueError when unreadable."""
    if path.suffix.lower() == ".png":
        a = np.transpose(decode_png(path.read_bytes()), (2, 0, 1))
    else:
        a = _to_chw(load_arrays(path))
    if a.dtype == np.uint8:
        return a.astype(np.float32) / np.float32(255)
    if a.dtype == np.uint16:
        return a.astype(np.float32) / np.float32(65535)
    if a.dtype.kind in "fb":
        out = a.astype(np.float32)
        if not np.isfinite(out).all():
            raise ValueError("expected finite pixel values, received NaN or inf")
        return out
    raise ValueError(f"expected uint8, uint16 or float pixels, received {a.dtype}")


@register
class ImageFolders(Source):
    """A folder with one sub-folder per class (the class names, sorted) holding .png or .npy images; all share
    one (C, H, W) shape; integer pixels are scaled to [0, 1]."""

    scheme = "images"
    argument = "DIR"
    takes_path = True
    tasks = (CLASSES,)

    def load(self, arg: Path, splits: Splits) -> Dataset:
        """Class = sub-folder name (sorted); every image must share one (C, H, W) shape."""
        name, folder = self.name, arg
        if not folder.is_dir():
            raise DataError(f"expected a folder with one sub-folder per class, received {str(folder)!r}, "
                            "which is not a folder", where=name)
        classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not classes:
            raise DataError("expected one sub-folder per class, received no sub-folders", where=name)
        xs, ys = _read_classes(folder, classes, name)
        if not xs:
            raise DataError(f"expected images in the class folders {classes}, received none", where=name)
        return from_arrays(name, np.stack(xs), np.array(ys, dtype=np.int64), classes=classes,
                           task=CLASSES, splits=splits)

    @classmethod
    def claims(cls, path: Path) -> bool:
        return path.is_dir()

    @classmethod
    def example(cls, folder: Path) -> Example:
        for k, cls_name in enumerate(("cat", "dog")):
            (folder / "pets" / cls_name).mkdir(parents=True)
            for i in range(5):
                np.save(folder / "pets" / cls_name / f"{i}.npy", np.full((3, 4, 4), 40 * k + i, dtype=np.uint8))
        return Example(f"images:{folder / 'pets'}", CLASSES, (3, 4, 4), 10)


def _read_classes(folder: Path, classes: list[str], name: str) -> tuple[list[np.ndarray], list[int]]:
    """Every image of the class folders (C, H, W) and its class id, checking one shared shape."""
    xs, ys, first = [], [], None
    for label, cls in enumerate(classes):
        for path in sorted((folder / cls).iterdir()):
            if path.name.startswith(".") or path.is_dir():
                continue  # hidden files (.DS_Store) and nested folders are not examples
            rel = f"{cls}/{path.name}"
            if path.suffix.lower() not in EXTENSIONS:
                raise DataError(f"{rel}: expected a .png or .npy image, received a {path.suffix or 'suffix-less'} "
                                "file", where=name)
            try:
                img = read_image(path)
            except (OSError, ValueError, PNGError, EOFError) as e:
                raise DataError(f"{rel}: expected a readable image, received one that fails to decode ({e})",
                                where=name) from None
            if first is None:
                first = (rel, img.shape)
            elif img.shape != first[1]:
                raise DataError(f"{rel}: expected an image shaped {list(first[1])} (C, H, W) like {first[0]}, "
                                f"received {list(img.shape)}", where=name,
                                hint="resize the images to one size and one channel count")
            xs.append(img)
            ys.append(label)
    return xs, ys
