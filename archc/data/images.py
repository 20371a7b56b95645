"""`images:DIR`: one sub-folder per class holding images (.png, .jpg/.jpeg, decoded by Pillow; .npy arrays), and
the decode and conversion rules that `archc infer` applies to raw image files too, so that training and inference
see the same values for the same file."""
from __future__ import annotations

import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from archc.data.arrays import from_arrays
from archc.data.base import Example, Source, Splits, register
from archc.data.options import SourceOptions, option
from archc.data.dataset import Dataset
from archc.data.lazy import Lazy, fits_in_memory
from archc.util import load_arrays
from archc.errors import DataError
from archc.labels import CLASSES

PICTURES = (".png", ".jpg", ".jpeg")     # decoded by Pillow (any case: .JPG is a JPEG)
EXTENSIONS = PICTURES + (".npy",)
# The largest image decoded: 8192 x 8192 (64 Mi pixels, up to 256 MiB as RGBA). The size is read from the
# header before any pixel is decoded, so a small file that declares 30000 x 30000 is refused at once.
MAX_PIXELS = 8192 * 8192
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as Pillow's convert("L")
RESIZED = "resized"  # convert()'s word for a resize, counted apart: the note says to what size, by which rule
RESIZE = "Pillow bilinear (antialiased when shrinking) on float32 values, aspect ratio not kept"


def is_image(path: Path) -> bool:
    """Whether a file name is one of the image types read (.png, .jpg, .jpeg, .npy; any case)."""
    return path.suffix.lower() in EXTENSIONS


def _to_chw(a: np.ndarray) -> np.ndarray:
    """(H, W) → (1, H, W); (H, W, C) → (C, H, W) when the last axis looks like channels."""
    if a.ndim == 2:
        return a[None]
    if a.ndim == 3 and a.shape[0] not in (1, 2, 3, 4) and a.shape[-1] in (1, 2, 3, 4):
        return np.transpose(a, (2, 0, 1))
    if a.ndim == 3:
        return a
    raise ValueError(f"expected a 2-D or 3-D image, received shape {list(a.shape)}")


def decode(path: Path) -> np.ndarray:
    """A PNG or JPEG as (H, W, C) uint8 (uint16 for 16-bit gray): C is 1 (gray), 2 (gray+alpha), 3 (RGB; palette and
    CMYK images become RGB) or 4 (RGBA); a JPEG's EXIF orientation is applied, as viewers do. ValueError when the
    file is not such an image, or its header declares more than MAX_PIXELS."""
    from PIL import Image, ImageOps

    try:
        with _HEADER_ONLY:  # Pillow's own limit is off while the header is read: ours, below, names the size
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                im = Image.open(path)  # reads the header only
            finally:
                Image.MAX_IMAGE_PIXELS = saved
        with im:
            width, height = im.size
            if not 0 < width * height <= MAX_PIXELS:
                raise _TooLarge(f"expected an image of 1 to {MAX_PIXELS:,} pixels (8192 x 8192), received a header "
                                f"declaring {width} x {height}")
            ImageOps.exif_transpose(im, in_place=True)  # no copy of an image without an EXIF rotation
            return _pixels(im)
    except _TooLarge as e:
        raise ValueError(str(e)) from None
    except Exception as e:  # Pillow's plugins fail in many types (OSError, SyntaxError, struct.error ...): a bad file
        raise ValueError(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__) from None


_HEADER_ONLY = threading.Lock()


class _TooLarge(Exception):
    """The header declares too many pixels (kept apart from the decoder's own failures)."""


def _pixels(im) -> np.ndarray:
    """Pillow image → (H, W, C) array in one of the layouts decode() promises."""
    mode = im.mode
    wanted = {"1": "L", "P": "RGB", "PA": "RGBA", "La": "LA", "RGBa": "RGBA", "RGBX": "RGB", "CMYK": "RGB",
              "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB"}.get(mode)
    if wanted:
        im = im.convert(wanted)
    a = np.asarray(im)
    if mode == "I":  # 16-bit PNGs may open as 32-bit ints: keep them 16-bit when they fit
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise ValueError("expected 8- or 16-bit pixels, received 32-bit values")
        a = a.astype(np.uint16)
    elif mode.startswith("I;16"):
        a = a.astype(np.uint16)
    return a[:, :, None] if a.ndim == 2 else a


def read_image(path: Path) -> np.ndarray:
    """One image as float32 (C, H, W) in [0, 1] for integer pixels; raises ValueError when unreadable."""
    if path.suffix.lower() in PICTURES:
        a = np.ascontiguousarray(np.transpose(decode(path), (2, 0, 1)))  # C-contiguous: astype keeps strides
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


# ---- conversion to a model's shape ------------------------------------------------------------------------------

