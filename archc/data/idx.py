"""`idx:DIR`: MNIST-format IDX files (raw or .gz), header parsed by hand."""
from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from archc.data.arrays import from_arrays
from archc.data.base import Example, Source, Splits, register
from archc.data.dataset import Dataset, Split
from archc.errors import DataError
from archc.labels import CLASSES

IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions (count, rows, cols)
LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension (count)


def candidates(prefix: str, kind: str, ndim: int) -> list[str]:
    """Accepted file names for one IDX file, e.g. train-images-idx3-ubyte[.gz], train-images.idx3-ubyte[.gz]."""
    bases = [f"{prefix}-{kind}-idx{ndim}-ubyte", f"{prefix}-{kind}.idx{ndim}-ubyte"]
    return [b + ext for b in bases for ext in ("", ".gz")]


def find(folder: Path, prefix: str, kind: str, ndim: int) -> Path | None:
    """The first existing file among the accepted names."""
    for n in candidates(prefix, kind, ndim):
        if (folder / n).is_file():
            return folder / n
    return None


def read_idx(path: Path, magic: int, where: str) -> np.ndarray:
    """Read one IDX file of unsigned bytes, checking magic number and size against the header; streamed, so a
    header declaring more (or less) data than the file holds is refused having read at most what it declares."""
    gz = path.suffix == ".gz"
    try:
        with (gzip.open(path, "rb") if gz else path.open("rb")) as f:
            head = f.read(4)
            (got,) = struct.unpack(">I", head) if len(head) == 4 else (None,)
            if got is None:
                raise DataError(f"{path.name}: expected an IDX header, received only {len(head)} bytes", where=where)
            if got != magic:
                raise DataError(f"{path.name}: expected IDX magic number 0x{magic:08X}, received 0x{got:08X}",
                                where=where, hint="is this an MNIST-format file, and the right one (images vs "
                                                  "labels)?")
            ndim = magic & 0xFF
            header = 4 + 4 * ndim
            rest = f.read(4 * ndim)
            if len(rest) < 4 * ndim:
                raise DataError(f"{path.name}: expected a {header}-byte header, received a {4 + len(rest)}-byte "
                                f"file", where=where)
            dims = struct.unpack(f">{ndim}I", rest)
            expected = math.prod(dims)  # Python ints: 2^32-sized dims do not wrap
            if not gz and path.stat().st_size - header < expected:  # refused before reading (or allocating) it
                got_bytes = path.stat().st_size - header
                raise DataError(f"{path.name}: expected {expected:,} data bytes for shape {list(dims)}, received "
                                f"{got_bytes:,} (file truncated)", where=where)
            chunks, total = [], 0
            while total <= expected:  # one byte past the declared size tells "too long"
                chunk = f.read(min(1 << 24, expected + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{path.name}: expected a readable{' gzip' if gz else ''} IDX file, "
                        f"received one that fails to read ({e})", where=where) from None
    if total != expected:
        state = "truncated" if total < expected else "too long"
        shown = f"{total:,}" if total < expected else f"more than {expected:,}"
        raise DataError(f"{path.name}: expected {expected:,} data bytes for shape {list(dims)}, received {shown} "
                        f"(file {state})", where=where)
    return np.frombuffer(b"".join(chunks), dtype=np.uint8).reshape(dims)


def _pair(folder: Path, prefix: str, where: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Images as float32 (N, 1, rows, cols) in [0, 1] and int64 labels, or None when both files are absent."""
    img_path, lbl_path = find(folder, prefix, "images", 3), find(folder, prefix, "labels", 1)
    if img_path is None and lbl_path is None:
        return None
    if img_path is None or lbl_path is None:
        have, missing = (img_path or lbl_path), ("images" if img_path is None else "labels")
        raise DataError(f"expected {prefix} {missing} next to {have.name}, received none of "
                        f"{', '.join(candidates(prefix, missing, 3 if missing == 'images' else 1))}", where=where)
    images = read_idx(img_path, IMAGES_MAGIC, where)
    labels = read_idx(lbl_path, LABELS_MAGIC, where)
    if len(images) != len(labels):
        raise DataError(f"expected as many labels as images, received {len(images)} images in {img_path.name} "
                        f"and {len(labels)} labels in {lbl_path.name}", where=where)
    x = images.astype(np.float32)[:, None, :, :]
    x *= np.float32(1 / 255)  # in place: one float32 copy of MNIST-size data, not two
    return x, labels.astype(np.int64)


@register
class IdxFolder(Source):
    """MNIST-format IDX files in a folder: train-images-idx3-ubyte and train-labels-idx1-ubyte (raw or .gz),
    optionally t10k-* for the test split; images become float32 [1, rows, cols] in [0, 1]."""

    scheme = "idx"
    argument = "DIR"
    takes_path = True
    tasks = (CLASSES,)

    def load(self, arg: Path, splits: Splits) -> Dataset:
        """train-* files → train/val (val carved by seed); t10k-* files → test (carved from train when absent)."""
        name = self.name
        if not arg.is_dir():
            raise DataError(f"expected a folder of IDX files, received {str(arg)!r}, which is not a folder",
                            where=name)
        train = _pair(arg, "train", name)
        if train is None:
            found = sorted(p.name for p in arg.iterdir())[:10]
            raise DataError(f"expected {candidates('train', 'images', 3)[0]} and "
                            f"{candidates('train', 'labels', 1)[0]} (optionally .gz), received "
                            f"{found or 'an empty folder'}", where=name)
        test = _pair(arg, "t10k", name)
        top = max(int(train[1].max(initial=0)), int(test[1].max(initial=0)) if test else 0)
        classes = [str(i) for i in range(top + 1)]
        return from_arrays(name, train[0], train[1], classes=classes, task=CLASSES, splits=splits,
                           test=Split(*test, np.arange(len(test[0]))) if test else None)  # row: in t10k

    @classmethod
    def claims(cls, path: Path) -> bool:
        return path.is_dir() and any("idx" in p.name for p in path.iterdir())

    @classmethod
    def example(cls, folder: Path) -> Example:
        images = (np.arange(20 * 4 * 5) % 256).astype(np.uint8).reshape(20, 4, 5)
        for prefix, n in (("train", 16), ("t10k", 4)):
            write_idx(folder / "mnist" / f"{prefix}-images-idx3-ubyte.gz", images[:n])
            write_idx(folder / "mnist" / f"{prefix}-labels-idx1-ubyte", (np.arange(n) % 3).astype(np.uint8))
        return Example(f"idx:{folder / 'mnist'}", CLASSES, (1, 4, 5), 20)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write uint8 `array` as an IDX file (gzipped when the name ends in .gz): the format this source reads."""
    header = struct.pack(">I", 0x800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
