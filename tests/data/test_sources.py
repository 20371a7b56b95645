"""Tests for archc.data: every source format built in tmp_path, plus the general checks."""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from archc.data import Dataset, Split, check_shape, load, normalization
from archc.data.images import decode, read_image
from archc.errors import DataError

# --- helpers -------------------------------------------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray, magic: int | None = None, truncate: int = 0) -> None:
    """Write a uint8 IDX file (gzipped when the name ends in .gz)."""
    a = np.asarray(array, dtype=np.uint8)
    magic = (0x0800 | a.ndim) if magic is None else magic
    data = struct.pack(">I", magic) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()
    data = data[: len(data) - truncate]
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def make_idx(folder: Path, n_train: int = 60, n_test: int = 20, dot: bool = False, gz: bool = False) -> None:
    """A tiny MNIST-like folder: label k images are filled with value 10*k."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    sep, ext = ("." if dot else "-"), (".gz" if gz else "")
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = (labels[:, None, None] * 10 + rng.integers(0, 5, (n, 4, 5))).astype(np.uint8)
        write_idx(folder / f"{prefix}-images{sep}idx3-ubyte{ext}", images)
        write_idx(folder / f"{prefix}-labels{sep}idx1-ubyte{ext}", labels)


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def encode_png(pixels: np.ndarray, filters: tuple[int, ...] = (0, 1, 2, 3, 4)) -> bytes:
    """Our own PNG encoder: row r uses filter filters[r % len(filters)], so every filter gets decoded."""
    a = np.asarray(pixels, dtype=np.uint8)
    if a.ndim == 2:
        a = a[:, :, None]
    h, w, c = a.shape
    color = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    raw, prev = bytearray(), bytes(w * c)
    for r in range(h):
        line, kind = a[r].tobytes(), filters[r % len(filters)]
        out = bytearray()
        for i, x in enumerate(line):
            left = line[i - c] if i >= c else 0
            up, upleft = prev[i], (prev[i - c] if i >= c else 0)
            pred = [0, left, up, (left + up) // 2, _paeth(left, up, upleft)][kind]
            out.append((x - pred) & 0xFF)
        raw += bytes([kind]) + out
        prev = line

    def chunk(t: bytes, p: bytes) -> bytes:
        return struct.pack(">I", len(p)) + t + p + struct.pack(">I", zlib.crc32(t + p))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(raw))) + chunk(b"IEND", b"")


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def sizes(ds: Dataset) -> tuple[int, int, int]:
    return len(ds.train), len(ds.val), len(ds.test)


# --- sklearn -------------------------------------------------------------------------------------------------


def test_sklearn_digits_shapes_and_range():
    ds = load("sklearn:digits")
    assert ds.name == "sklearn:digits" and ds.task == "classification"
    assert ds.example_shape == (1, 8, 8) and ds.classes == [str(i) for i in range(10)]
    assert ds.train.x.dtype == np.float32 and ds.train.y.dtype == np.int64
    assert 0.0 <= ds.train.x.min() and ds.train.x.max() <= 1.0
    assert sum(sizes(ds)) == 1797
    assert abs(len(ds.test) - 0.2 * 1797) <= 1 and abs(len(ds.val) - 0.1 * 1797) <= 1
    # Stratified: every class appears in every split.
    for s in (ds.train, ds.val, ds.test):
        assert set(s.y.tolist()) == set(range(10))


def test_sklearn_iris_features_and_determinism():
    a, b, c = load("sklearn:iris", seed=3), load("sklearn:iris", seed=3), load("sklearn:iris", seed=4)
    assert a.example_shape == (4,) and a.classes == ["setosa", "versicolor", "virginica"]
    for s1, s2 in ((a.train, b.train), (a.val, b.val), (a.test, b.test)):
        np.testing.assert_array_equal(s1.x, s2.x)
        np.testing.assert_array_equal(s1.y, s2.y)
    assert not np.array_equal(a.test.x, c.test.x)
    # The splits partition the data: no example is lost or duplicated.
    all_rows = np.concatenate([a.train.x, a.val.x, a.test.x])
    assert len(all_rows) == 150


def test_sklearn_unknown_set():
    with pytest.raises(DataError, match="received 'digit'") as e:
        load("sklearn:digit")
    assert "digits" in e.value.hint


# --- scheme parsing ------------------------------------------------------------------------------------------


def test_unknown_scheme_lists_known_and_close():
    with pytest.raises(DataError) as e:
        load("imges:foo")
    text = str(e.value)
    for scheme in ("sklearn:", "idx:", "csv:", "npz:", "images:"):
        assert scheme in text
    assert "did you mean images:" in text


def test_missing_scheme_and_bad_options(tmp_path):
    with pytest.raises(DataError, match="scheme:argument"):
        load("digits")
    with pytest.raises(DataError, match="val_fraction"):
        load("sklearn:iris", val_fraction=1.5)
    with pytest.raises(DataError, match="task"):
        load("sklearn:iris", task="ranking")
    with pytest.raises(DataError, match="target"):
        load("sklearn:iris", target="species")


def test_a_boolean_option_is_taken_as_a_python_bool_and_refused_for_a_number(tmp_path):
    from PIL import Image

    from archc.data.lazy import Lazy

    for i in range(6):
        (tmp_path / "ab"[i % 2]).mkdir(exist_ok=True)
        Image.fromarray(np.full((4, 4, 3), 40 * i, np.uint8)).save(tmp_path / "ab"[i % 2] / f"{i}.png")
    held, lazy = load(f"images:{tmp_path}", in_memory=True), load(f"images:{tmp_path}", in_memory=False)
    assert isinstance(held.train.x, np.ndarray) and isinstance(lazy.train.x, Lazy)
    assert np.array_equal(held.train.x, np.asarray(lazy.train.x)) and np.array_equal(held.train.y, lazy.train.y)
    with pytest.raises(DataError, match="max_bytes: expected a whole number, received true"):
        load("text:stdlib", max_bytes=True)


# --- idx -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dot,gz", [(False, False), (True, False), (False, True), (True, True)])
def test_idx_name_styles(tmp_path, dot, gz):
    make_idx(tmp_path / "mnist", dot=dot, gz=gz)
    ds = load(f"idx:{tmp_path / 'mnist'}", val_fraction=0.2)
    assert ds.example_shape == (1, 4, 5) and ds.classes == [str(i) for i in range(10)]
    assert sizes(ds) == (48, 12, 20)
    assert ds.train.x.dtype == np.float32 and ds.train.x.max() <= 1.0
    # Pixels still match their labels after splitting (label k ≈ 10*k/255).
    np.testing.assert_array_equal(np.round(ds.test.x.min(axis=(1, 2, 3)) * 255) // 10, ds.test.y)


def test_idx_relative_to_root_and_without_test(tmp_path):
    make_idx(tmp_path / "d")
    for p in tmp_path.glob("d/t10k*"):
        p.unlink()
    ds = load("idx:d", root=tmp_path, val_fraction=0.1, test_fraction=0.2)
    assert sizes(ds) == (42, 6, 12)


def test_idx_bad_magic(tmp_path):
    make_idx(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(60) % 10, magic=0x0803)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: expected IDX magic number 0x00000801, "
                                        r"received 0x00000803"):
        load(f"idx:{tmp_path}")


def test_idx_truncated_and_count_mismatch(tmp_path):
    make_idx(tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((20, 4, 5)), truncate=7)
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: expected 400 data bytes .* received 393 "
                                        r"\(file truncated\)"):
        load(f"idx:{tmp_path}")
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((19, 4, 5)))
    with pytest.raises(DataError, match="19 images in t10k-images-idx3-ubyte and 20 labels"):
        load(f"idx:{tmp_path}")


def test_idx_missing_files(tmp_path):
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        load(f"idx:{tmp_path}")
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match="train labels"):
        load(f"idx:{tmp_path}")
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(3))
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: expected a readable gzip IDX file"):
        load(f"idx:{tmp_path}")


# --- csv -----------------------------------------------------------------------------------------------------


def test_csv_default_target_is_last_and_string_classes(tmp_path):
    rows = "\n".join(f"{i},{i * 2.5},{['cat', 'dog', 'ant'][i % 3]}" for i in range(30))
    p = write_csv(tmp_path / "t.csv", "a,b,animal\n" + rows + "\n")
    ds = load(f"csv:{p}")
    assert ds.task == "classification" and ds.classes == ["ant", "cat", "dog"]
    assert ds.example_shape == (2,) and ds.train.x.dtype == np.float32
    assert sum(sizes(ds)) == 30


def test_csv_named_target_and_missing_target(tmp_path):
    rows = "\n".join(f"{i % 4},{i},{i * 0.37}" for i in range(40))
    p = write_csv(tmp_path / "t.csv", "label,x1,x2\n" + rows + "\n")
    ds = load(f"csv:{p}", target="label")
    assert ds.task == "classification" and ds.classes == ["0", "1", "2", "3"]
    # Default target (x2, continuous) → regression.
    reg = load(f"csv:{p}")
    assert reg.task == "regression" and reg.classes is None and reg.train.y.dtype == np.float32
    with pytest.raises(DataError, match=r"expected target column 'lable', received columns \['label', 'x1', 'x2'\]"):
        load(f"csv:{p}", target="lable")


def test_csv_regression_vs_classification_detection(tmp_path):
    many = "\n".join(f"{i},{i * 3}" for i in range(50))  # 50 distinct integers → regression
    p = write_csv(tmp_path / "m.csv", "x,y\n" + many + "\n")
    assert load(f"csv:{p}").task == "regression"
    ds = load(f"csv:{p}", task="classification")
    assert ds.task == "classification" and len(ds.classes) == 50
    few = "\n".join(f"{i},{[2, 10, 1][i % 3]}" for i in range(30))
    q = write_csv(tmp_path / "f.csv", "x,y\n" + few + "\n")
    ds = load(f"csv:{q}")
    assert ds.classes == ["1", "2", "10"]  # numeric order, not text order
    assert load(f"csv:{q}", task="regression").task == "regression"


def test_csv_non_numeric_and_empty_cells(tmp_path):
    p = write_csv(tmp_path / "train.csv", "age,income,y\n1,2,0\n3,4,1\nabc,5,0\n")
    with pytest.raises(DataError) as e:
        load(f"csv:{p}")
    assert e.value.message.endswith("row 4, column 'age': expected a number, received 'abc'")
    q = write_csv(tmp_path / "e.csv", "age,income,y\n1,,0\n3,4,1\n")
    with pytest.raises(DataError, match="row 2, column 'income': expected a number, received an empty cell"):
        load(f"csv:{q}")
    r = write_csv(tmp_path / "r.csv", "age,income,y\n1,2,0\n3,4\n")
    with pytest.raises(DataError, match="row 3: expected 3 cells"):
        load(f"csv:{r}")
    s = write_csv(tmp_path / "s.csv", "1,2,3\n4,5,6\n")
    with pytest.raises(DataError, match="header"):
        load(f"csv:{s}")
    t = write_csv(tmp_path / "nan.csv", "a,y\n1,0\nnan,1\n")
    with pytest.raises(DataError, match="row 3, column 'a': expected a finite number"):
        load(f"csv:{t}")
    with pytest.raises(DataError, match="does not exist"):
        load(f"csv:{tmp_path / 'nope.csv'}")


# --- npz -----------------------------------------------------------------------------------------------------


def test_npz_without_test_arrays(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((50, 3, 4, 4)), y=np.arange(50) % 5)
    ds = load(f"npz:{tmp_path / 'd.npz'}")
    assert ds.example_shape == (3, 4, 4) and ds.classes == ["0", "1", "2", "3", "4"]
    assert sizes(ds) == (35, 5, 10) and ds.train.x.dtype == np.float32


def test_npz_with_test_arrays_and_classes(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((40, 6)), y=np.arange(40) % 3,
             x_test=rng.random((9, 6)), y_test=np.arange(9) % 3, classes=np.array(["a", "b", "c"]))
    ds = load(f"npz:{tmp_path / 'd.npz'}", val_fraction=0.25)
    assert sizes(ds) == (30, 10, 9) and ds.classes == ["a", "b", "c"]
    np.testing.assert_array_equal(ds.test.y, np.arange(9) % 3)


def test_npz_regression_tokens_and_errors(tmp_path):
    np.savez(tmp_path / "r.npz", x=np.random.default_rng(0).random((20, 2)), y=np.linspace(0, 1, 20))
    assert load(f"npz:{tmp_path / 'r.npz'}").task == "regression"
    np.savez(tmp_path / "t.npz", x=np.arange(60).reshape(20, 3), y=np.arange(20) % 2)
    assert load(f"npz:{tmp_path / 't.npz'}").train.x.dtype == np.int64
    np.savez(tmp_path / "bad.npz", x=np.zeros((20, 2)), y=np.full(20, 12), classes=np.array([str(i) for i in range(10)]))
    with pytest.raises(DataError, match=r"expected labels in 0\.\.9 \(10 classes\), received 12"):
        load(f"npz:{tmp_path / 'bad.npz'}")
    np.savez(tmp_path / "keys.npz", features=np.zeros((3, 2)), y=np.zeros(3))
    with pytest.raises(DataError, match=r"received keys \['features', 'y'\]"):
        load(f"npz:{tmp_path / 'keys.npz'}")
    np.savez(tmp_path / "len.npz", x=np.zeros((5, 2)), y=np.zeros(4, dtype=int))
    with pytest.raises(DataError, match="5 examples and 4 labels"):
        load(f"npz:{tmp_path / 'len.npz'}")
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 2)), y=np.zeros(0, dtype=int))
    with pytest.raises(DataError, match="at least one example"):
        load(f"npz:{tmp_path / 'empty.npz'}")
    x = np.zeros((10, 2))
    x[7, 1] = np.inf
    np.savez(tmp_path / "inf.npz", x=x, y=np.zeros(10, dtype=int))
    with pytest.raises(DataError, match="NaN or inf"):
        load(f"npz:{tmp_path / 'inf.npz'}", val_fraction=0, test_fraction=0)
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(DataError, match="fails to load"):
        load(f"npz:{tmp_path / 'junk.npz'}")


# --- images --------------------------------------------------------------------------------------------------


def test_png_decoder_all_filters_and_modes(tmp_path):
    """Pillow (archc.data.images.decode) reads every filter and 8-bit mode, as the former own decoder did."""
    rng = np.random.default_rng(0)
    for shape in ((7, 5), (6, 4, 2), (5, 9, 3), (8, 3, 4)):
        px = rng.integers(0, 256, shape, dtype=np.uint8)
        (tmp_path / "p.png").write_bytes(encode_png(px))
        out = decode(tmp_path / "p.png")
        np.testing.assert_array_equal(out, px.reshape(out.shape))


def _png(width: int, height: int, idat: bytes) -> bytes:
    def chunk(ctype: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", zlib.crc32(ctype + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_png_declaring_30000_squared_is_refused_from_its_header(tmp_path):
    import time

    # 30000 rows of zeros compress to ~900 KB and would decode to 2.7 GB of RGB pixels.
    (tmp_path / "bomb.png").write_bytes(_png(30000, 30000, zlib.compress(bytes(30000 * (3 * 30000 + 1) // 1000), 9)))
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"8192 x 8192\), received a header declaring 30000 x 30000"):
        decode(tmp_path / "bomb.png")
    assert time.perf_counter() - start < 1.0
    # A small header over a stream that inflates far past it: Pillow reads the declared 1 x 1 pixel and stops.
    (tmp_path / "small.png").write_bytes(_png(1, 1, zlib.compress(bytes(10_000_000))))
    start = time.perf_counter()
    assert decode(tmp_path / "small.png").shape == (1, 1, 3)
    assert time.perf_counter() - start < 1.0


def test_npz_header_declaring_terabytes_is_a_data_error(tmp_path):
    import io
    import zipfile

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": (1 << 40, 3)})
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w") as z:
        z.writestr("x.npy", buf.getvalue() + bytes(8))
        z.writestr("y.npy", buf.getvalue() + bytes(8))
    with pytest.raises(DataError, match=r"array 'x': header declares shape \[1099511627776, 3\]"):
        load(f"npz:{tmp_path / 'bomb.npz'}")


def make_image_tree(root: Path, channels: int = 1, size: tuple[int, int] = (6, 5)) -> None:
    rng = np.random.default_rng(2)
    for k, cls in enumerate(["circle", "square", "star"]):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(10):
            shape = size if channels == 1 else (*size, channels)
            px = np.clip(rng.integers(0, 40, shape) + 100 * k, 0, 255).astype(np.uint8)
            (root / cls / f"{i}.png").write_bytes(encode_png(px))


def test_images_grayscale_and_rgb(tmp_path):
    make_image_tree(tmp_path / "g", 1)
    ds = load(f"images:{tmp_path / 'g'}")
    assert ds.classes == ["circle", "square", "star"] and ds.example_shape == (1, 6, 5)
    assert sizes(ds) == (21, 3, 6) and ds.train.x.max() <= 1.0
    make_image_tree(tmp_path / "c", 3)
    np.save(tmp_path / "c" / "star" / "extra.npy", np.full((6, 5, 3), 255, dtype=np.uint8))  # HWC → CHW
    (tmp_path / "c" / ".DS_Store").write_bytes(b"x")
    ds = load(f"images:{tmp_path / 'c'}", val_fraction=0, test_fraction=0)
    assert ds.example_shape == (3, 6, 5) and len(ds.train) == 31
    assert (ds.train.x == 1.0).all(axis=(1, 2, 3)).sum() == 1


def test_images_size_mismatch_and_unreadable(tmp_path):
    make_image_tree(tmp_path, 1)
    (tmp_path / "star" / "9.png").write_bytes(encode_png(np.zeros((7, 5), dtype=np.uint8)))
    with pytest.raises(DataError, match=r"star/9\.png: expected an image shaped \[1, 6, 5\].*received \[1, 7, 5\]"):
        load(f"images:{tmp_path}")
    (tmp_path / "star" / "9.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(DataError, match=r"star/9\.png: expected a readable image"):
        load(f"images:{tmp_path}")
    (tmp_path / "star" / "9.png").unlink()
    (tmp_path / "star" / "9.jpg").write_bytes(b"")  # a JPEG now (Pillow), so an empty one fails to decode
    with pytest.raises(DataError, match=r"star/9\.jpg: expected a readable image"):
        load(f"images:{tmp_path}")


# --- helpers -------------------------------------------------------------------------------------------------


def test_check_shape_message():
    ds = load("sklearn:digits")
    check_shape(ds, (1, 8, 8))
    check_shape(ds, (None, 8, 8))
    with pytest.raises(DataError) as e:
        check_shape(ds, (1, 28, 28), "image")
    assert str(e.value) == ("data sklearn:digits: expected examples shaped [1, 28, 28] (the spec's input 'image'), "
                            "received [1, 8, 8]")


def test_normalization():
    x = np.zeros((4, 2, 3, 3), dtype=np.float32)
    x[:, 1] = np.arange(4, dtype=np.float32)[:, None, None]
    stats = normalization(Split(x, np.zeros(4, dtype=np.int64)))
    assert stats["mean"] == [0.0, 1.5] and stats["std"][0] == 1e-6
    assert stats["std"][1] == pytest.approx(np.std(np.arange(4)))
    feats = np.array([[1.0, 10.0], [3.0, 10.0]], dtype=np.float32)
    stats = normalization(Split(feats, np.zeros(2, dtype=np.int64)))
    assert stats["mean"] == [2.0, 10.0] and stats["std"] == [1.0, 1e-6]
    with pytest.raises(DataError, match="int64"):
        normalization(Split(np.zeros((2, 3), dtype=np.int64), np.zeros(2, dtype=np.int64)))
