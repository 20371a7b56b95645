"""archc.data.text: text:PATH / text:stdlib sources, byte windows, split by file, n-gram baselines."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from archc.data import load
from archc.data.text import (STDLIB_MAX_BYTES, TextDataset, baselines, decode, encode, parse_argument,
                             split_by_file, windows)
from archc.errors import DataError


def make_tree(root: Path, n: int = 8) -> Path:
    """n small text files in nested folders, a binary file, a non-UTF-8 file, a hidden file and an empty file."""
    (root / "sub" / "deeper").mkdir(parents=True)
    for i in range(n):
        folder = root if i % 3 == 0 else (root / "sub" if i % 3 == 1 else root / "sub" / "deeper")
        ext = (".txt", ".py", ".md", ".rst")[i % 4]
        folder.joinpath(f"f{i:02d}{ext}").write_text(f"file {i}: " + "hello world, " * (20 + 5 * i) + "\n")
    (root / "blob.bin").write_bytes(bytes(range(256)) * 10)                  # NUL bytes: skipped
    (root / "latin.txt").write_bytes("caf\xe9 ".encode("latin-1") * 50)      # not UTF-8: skipped
    (root / ".hidden.txt").write_text("secret " * 100)                        # hidden: skipped
    (root / "empty.txt").write_text("")                                       # empty: skipped
    return root


def test_windows_shift_by_one() -> None:
    data = np.arange(23, dtype=np.uint8)
    x, y = windows(data, 5)
    assert x.dtype == y.dtype == np.uint8 and x.shape == y.shape == (4, 5)    # (23 - 1) // 5: views, data's dtype
    assert np.shares_memory(x, data) and np.shares_memory(y, data)
    assert np.array_equal(x[:, 1:], y[:, :-1])
    assert np.array_equal(y, x + 1)
    assert np.array_equal(x[:, 0], [0, 5, 10, 15])                            # stride = context
    xs, ys = windows(data, 5, stride=2)
    assert np.array_equal(xs[1], np.arange(2, 7)) and np.array_equal(ys, xs + 1)
    assert windows(np.arange(5, dtype=np.uint8), 5)[0].shape == (0, 5)       # needs context + 1 bytes


def test_directory_source(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "corpus")
    d = load(f"text:{root}", context=16, seed=3)
    assert isinstance(d, TextDataset) and d.task == "language_model"
    assert d.classes is None and d.example_shape == (16,)
    assert d.tokenizer == {"kind": "bytes", "vocab_size": 256, "context": 16}
    every = sorted(f for names in d.files.values() for f in names)
    assert every == sorted(["f00.txt", "f03.rst", "f06.md", "sub/f01.py", "sub/f04.txt", "sub/f07.rst",
                            "sub/deeper/f02.md", "sub/deeper/f05.py"])
    assert all(d.files[s] for s in ("train", "val", "test"))                  # at least one file each
    assert not set(d.files["train"]) & set(d.files["test"])
    assert not set(d.files["val"]) & (set(d.files["train"]) | set(d.files["test"]))
    for key, split in (("train", d.train), ("val", d.val), ("test", d.test)):
        raw = d.text[key]
        assert raw.dtype == np.uint8
        n = (len(raw) - 1) // 16
        assert split.x.shape == split.y.shape == (n, 16) and split.x.dtype == np.uint8   # the token file's
        assert np.array_equal(split.x.reshape(-1), raw[:n * 16])
        assert np.array_equal(split.y.reshape(-1), raw[1:n * 16 + 1])
    # Each split's bytes are its files joined by a newline.
    test_files = [(root / f).read_bytes() for f in d.files["test"]]
    assert d.text["test"].tobytes() == b"\n".join(test_files)


def test_split_is_deterministic_by_seed(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "corpus", n=12)
    a = load(f"text:{root}", context=8, seed=1)
    b = load(f"text:{root}", context=8, seed=1)
    assert a.files == b.files and np.array_equal(a.train.x, b.train.x)
    others = [load(f"text:{root}", context=8, seed=s).files for s in range(2, 7)]
    assert any(o != a.files for o in others)


def test_split_by_file_fractions() -> None:
    sizes = [100] * 10
    test, val, train = split_by_file(sizes, [0.2, 0.1], seed=0)
    assert (len(test), len(val), len(train)) == (2, 1, 7)
    assert sorted(test + val + train) == list(range(10))
    test, val, train = split_by_file([1000, 1, 1], [0.2, 0.1], seed=0)      # at least one file each
    assert len(test) == len(val) == len(train) == 1
    test, val, train = split_by_file([5] * 4, [0.25, 0.0], seed=0)          # a zero fraction stays empty
    assert val == [] and len(test) == 1 and len(train) == 3


def test_single_file_split_by_position(tmp_path: Path) -> None:
    path = tmp_path / "one.txt"
    text = "".join(f"line {i}\n" for i in range(200))
    path.write_text(text)
    d = load(f"text:{path}", context=10, val_fraction=0.1, test_fraction=0.2)
    raw = text.encode()
    joined = d.text["train"].tobytes() + d.text["val"].tobytes() + d.text["test"].tobytes()
    assert joined == raw                                                      # contiguous train | val | test
    assert len(d.text["test"]) == round(len(raw) * 0.2) and len(d.text["val"]) == round(len(raw) * 0.1)
    assert d.files["train"] == ["one.txt"]
    assert d.train.x.shape[1] == 10 and np.array_equal(d.train.x[:, 1:], d.train.y[:, :-1])
    assert decode(d.val.x[0]) == raw[len(d.text["train"]):][:10].decode()


def test_relative_path_and_byte_cap(tmp_path: Path) -> None:
    make_tree(tmp_path / "corpus")
    d = load("text:corpus?max_bytes=600", root=tmp_path, context=4, val_fraction=0.0, test_fraction=0.0)
    assert len(d.text["train"]) == 600 + len(d.files["train"]) - 1          # cap + the newline separators
    assert d.val.x.shape == d.test.x.shape == (0, 4) and len(d.text["val"]) == 0
    assert parse_argument("stdlib?max_bytes=2000") == ("stdlib", 2000)
    assert parse_argument("stdlib?max_bytes=0") == ("stdlib", None)
    with pytest.raises(DataError, match="max_bytes"):
        parse_argument("stdlib?bytes=3")
    with pytest.raises(DataError, match="whole number"):
        parse_argument("stdlib?max_bytes=lots")


def test_stdlib_source_is_python() -> None:
    d = load("text:stdlib?max_bytes=300000", context=64, seed=0)
    total = sum(len(v) for v in d.text.values())
    files = sum(len(v) for v in d.files.values())
    assert files >= 3 and total <= 300000 + files                             # cap, plus the separators
    assert all(f.endswith(".py") for names in d.files.values() for f in names)
    assert not any(part in ("test", "tests", "site-packages") for names in d.files.values()
                   for f in names for part in f.split("/"))
    source = d.text["train"].tobytes().decode("utf-8", errors="replace")
    assert "def " in source and "import " in source
    assert len(d.train) > 0 and len(d.val) > 0 and len(d.test) > 0
    assert STDLIB_MAX_BYTES > 300000


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load(f"text:{tmp_path / 'missing'}")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "a.bin").write_bytes(b"\0\1\2" * 10)
    with pytest.raises(DataError, match="at least one non-empty UTF-8 text file"):
        load(f"text:{tmp_path / 'bin'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="received no files"):
        load(f"text:{tmp_path / 'empty'}")
    small = tmp_path / "small.txt"
    small.write_text("tiny text " * 10)
    with pytest.raises(DataError, match=r"expected at least context \+ 1 = 1001 bytes.*received") as info:
        load(f"text:{small}", context=1000)
    assert info.value.where == f"text:{small}"
    with pytest.raises(DataError, match="context"):
        load(f"text:{small}", context=0)
    with pytest.raises(DataError, match="language_model"):
        load(f"text:{small}", task="classification", context=4)
    assert load(f"text:{small}", task="language_model", context=4).task == "language_model"


def test_tokenizer_roundtrip() -> None:
    tokens = encode("héllo\n")
    assert tokens.dtype == np.int64 and tokens.max() < 256 and len(tokens) == 7
    assert decode(tokens) == "héllo\n"
    assert decode([0xFF]) == "\ufffd"


def test_baselines_hand_computed() -> None:
    train = np.frombuffer(b"abab", dtype=np.uint8)
    test = np.frombuffer(b"ab", dtype=np.uint8)
    got = baselines(train, test)
    uni = -math.log2(3 / 260)                                               # (2 + 1) / (4 + 256) for a and b
    # bigram: first byte by the unigram, then p(b | a) = (n(a,b) + 1) / (n(a,.) + 256) = 3 / 258
    bi = -(math.log2(3 / 260) + math.log2(3 / 258)) / 2
    assert got["unigram_bpb"] == pytest.approx(uni)
    assert got["bigram_bpb"] == pytest.approx(bi)


def test_baselines_bigram_beats_unigram_on_repetitive_text() -> None:
    text = np.frombuffer(b"the cat sat on the mat. " * 400, dtype=np.uint8)
    got = baselines(text[:8000], text[8000:])
    assert got["bigram_bpb"] <= got["unigram_bpb"]
    assert got["bigram_bpb"] < 2.0 and 2.0 < got["unigram_bpb"] < 8.0
    with pytest.raises(DataError):
        baselines(text, text[:0])
