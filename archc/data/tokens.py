"""Token files: a corpus tokenized once, streamed piece by piece into a flat file of token ids, then opened
read-only with np.memmap, so a language model's windows are views of the file, not copies held in memory.

A token file holds the tokens of each split contiguously, in the order given (train | val | test), in the smallest
unsigned dtype that holds the tokenizer's vocabulary (uint8 for bytes). A JSON side file records where each split
lies, what the caller wants kept (the files of each split) and the key. Both are written atomically (a temporary
beside the file, renamed into place; archc.tempfiles removes the temporary on an error or a signal), the tokens
first, so a side file always describes a whole token file.

Where it is kept:
- `cache` a folder: under a key that changes when the data or the settings change (the caller's key parts: file
  paths, sizes and modification times, the cap, the tokenizer, the split settings). A second load with the same key
  maps the file without reading the corpus; writing a new version removes the older versions of the same `source`.
- `cache` None: a tracked temporary file in the system's temporary folder, removed as soon as it is mapped (the
  mapping keeps its pages; a SIGKILLed writer's leftover is removed by the next writer: archc.tempfiles.sweep).

Memory stays bounded by the chunk size: pieces are read CHUNK bytes at a time, encoded and appended.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Union

import numpy as np

import archc.tempfiles as tempfiles
from archc.errors import DataError
from archc.util import publish, temp_beside, write_error, write_text_atomic

FORMAT = 1              # the side file's layout: a file of another format is rebuilt, not misread
CHUNK = 1 << 20         # bytes read (and encoded) at a time
SUFFIX = ".tokens"

# A piece of a split's text: (file, start, length) bytes of a file, or literal bytes (a separator).
Piece = Union[tuple[str, int, int], bytes]


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds ids 0..vocab_size-1: uint8 for bytes, uint16 for most BPE vocabularies."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


def byte_ids(chunks: Iterable[bytes]) -> Iterator[np.ndarray]:
    """The byte tokenizer's encode: each byte is its own id (no copy)."""
    for chunk in chunks:
        yield np.frombuffer(chunk, dtype=np.uint8)


@dataclass(frozen=True)
class Tokenizer:
    """How text becomes token ids. `encode` maps one split's text, as a stream of byte chunks (files joined by their
    separator, cut anywhere), to a stream of id arrays: a tokenizer that must not cut a token at a chunk boundary
    (BPE) keeps the tail of a chunk until the next. `name` identifies it in the cache key (a BPE tokenizer: a hash
    of its merges), so files tokenized by another tokenizer are never reused."""

    kind: str
    vocab_size: int
    encode: Callable[[Iterable[bytes]], Iterable[np.ndarray]] = field(compare=False)
    name: str = ""

    @property
    def dtype(self) -> np.dtype:
        return token_dtype(self.vocab_size)

    @property
    def identity(self) -> str:
        return f"{self.kind}:{self.vocab_size}:{self.name}"


BYTES = Tokenizer("bytes", 256, byte_ids)


@dataclass
class TokenFile:
    """An opened token file: all its tokens (read-only memmap), each split's (start, length), the caller's kept
    metadata, and where it lies (a cache entry; None: an unnamed temporary, already removed)."""

    tokens: np.ndarray
    regions: dict[str, tuple[int, int]]
    meta: dict[str, Any]
    path: Path | None
    reused: bool

    def split(self, name: str) -> np.ndarray:
        """The tokens of one split: a view of the file (no copy)."""
        start, length = self.regions[name]
        return self.tokens[start:start + length]


