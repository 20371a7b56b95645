"""The csv: source read by column name: declared columns (load(columns=Request)), the target anywhere, CSV
dialects, scikit-learn's shipped CSV files, and messages that say how to declare what a numeric read refuses."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import sklearn
from sklearn.datasets import load_breast_cancer, load_iris, load_wine

from archc.data import load
from archc.data.arrays import split_rows
from archc.data.base import Splits
from archc.data.columns import Column, Request, fit, is_missing
from archc.data.tabular import Dialect, read_table
from archc.errors import DataError

ROOT = Path(__file__).resolve().parents[2]
PENGUINS = ROOT / "specs" / "data" / "penguins.csv"
SKLEARN_DATA = Path(sklearn.__file__).parent / "datasets" / "data"

COLUMNS = (Column("island", "categorical", categories=("Biscoe", "Dream", "Torgersen")),
           Column("bill_length_mm", "numeric", missing="median"),
           Column("flipper_length_mm", "numeric", missing="mean", indicator=True),
           Column("sex", "categorical", max_categories=2, missing="most_frequent", indicator=True),
           Column("year", "categorical", max_categories=3, encode="embedding", dim=2),
           Column("body_mass_g", "numeric", missing="median"))
REQUEST = Request("row", COLUMNS)


def rewrite(src: Path, dst: Path, order: list[str] | None = None, delimiter: str = ",", header: bool = True,
            lead: str = "") -> Path:
    """The same rows with the columns in `order` (default: as they are), another delimiter, no header or leading
    lines."""
    with open(src, newline="") as f:
        rows = list(csv.reader(f))
    names = rows[0]
    order = order or names
    idx = [names.index(n) for n in order]
    out = [[r[i] for i in idx] for r in rows[0 if header else 1:]]
    with open(dst, "w", newline="") as f:
        f.write(lead)
        csv.writer(f, delimiter=delimiter, lineterminator="\n").writerows(out)
    return dst


def test_penguins_by_columns_target_first():
    ds = load(f"csv:{PENGUINS}", target="species", columns=REQUEST)
    assert ds.task == "classification" and ds.classes == ["Adelie", "Chinstrap", "Gentoo"]
    assert ds.table is not None and ds.table.target == "species" and ds.table.names() == [c.name for c in COLUMNS]
    assert ds.example_shape == (ds.table.width(),) == (3 + 1 + 2 + 3 + 1 + 1,)
    assert ds.train.x.dtype == np.float32 and len(ds.train) + len(ds.val) + len(ds.test) == 344


def test_fitted_on_the_training_split_only():
    """Fill values and scaling come from the train rows (the same rows load splits), encoded into every split."""
    ds = load(f"csv:{PENGUINS}", target="species", columns=REQUEST)
    raw = read_table(PENGUINS, "p")
    y = np.array([["Adelie", "Chinstrap", "Gentoo"].index(v) for v in raw.cells["species"]])
    train, val, test = split_rows(len(raw), y, "classification", Splits())
    bill = np.array([float(raw.cells["bill_length_mm"][i]) for i in train if not is_missing(raw.cells["bill_length_mm"][i])])
    fitted = {f.name: f for f in ds.table.columns}
    assert fitted["bill_length_mm"].fill == pytest.approx(np.median(bill))
    every = [float(v) for v in raw.cells["bill_length_mm"] if not is_missing(v)]
    assert fitted["bill_length_mm"].fill != pytest.approx(np.median(every))  # not the whole file's median
    again = fit("row", COLUMNS, {c.name: [raw.cells[c.name][i] for i in test] for c in COLUMNS})
    np.testing.assert_array_equal(ds.test.y, y[test])
    want = ds.table.encode({c.name: [raw.cells[c.name][i] for i in test] for c in COLUMNS})
    np.testing.assert_array_equal(ds.test.x, want)
    assert again != ds.table  # a table fitted on other rows differs: the test split did not fit it


def test_column_order_in_the_file_does_not_change_the_rows(tmp_path):
    shuffled = ["sex", "year", "body_mass_g", "island", "species", "flipper_length_mm", "bill_depth_mm",
                "bill_length_mm"]
    other = rewrite(PENGUINS, tmp_path / "shuffled.csv", shuffled)
    a = load(f"csv:{PENGUINS}", target="species", columns=REQUEST)
    b = load(f"csv:{other}", target="species", columns=REQUEST)
    for part in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(a, part).x, getattr(b, part).x)
        np.testing.assert_array_equal(getattr(a, part).y, getattr(b, part).y)
    assert a.table == b.table


@pytest.mark.parametrize("position", [0, 3, 7])
def test_target_anywhere(tmp_path, position):
    names = ["island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "sex", "year"]
    names.insert(position, "species")
    path = rewrite(PENGUINS, tmp_path / "t.csv", names)
    ds = load(f"csv:{path}", target="species", columns=REQUEST)
    base = load(f"csv:{PENGUINS}", target="species", columns=REQUEST)
    np.testing.assert_array_equal(ds.train.x, base.train.x)
    assert ds.classes == base.classes


def test_regression_target_by_columns():
    cols = tuple(c for c in COLUMNS if c.name != "body_mass_g")
    with pytest.raises(DataError, match=r"row 5, column 'body_mass_g': expected a target value, received 'NA'"):
        load(f"csv:{PENGUINS}", target="body_mass_g", columns=Request("row", cols))


def test_the_target_is_never_a_feature():
    with pytest.raises(DataError) as e:
        load(f"csv:{PENGUINS}", target="body_mass_g", columns=REQUEST)
    assert "column 'body_mass_g': expected feature columns in input 'row', received the target column" in str(e.value)
    assert "[data] target" in e.value.hint


def test_declared_column_absent_from_the_file():
    cols = (Column("bill_lenght_mm", "numeric"),)
    with pytest.raises(DataError, match=r"expected columns \['bill_lenght_mm'\] .*did you mean 'bill_length_mm'"):
        load(f"csv:{PENGUINS}", target="species", columns=Request("row", cols))


def test_a_given_fitted_table_is_used_as_it_is():
    ds = load(f"csv:{PENGUINS}", target="species", columns=REQUEST)
    again = load(f"csv:{PENGUINS}", target="species", columns=Request("row", COLUMNS, ds.table),
                 test_fraction=0.5, seed=3)
    assert again.table == ds.table
    raw = read_table(PENGUINS, "p")
    whole = ds.table.encode({c.name: raw.cells[c.name] for c in COLUMNS})
    assert {tuple(r) for r in again.test.x} <= {tuple(r) for r in whole}


def test_unseen_category_under_a_fitted_table_is_located(tmp_path):
    rows = [f"{'a' if i % 2 else 'b'},{i},{i % 2}" for i in range(30)] + ["zzz,3,1"]
    path = tmp_path / "u.csv"
    path.write_text("kind,v,y\n" + "\n".join(rows) + "\n")
    cols = (Column("kind", "categorical", max_categories=3), Column("v", "numeric"))
    table = fit("row", cols, {"kind": ["a", "b"], "v": ["1", "2"]})
    with pytest.raises(DataError, match=r"row 32, column 'kind': expected one of the categories \['a', 'b'\], "
                                        r"received 'zzz'"):
        load(f"csv:{path}", columns=Request("row", cols, table), val_fraction=0.0, test_fraction=0.0)
    ignore = (Column("kind", "categorical", max_categories=3, unknown="ignore"), cols[1])
    table = fit("row", ignore, {"kind": ["a", "b"], "v": ["1", "2"]})
    ds = load(f"csv:{path}", columns=Request("row", ignore, table), val_fraction=0.0, test_fraction=0.0)
    np.testing.assert_array_equal(ds.train.x[-1, :3], [0, 0, 0])


def test_missing_cells_under_the_error_rule_name_the_file_line():
    with pytest.raises(DataError, match=r"row 5, column 'bill_length_mm': expected a value, received a missing cell"):
        load(f"csv:{PENGUINS}", target="species", test_fraction=0.0,
             columns=Request("row", (Column("bill_length_mm", "numeric"),)))


def test_a_source_that_reads_no_columns_refuses_them():
    with pytest.raises(DataError, match=r"sklearn:iris: expected a source that reads columns by name "
                                        r"\(csv:, parquet:\)"):
        load("sklearn:iris", columns=REQUEST)


# --- dialects --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("delimiter,option", [(";", ""), ("\t", ""), ("|", ""), (";", "?delimiter=;"),
                                              ("\t", "?delimiter=tab")])
def test_delimiters(tmp_path, delimiter, option):
    path = rewrite(PENGUINS, tmp_path / "d.csv", delimiter=delimiter)
    ds = load(f"csv:{path}{option}", target="species", columns=REQUEST)
    base = load(f"csv:{PENGUINS}", target="species", columns=REQUEST)
    np.testing.assert_array_equal(ds.train.x, base.train.x)


def test_a_bad_delimiter_option(tmp_path):
    with pytest.raises(DataError, match=r"delimiter: expected one character \(or tab\), received ';;'"):
        load(f"csv:{PENGUINS}?delimiter=;;")


def test_no_header_names_columns_by_position(tmp_path):
    path = rewrite(PENGUINS, tmp_path / "h.csv", header=False)
    raw = read_table(path, "h", Dialect(header=False))
    assert raw.columns == [f"column_{i}" for i in range(1, 9)] and len(raw) == 344 and raw.lines[0] == 1
    cols = (Column("column_2", "categorical", max_categories=3), Column("column_3", "numeric", missing="mean"))
    ds = load(f"csv:{path}?header=false", target="column_1", columns=Request("row", cols))
    assert ds.classes == ["Adelie", "Chinstrap", "Gentoo"] and ds.example_shape == (4,)


def test_skip_leading_lines_keeps_file_line_numbers(tmp_path):
    path = rewrite(PENGUINS, tmp_path / "s.csv", lead="# penguins, exported\nsecond line of notes\n")
    with pytest.raises(DataError, match=r"row 7, column 'bill_length_mm': expected a value"):
        load(f"csv:{path}?skip=2", target="species", test_fraction=0.0,
             columns=Request("row", (Column("bill_length_mm", "numeric"),)))
    ds = load(f"csv:{path}?skip=2", target="species", columns=REQUEST)
    np.testing.assert_array_equal(ds.train.x, load(f"csv:{PENGUINS}", target="species", columns=REQUEST).train.x)


def test_blank_header_cells_are_named(tmp_path):
    path = tmp_path / "pandas.csv"
    path.write_text(",a,y\n0,1.5,x\n1,2.5,z\n")
    assert read_table(path, "p").columns == ["column_1", "a", "y"]


# --- scikit-learn's shipped files ------------------------------------------------------------------------------


@pytest.mark.parametrize("file,loader", [("iris.csv", load_iris), ("wine_data.csv", load_wine),
                                         ("breast_cancer.csv", load_breast_cancer)])
def test_sklearn_shipped_csv_files(file, loader):
    path = SKLEARN_DATA / file
    raw = read_table(path, file)
    bunch = loader()
    f = bunch.data.shape[1]
    assert raw.layout == "sklearn" and raw.columns == [f"column_{i}" for i in range(1, f + 1)] + ["target"]
    x = np.array([[float(raw.cells[f"column_{i}"][r]) for i in range(1, f + 1)] for r in range(len(raw))])
    np.testing.assert_allclose(x, bunch.data)
    assert raw.cells["target"] == [str(bunch.target_names[t]) for t in bunch.target]
    ds = load(f"csv:{path}")
    assert ds.classes == sorted(str(n) for n in bunch.target_names) and ds.example_shape == (f,)


def test_a_first_line_no_row_shares_is_refused_with_what_to_write(tmp_path):
    path = tmp_path / "meta.csv"
    path.write_text("exported 2024,from the lab\n1,2,0\n3,4,1\n5,6,0\n")
    with pytest.raises(DataError) as e:
        load(f"csv:{path}")
    assert e.value.message == ("line 1: expected the column names, received 2 cells while every row after it has "
                               "3: the first line is not a header")
    assert f"'csv:{path}?skip=1&header=false'" in e.value.hint
    ds = load(f"csv:{path}?skip=1&header=false")
    assert ds.example_shape == (2,) and ds.classes == ["0", "1"]


def test_numbers_as_header_hint_header_false(tmp_path):
    path = tmp_path / "n.csv"
    path.write_text("1,2,0\n3,4,1\n")
    with pytest.raises(DataError, match=r"\?header=false"):
        load(f"csv:{path}")


# --- reading without declared columns: messages that point at the fix ------------------------------------------


def test_text_feature_says_how_to_declare_it(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("region,x,y\n" + "\n".join(f"{'south' if i % 2 else 'north'}_{i % 30},{i},{i * 0.5}"
                                                for i in range(60)) + "\n")
    with pytest.raises(DataError) as e:
        load(f"csv:{path}")
    assert e.value.message == "row 2, column 'region': expected a number, received 'north_0'"
    assert f"archc columns {path}" in e.value.hint and "[inputs.NAME.columns]" in e.value.hint
    assert "--target" not in e.value.hint  # 30 values: not a target's


def test_a_target_that_is_not_last_mentions_target():
    path = SKLEARN_DATA / "wine_data.csv"
    with pytest.raises(DataError) as e:
        load(f"csv:{PENGUINS}")
    assert e.value.message == "row 2, column 'species': expected a number, received 'Adelie'"
    assert "[data] target = \"species\" or --target species" in e.value.hint
    assert "archc columns" in e.value.hint
    assert path.exists()


def test_missing_cells_say_how_to_declare_a_missing_rule(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("a,b,y\n1,NA,0\n2,3,1\n")
    with pytest.raises(DataError) as e:
        load(f"csv:{path}")
    assert e.value.message == "row 2, column 'b': expected a number, received 'NA'"
    assert "missing rule" in e.value.hint


def test_missing_target_cells_are_located(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,y\n1,0\n2,\n3,1\n")
    with pytest.raises(DataError, match=r"row 3, column 'y': expected a target value, received an empty cell"):
        load(f"csv:{path}")


def test_target_option_in_the_source_with_a_relative_path(tmp_path):
    (tmp_path / "w.csv").write_text("cultivar,a,b\n" + "\n".join(f"class_{i % 2},{i},{i * 2}" for i in range(20)))
    ds = load("csv:w.csv?target=cultivar&delimiter=,", root=tmp_path)
    assert ds.classes == ["class_0", "class_1"] and ds.example_shape == (2,)
