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

from archc.data.dataset import Dataset, Split
from archc.errors import DataError

VOCAB_SIZE = 256
SEPARATOR = 10  # b"\n", between files
DEFAULT_CONTEXT = 256
STDLIB_MAX_BYTES = 4_000_000
STDLIB_SKIP = frozenset({"site-packages", "dist-packages", "test", "tests", "idlelib", "tkinter",
                         "turtledemo", "__pycache__"})
_SNIFF = 8192  # bytes read first to reject binary files without reading them whole
TASK = "language_model"


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
    """'PATH[?max_bytes=N]' → (PATH, cap or None). A PATH that itself contains '?' and exists wins."""
    target, sep, query = arg.partition("?")
    if not sep or (target != "stdlib" and _resolve(arg, root).exists()):
        return arg, None
    cap: int | None = None
    for item in filter(None, query.split("&")):
        key, eq, value = item.partition("=")
        if key != "max_bytes" or not eq:
            raise DataError(f"expected an option 'max_bytes=N' after '?', received {item!r}", where=f"text:{arg}")
        try:
            cap = int(value)
        except ValueError:
            raise DataError(f"max_bytes: expected a whole number of bytes, received {value!r}",
                            where=f"text:{arg}") from None
        if cap < 0:
            raise DataError(f"max_bytes: expected a number >= 0 (0 = no cap), received {cap}", where=f"text:{arg}")
    return target, (cap or None)


def _resolve(arg: str, root: str | Path | None) -> Path:
    p = Path(arg).expanduser()
    return p if p.is_absolute() or root is None else Path(root) / p


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


def read_corpus(arg: str, root: str | Path | None = None) -> list[tuple[str, bytes]]:
    """[(relative name, bytes)] of the source's text files in sorted order, byte cap applied."""
    name = f"text:{arg}"
    target, cap = parse_argument(arg, root)
    if target == "stdlib":
        base, paths = stdlib_files()
        cap = STDLIB_MAX_BYTES if cap is None and "?" not in arg else cap
    else:
        base = _resolve(target, root)
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


# --- loader --------------------------------------------------------------------------------------------------

def load_text(arg: str, *, task: str | None, target: str | None, val_fraction: float, test_fraction: float,
              seed: int, root: str | Path | None, context: int | None = None) -> TextDataset:
    """`text:PATH` / `text:stdlib` → next-byte windows split by file (see the module docstring)."""
    name = f"text:{arg}"
    if task not in (None, TASK):
        raise DataError(f"expected task {TASK!r} for a text: source, received {task!r}", where=name)
    context = DEFAULT_CONTEXT if context is None else context
    if isinstance(context, bool) or not isinstance(context, (int, np.integer)) or context < 1:
        raise DataError(f"context: expected a positive whole number of tokens, received {context!r}", where=name)
    context = int(context)
    corpus = read_corpus(arg, root)
    names = [n for n, _ in corpus]
    if len(corpus) >= 3:
        test_idx, val_idx, train_idx = split_by_file([len(b) for _, b in corpus], [test_fraction, val_fraction], seed)
        groups = {"train": train_idx, "val": val_idx, "test": test_idx}
        text = {k: join([corpus[i][1] for i in idx]) for k, idx in groups.items()}
        files = {k: [names[i] for i in idx] for k, idx in groups.items()}
    else:
        whole = join([b for _, b in corpus])
        n_test = int(round(len(whole) * test_fraction))
        n_val = int(round(len(whole) * val_fraction))
        cut_val, cut_test = len(whole) - n_val - n_test, len(whole) - n_test
        text = {"train": whole[:cut_val], "val": whole[cut_val:cut_test], "test": whole[cut_test:]}
        files = {k: list(names) for k in text}
    splits: dict[str, Split] = {}
    for key in ("train", "val", "test"):
        data = text[key]
        if key == "train" or len(data):
            if len(data) < context + 1:
                raise DataError(f"{key}: expected at least context + 1 = {context + 1} bytes to make one window, "
                                f"received {len(data)}", where=name,
                                hint="lower the context, add text, or change the split fractions")
        splits[key] = Split(*windows(data, context))
    return TextDataset(name, splits["train"], splits["val"], splits["test"], None, (context,), TASK,
                       text=text, files=files,
                       tokenizer={"kind": "bytes", "vocab_size": VOCAB_SIZE, "context": context})
