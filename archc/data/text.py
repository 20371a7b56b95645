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
    The option ``context`` (tokens per window, default 256) is set by ``archc train`` from the model's input;
    ``cache`` (a folder) keeps the token file there for the next load (``archc train`` passes one beside the
    run folder, so ``--resume`` reuses it). ``tokenizer`` names a ``tokenizer.json`` (Hugging Face `tokenizers`
    format; relative to the spec's folder when it is there, else to the working folder):
    ``text:notes/?tokenizer=tokenizer.json``.

Tokens are bytes 0..255 (vocabulary 256) unless a tokenizer is named: then its ids (archc.data.tokenizer_file,
the ids transformers' PreTrainedTokenizerFast gives for the file, no special tokens added), vocabulary its largest
id + 1. Files are joined with a newline byte (a newline character, for a tokenizer).

Held-out splits are made by file: with three files or more, files are shuffled by ``seed`` and dealt
to test, then val, until each holds about its fraction of the bytes (at least one file for each split
whose fraction is > 0; the rest is train). With one or two files the joined text is cut by position
into contiguous train | val | test ranges instead. Both are decided from the files' sizes (each file is read
once, a chunk at a time, to check it is text) before any token is written.

The corpus is tokenized once into a token file (archc.data.tokens): each split's tokens contiguous (train | val |
test), streamed file by file, opened read-only with np.memmap. Each split becomes next-token windows that are views
of it, nothing copied: x [n, context], y [n, context] in the file's dtype (uint8 for bytes; the training loader
and the runtime widen them to int64 per batch), y = x shifted by one token, taken with stride = context
(non-overlapping). The tokens of each split stay available as ``dataset.text[split]`` (a view too), e.g. for
``baselines``. Memory stays bounded by the read chunk however large the corpus (no cap is needed but stdlib's,
which is the demo corpus's size).
"""
from __future__ import annotations

import codecs
import os
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from pydantic import Field

import archc.data.tokenizer_file as tokenizer_file
from archc.data.base import Example, Source, SourceOptions, Splits, register
from archc.data.dataset import Dataset, Split
from archc.data.sources import make_options, parse, resolve
from archc.data.tokens import BYTES, CHUNK, TokenFile, open_tokens, stream
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
TOKENIZER = BYTES  # the encode hook: another tokenizer (BPE) is an archc.data.tokens.Tokenizer


@dataclass
class TextDataset(Dataset):
    """A language-model Dataset plus the tokens and file names of each split, and the token file they map."""

    text: dict[str, np.ndarray] = field(default_factory=dict)   # split → its tokens (bytes: uint8, files joined by \n)
    files: dict[str, list[str]] = field(default_factory=dict)   # split → file names (relative)
    tokenizer: dict = field(default_factory=dict)               # {"kind": "bytes", "vocab_size": 256, "context": N}
    tokenizer_text: str | None = None                           # the tokenizer.json named (a run copies it)
    token_file: Path | None = None                              # the memory-mapped file x, y and text are views of


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


def text_length(path: Path) -> int | None:
    """The file's length when it is UTF-8 text without NUL bytes, checked CHUNK bytes at a time (never held whole);
    None for binary, undecodable or unreadable files."""
    check = codecs.getincrementaldecoder("utf-8")()
    total = 0
    try:
        with open(path, "rb") as fh:
            while block := fh.read(_SNIFF if total == 0 else CHUNK):  # a small first read rejects binaries early
                if b"\0" in block:
                    return None
                check.decode(block)
                total += len(block)
            check.decode(b"", final=True)
    except (OSError, UnicodeDecodeError):
        return None
    return total


def corpus_paths(target: Path | str, name: str) -> tuple[Path, list[Path]]:
    """(base folder, candidate files in sorted order) of `target`: a file, a folder, or "stdlib"."""
    if target == "stdlib":
        return stdlib_files()
    base = Path(target)
    if not base.exists():
        raise DataError(f"expected a text file or a folder of text files, received {str(base)!r}, "
                        "which does not exist", where=name, hint="or use text:stdlib")
    if base.is_file():
        return base.parent, [base]
    return base, tree_files(base)


def scan_corpus(base: Path, paths: list[Path], cap: int | None, name: str) -> list[tuple[str, Path, int]]:
    """[(relative name, path, bytes taken)] of the text files among `paths`, in order, at most `cap` bytes in all
    (None: no cap; the file that crosses it is cut). Reads each file once to check it, holding one chunk."""
    out: list[tuple[str, Path, int]] = []
    total = 0
    skipped = 0
    for p in paths:
        length = text_length(p)
        if length is None:
            skipped += 1
            continue
        if not length:
            continue
        if cap is not None:
            length = min(length, cap - total)
        out.append((p.relative_to(base).as_posix(), p, length))
        total += length
        if cap is not None and total >= cap:
            break
    if not out:
        what = f"{len(paths)} file(s), {skipped} of them binary or not UTF-8" if paths else "no files"
        raise DataError(f"expected at least one non-empty UTF-8 text file, received {what}", where=name)
    return out


def corpus_texts(source: str, root: str | Path | None = None) -> tuple[list[tuple[str, Path, int]], Iterator[str]]:
    """The files a `text:PATH[?max_bytes=N]` source reads (as `load` takes them: every split) and their text, a
    chunk at a time (what `archc tokenizer train` trains on). Other sources and options: DataError."""
    cls, arg, query = parse(source, root)
    if cls is not TextFiles:
        raise DataError(f"expected a text: source (text:FILE, text:DIR or text:stdlib), received a {cls.scheme}: "
                        "source", where=source)
    other = sorted(set(query) - {"max_bytes"})
    if other:
        raise DataError(f"expected only ?max_bytes=N, received ?{other[0]}= (a tokenizer trains on the text "
                        "itself)", where=source)
    cap = make_options(cls, source, query, {}, {}).max_bytes
    cap = cap if cap is not None or arg != "stdlib" else STDLIB_MAX_BYTES
    target = arg if arg == "stdlib" else resolve(arg, root)
    corpus = scan_corpus(*corpus_paths(target, source), cap or None, source)
    pieces = [(str(path), 0, n) for _, path, n in corpus]
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a cap may cut a character
    return corpus, (decoder.decode(block) for block in stream(pieces, source))


# --- splitting and windows -----------------------------------------------------------------------------------

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
    """Next-token windows of `data`: x = data[s:s+context], y = data[s+1:s+context+1], in data's dtype. With
    stride = context (the default) both are reshaped views of `data`, no copy: of a token file, pages on disk."""
    data = np.asarray(data)
    stride = context if stride is None else stride
    n = max(0, (len(data) - 1 - context) // stride + 1) if len(data) > context else 0
    if stride == context or n == 0:
        return data[:n * context].reshape(n, context), data[1:n * context + 1].reshape(n, context)
    view = np.lib.stride_tricks.sliding_window_view(data, context + 1)[::stride][:n]
    return view[:, :-1], view[:, 1:]


# --- baselines -----------------------------------------------------------------------------------------------

def baselines(train_bytes: np.ndarray, test_bytes: np.ndarray, chunk: int = 1 << 22) -> dict[str, float]:
    """Bits per byte on `test_bytes` of add-one-smoothed unigram and bigram byte models fit on `train_bytes`.

    unigram: p(b) = (n(b) + 1) / (N + 256). bigram: p(b | a) = (n(a, b) + 1) / (n(a, ·) + 256), counting
    consecutive pairs of the training bytes; the first held-out byte (no predecessor) is scored by the unigram.
    Counted and scored `chunk` bytes at a time (a token file's memmap is never copied whole, nor widened to int64).
    """
    train = np.asarray(train_bytes).reshape(-1)
    test = np.asarray(test_bytes).reshape(-1)
    if test.size == 0:
        raise DataError("expected held-out bytes to score the baselines on, received none", where="baselines")
    uni = np.zeros(VOCAB_SIZE, dtype=np.int64)
    pairs = np.zeros(VOCAB_SIZE * VOCAB_SIZE, dtype=np.int64)
    for a in range(0, train.size, chunk):
        part = train[a:a + chunk + 1].astype(np.int64)  # one byte past the chunk: the pair across its end
        uni += np.bincount(part[:chunk], minlength=VOCAB_SIZE)
        pairs += np.bincount(part[:-1] * VOCAB_SIZE + part[1:], minlength=VOCAB_SIZE * VOCAB_SIZE)
    log_uni = np.log2((uni.astype(np.float64) + 1.0) / (train.size + VOCAB_SIZE))
    pairs = pairs.reshape(VOCAB_SIZE, VOCAB_SIZE).astype(np.float64)
    log_bi = np.log2((pairs + 1.0) / (pairs.sum(axis=1, keepdims=True) + VOCAB_SIZE))
    uni_bits = bi_bits = 0.0
    for a in range(0, test.size, chunk):
        part = test[a:a + chunk + 1].astype(np.int64)
        uni_bits += log_uni[part[:chunk]].sum()
        bi_bits += log_bi[part[:-1], part[1:]].sum()
    return {"unigram_bpb": -float(uni_bits) / test.size,
            "bigram_bpb": -float(log_uni[int(test[0])] + bi_bits) / test.size}


# --- the source --------------------------------------------------------------------------------------------------

class TextOptions(SourceOptions):
    max_bytes: int | None = Field(None, ge=0, description=f"read at most this many bytes (0: no cap; "
                                                           f"text:stdlib defaults to {STDLIB_MAX_BYTES})")
    context: int = Field(DEFAULT_CONTEXT, ge=1, description="tokens per window (train: the input's seq size)")
    cache: str | None = Field(None, title="DIR", description="a folder to keep the token file in, reused while the "
                                                             "files are unchanged (none: a temporary removed at exit)")
    tokenizer: str | None = Field(None, title="FILE", json_schema_extra={"file": True},
                                  description="a tokenizer.json (Hugging Face tokenizers) to encode the text with "
                                              "(none: bytes, vocabulary 256)")


@register
class TextFiles(Source):
    """A text file, a folder of text files (read recursively, held out by file), or `stdlib`, the running
    Python's standard library: byte tokens (vocabulary 256) in a memory-mapped token file, cut into next-token
    windows of `context`."""

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
        base, paths = corpus_paths(arg, self.name)
        source = {"target": str(arg) if arg == "stdlib" else str(Path(arg).resolve()), "cap": cap or None,
                  "splits": [splits.val_fraction, splits.test_fraction, splits.seed]}
        named = None if options.tokenizer is None else tokenizer_file.read(options.tokenizer, self.name)
        tokens = open_tokens(source, listing(paths), lambda: plan(base, paths, cap or None, splits, self.name),
                             TOKENIZER if named is None else named.as_tokenizer(), options.cache, self.name)
        return _windows_dataset(self.name, tokens, options.context, named)

    @classmethod
    def vocab(cls, options: TextOptions, where: str) -> int | None:  # type: ignore[override]
        """256 (bytes), or the named tokenizer's vocabulary (read and checked: a bad file is refused here). A file
        that is not there is reported by `load`, as a missing corpus is (a run's spec.json names it relative to the
        spec's folder, which `archc export` does not know): None then."""
        if options.tokenizer is None:
            return cls.token_vocab
        if not Path(options.tokenizer).exists():
            return None
        return tokenizer_file.read(options.tokenizer, where).vocab_size

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


def listing(paths: list[Path]) -> list[tuple[str, int, int]]:
    """(resolved path, size, modification time in ns) of each candidate file: the token file's key changes with it."""
    out = []
    for p in paths:
        try:
            st = p.stat()
        except OSError:  # gone since the walk: the scan skips it
            continue
        out.append((str(p.resolve()), st.st_size, st.st_mtime_ns))
    return out


def plan(base: Path, paths: list[Path], cap: int | None, splits: Splits, name: str) -> tuple[dict, dict]:
    """Each split's pieces (file ranges and separators) and file names, decided from the files' checked sizes:
    with three files or more whole files dealt by `split_by_file`, else the joined text cut by position."""
    corpus = scan_corpus(base, paths, cap, name)
    sep = bytes([SEPARATOR])
    if len(corpus) >= 3:
        test_idx, val_idx, train_idx = split_by_file([n for _, _, n in corpus],
                                                     [splits.test_fraction, splits.val_fraction], splits.seed)
        groups = {"train": train_idx, "val": val_idx, "test": test_idx}
        pieces: dict[str, list] = {}
        for key, idx in groups.items():
            pieces[key] = [p for k, i in enumerate(idx) for p in ([sep] if k else []) + [(str(corpus[i][1]), 0,
                                                                                        corpus[i][2])]]
        files = {k: [corpus[i][0] for i in idx] for k, idx in groups.items()}
        return pieces, {"files": files}
    whole: list = [p for k, (_, path, n) in enumerate(corpus) for p in ([sep] if k else []) + [(str(path), 0, n)]]
    size = sum(n for *_, n in corpus) + len(corpus) - 1
    n_test = int(round(size * splits.test_fraction))
    n_val = int(round(size * splits.val_fraction))
    cuts = {"train": (0, size - n_val - n_test), "val": (size - n_val - n_test, size - n_test),
            "test": (size - n_test, size)}
    names = [rel for rel, _, _ in corpus]
    return {k: cut(whole, a, b) for k, (a, b) in cuts.items()}, {"files": {k: list(names) for k in cuts}}


def cut(pieces: list, a: int, b: int) -> list:
    """The pieces covering bytes a..b of their concatenation."""
    out: list = []
    at = 0
    for piece in pieces:
        length = len(piece) if isinstance(piece, bytes) else piece[2]
        lo, hi = max(a, at), min(b, at + length)
        if lo < hi:
            out.append(piece[lo - at:hi - at] if isinstance(piece, bytes) else (piece[0], piece[1] + lo - at, hi - lo))
        at += length
    return out


def _windows_dataset(name: str, tokens: TokenFile, context: int,
                     named: tokenizer_file.TokenizerFile | None = None) -> TextDataset:
    """Next-token windows of each split's region of the token file (views: nothing is copied); `named`: the
    tokenizer.json the tokens are of (None: bytes)."""
    unit = "bytes" if named is None else "tokens"
    text = {key: tokens.split(key) for key in ("train", "val", "test")}
    parts: dict[str, Split] = {}
    for key in ("train", "val", "test"):
        data = text[key]
        if key == "train" or len(data):
            if len(data) < context + 1:
                raise DataError(f"{key}: expected at least context + 1 = {context + 1} {unit} to make one window, "
                                f"received {len(data)}", where=name,
                                hint="lower the context, add text, or change the split fractions")
        parts[key] = Split(*windows(data, context))
    if named is None:
        described = {"kind": TOKENIZER.kind, "vocab_size": TOKENIZER.vocab_size, "context": context}
    else:  # the run copies the file beside its model as FILE; the hash names the version it trained with
        described = {"kind": tokenizer_file.KIND, "file": tokenizer_file.FILE, "sha256": named.sha256,
                     "vocab_size": named.vocab_size, "context": context}
    return TextDataset(name, parts["train"], parts["val"], parts["test"], None, (context,), TASK,
                       text=text, files=tokens.meta["files"], token_file=tokens.path, tokenizer=described,
                       tokenizer_text=None if named is None else named.text)