def convert_channels(img: np.ndarray, channels: int) -> tuple[np.ndarray, str]:
    """(C, H, W) to `channels` (1 or 3): alpha dropped (not composited), RGB to gray by ITU-R 601-2 luma, gray to
    RGB by copying; returns the array and what was done ('' when nothing). ValueError when no rule applies."""
    c = img.shape[0]
    if c == channels:
        return img, ""
    names = {1: "gray", 2: "gray+alpha", 3: "RGB", 4: "RGBA"}
    if channels not in (1, 3) or c not in names:
        raise ValueError(f"expected an image of {channels} channel(s), received {c}; only gray, gray+alpha, RGB and "
                         "RGBA images convert, to 1 or 3 channels")
    if channels == 1:
        gray = img[:1] if c <= 2 else np.tensordot(np.asarray(LUMA, np.float32), img[:3], axes=1)[None]
        return gray.astype(np.float32, copy=False), f"{names[c]} to gray"
    rgb = img[:3] if c == 4 else np.repeat(img[:1], 3, axis=0)
    return rgb, f"{names[c]} to RGB"


def resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(C, H, W) float32 resized to (C, *size): each channel with Pillow's bilinear filter in mode F (float32)."""
    from PIL import Image

    height, width = size
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(ch, dtype=np.float32))
                                .resize((width, height), Image.Resampling.BILINEAR)) for ch in img])


def convert(img: np.ndarray, channels: int | None, size: tuple[int, int] | None) -> tuple[np.ndarray, tuple[str, ...]]:
    """`img` (C, H, W) to `channels` and `size` (H, W) where given (None: kept); returns it and what was done."""
    done: list[str] = []
    if channels is not None:
        img, what = convert_channels(img, channels)
        done += [what] if what else []
    if size is not None and tuple(img.shape[1:]) != tuple(size):
        done.append(RESIZED)
        img = resize(img, size)
    return img, tuple(done)


@dataclass
class Conversions:
    """What was converted over many images, for one note: counts of each change, and the files skipped."""

    changed: Counter = field(default_factory=Counter)
    images: int = 0
    skipped: list[str] = field(default_factory=list)

    def add(self, done: tuple[str, ...]) -> None:
        self.images += bool(done)
        self.changed.update(done)

    def notes(self, size: tuple[int, int] | None) -> list[str]:
        """'converted 3 of 10 image(s): RGB to gray (3) ...', 'skipped 2 non-image file(s): ...'."""
        out = []
        if self.images:
            parts = [f"{what} ({n})" for what, n in self.changed.items() if what != RESIZED]
            if self.changed[RESIZED] and size:
                parts.append(f"resized to {size[0]}x{size[1]} ({self.changed[RESIZED]}; {RESIZE})")
            out.append(f"converted {self.images} image(s) to the model's shape: {'; '.join(parts)}")
        if self.skipped:
            shown = ", ".join(self.skipped[:5]) + (f", ... ({len(self.skipped)} in all)" if len(self.skipped) > 5 else "")
            out.append(f"skipped {len(self.skipped)} non-image file(s): {shown}")
        return out


def image_files(folder: Path, conversions: Conversions, prefix: str = "") -> list[Path]:
    """The image files directly in `folder`, sorted; other files are counted as skipped (hidden files and
    folders are neither)."""
    found = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue  # hidden files (.DS_Store) and nested folders are not examples
        if is_image(path):
            found.append(path)
        else:
            conversions.skipped.append(prefix + path.name)
    return found


MAX_SIDE = 65_535  # PNG and JPEG store a side in 16 bits (JPEG) or more; beyond it a size is a typo, never an image
_SIDE = re.compile(r"[0-9]+")  # ASCII digits ('²'.isdigit() is True, int('²') fails)


def parse_size(text: str | None) -> tuple[int, int] | None:
    """'28x28' → (28, 28); None stays None. ValueError when malformed."""
    if text is None:
        return None
    h, sep, w = text.lower().partition("x")
    if not (sep and _SIDE.fullmatch(h) and _SIDE.fullmatch(w) and 0 < int(h) <= MAX_SIDE and 0 < int(w) <= MAX_SIDE):
        raise ValueError(f"expected HEIGHTxWIDTH such as 28x28, each side 1..{MAX_SIDE}, received {text!r}")
    return int(h), int(w)


def options_for(shape: tuple) -> dict[str, int | str]:
    """{channels, size: "HxW"} for a per-example [C, H, W] shape of fixed sizes (a model's or spec's input); {}
    for any other shape."""
    if len(shape) != 3 or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        return {}
    c, h, w = shape
    return {"channels": c, "size": f"{h}x{w}"}


@dataclass(frozen=True)
class ImageOptions(SourceOptions):
    channels: int | None = option(None, ge=1, description="convert every image to this many channels (1 or 3; "
                                  "train: the input's C)")
    size: str | None = option(None, title="HxW", description="resize every image to HxW (train: the input's H and W)")
    in_memory: bool | None = option(None, description="decode every image up front into one array (true) or per "
                                    "batch (false); default: up front when they take at most 1 GiB decoded "
                                    "(train: [data] in_memory)")


