"""Text sources for language models (numpy only, no downloads): byte tokens, split by file, context windows.

Sources
    ``text:PATH``      a text file, or a directory of text files read recursively (any file that decodes
                       as UTF-8 and holds no NUL byte; binary files, hidden entries and ``__pycache__`` are
                       skipped). PATH is relative to the spec's folder (``root``).
    ``text:stdlib``    the running Python's own standard-library sources (``*.py`` under
                       ``sysconfig.get_paths()["stdlib"]``, without site-packages, test/tests, idlelib,
                       tkinter and turtledemo), capped at ``STDLIB_MAX_BYTES`` unless told otherwise.

    Either takes an optional byte cap after ``?``: ``text:stdlib?max_bytes=2000000``,
    ``text:notes/?max_bytes=500000`` (``max_bytes=0`` means no cap). Files are read in sorted path order
    and taken whole until the cap; the file that crosses it is truncated so the corpus is exactly the cap.
    The option ``context`` (tokens per window, default 256) is set by ``archc train`` from the model's input.

Tokens are bytes 0..255 (vocabulary 256). Files are joined with a newline byte.

Held-out splits are made by file: with three files or more, files are shuffled by ``seed`` and dealt
to test, then val, until each holds about its fraction of the bytes (at least one file for each split
whose fraction is > 0; the rest is train). With one or two files the joined text is cut by position
into contiguous train | val | test ranges instead.

Each split becomes next-token windows: x int64 [n, context], y int64 [n, context] with y = x shifted by
one byte, taken with stride = context (non-overlapping) from the split's joined bytes. The raw bytes of
each split stay available as ``dataset.text[split]`` (uint8), e.g. for ``baselines``.
"""
from __future__ import annotations

import os
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pydantic import Field

from archc.data.base import Example, Source, SourceOptions, Splits, register
from archc.data.dataset import Dataset, Split
from archc.data.sources import make_options, parse
from archc.errors import DataError
from archc.labels import TOKENS

VOCAB_SIZE = 256
SEPARATOR = 10  # b"\n", between files
DEFAULT_CONTEXT = 256
STDLIB_MAX_BYTES = 4_000_000
STDLIB_SKIP = frozenset({"site-packages", "dist-packages", "test", "tests", "idlelib", "tkinter",
                         "turtledemo", "__pycache__"})
_SNIFF = 8192  # bytes read first to reject binary files without reading them whole
TASK = TOKENS


@dataclass
class TextDataset(Dataset):
    """A language-model Dataset plus the raw bytes and file names of each split."""

    text: dict[str, np.ndarray] = field(default_factory=dict)   # split → uint8 bytes (files joined by \n)
    files: dict[str, list[str]] = field(default_factory=dict)   # split → file names (relative)
    tokenizer: dict = field(default_factory=dict)               # {"kind": "bytes", "vocab_size": 256, "context": N}


# --- tokenizer -----------------------------------------------------------------------------------------------

def encode(text: str) -> np.ndarray:
    """UTF-8 bytes of `text` as int64 token ids (0..255)."""
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)


def decode(tokens) -> str:
    """Token ids (0..255) back to text; invalid UTF-8 becomes U+FFFD."""
    return bytes(int(t) for t in np.asarray(tokens).reshape(-1).tolist()).decode("utf-8", errors="replace")


# --- reading -------------------------------------------------------------------------------------------------

def parse_argument(arg: str, root: str | Path | None = None) -> tuple[str, int | None]:
    """'PATH[?max_bytes=N]' → (PATH, cap or None), read as load() reads it (a PATH containing '?' that exists
    is taken whole)."""
    cls, target, query = parse(f"text:{arg}", root)
    return target, make_options(cls, f"text:{arg}", query, {}, {}).max_bytes or None


def stdlib_files() -> tuple[Path, list[Path]]:
    """(stdlib folder, its *.py files in sorted relative-path order, skipping STDLIB_SKIP folders)."""
    base = Path(sysconfig.get_paths()["stdlib"])
    found: list[Path] = []
    for folder, dirs, files in os.walk(base):
        dirs[:] = [d for d in dirs if d not in STDLIB_SKIP and not d.startswith(".")]
        found.extend(Path(folder, f) for f in files if f.endswith(".py"))
    return base, sorted(found, key=lambda p: p.relative_to(base).as_posix())


def tree_files(path: Path) -> list[Path]:
    """Every regular file under `path` (recursively), sorted; hidden entries and __pycache__ skipped."""
    found: list[Path] = []
    for folder, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
        found.extend(Path(folder, f) for f in files if not f.startswith("."))
    return sorted((p for p in found if p.is_file()), key=lambda p: p.relative_to(path).as_posix())


