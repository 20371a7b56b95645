"""archc.data.columns, the tabular contract: every column type, missing rule, indicator and unknown-category rule,
checked against scikit-learn's own preprocessing (SimpleImputer, OneHotEncoder, StandardScaler) on the same cells."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.impute import MissingIndicator, SimpleImputer
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from archc.data.columns import Column, Table, fit, is_missing
from archc.errors import DataError

NUMBERS = ["3.5", "", "1", "NA", "7", "2", "?", "7", "nan", "10"]
TEXT = ["b", "a", "", "c", "b", "NA", "a", "b", "None", "d"]


def floats(cells: list[str]) -> np.ndarray:
    """The cells as sklearn sees them: NaN where archc reads a missing cell."""
    return np.array([[np.nan if is_missing(c) else float(c)] for c in cells])


def encode(column: Column, train: list[str], cells: list[str] | None = None) -> tuple[Table, np.ndarray]:
    table = fit("row", [column], {column.name: train})
    return table, table.encode({column.name: train if cells is None else cells})


@pytest.mark.parametrize("cell", ["", " ", "NA", "n/a", "NaN", "null", "None", "?", None, float("nan")])
def test_missing_tokens(cell):
    assert is_missing(cell)


@pytest.mark.parametrize("cell", ["0", "none of them", "a", 0.0, "-"])
def test_present_cells(cell):
    assert not is_missing(cell)


@pytest.mark.parametrize("rule", ["mean", "median", "most_frequent"])
def test_numeric_imputation_matches_simple_imputer(rule):
    _, x = encode(Column("v", "numeric", missing=rule, scale=False), NUMBERS)
    want = SimpleImputer(strategy=rule).fit_transform(floats(NUMBERS))
    np.testing.assert_allclose(x, want.astype(np.float32), rtol=1e-6)


def test_numeric_constant_fill_and_scaling_match_sklearn():
    table, x = encode(Column("v", "numeric", missing="constant", fill=-1.5), NUMBERS)
    filled = SimpleImputer(strategy="constant", fill_value=-1.5).fit_transform(floats(NUMBERS))
    np.testing.assert_allclose(x, StandardScaler().fit_transform(filled).astype(np.float32), rtol=1e-5, atol=1e-6)
    assert table.columns[0].fill == -1.5


def test_scaling_uses_the_training_split_only():
    table, _ = encode(Column("v", "numeric"), ["1", "2", "3"])
    x = table.encode({"v": ["2", "100"]})
    std = np.std([1.0, 2.0, 3.0])
    np.testing.assert_allclose(x[:, 0], [(2 - 2) / std, (100 - 2) / std], rtol=1e-6)


def test_indicator_follows_the_value_as_missing_indicator_says():
    col = Column("v", "numeric", missing="median", indicator=True, scale=False)
    table, x = encode(col, NUMBERS)
    assert x.shape == (len(NUMBERS), 2) and table.layout() == [("v", 0, 2)]
    want = SimpleImputer(strategy="median", add_indicator=True).fit_transform(floats(NUMBERS))
    np.testing.assert_allclose(x, want.astype(np.float32))
    np.testing.assert_array_equal(x[:, 1], MissingIndicator().fit_transform(floats(NUMBERS))[:, 0])


def test_categorical_most_frequent_imputation_matches_simple_imputer():
    col = Column("c", "categorical", missing="most_frequent", categories=("a", "b", "c", "d"))
    _, x = encode(col, TEXT)
    objs = np.array([[np.nan if is_missing(c) else c] for c in TEXT], dtype=object)
    filled = SimpleImputer(strategy="most_frequent").fit_transform(objs)
    want = OneHotEncoder(categories=[["a", "b", "c", "d"]]).fit_transform(filled).toarray()
    np.testing.assert_array_equal(x, want.astype(np.float32))


def test_categorical_constant_fill_is_a_category_of_its_own():
    col = Column("c", "categorical", missing="constant", fill="unknown", max_categories=5)
    table, x = encode(col, TEXT)
    assert table.columns[0].categories == ("b", "a", "c", "d", "unknown")  # by frequency, then text; fill last
    assert x[TEXT.index(""), 4] == 1.0 and x.sum() == len(TEXT)


def test_learned_categories_by_frequency_and_listed_ones_in_their_order():
    cells = ["x", "y", "y", "z", "y", "x"]
    learned, x = encode(Column("c", "categorical", max_categories=3), cells)
    assert learned.columns[0].categories == ("y", "x", "z")
    want = OneHotEncoder(categories=[["y", "x", "z"]]).fit_transform(np.array(cells)[:, None]).toarray()
    np.testing.assert_array_equal(x, want)
    listed, x2 = encode(Column("c", "categorical", categories=("z", "x", "y", "w")), cells)
    assert listed.columns[0].categories == ("z", "x", "y", "w") and x2.shape == (6, 4)
    np.testing.assert_array_equal(x2[:, 3], 0)  # a listed category the data lacks keeps its slot


def test_max_categories_exceeded_names_the_column():
    with pytest.raises(DataError, match=r"column 'c': expected at most 2 categories \(its max_categories\), "
                                        r"received 3 in the training split"):
        fit("row", [Column("c", "categorical", max_categories=2)], {"c": ["a", "b", "c"]})


def test_learned_width_is_max_categories_whatever_the_split_holds():
    table, x = encode(Column("c", "categorical", max_categories=4), ["a", "b", "a"])
    assert table.width() == 4 and x.shape == (3, 4)
    np.testing.assert_array_equal(x[:, 2:], 0)


@pytest.mark.parametrize("encode_as", ["onehot", "embedding"])
def test_unknown_category_rules(encode_as):
    dim = 3 if encode_as == "embedding" else None
    base = dict(type="categorical", categories=("a", "b", "c"), encode=encode_as, dim=dim)
    train = ["a", "b", "b", "c"]
    with pytest.raises(DataError, match=r"row 7, column 'c': expected one of the categories .*received 'zzz'"):
        fit("row", [Column("c", **base)], {"c": train}).encode({"c": ["a", "zzz"]}, lines=[6, 7])
    ignore = fit("row", [Column("c", **base, unknown="ignore")], {"c": train}).encode({"c": ["zzz", "c"]})
    often = fit("row", [Column("c", **base, unknown="most_frequent")], {"c": train}).encode({"c": ["zzz", "c"]})
    if encode_as == "onehot":
        np.testing.assert_array_equal(ignore, [[0, 0, 0], [0, 0, 1]])  # OneHotEncoder(handle_unknown="ignore")
        ohe = OneHotEncoder(categories=[["a", "b", "c"]], handle_unknown="ignore").fit(np.array(train)[:, None])
        np.testing.assert_array_equal(ignore, ohe.transform(np.array([["zzz"], ["c"]])).toarray())
        np.testing.assert_array_equal(often, [[0, 1, 0], [0, 0, 1]])
    else:
        np.testing.assert_array_equal(ignore, [[3], [2]])  # the reserved index slots() = 3
        np.testing.assert_array_equal(often, [[1], [2]])


def test_embedding_column_carries_the_index_and_its_widths():
    col = Column("c", "categorical", categories=("a", "b"), encode="embedding", dim=5, indicator=True,
                 missing="most_frequent")
    assert col.width() == 6 and col.encoded_width() == 2
    _, x = encode(col, ["b", "", "a", "b"])
    np.testing.assert_array_equal(x, [[1, 0], [1, 1], [0, 0], [1, 0]])


@pytest.mark.parametrize("cells,want", [(["yes", "No", "TRUE", "f", "1", "0"], [1, 0, 1, 0, 1, 0])])
def test_boolean_tokens_unscaled_by_default(cells, want):
    table, x = encode(Column("b", "boolean"), cells)
    np.testing.assert_array_equal(x[:, 0], want)
    scaled, xs = encode(Column("b", "boolean", scale=True), cells)
    np.testing.assert_allclose(xs[:, 0], StandardScaler().fit_transform(np.array(want, float)[:, None])[:, 0],
                               rtol=1e-6)


def test_boolean_missing_rules_and_bad_tokens():
    _, x = encode(Column("b", "boolean", missing="most_frequent"), ["yes", "", "yes", "no"])
    np.testing.assert_array_equal(x[:, 0], [1, 1, 1, 0])
    _, x = encode(Column("b", "boolean", missing="constant", fill=False), ["yes", "", "yes", "no"])
    np.testing.assert_array_equal(x[:, 0], [1, 0, 1, 0])
    with pytest.raises(DataError, match=r"row 2, column 'b': expected true/false .*received 'maybe'"):
        encode(Column("b", "boolean"), ["yes", "maybe"])


def test_missing_error_rule_names_the_row_and_hints_the_rules():
    with pytest.raises(DataError) as e:
        fit("row", [Column("v", "numeric")], {"v": ["1", "NA"]}, lines=[2, 9])
    assert e.value.message == "row 9, column 'v': expected a value, received a missing cell (the column's " \
                              "missing = \"error\")"
    assert "median" in e.value.hint
    table = fit("row", [Column("v", "numeric")], {"v": ["1", "2"]})
    with pytest.raises(DataError, match="row 1, column 'v': expected a value"):
        table.encode({"v": [""]})


def test_non_number_in_a_numeric_column():
    with pytest.raises(DataError, match=r"row 3, column 'v': expected a number \(the column is declared numeric\), "
                                        r"received 'south'"):
        fit("row", [Column("v", "numeric")], {"v": ["1", "2", "south"]})


def test_column_order_is_the_declaration_order_not_the_cells():
    cols = [Column("b", "numeric", scale=False), Column("a", "categorical", categories=("x", "y"))]
    table = fit("row", cols, {"a": ["x", "y"], "b": ["1", "2"], "extra": ["q", "r"]})
    assert table.layout() == [("b", 0, 1), ("a", 1, 3)]
    np.testing.assert_array_equal(table.encode({"a": ["y"], "b": ["5"]}), [[5, 0, 1]])
    with pytest.raises(DataError, match=r"expected columns \['a'\] \(the model's 'row' input\)"):
        table.encode({"b": ["1"]})


def test_json_round_trip_encodes_alike():
    cols = [Column("n", "numeric", missing="mean", indicator=True),
            Column("c", "categorical", max_categories=4, missing="most_frequent", unknown="ignore"),
            Column("l", "categorical", categories=("p", "q"), encode="embedding", dim=2, unknown="most_frequent"),
            Column("b", "boolean", missing="constant", fill=True)]
    cells = {"n": ["1", "", "4"], "c": ["u", "v", ""], "l": ["q", "q", "p"], "b": ["no", "", "yes"]}
    table = fit("row", cols, cells, target="y")
    back = Table.from_json(table.to_json())
    assert back == table
    new = {"n": ["NA", "9", "0"], "c": ["zzz", "v", "u"], "l": ["r", "p", "q"], "b": ["yes", "no", "?"]}
    np.testing.assert_array_equal(back.encode(new), table.encode(new))


@pytest.mark.parametrize("column,problem", [
    (Column("c", "categorical"), "received neither"),
    (Column("c", "categorical", categories=("a", "a")), "received 'a' twice"),
    (Column("c", "categorical", categories=("a", "NA")), "reads as a missing cell"),
    (Column("c", "categorical", categories=("a",), encode="embedding"), "expected `dim = N`"),
    (Column("c", "categorical", categories=("a",), dim=3), "only with encode = \"embedding\""),
    (Column("c", "categorical", categories=("a",), missing="mean"), "for a categorical column"),
    (Column("n", "numeric", categories=("a",)), "categories: only for categorical columns"),
    (Column("n", "numeric", unknown="ignore"), "unknown: only for categorical columns"),
    (Column("n", "numeric", missing="constant"), "expected `fill = VALUE`"),
    (Column("n", "numeric", fill=1.0), "fill: only with missing = \"constant\""),
    (Column("n", "numeric", missing="constant", fill="x"), "expected a number for a numeric column"),
    (Column("b", "boolean", missing="constant", fill="x"), "expected true or false"),
    (Column("c", "categorical", categories=("a",), missing="constant", fill="z"), "one of the listed categories"),
])
def test_problems(column, problem):
    assert any(problem in p for p in column.problems()), column.problems()


def test_a_consistent_column_has_no_problems():
    assert Column("c", "categorical", max_categories=3, encode="embedding", dim=2, missing="most_frequent",
                  indicator=True, unknown="ignore").problems() == []


def test_only_missing_cells_in_training():
    with pytest.raises(DataError, match="column 'v': expected at least one value in the training split"):
        fit("row", [Column("v", "numeric", missing="mean")], {"v": ["", "NA"]})