@register
class ImageFolders(Source):
    """A folder with one sub-folder per class (the class names, sorted) holding .png, .jpg/.jpeg or .npy images;
    integer pixels are scaled to [0, 1]; converted to `channels` and `size` when given, else all share one shape.
    Small folders are decoded up front; a folder whose images would take more than the in-memory budget decoded
    (archc.data.lazy) is listed only, and its images are decoded per batch."""

    scheme = "images"
    argument = "DIR"
    takes_path = True
    tasks = (CLASSES,)
    Options = ImageOptions

    def load(self, arg: Path, splits: Splits, options: ImageOptions) -> Dataset:
        """Class = sub-folder name (sorted); every image converted to one (C, H, W) shape, or sharing one."""
        name, folder = self.name, arg
        if not folder.is_dir():
            raise DataError(f"expected a folder with one sub-folder per class, received {str(folder)!r}, "
                            "which is not a folder", where=name)
        classes = class_folders(folder)
        if not classes:
            raise DataError("expected one sub-folder per class, received no sub-folders", where=name)
        try:
            size = parse_size(options.size)
        except ValueError as e:
            raise DataError(f"size: {e}", where=name) from None
        conversions = Conversions()
        for path in folder.iterdir():  # loose files beside the class folders are not examples of any class
            if path.is_file() and not path.name.startswith("."):
                conversions.skipped.append(path.name)
        files, ys = _list_classes(folder, classes, conversions)
        if not files:
            raise DataError(f"expected images in the class folders {classes}, received none", where=name)
        reader = ImageReader(folder, files, name, options.channels, size)
        shape = reader.shape()
        y = np.array(ys, dtype=np.int64)
        lazy = Lazy(reader, shape, np.float32)
        if fits_in_memory(lazy.nbytes, options.in_memory):
            x: np.ndarray | Lazy = np.stack(_read_all(reader, conversions))
            notes = conversions.notes(size)
        else:
            x = lazy
            notes = conversions.notes(size) + [f"decoding {len(files):,} images per batch ({lazy.nbytes / 2**30:.2f} "
                                               f"GiB decoded{'' if options.in_memory is False else ' is over the in-memory budget'}; "
                                               "converted to the model's shape as read)"]
        ds = from_arrays(name, x, y, classes=classes, task=CLASSES, splits=splits)
        ds.notes, ds.names = notes, files
        return ds

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


def class_folders(folder: Path) -> list[str]:
    """The class sub-folders of `folder` (hidden ones excluded), sorted by name."""
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_image(path: Path, rel: str, where: str, channels: int | None, size: tuple[int, int] | None,
               conversions: Conversions) -> np.ndarray:
    """One file read and converted; a DataError naming it when it fails to decode or convert."""
    try:
        img = read_image(path)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{rel}: expected a readable image, received one that fails to decode ({e})",
                        where=where) from None
    try:
        img, done = convert(img, channels, size)
    except ValueError as e:
        raise DataError(f"{rel}: {e}", where=where) from None
    conversions.add(done)
    return img


def _list_classes(folder: Path, classes: list[str], conversions: Conversions) -> tuple[list[str], list[int]]:
    """Every image file of the class folders (relative 'class/file' paths, sorted) and its class id."""
    files, ys = [], []
    for label, cls in enumerate(classes):
        for path in image_files(folder / cls, conversions, f"{cls}/"):
            files.append(f"{cls}/{path.name}")
            ys.append(label)
    return files, ys


class ImageReader:
    """Reads image i of a folder's listing, converted to `channels` and `size` (picklable: loader workers decode
    with it). Without both, every image must share the first one's shape."""

    def __init__(self, folder: Path, files: list[str], name: str, channels: int | None,
                 size: tuple[int, int] | None) -> None:
        self.folder, self.files, self.name, self.channels, self.size = folder, files, name, channels, size
        self.conversions = Conversions()  # what reads in this process converted

    def __len__(self) -> int:
        return len(self.files)

    def read(self, i: int) -> np.ndarray:
        return load_image(self.folder / self.files[i], self.files[i], self.name, self.channels, self.size,
                          self.conversions)

    def where(self, i: int) -> str:
        return f"{self.name}: {self.files[i]}"

    def shape(self) -> tuple[int, ...]:
        """(C, H, W) of every image: the conversion's target, or the first image's own."""
        if self.channels is not None and self.size is not None:
            return (self.channels, *self.size)
        first = self.read(0)
        self.conversions = Conversions()
        return tuple(first.shape)


def _read_all(reader: ImageReader, conversions: Conversions) -> list[np.ndarray]:
    """Every image of `reader` (C, H, W), checking one shared shape; its conversions counted into `conversions`."""
    xs: list[np.ndarray] = []
    first: tuple[str, tuple] | None = None
    reader.conversions = conversions
    for i, rel in enumerate(reader.files):
        img = reader.read(i)
        if first is None:
            first = (rel, img.shape)
        elif img.shape != first[1]:
            raise DataError(f"{rel}: expected an image shaped {list(first[1])} (C, H, W) like {first[0]}, "
                            f"received {list(img.shape)}", where=reader.name,
                            hint="resize the images to one size and one channel count, or give "
                                 "?size=HxW&channels=C")
        xs.append(img)
    return xs