def key_of(parts: Any) -> str:
    """A stable hash of JSON-able key parts."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def open_tokens(source: dict[str, Any], data: Any, plan: Callable[[], tuple[dict[str, list[Piece]], dict[str, Any]]],
                tokenizer: Tokenizer, cache: str | os.PathLike | None, where: str) -> TokenFile:
    """The token file of a corpus: reused from `cache` when one exists under the key of (`source`, `data`), else
    built: `plan()` (run only then: it may read the corpus to check it) gives each split's pieces, in file order,
    and metadata to keep beside the tokens. `source` names what is tokenized with which settings; `data` is what
    changes when the data does (file sizes and times). Errors point at `where`."""
    sid = key_of({"format": FORMAT, "source": source, "tokenizer": tokenizer.identity})
    key = key_of({"source": sid, "data": data})
    if cache is None:
        return _build(None, key, plan, tokenizer, where)
    folder = Path(cache)
    stem = f"text-{sid[:12]}-{key[:20]}"
    found = _reuse(folder / stem, key, tokenizer)
    if found is not None:
        return found
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(e, folder) from e
    built = _build(folder / stem, key, plan, tokenizer, where)
    _prune(folder, f"text-{sid[:12]}-", stem)
    return built


def _reuse(stem: Path, key: str, tokenizer: Tokenizer) -> TokenFile | None:
    """The cached token file under `stem` when its side file is whole and names `key`; None otherwise."""
    try:
        meta = json.loads(stem.with_suffix(".json").read_text(encoding="utf-8"))
        path = stem.with_suffix(SUFFIX)
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("key") != key \
                or meta.get("dtype") != tokenizer.dtype.name:
            return None
        count = int(meta["tokens"])
        if path.stat().st_size != count * tokenizer.dtype.itemsize:
            return None
        regions = {k: (int(a), int(n)) for k, (a, n) in meta["regions"].items()}
        return TokenFile(_map(path, tokenizer.dtype, count), regions, meta.get("kept", {}), path, True)
    except (OSError, ValueError, KeyError, TypeError):  # absent, half-pruned by another writer, or not ours: rebuild
        return None


def _build(stem: Path | None, key: str, plan: Callable[[], tuple[dict[str, list[Piece]], dict[str, Any]]],
           tokenizer: Tokenizer, where: str) -> TokenFile:
    """Write the tokens to a temporary, then rename it to `stem`.tokens and write the side file (stem None: keep
    the temporary only while it is written and mapped: it is removed once mapped)."""
    pieces, kept = plan()
    if stem is None:
        target = Path(tempfile.gettempdir()) / "archc-tokens"
        try:
            tmp = tempfiles.make(target)
        except OSError as e:
            raise write_error(e, target) from e
        try:
            regions = _write(tmp, pieces, tokenizer, where)
        except BaseException:
            tempfiles.remove(tmp)
            raise
        count = sum(n for _, n in regions.values())
        try:  # mapped, the file is removed at once: the mapping keeps its pages (POSIX), nothing is left behind
            return TokenFile(_map(Path(tmp), tokenizer.dtype, count), regions, kept, None, False)
        finally:
            tempfiles.remove(tmp)
    else:
        path = stem.with_suffix(SUFFIX)
        with temp_beside(path) as tmp:
            regions = _write(tmp, pieces, tokenizer, where)
            publish(tmp, path)
    count = sum(n for _, n in regions.values())
    if stem is not None:
        meta = {"format": FORMAT, "key": key, "tokenizer": tokenizer.identity, "dtype": tokenizer.dtype.name,
                "tokens": count, "regions": {k: list(v) for k, v in regions.items()}, "kept": kept}
        write_text_atomic(stem.with_suffix(".json"), json.dumps(meta) + "\n")
    return TokenFile(_map(path, tokenizer.dtype, count), regions, kept, path, False)


def _write(tmp: str, pieces: dict[str, list[Piece]], tokenizer: Tokenizer, where: str) -> dict[str, tuple[int, int]]:
    """Each split's tokens appended to `tmp` in turn; {split: (start, length)} in tokens."""
    dtype, vocab = tokenizer.dtype, tokenizer.vocab_size
    regions: dict[str, tuple[int, int]] = {}
    at = 0
    with open(tmp, "wb") as fh:
        for name, parts in pieces.items():
            start = at
            for ids in tokenizer.encode(stream(parts, where)):
                ids = np.asarray(ids)
                if ids.dtype != dtype:
                    if ids.size and (ids.min() < 0 or ids.max() >= vocab):
                        bad = int(ids.max()) if ids.max() >= vocab else int(ids.min())
                        raise DataError(f"expected token ids in 0..{vocab - 1} from the {tokenizer.kind} tokenizer, "
                                        f"received {bad}", where=where)
                    ids = ids.astype(dtype)
                fh.write(np.ascontiguousarray(ids).data)
                at += int(ids.size)
            regions[name] = (start, at - start)
        fh.flush()
        os.fsync(fh.fileno())
    return regions


def stream(pieces: list[Piece], where: str, chunk: int = CHUNK) -> Iterator[bytes]:
    """The bytes of `pieces` in order, at most `chunk` at a time (a file that shrank since it was planned: DataError)."""
    for piece in pieces:
        if isinstance(piece, bytes):
            yield piece
            continue
        path, start, length = piece
        with open(path, "rb") as fh:
            fh.seek(start)
            left = length
            while left:
                block = fh.read(min(chunk, left))
                if not block:
                    raise DataError(f"expected {length} bytes from {path} (from byte {start}), received "
                                    f"{length - left}: the file changed while it was read", where=where)
                left -= len(block)
                yield block


def _map(path: Path, dtype: np.dtype, count: int) -> np.ndarray:
    """The file's tokens, read-only (np.memmap cannot map an empty file: an empty array then)."""
    if count == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(count,))


def _prune(folder: Path, prefix: str, keep: str) -> None:
    """Remove the older versions of one source from a cache folder (a process that mapped one keeps its pages)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        stem, suffix = os.path.splitext(name)
        if name.startswith(prefix) and stem != keep and suffix in (SUFFIX, ".json"):
            try:
                os.unlink(folder / name)
            except OSError:
                pass  # another process pruned it, or no permission: not ours to insist on