def read_text_file(path: Path) -> bytes | None:
    """The file's bytes when it is UTF-8 text without NUL bytes; None for binary or undecodable files."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(_SNIFF)
            if b"\0" in head:
                return None
            data = head + fh.read()
    except OSError:
        return None
    if b"\0" in data:
        return None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return data


def read_corpus(target: Path | str, cap: int | None, name: str) -> list[tuple[str, bytes]]:
    """[(relative name, bytes)] of the text files of `target` (a path, or "stdlib") in sorted order, at most
    `cap` bytes (None: no cap)."""
    if target == "stdlib":
        base, paths = stdlib_files()
    else:
        base = Path(target)
        if not base.exists():
            raise DataError(f"expected a text file or a folder of text files, received {str(base)!r}, "
                            "which does not exist", where=name, hint="or use text:stdlib")
        if base.is_file():
            paths, base = [base], base.parent
        else:
            paths = tree_files(base)
    out: list[tuple[str, bytes]] = []
    total = 0
    skipped = 0
    for p in paths:
        data = read_text_file(p)
        if data is None:
            skipped += 1
            continue
        if not data:
            continue
        if cap is not None and total + len(data) > cap:
            data = data[:cap - total]
        out.append((p.relative_to(base).as_posix(), data))
        total += len(data)
        if cap is not None and total >= cap:
            break
    if not out:
        what = f"{len(paths)} file(s), {skipped} of them binary or not UTF-8" if paths else "no files"
        raise DataError(f"expected at least one non-empty UTF-8 text file, received {what}", where=name)
    return out


# --- splitting and windows -----------------------------------------------------------------------------------

def join(parts: list[bytes]) -> np.ndarray:
    """Files joined with the separator byte, as uint8."""
    return np.frombuffer(bytes([SEPARATOR]).join(parts), dtype=np.uint8).copy()


def split_by_file(sizes: list[int], fractions: list[float], seed: int) -> list[list[int]]:
    """Deal shuffled file indices to len(fractions) held-out groups by bytes, the rest last (train).

    A group whose fraction is > 0 gets at least one file; at least one file is always left for train.
    Needs len(sizes) > number of positive fractions. Each group's indices are sorted.
    """
    n = len(sizes)
    order = np.random.default_rng(seed).permutation(n).tolist()
    total = float(sum(sizes))
    groups: list[list[int]] = []
    start = 0
    for i, f in enumerate(fractions):
        if f <= 0:
            groups.append([])
            continue
        later = sum(1 for g in fractions[i + 1:] if g > 0)
        most = n - start - later - 1  # leave one file for each later held-out group and one for train
        goal, acc, k = f * total, 0.0, 0
        while k < most and (k == 0 or acc + sizes[order[start + k]] / 2 <= goal):
            acc += sizes[order[start + k]]
            k += 1
        groups.append(sorted(order[start:start + k]))
        start += k
    groups.append(sorted(order[start:]))
    return groups


def windows(data: np.ndarray, context: int, stride: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Next-token windows of `data`: x = data[s:s+context], y = data[s+1:s+context+1] (int64)."""
    data = np.asarray(data)
    stride = context if stride is None else stride
    n = max(0, (len(data) - 1 - context) // stride + 1) if len(data) > context else 0
    if n == 0:
        empty = np.zeros((0, context), dtype=np.int64)
        return empty, empty.copy()
    if stride == context:
        x = data[:n * context].reshape(n, context)
        y = data[1:n * context + 1].reshape(n, context)
    else:
        view = np.lib.stride_tricks.sliding_window_view(data, context + 1)[::stride][:n]
        x, y = view[:, :-1], view[:, 1:]
    return x.astype(np.int64), y.astype(np.int64)


# --- baselines -----------------------------------------------------------------------------------------------

def baselines(train_bytes: np.ndarray, test_bytes: np.ndarray) -> dict[str, float]:
    """Bits per byte on `test_bytes` of add-one-smoothed unigram and bigram byte models fit on `train_bytes`.

    unigram: p(b) = (n(b) + 1) / (N + 256). bigram: p(b | a) = (n(a, b) + 1) / (n(a, ·) + 256), counting
    consecutive pairs of the training bytes; the first held-out byte (no predecessor) is scored by the unigram.
    """
    train = np.asarray(train_bytes, dtype=np.int64).reshape(-1)
    test = np.asarray(test_bytes, dtype=np.int64).reshape(-1)
    if test.size == 0:
        raise DataError("expected held-out bytes to score the baselines on, received none", where="baselines")
    uni = np.bincount(train, minlength=VOCAB_SIZE).astype(np.float64)
    log_uni = np.log2((uni + 1.0) / (train.size + VOCAB_SIZE))
    pairs = np.bincount(train[:-1] * VOCAB_SIZE + train[1:], minlength=VOCAB_SIZE * VOCAB_SIZE)
    pairs = pairs.reshape(VOCAB_SIZE, VOCAB_SIZE).astype(np.float64)
    log_bi = np.log2((pairs + 1.0) / (pairs.sum(axis=1, keepdims=True) + VOCAB_SIZE))
    unigram = -float(log_uni[test].mean())
    bigram_bits = log_uni[test[0]] + log_bi[test[:-1], test[1:]].sum()
    return {"unigram_bpb": unigram, "bigram_bpb": -float(bigram_bits) / test.size}


# --- the source --------------------------------------------------------------------------------------------------

class TextOptions(SourceOptions):
    max_bytes: int | None = Field(None, ge=0, description=f"read at most this many bytes (0: no cap; "
                                                           f"text:stdlib defaults to {STDLIB_MAX_BYTES})")
    context: int = Field(DEFAULT_CONTEXT, ge=1, description="tokens per window (train: the input's seq size)")


@register
class TextFiles(Source):
    """A text file, a folder of text files (read recursively, held out by file), or `stdlib`, the running
    Python's standard library: byte tokens (vocabulary 256) cut into next-token windows of `context`."""

    scheme = "text"
    argument = "PATH"
    takes_path = True
    names = ("stdlib",)
    tasks = (TASK,)
    Options = TextOptions
    token_vocab = VOCAB_SIZE  # validate checks a language model's vocab against it (train would refuse the data)

    def load(self, arg: Path | str, splits: Splits, options: TextOptions) -> TextDataset:
        """Next-byte windows split by file (see the module docstring)."""
        cap = options.max_bytes if options.max_bytes is not None or arg != "stdlib" else STDLIB_MAX_BYTES
        return _windows_dataset(self.name, read_corpus(arg, cap or None, self.name), options.context, splits)

    @classmethod
    def claims(cls, path: Path) -> bool:
        return path.suffix.lower() in (".txt", ".md")

    @classmethod
    def example(cls, folder: Path) -> Example:
        for i in range(4):
            (folder / "notes" / f"{i}.txt").parent.mkdir(exist_ok=True)
            (folder / "notes" / f"{i}.txt").write_text("".join(chr(97 + (i + j) % 26) for j in range(99)))
        # Four 99-byte files dealt by file: one each to test and val (12 windows of 8 tokens each), two joined
        # (199 bytes) to train (24 windows).
        return Example(f"text:{folder / 'notes'}?max_bytes=1000", TASK, (8,), 48, {"context": 8})


def _windows_dataset(name: str, corpus: list[tuple[str, bytes]], context: int, splits: Splits) -> TextDataset:
    """The corpus split by file (or by position with fewer than three files), as next-token windows."""
    names = [n for n, _ in corpus]
    if len(corpus) >= 3:
        test_idx, val_idx, train_idx = split_by_file([len(b) for _, b in corpus],
                                                     [splits.test_fraction, splits.val_fraction], splits.seed)
        groups = {"train": train_idx, "val": val_idx, "test": test_idx}
        text = {k: join([corpus[i][1] for i in idx]) for k, idx in groups.items()}
        files = {k: [names[i] for i in idx] for k, idx in groups.items()}
    else:
        whole = join([b for _, b in corpus])
        n_test = int(round(len(whole) * splits.test_fraction))
        n_val = int(round(len(whole) * splits.val_fraction))
        cut_val, cut_test = len(whole) - n_val - n_test, len(whole) - n_test
        text = {"train": whole[:cut_val], "val": whole[cut_val:cut_test], "test": whole[cut_test:]}
        files = {k: list(names) for k in text}
    parts: dict[str, Split] = {}
    for key in ("train", "val", "test"):
        data = text[key]
        if key == "train" or len(data):
            if len(data) < context + 1:
                raise DataError(f"{key}: expected at least context + 1 = {context + 1} bytes to make one window, "
                                f"received {len(data)}", where=name,
                                hint="lower the context, add text, or change the split fractions")
        parts[key] = Split(*windows(data, context))
    return TextDataset(name, parts["train"], parts["val"], parts["test"], None, (context,), TASK,
                       text=text, files=files,
                       tokenizer={"kind": "bytes", "vocab_size": VOCAB_SIZE, "context": context})
