"""Reference scores for tabular runs: what a one-line scikit-learn model and the trivial predictor score on the
same test split, with the metric archc reports, so that a recipe that loses to them says so.

A classification or regression run whose examples are feature rows in memory (csv:, parquet:, npz: and sklearn:
sources; declared columns or not) gets two baselines, both fitted on the training split only (the rows archc's
weights learn from; the validation rows are not used) and scored on the test split:

- scikit-learn's HistGradientBoostingClassifier / HistGradientBoostingRegressor with its defaults (random_state 0)
  on the rows as archc encodes them (declared columns one-hot, standardized and imputed as the model reads them;
  before [data] normalize, which trees do not need). One regression target only.
- the trivial predictor: the training split's majority class, or its mean target.

Costs are bounded: the gradient boosting is skipped, with a note, above MAX_ROWS training rows, MAX_FEATURES
features, or an estimated fit time above MAX_SECONDS. The estimate, SECONDS_PER_UNIT x trees x features x (rows +
8,000), fits fit times measured with one thread on this project's 2 busy cores (100 iterations, one tree each, or
one per class for 3+ classes; the 8,000 stands for the per-tree cost of the 256 bins x 31 leaves): 2,000 x 20
binary 0.27 s, 569 x 30 binary 0.9 s, digits' 1,400 x 64 x 10 classes 7.3 s (skipped), penguins' 241 x 11 x 3
classes 0.1-0.4 s. It runs with as many threads as training (archc.threads). scikit-learn is a
dependency of archc (sklearn: sources); should it be missing, only the trivial baseline is given, with a note.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

MAX_ROWS = 200_000
MAX_FEATURES = 500
MAX_SECONDS = 5.0
SECONDS_PER_UNIT = 1.2e-8
ITERATIONS = 100  # HistGradientBoosting's default max_iter
KINDS = {"classification": "HistGradientBoostingClassifier", "regression": "HistGradientBoostingRegressor"}
# how far behind the gradient boosting archc may be before the run says so: accuracy points, or MAE relative
MARGIN = {"accuracy": 0.02, "mae": 0.05}


def tabular(kind: str, train: Any, test: Any, threads: int = 1) -> dict[str, Any] | None:
    """{"metric", "gradient_boosting", "trivial", "trivial_rule", "model", "fit_on", "seconds", "note"} for a
    classification or regression dataset of in-memory feature rows with a test split; None for anything else."""
    if kind not in KINDS or not _rows(train) or not _rows(test) or not len(train) or not len(test):
        return None
    metric = "accuracy" if kind == "classification" else "mae"
    x, y, xt, yt = train.x, np.asarray(train.y), test.x, np.asarray(test.y)
    if kind == "regression":
        y, yt = y.reshape(len(y), -1).astype(np.float64), yt.reshape(len(yt), -1).astype(np.float64)
    out: dict[str, Any] = {"metric": metric, "trivial": _trivial(kind, y, yt),
                           "trivial_rule": "majority class" if kind == "classification" else "mean target",
                           "model": KINDS[kind], "gradient_boosting": None, "seconds": None,
                           "fit_on": f"{len(x)} training rows x {x.shape[1]} features, as archc encodes them",
                           "note": ""}
    why = _too_big(x, y, kind)
    if why:
        out["note"] = f"gradient boosting skipped: {why}"
        return out
    try:
        import sklearn.ensemble as ensemble
        from threadpoolctl import threadpool_limits
    except ImportError:
        out["note"] = "gradient boosting skipped: scikit-learn is not installed"
        return out
    start = time.perf_counter()
    with threadpool_limits(max(1, threads)):
        model = getattr(ensemble, KINDS[kind])(random_state=0)
        model.fit(x, y if kind == "classification" else y[:, 0])
        pred = model.predict(xt)
    out["seconds"] = round(time.perf_counter() - start, 3)
    out["gradient_boosting"] = _score(kind, pred, yt)
    return out


def _rows(split: Any) -> bool:
    """Feature rows in memory: a float [N, F] array (not images, token windows or a lazy split)."""
    x = getattr(split, "x", None)
    return isinstance(x, np.ndarray) and x.ndim == 2 and x.dtype.kind == "f"


def _too_big(x: np.ndarray, y: np.ndarray, kind: str) -> str:
    if len(x) > MAX_ROWS:
        return f"{len(x):,} training rows, above {MAX_ROWS:,}"
    if x.shape[1] > MAX_FEATURES:
        return f"{x.shape[1]:,} features, above {MAX_FEATURES:,}"
    if kind == "regression" and y.shape[1] != 1:
        return f"{y.shape[1]} target values per row (it fits one)"
    classes = len(np.unique(y)) if kind == "classification" else 1
    if classes < 2 and kind == "classification":
        return "one class in the training split"
    seconds = estimate(len(x), x.shape[1], classes)
    if seconds > MAX_SECONDS:
        return (f"{len(x):,} training rows x {x.shape[1]} features" + (f" x {classes} classes" if classes > 2 else "")
                + f" would take about {seconds:.0f} s (more than {MAX_SECONDS:g})")
    return ""


def estimate(rows: int, features: int, classes: int = 1) -> float:
    """Seconds the gradient boosting's fit is expected to take on one busy core (see the module's docstring)."""
    trees = ITERATIONS * (classes if classes > 2 else 1)
    return SECONDS_PER_UNIT * trees * features * (rows + 8_000)


def _trivial(kind: str, y: np.ndarray, yt: np.ndarray) -> float:
    if kind == "classification":
        return _score(kind, np.full(len(yt), np.bincount(y.astype(np.int64)).argmax()), yt)
    return _score(kind, np.broadcast_to(y.mean(axis=0), yt.shape), yt)


def _score(kind: str, pred: np.ndarray, yt: np.ndarray) -> float:
    """Accuracy, or the mean absolute error over every target value (as archc's metric)."""
    if kind == "classification":
        return float(np.mean(np.asarray(pred) == yt))
    return float(np.mean(np.abs(np.asarray(pred, np.float64).reshape(yt.shape) - yt)))


def verdict(baselines: dict[str, Any] | None, test: dict[str, Any]) -> dict[str, Any] | None:
    """The baselines with "behind" (see behind()) for the result and the report; None without a test score."""
    return baselines | {"behind": behind(baselines, test)} if baselines and test else None


def short(baselines: dict[str, Any] | None) -> str:
    """' (gradient boosting 0.9855, majority class 0.4348)': the baselines after archc's score in the last line."""
    if not baselines:
        return ""
    gb = baselines.get("gradient_boosting")
    first = f"gradient boosting {gb:.4f}, " if gb is not None else ""
    return f" ({first}{baselines['trivial_rule']} {baselines['trivial']:.4f})"


def behind(baselines: dict[str, Any] | None, test: dict[str, Any]) -> bool:
    """Is archc's test score worse than the gradient boosting's by more than MARGIN (accuracy points, or MAE
    relative to the baseline's)?"""
    if not baselines or baselines.get("gradient_boosting") is None or baselines["metric"] not in test:
        return False
    ours, theirs, margin = float(test[baselines["metric"]]), baselines["gradient_boosting"], MARGIN[baselines["metric"]]
    return ours < theirs - margin if baselines["metric"] == "accuracy" else ours > theirs * (1 + margin)


def lines(baselines: dict[str, Any] | None, test: dict[str, Any], normalized: bool) -> list[str]:
    """The run's closing lines: the baselines beside archc's score, and a warning with hints when archc is behind."""
    if not baselines:
        return []
    m = baselines["metric"]
    gb = baselines["gradient_boosting"]
    first = (f"{baselines['model']} {gb:.4f} (fit in {baselines['seconds']:.2f} s on {baselines['fit_on']}), "
             if gb is not None else "")
    out = [f"baselines on the same test split ({m}): {first}{baselines['trivial_rule']} {baselines['trivial']:.4f}"
           + (f"; {baselines['note']}" if baselines["note"] else "")]
    if behind(baselines, test):
        hints = ["more epochs"] + ([] if normalized else ["[data] normalize = true"]) + [
            "a wider network", "a higher or lower lr", "or use the gradient-boosting model itself"]
        out.append(f"archc is behind the gradient-boosting baseline: test {m} {float(test[m]):.4f} against "
                   f"{gb:.4f}; try " + ", ".join(hints))
    return out
