"""Small shared helpers: atomic file writes (their temporaries: archc.tempfiles) and the size limits checked
before reading array files."""
from __future__ import annotations

import contextlib
import math
import os
import zipfile
from pathlib import Path
from typing import BinaryIO, Iterator

import archc.tempfiles as tempfiles
from archc.errors import InputError

FLOAT32_MAX = 3.4028234663852886e38  # float32's largest finite value: op attributes and data become float32


def default_mode(path: str | os.PathLike) -> None:
    """Give a temporary file the permissions a plain open() would (mkstemp makes it 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file in the same directory, fsync, then rename: never a half-written file.

    An OSError (read-only or full disk, no permission) is re-raised naming `path`, not the temporary file,
    so the CLI reports it as a user error about the file the user asked for."""
    with temp_beside(path) as tmp:  # removed by a SIGTERM or SIGINT as well (archc.tempfiles)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        publish(tmp, path)


@contextlib.contextmanager
def temp_beside(path: str | os.PathLike) -> Iterator[str]:
    """A temporary file's name beside `path`, for a writer that makes the file itself (an exporter, a quantizer)
    and then calls `publish`. Whatever happens the temporary is gone at the end, and an OSError (creating it,
    or raised inside) names `path`, as `write_bytes_atomic` does."""
    p = Path(path)
    try:
        tmp = tempfiles.make(p)
    except OSError as e:  # a read-only folder: name the file asked for, not a temporary
        raise write_error(e, p) from e
    try:
        yield tmp
    except OSError as e:
        raise write_error(e, p) from e
    finally:
        tempfiles.remove(tmp)


def publish(tmp: str, path: str | os.PathLike) -> None:
    """Rename a finished temporary file from `temp_beside` onto `path`, with a plain file's permissions."""
    default_mode(tmp)
    os.replace(tmp, path)
    tempfiles.forget(tmp)


def write_error(e: OSError, path: str | os.PathLike) -> OSError:
    """`e` re-addressed to the file the user asked for (not a temporary beside it); the CLI reports an OSError
    that names a file as a user error."""
    return OSError(e.errno, f"cannot write: {e.strerror or e}", str(path))


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def check_npy_header(fp: BinaryIO, available: int, what: str) -> None:
    """Read an .npy header from `fp` and refuse a declared size larger than the `available` bytes that follow:
    numpy would allocate the declared size (a 1 KB file can claim terabytes) before finding the data short.

    Raises ValueError naming `what`; `fp` is left just after the header."""
    import numpy as np
    from numpy.lib import format as npformat

    start = fp.tell()
    version = npformat.read_magic(fp)
    reader = npformat.read_array_header_1_0 if version == (1, 0) else npformat.read_array_header_2_0
    shape, _fortran, dtype = reader(fp)
    declared = math.prod(shape) * dtype.itemsize
    held = available - (fp.tell() - start)
    if dtype.hasobject:
        raise ValueError(f"{what}: expected numeric arrays, received dtype {dtype} (object arrays are refused)")
    if declared > held:
        raise ValueError(f"{what}: header declares shape {list(shape)} of {np.dtype(dtype).name} "
                         f"({declared:,} bytes), but the file holds {max(held, 0):,} bytes of data")


def check_array_file(path: str | os.PathLike) -> None:
    """Check every array header in an .npy or .npz file against the bytes actually stored (see check_npy_header)."""
    p = Path(path)
    if zipfile.is_zipfile(p):
        with zipfile.ZipFile(p) as z:
            for info in z.infolist():
                if info.filename.endswith(".npy"):
                    with z.open(info) as member:
                        check_npy_header(member, info.file_size, f"array {info.filename[:-4]!r}")
        return
    with open(p, "rb") as f:
        check_npy_header(f, p.stat().st_size, "the array")


def load_arrays(path: str | os.PathLike):
    """np.load (no pickles) after check_array_file: a lying header is a ValueError, never a huge allocation."""
    import numpy as np

    check_array_file(path)
    return np.load(path, allow_pickle=False)


def why_not_a_file(path: Path) -> str:
    """', which does not exist' or ', which is a folder' (a special file: ', which is not a regular file'): why
    a path named as a file cannot be read as one, for messages."""
    if not path.exists():
        return ", which does not exist"
    return ", which is a folder" if path.is_dir() else ", which is not a regular file"


def aside(path: Path) -> Path:
    """The first free FILE.old-N, as `archc train --force` moves a run folder to DIR.old-N."""
    n = 1
    while os.path.lexists(old := path.with_name(f"{path.name}.old-{n}")):
        n += 1
    return old


def write_new(path: Path, text: str, force: bool) -> Path | None:
    """Write `text` to `path` atomically, never over an existing file: without `force` an existing one is refused,
    with it moved aside to FILE.old-N first (returned). The new file appears whole or not at all."""
    moved = None
    if os.path.lexists(path):
        if not force:
            raise InputError(f"expected a new file, received {str(path)!r}, which exists", where="--output",
                             hint=f"choose another -o, or pass --force to move it to {str(aside(path))!r} first")
        moved = aside(path)
        os.replace(path, moved)
    with temp_beside(path) as tmp:  # removed whatever happens (a signal too: archc.tempfiles)
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        default_mode(tmp)
        try:
            os.link(tmp, path)  # fails when `path` appeared meanwhile: never a write over another's file
        except FileExistsError:
            raise InputError(f"expected a new file, received {str(path)!r}, which appeared while writing",
                             where="--output") from None
        except OSError:  # a file system without hard links: claim the name, then replace the empty claim
            with open(path, "x", encoding="utf-8"):
                pass
            os.replace(tmp, path)
    return moved
