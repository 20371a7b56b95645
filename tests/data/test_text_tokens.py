"""text: sources through a memory-mapped token file (archc.data.tokens): the same windows as reading the corpus into
memory, a cache reused while the files are unchanged, atomic writes, bounded memory, and `archc infer` unchanged."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import archc.data.text as text_module
from archc.data import load
from archc.data.text import SEPARATOR, STDLIB_MAX_BYTES, baselines, split_by_file, stdlib_files, tree_files
from archc.data.tokens import Tokenizer, token_dtype

ROOT = Path(__file__).resolve().parents[2]


# --- the in-memory reference: the corpus read whole, joined, split and windowed as int64 ------------------------

def reference(target: Path | str, context: int, cap: int | None = None, val: float = 0.1, test: float = 0.2,
              seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray, bytes, list[str]]]:
    """{split: (x, y, bytes, files)} as archc read text: sources before token files, written out plainly."""
    if target == "stdlib":
        base, paths = stdlib_files()
        cap = STDLIB_MAX_BYTES if cap is None else cap or None
    else:
        base = Path(target)
        paths, base = ([base], base.parent) if base.is_file() else (tree_files(base), base)
    corpus, total = [], 0
    for p in paths:
        data = p.read_bytes()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if b"\0" in data or not data:
            continue
        if cap is not None and total + len(data) > cap:
            data = data[:cap - total]
        corpus.append((p.relative_to(base).as_posix(), data))
        total += len(data)
        if cap is not None and total >= cap:
            break
    sep = bytes([SEPARATOR])
    if len(corpus) >= 3:
        test_idx, val_idx, train_idx = split_by_file([len(b) for _, b in corpus], [test, val], seed)
        groups = {"train": train_idx, "val": val_idx, "test": test_idx}
        raw = {k: sep.join(corpus[i][1] for i in idx) for k, idx in groups.items()}
        files = {k: [corpus[i][0] for i in idx] for k, idx in groups.items()}
    else:
        whole = sep.join(b for _, b in corpus)
        n_test, n_val = int(round(len(whole) * test)), int(round(len(whole) * val))
        a, b = len(whole) - n_val - n_test, len(whole) - n_test
        raw = {"train": whole[:a], "val": whole[a:b], "test": whole[b:]}
        files = {k: [n for n, _ in corpus] for k in raw}
    out = {}
    for key, data in raw.items():
        ids = np.frombuffer(data, dtype=np.uint8).astype(np.int64)
        n = (len(ids) - 1) // context if len(ids) > context else 0
        x = np.array([ids[i * context:(i + 1) * context] for i in range(n)], dtype=np.int64).reshape(n, context)
        y = np.array([ids[i * context + 1:(i + 1) * context + 1] for i in range(n)], dtype=np.int64).reshape(n, context)
        out[key] = (x, y, data, files[key])
    return out


def corpus(root: Path, sizes: list[int], seed: int = 0) -> Path:
    """Text files of the given sizes in nested folders, plus files the source must skip (binary, not UTF-8, hidden,
    empty) and multi-byte characters that a read chunk may cut."""
    rng = np.random.default_rng(seed)
    words = ["def", "return", "x", "+", "1", "\n", "    ", "é", "λ", "→", "self", "(", ")", ":"]
    for i, size in enumerate(sizes):
        folder = root / ("a" if i % 3 == 1 else "b/c" if i % 3 == 2 else "")
        folder.mkdir(parents=True, exist_ok=True)
        text = ""
        while len(text.encode()) < size:
            text += " ".join(rng.choice(words, 64)) + "\n"
        (folder / f"f{i:03d}.py").write_text(text)
    (root / "blob.bin").write_bytes(bytes(range(256)) * 40)
    (root / "latin.txt").write_bytes("caf\xe9 ".encode("latin-1") * 50)
    (root / ".hidden.txt").write_text("secret " * 100)
    (root / "empty.txt").write_text("")
    return root


def same_as_reference(d, ref) -> None:
    for key in ("train", "val", "test"):
        x, y, raw, files = ref[key]
        part = getattr(d, key)
        assert part.x.dtype == part.y.dtype == np.uint8
        assert part.x.shape == x.shape and part.y.shape == y.shape, key
        assert np.array_equal(part.x, x) and np.array_equal(part.y, y), key
        assert d.text[key].tobytes() == raw and d.files[key] == files, key


@pytest.mark.parametrize("case", ["tree", "tree-seed", "one-file", "two-files", "cap", "no-held-out"])
def test_windows_match_the_in_memory_reading(tmp_path: Path, case: str) -> None:
    root = corpus(tmp_path / "c", [3000, 700, 1500, 90, 4000, 2500, 333, 1200])
    opts = {"context": 16}
    target: Path = root
    if case == "tree-seed":
        opts |= {"seed": 5, "val_fraction": 0.25, "test_fraction": 0.15, "context": 7}
    elif case == "one-file":
        target = root / "f000.py"
    elif case == "two-files":
        target = tmp_path / "two"
        target.mkdir()
        for name in ("x.txt", "y.txt"):
            (target / name).write_bytes((root / "a" / "f001.py").read_bytes() + name.encode())
    elif case == "cap":
        opts |= {"max_bytes": 5001, "context": 32}  # cuts a file, maybe inside a multi-byte character
    elif case == "no-held-out":
        opts |= {"val_fraction": 0.0, "test_fraction": 0.0}
    d = load(f"text:{target}", **opts)
    ref = reference(target, opts["context"], opts.get("max_bytes"), opts.get("val_fraction", 0.1),
                    opts.get("test_fraction", 0.2), opts.get("seed", 0))
    same_as_reference(d, ref)
    # Views of one read-only memmap: no window is a copy.
    assert isinstance(d.train.x.base, np.memmap) or any(isinstance(b, np.memmap) for b in _bases(d.train.x))
    assert np.shares_memory(d.train.x, d.text["train"]) and np.shares_memory(d.train.y, d.text["train"])
    assert not d.train.x.flags.writeable
    assert d.token_file is None or d.token_file.stat().st_size == sum(len(v) for v in d.text.values())


def _bases(a: np.ndarray):
    while a is not None:
        yield a
        a = a.base if isinstance(a, np.ndarray) else None


def test_stdlib_matches_the_in_memory_reading() -> None:
    d = load("text:stdlib?max_bytes=200000", context=64)
    same_as_reference(d, reference("stdlib", 64, 200000))


def test_token_dtype_is_the_smallest_that_holds_the_vocabulary() -> None:
    assert [token_dtype(v) for v in (2, 256, 257, 65536, 65537)] == [np.uint8] * 2 + [np.uint16] * 2 + [np.uint32]


# --- the cache ----------------------------------------------------------------------------------------------------

def test_cache_is_reused_without_reading_and_rebuilt_when_a_file_changes(tmp_path: Path, monkeypatch) -> None:
    root = corpus(tmp_path / "c", [2000, 1500, 1800, 900, 2200])
    cache = tmp_path / "cache"
    first = load(f"text:{root}?cache={cache}", context=8)
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".tokens")
    path = first.token_file
    assert path is not None and path.parent == cache
    stamp = (path.stat().st_ino, path.stat().st_mtime_ns)

    def no_reading(*args, **kwargs):
        raise AssertionError("the corpus was read again")

    with monkeypatch.context() as m:  # the second load maps the file: it neither checks nor reads the corpus
        m.setattr(text_module, "plan", no_reading)
        m.setattr(text_module, "text_length", no_reading)
        again = load(f"text:{root}", cache=str(cache), context=8)
        other_context = load(f"text:{root}", cache=str(cache), context=5)   # windows are views: the same file
    assert again.token_file == other_context.token_file == path
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == stamp           # not rewritten
    assert np.array_equal(again.train.x, first.train.x) and again.files == first.files
    same_as_reference(other_context, reference(root, 5))

    # A changed file (its size and time) is a new key: rebuilt, and the old version of the source pruned.
    changed = root / "a" / "f001.py"
    changed.write_text(changed.read_text() + "def more(): return 1\n")
    rebuilt = load(f"text:{root}?cache={cache}", context=8)
    assert rebuilt.token_file != path and not path.exists()
    assert len(list(cache.iterdir())) == 2
    same_as_reference(rebuilt, reference(root, 8))
    # Other split settings are another source: kept beside it.
    load(f"text:{root}?cache={cache}", context=8, seed=3)
    assert len(list(cache.iterdir())) == 4


def test_without_a_cache_the_token_file_is_removed_once_mapped(tmp_path: Path, monkeypatch) -> None:
    root = corpus(tmp_path / "c", [1000, 1200, 800])
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    d = load(f"text:{root}", context=8)
    import archc.tempfiles as tempfiles
    assert d.token_file is None and not list((tmp_path / "tmp").iterdir())  # nothing left behind, nothing tracked
    assert not tempfiles._live
    same_as_reference(d, reference(root, 8))                                 # the mapping still reads the tokens


def test_a_damaged_cache_entry_is_rebuilt(tmp_path: Path) -> None:
    root = corpus(tmp_path / "c", [1000, 1200, 800])
    cache = tmp_path / "cache"
    d = load(f"text:{root}?cache={cache}", context=8)
    assert d.token_file is not None
    with open(d.token_file, "r+b") as fh:  # cut short (a disk that filled, a hand edit): its size no longer agrees
        fh.truncate(10)
    again = load(f"text:{root}?cache={cache}", context=8)
    same_as_reference(again, reference(root, 8))


# --- atomic writes ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
@pytest.mark.parametrize("cached", [True, False])
def test_an_interrupted_write_leaves_no_file(tmp_path: Path, monkeypatch, error: type, cached: bool) -> None:
    root = corpus(tmp_path / "c", [3000, 3000, 3000])
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr("archc.data.tokens.CHUNK", 1000)
    written = []

    def failing(chunks):
        for chunk in chunks:
            written.append(len(chunk))
            if sum(written) > 2500:
                raise error("interrupted")
            yield np.frombuffer(chunk, dtype=np.uint8)

    monkeypatch.setattr(text_module, "TOKENIZER", Tokenizer("bytes", 256, failing))
    cache = tmp_path / "cache"
    with pytest.raises(error, match="interrupted"):
        load(f"text:{root}", context=8, cache=str(cache) if cached else None)
    assert sum(written) > 2500                                             # it failed mid-write, not before
    assert not (cache.exists() and list(cache.iterdir()))
    assert not list((tmp_path / "tmp").iterdir())
    import archc.tempfiles as tempfiles
    assert not [t for t in tempfiles._live if t.startswith(str(tmp_path))]  # none left to remove at exit either
    # The next load builds it whole.
    monkeypatch.setattr(text_module, "TOKENIZER", text_module.BYTES)
    same_as_reference(load(f"text:{root}", context=8, cache=str(cache) if cached else None), reference(root, 8))


def test_a_file_that_shrinks_while_read_is_one_error(tmp_path: Path, monkeypatch) -> None:
    from archc.errors import DataError

    root = corpus(tmp_path / "c", [3000, 3000, 3000])
    real = text_module.plan

    def shrink_after_planning(*args):
        planned = real(*args)
        (root / "f000.py").write_text("short")
        return planned

    monkeypatch.setattr(text_module, "plan", shrink_after_planning)
    with pytest.raises(DataError, match="the file changed while it was read"):
        load(f"text:{root}?cache={tmp_path / 'cache'}", context=8)
    assert not list((tmp_path / "cache").iterdir())


# --- memory -------------------------------------------------------------------------------------------------------

MEASURE = textwrap.dedent("""
    import re, sys
    from pathlib import Path
    root, n, size = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    root.mkdir()
    line = ("def f(x):  # é λ → " * 4 + "\\n").encode()
    block = line * (size // n // len(line) + 1)
    for i in range(n):
        (root / f"{i:04d}.txt").write_bytes(block[:size // n])
    del block
    from archc.data import load

    def kb(field):
        return int(re.search(field + r":\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1))

    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) restarts from the current RSS
    before = kb("VmRSS")
    d = load(f"text:{root}", context=256)
    print((kb("VmHWM") - before) * 1024, len(d.train) + len(d.val) + len(d.test))
""")


def peak_growth(folder: Path, size: int) -> tuple[int, int]:
    """(peak RSS growth in bytes while loading a generated corpus of `size` bytes, windows) in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(folder)}
    r = subprocess.run([sys.executable, "-c", MEASURE, str(folder / "corpus"), "40", str(size)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    growth, windows = r.stdout.split()
    return int(growth), int(windows)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="measures the peak RSS with Linux's /proc")
def test_memory_stays_bounded_as_the_corpus_grows(tmp_path: Path) -> None:
    """Loading 8 MB and 48 MB corpora: the in-memory reading grew by ~17 bytes per corpus byte (the text, joined
    copies and int64 windows); token files by a read chunk, whatever the size."""
    small, large = 8 << 20, 48 << 20
    (tmp_path / "s").mkdir()
    (tmp_path / "l").mkdir()
    grow_small, n_small = peak_growth(tmp_path / "s", small)
    grow_large, n_large = peak_growth(tmp_path / "l", large)
    assert n_large > 5 * n_small                                           # the windows are all there
    assert grow_large - grow_small < 0.05 * (large - small), (grow_small, grow_large)
    assert grow_large < 16 << 20, grow_large


# --- baselines and infer --------------------------------------------------------------------------------------------

def test_baselines_on_the_memmap_match_the_whole_array_formula(tmp_path: Path) -> None:
    root = corpus(tmp_path / "c", [3000, 2500, 1800, 2200])
    d = load(f"text:{root}", context=8)
    train = np.frombuffer(d.text["train"].tobytes(), dtype=np.uint8).astype(np.int64)
    test = np.frombuffer(d.text["test"].tobytes(), dtype=np.uint8).astype(np.int64)
    uni = np.bincount(train, minlength=256).astype(np.float64)
    log_uni = np.log2((uni + 1.0) / (train.size + 256))
    pairs = np.bincount(train[:-1] * 256 + train[1:], minlength=256 * 256).reshape(256, 256).astype(np.float64)
    log_bi = np.log2((pairs + 1.0) / (pairs.sum(axis=1, keepdims=True) + 256))
    want = {"unigram_bpb": -float(log_uni[test].mean()),
            "bigram_bpb": -float(log_uni[test[0]] + log_bi[test[:-1], test[1:]].sum()) / test.size}
    assert baselines(d.text["train"], d.text["test"]) == want                # one chunk: the same arithmetic
    chunked = baselines(d.text["train"], d.text["test"], chunk=7)            # pairs across chunk ends counted once
    assert chunked == pytest.approx(want, rel=1e-12)


def test_infer_on_text_scores_the_windows_as_before(tmp_path: Path) -> None:
    """`archc infer --input text:` feeds the uint8 windows as the model's int64 ids: the bits per byte are those of
    the int64 windows read in memory, run through ONNX Runtime directly."""
    import onnxruntime as ort
    from click.testing import CliRunner

    from archc.cli import main

    root = corpus(tmp_path / "corpus", [2500, 1800, 2100, 1600])
    spec = {"archc": 1, "model": {"name": "tiny-lm"},
            "inputs": {"tokens": {"shape": ["seq"], "dtype": "int64", "vocab": 256}}, "axes": {"seq": 16},
            "task": {"kind": "language_model"},
            "layers": [{"id": "emb", "op": "embedding", "num_embeddings": 256, "embedding_dim": 8},
                       {"op": "attention", "num_heads": 2, "causal": True},
                       {"id": "logits", "op": "tied_linear", "tie": "emb"}],
            "data": {"source": "text:corpus", "val_fraction": 0.2, "test_fraction": 0.2}}
    (tmp_path / "lm.json").write_text(json.dumps(spec))
    model = tmp_path / "lm.onnx"
    r = CliRunner().invoke(main, ["build", str(tmp_path / "lm.json"), "-o", str(model), "--no-optimize"])
    assert r.exit_code == 0, r.output
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    for split in ("test", "all"):
        r = CliRunner().invoke(main, ["infer", str(model), "--input", f"text:{root}", "--split", split, "--json"])
        assert r.exit_code == 0, r.output
        got = json.loads(r.stdout)
        # --split all reads the source without held-out fractions: every window of the joined files
        x, y, *_ = reference(root, 16, val=0.2, test=0.2)["test"] if split == "test" else \
            reference(root, 16, val=0.0, test=0.0)["train"]
        logits = session.run(None, {"tokens": x})[0].astype(np.float64)                  # (N, T, V)
        logp = logits - logits.max(-1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
        bpb = -float(np.take_along_axis(logp, y[..., None], -1).mean()) / math.log(2)
        assert len(got["records"]) == len(x)
        assert got["metrics"]["bpb"] == pytest.approx(bpb, rel=1e-9)
