"""Figure 14: a tabular spec against what a user would try first, on the same real CSV and the same split.

specs/penguins.toml (species from island, sex, the four measurements and year; categories and missing cells) is
trained by archc.train.run, as `archc train` does, and scored on its test split. On the same rows (the split
archc.data makes from the spec's [data] split_seed and fractions, stratified by species), scikit-learn's
HistGradientBoostingClassifier and LogisticRegression are fitted on the training split, each behind the pipeline a
user writes first: numeric columns SimpleImputer(median) + StandardScaler, the others SimpleImputer(most_frequent) +
OneHotEncoder(handle_unknown="ignore"). Accuracy and fit time are medians over SEEDS (archc's [train] seed,
scikit-learn's random_state). Goal: archc's accuracy within 2 points of each reference.

Small-data defaults (issue 21): the same small recipe (one hidden layer of 64, AdamW lr 5e-3, batch 16, 40 epochs,
early stopping after 15) on small tabular sets the project ships or installs (penguins.csv through its spec; iris,
wine, breast_cancer and diabetes from scikit-learn's bundled files, sklearn: sources, normalized), each trained
with the validation share and the monitored quantity of SMALL_CONFIGS, over SMALL_SEEDS (the split's and the
weights' seed together). One row per configuration: its mean test score relative to the defaults' (val_fraction
0.1, monitor "metric"), per set: accuracy ratio (higher is better) or MAE ratio inverted (diabetes), so > 1 is
better than the defaults everywhere. The test rows are cut first, so they are the same for every configuration.
"""
from __future__ import annotations

import statistics
import time
import tomllib
from pathlib import Path

import numpy as np

import common

FIGURE = 14
KEY = "tabular"
TITLE = "Tabular data: a spec on penguins.csv vs scikit-learn on the same split"
A, B = "archc", "scikit-learn"
SPEC = "penguins"
SEEDS = (0, 1, 2)
MAX_GAP = 0.02  # accuracy


def spec_data(path: Path) -> tuple[dict, dict]:
    """([data], {column: type}) of the spec, read from its TOML (short form: the type; table form: its type)."""
    spec = tomllib.loads(path.read_text())
    (inp,) = [v for v in spec["inputs"].values() if "columns" in v]
    types = {k: (v if isinstance(v, str) else v["type"]) for k, v in inp["columns"].items()}
    return spec["data"], types


def same_split(path: Path) -> tuple[dict[str, list[str]], np.ndarray, list[np.ndarray], dict[str, str]]:
    """The CSV's cells, the class ids, the (train, val, test) rows archc.data cuts, and the column types."""
    from archc.data.arrays import split_rows
    from archc.data.base import Splits
    from archc.data.sources import parse
    from archc.data.tabular import read_table

    data, types = spec_data(path)
    _, arg, _ = parse(data["source"])
    raw = read_table(path.parent / arg, data["source"])
    target = raw.cells[data["target"]]
    classes = sorted(set(target))
    y = np.array([classes.index(v) for v in target])
    splits = Splits(data.get("val_fraction", 0.1), data.get("test_fraction", 0.2), data.get("split_seed", 0))
    return raw.cells, y, list(split_rows(len(y), y, "classification", splits)), types


