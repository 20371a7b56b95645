"""Raw image files as `archc infer --input`: one file, a glob, or a folder (with class sub-folders: labelled, read as
the `images:` source is in training), decoded and converted to the model's input by archc.data.images' rules."""
from __future__ import annotations

import glob
from pathlib import Path

import numpy as np

from archc.data.images import (PICTURES, Conversions, ImageReader, class_folders, image_files, is_image,
                               load_image, options_for, parse_size)
from archc.data.lazy import Lazy, fits_in_memory
from archc.errors import DataError, InputError
from archc.labels import CLASSES
from archc.runtime.session import Model
from archc.tasks.base import ALL, Labelled

WILDCARDS = "*?["


def is_raw(text: str) -> bool:
    """Whether --input names image files: a folder, a .png/.jpg/.jpeg file (any case), or a glob pattern."""
    p = Path(text)
    return p.is_dir() or p.suffix.lower() in PICTURES or (any(c in text for c in WILDCARDS) and not p.exists())


def image_input(model: Model) -> tuple[str, int | None, tuple[int, int] | None]:
    """The model's image input: its name, channels and (H, W) where fixed; InputError when it has no single
    [batch, C, H, W] float input to read images into. A pixel front's uint8 [batch, H, W, C] input reads images as
    the plain model does (archc.runtime.pixels hands them over as 8-bit pixels)."""
    from archc.runtime.pixels import float_shape

    pixels = float_shape(model)
    if pixels is not None:
        name, (c, h, w) = pixels
        return name, c, (h, w)
    sigs = list(model.inputs.values())
    if len(sigs) != 1 or len(sigs[0].shape) != 4 or sigs[0].dtype not in ("float32", "float16", "float64"):
        got = ", ".join(f"{s.name!r} {s.describe()}" for s in sigs)
        raise InputError(f"expected a model with one image input [batch, C, H, W] float32 to read image files, "
                         f"received {got}", hint="pass the values as .npy/.npz/.json/.csv instead")
    sig = sigs[0]
    options = options_for(tuple(sig.shape[1:]))
    c = sig.shape[1] if isinstance(sig.shape[1], int) else None
    return sig.name, c, parse_size(options.get("size"))  # type: ignore[arg-type]


def read(model: Model, text: str, split: str | None) -> Labelled:
    """The examples of --input TEXT: a folder with class sub-folders is the `images:` source (every example unless
    --split names one, scored against the model's labels by name); a glob whose matches all sit in folders named
    like a classifier's classes (pets/*/*.png) is labelled by those names; a file, another glob or a folder of
    images is predicted only."""
    from archc.runtime.evaluate import load_split
    from archc.runtime.pixels import as_pixels

    path = Path(text)
    name, channels, size = image_input(model)
    if path.is_dir() and class_folders(path):
        return load_split(model, f"images:{path}", split or ALL)  # as_pixels there
    if split not in (None, ALL):
        raise InputError(f"expected --split all for unlabelled images (no class sub-folders), received {split}",
                         where="--split", hint="put the images in one sub-folder per class to split and score them")
    conversions = Conversions()
    files = _files(path, text, conversions)
    where = f"--input {text}"
    y = _folder_labels(model, files, path, text)
    what = ", labelled by their folders" if y is not None else ", unlabelled"
    told = [f"labelled each file by its folder's name ({', '.join(sorted({f.parent.name for f in files}))}: "
            "the model's class names), as in a folder of class sub-folders"] if y is not None else []
    try:
        lazy = _lazy(files, where, channels, size)
        if lazy is not None:  # past the in-memory budget: Model.run reads it a chunk at a time
            notes = conversions.notes(size) + [f"decoding {len(files):,} images a chunk at a time "
                                               f"({lazy.nbytes / 2**30:.2f} GiB decoded is over the in-memory budget; "
                                               "converted to the model's shape as read)"]
            return as_pixels(model, Labelled({name: lazy}, y, f"{text}, {len(files)} image(s){what}", notes + told,
                                             _shown(files, path)))
        images = [load_image(f, str(f), where, channels, size, conversions) for f in files]
    except DataError as e:
        raise InputError(e.message, where=where, hint=e.hint) from None
    shapes = {img.shape for img in images}
    if len(shapes) > 1:
        raise InputError(f"expected images of one shape (the model's input has no fixed size to resize them to), "
                         f"received {', '.join(str(list(s)) for s in sorted(shapes))}", where=where)
    return as_pixels(model, Labelled({name: np.stack(images)}, y, f"{text}, {len(images)} image(s){what}",
                                     conversions.notes(size) + told, _shown(files, path)))


def _folder_labels(model: Model, files: list[Path], path: Path, text: str) -> np.ndarray | None:
    """A glob's matches labelled by their folders' names (e.g. pets/*/*.png), as the images: source labels a folder
    of class sub-folders: only for a classifier when every match's folder is named like one of its classes; None
    otherwise (predicted only)."""
    from archc.tasks.base import for_model

    labels = [str(x) for x in (model.task or {}).get("labels") or []]
    if path.exists() or not labels or for_model(model, strict=False).data_task != CLASSES:
        return None
    position = {label: i for i, label in enumerate(labels)}
    if not all(f.parent.name in position for f in files):
        return None
    return np.array([position[f.parent.name] for f in files], dtype=np.int64)


def _shown(files: list[Path], path: Path) -> list[str]:
    """Each file as infer's `file` column names it: relative to the folder given, else as given (a glob's matches
    as the pattern spells them)."""
    if path.is_dir():
        return [f.relative_to(path).as_posix() for f in files]
    return [f.as_posix() for f in files]


def _lazy(files: list[Path], where: str, channels: int | None, size: tuple[int, int] | None) -> Lazy | None:
    """The files as a Lazy when their decoded size is past the in-memory budget (archc.data.lazy), else None. Without
    the model's fixed channels and size, every image must share the first one's shape (checked as each is read)."""
    reader = ImageReader(Path(), [str(f) for f in files], where, channels, size)
    if channels is not None and size is not None:
        shape: tuple[int, ...] = (channels, *size)
    else:
        shape = tuple(load_image(files[0], str(files[0]), where, channels, size, Conversions()).shape)
    lazy = Lazy(reader, shape, np.float32)
    return None if fits_in_memory(lazy.nbytes, None) else lazy


def _files(path: Path, text: str, conversions: Conversions) -> list[Path]:
    """The image files a file, folder or glob names (non-image files of a folder or glob skipped, counted)."""
    if path.is_dir():
        files = image_files(path, conversions)
    elif path.exists():
        files = [path]
    elif any(c in text for c in WILDCARDS):
        files = []
        for match in sorted(Path(m) for m in glob.glob(text)):
            if match.is_file() and is_image(match):
                files.append(match)
            elif match.is_file():
                conversions.skipped.append(str(match))
    else:
        raise InputError(f"input file not found: expected an image file, a folder or a glob, received {text!r}")
    if not files:
        raise InputError(f"expected image files (.png, .jpg, .jpeg, .npy), received none in {text!r}"
                         + (f" ({len(conversions.skipped)} other file(s))" if conversions.skipped else ""))
    return files