def references(seed: int):
    """{name: an unfitted scikit-learn pipeline} for one seed."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    return {"HistGradientBoostingClassifier": HistGradientBoostingClassifier(random_state=seed),
            "LogisticRegression": LogisticRegression(max_iter=2000, random_state=seed)}


def pipeline(model, types: dict[str, str]):
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    names = list(types)
    numeric = [names.index(c) for c, t in types.items() if t == "numeric"]
    other = [names.index(c) for c, t in types.items() if t != "numeric"]
    pre = ColumnTransformer([
        ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
        ("other", make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")),
         other)])
    return make_pipeline(pre, model)


def frame(cells: dict[str, list[str]], rows: np.ndarray, types: dict[str, str]) -> np.ndarray:
    """The rows as an object array [rows, columns] in the spec's column order: floats for numeric columns, text
    for the others, NaN where a cell is missing (what SimpleImputer reads as missing)."""
    from archc.data.columns import is_missing

    out = np.empty((len(rows), len(types)), dtype=object)
    for j, (c, t) in enumerate(types.items()):
        out[:, j] = [np.nan if is_missing(cells[c][i]) else (float(cells[c][i]) if t == "numeric" else cells[c][i])
                     for i in rows]
    return out


SMALL_SETS = ("penguins", "sklearn:iris", "sklearn:wine", "sklearn:breast_cancer", "sklearn:diabetes")
SMALL_CONFIGS = ((0.1, "metric"), (0.2, "metric"), (0.1, "loss"), (0.2, "loss"))  # the first: archc's defaults
SMALL_SEEDS = (0, 1, 2)


def small_spec(source: str, val_fraction: float, monitor: str, seed: int) -> dict:
    """The small recipe on `source` (a sklearn: set; "penguins": specs/penguins.toml with its columns) as a spec."""
    train = {"epochs": 40, "batch_size": 16, "early_stopping": 15, "monitor": monitor, "seed": seed,
             "optimizer": {"name": "adamw", "lr": 5e-3, "weight_decay": 1e-3}}
    data = {"val_fraction": val_fraction, "test_fraction": 0.2, "split_seed": seed}
    if source == "penguins":
        spec = tomllib.loads(common.spec_path("penguins").read_text())
        spec["train"] = train
        spec["data"] |= data
        spec["data"]["source"] = f"csv:{common.spec_path('penguins').parent / 'data' / 'penguins.csv'}"
        return spec
    features, outputs, kind = _shape_of(source)
    return {"archc": 1, "model": {"name": source.split(":")[1]}, "inputs": {"x": {"shape": [features]}},
            "task": {"kind": kind},
            "layers": [{"op": "linear", "out_features": 64, "act": "relu"},
                       {"op": "linear", "out_features": outputs}],
            "train": train, "data": {"source": source, "normalize": True} | data}


def _shape_of(source: str) -> tuple[int, int, str]:
    """(features, outputs, task kind) of a bundled scikit-learn set, from the arrays themselves."""
    import sklearn.datasets as ds

    bunch = getattr(ds, f"load_{source.split(':')[1]}")()
    if source.endswith("diabetes"):
        return bunch.data.shape[1], 1, "regression"
    return bunch.data.shape[1], len(set(bunch.target.tolist())), "classification"


def small_data(quick: bool = False) -> tuple[list[dict], str]:
    """Rows of the small-data defaults measurement (see the module's docstring)."""
    import archc.train

    sets = SMALL_SETS[1:2] if quick else SMALL_SETS  # quick: iris, the defaults and one other configuration
    seeds = SMALL_SEEDS[:1] if quick else SMALL_SEEDS
    configs = SMALL_CONFIGS[::3] if quick else SMALL_CONFIGS
    scores: dict[tuple, dict[str, list[float]]] = {c: {s: [] for s in sets} for c in configs}
    work = common.workdir() / "small"
    for name in sets:
        for seed in seeds:
            for val, monitor in configs:
                spec = small_spec(name, val, monitor, seed)
                result = archc.train.run(spec, out=work / f"{name.replace(':', '_')}-{val}-{monitor}-{seed}",
                                         epochs=2 if quick else None, quiet=True, force=True)
                scores[(val, monitor)][name].append(result.test[result.metric])
    base = scores[SMALL_CONFIGS[0]]
    rows = []
    for val, monitor in configs[1:]:
        ours = scores[(val, monitor)]
        gains = {n: (statistics.mean(ours[n]) / statistics.mean(base[n])) ** (-1 if n.endswith("diabetes") else 1)
                 for n in sets}
        rows.append(common.row(FIGURE, f"small data: val_fraction {val}, monitor {monitor} vs the defaults",
                               statistics.mean(gains.values()), 1.0, ratio=None,
                               note="per set (test score relative to val_fraction 0.1, monitor metric; > 1 better): "
                                    + ", ".join(f"{n.removeprefix('sklearn:')} {g:.3f}" for n, g in gains.items())))
    shown = "; ".join(f"{n.removeprefix('sklearn:')}: " + ", ".join(
        f"{v}/{m} {statistics.mean(scores[(v, m)][n]):.4f}" for v, m in configs) for n in sets)
    return rows, (f"Small-data defaults: mean test score per set over seeds {list(seeds)} "
                  f"(val_fraction/monitor; accuracy, diabetes MAE){' (quick: 2 epochs)' if quick else ''}: {shown}."
                  + ("" if quick else " Measured 2026-12-05: no configuration was clearly better than the defaults "
                     "(val_fraction 0.1, monitor \"metric\"), so they stay as they are for small data too."))


def _show(xs: list[float]) -> str:
    return "/".join(f"{x:.4f}" for x in xs)


def run(quick: bool = False) -> tuple[list[dict], str]:
    import archc.train

    path = common.spec_path(SPEC)
    if path is None:
        return [common.skipped(FIGURE, SPEC, "spec not in specs/ yet")], ""
    cells, y, (train, _, test), types = same_split(path)
    seeds = SEEDS[:1] if quick else SEEDS
    work = common.workdir() / "tabular"
    acc: dict[str, list[float]] = {"archc": []}
    secs: dict[str, list[float]] = {"archc": []}
    loop: list[float] = []  # archc's result.seconds: reading the data, building the model and training
    x_train, x_test = frame(cells, train, types), frame(cells, test, types)
    for seed in seeds:
        start = time.perf_counter()
        result = archc.train.run(path, out=work / f"seed{seed}", seed=seed, epochs=2 if quick else None,
                                 quiet=True, force=True)
        secs["archc"].append(time.perf_counter() - start)
        loop.append(result.seconds)
        assert result.test, "the spec's test split is empty"
        acc["archc"].append(result.test["accuracy"])
        for name, model in references(seed).items():
            pipe = pipeline(model, types)
            start = time.perf_counter()
            pipe.fit(x_train, y[train])
            secs.setdefault(name, []).append(time.perf_counter() - start)
            acc.setdefault(name, []).append(float(np.mean(pipe.predict(x_test) == y[test])))
    ours, ours_s = common.median(acc["archc"]), common.median(secs["archc"])
    rows = []
    for name in references(0):
        theirs = common.median(acc[name])
        rows.append(common.row(FIGURE, f"test accuracy vs {name}", ours, theirs,
                               goal=f"within {MAX_GAP * 100:g} points", met=ours >= theirs - MAX_GAP,
                               note=f"per seed: archc {_show(acc['archc'])}, {name} {_show(acc[name])}"))
    for name in references(0):
        rows.append(common.row(FIGURE, f"time to train vs {name}", ours_s, common.median(secs[name]), unit="s",
                               note=f"archc: archc.train.run (compile, read and encode the CSV, train, export, parity "
                                    f"check; before the test and export {common.median(loop):.2f} s); "
                                    f"scikit-learn: pipeline.fit"))
    details = (f"{SPEC}.toml on {len(y)} rows: train {len(train)}, test {len(test)} (the rows archc's split gives; "
               f"scikit-learn fits on the same train rows, no validation rows). Medians over seeds {list(seeds)}"
               + (" (quick: 2 epochs)" if quick else "") + ". archc's time includes compiling the spec, writing "
               "checkpoints and exporting model.onnx with its parity check.")
    small, small_details = small_data(quick)
    return rows + small, details + "\n\n" + small_details
