"""The figures of a test-split report (numpy only): per-class precision, recall and F1 with a confusion matrix, per
label, or residuals of values. The task kinds compute them (Task.report); archc.runtime.report writes and plots
them."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den is 0 (scikit-learn's zero_division=0)."""
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def _prf(tp: np.ndarray, predicted: np.ndarray, support: np.ndarray) -> tuple[np.ndarray, ...]:
    """Precision, recall and F1 per class from true positives and the predicted and true counts."""
    precision, recall = _ratio(tp, predicted), _ratio(tp, support)
    return precision, recall, _ratio(2 * precision * recall, precision + recall)


def _rows(labels: Sequence[str], tp: np.ndarray, predicted: np.ndarray, support: np.ndarray) -> dict[str, Any]:
    """Per-class rows and their macro and support-weighted averages."""
    p, r, f = _prf(tp, predicted, support)
    rows = [{"label": str(name), "precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
             "support": int(support[i])} for i, name in enumerate(labels)]
    w = support / support.sum() if support.sum() else np.zeros(len(support))
    average = {"macro_avg": {"precision": float(p.mean()), "recall": float(r.mean()), "f1": float(f.mean()),
                             "support": int(support.sum())},
               "weighted_avg": {"precision": float(w @ p), "recall": float(w @ r), "f1": float(w @ f),
                                "support": int(support.sum())}}
    return {"per_class": rows} | average


def classes(y_true: np.ndarray, scores: np.ndarray, labels: Sequence[str], top: int = 0) -> dict[str, Any]:
    """One class per example: `scores` [N, K] (any monotone scores), true ids `y_true` [N] (< 0: not scored)."""
    keep = np.asarray(y_true) >= 0
    t, s = np.asarray(y_true)[keep].astype(np.int64), np.asarray(scores)[keep]
    k = s.shape[1]
    p = s.argmax(axis=1)
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (t, p), 1)
    tp = np.diag(matrix)
    out: dict[str, Any] = {"kind": "classes", "examples": int(len(t)),
                           "accuracy": float(tp.sum() / len(t)) if len(t) else float("nan")}
    if top > 1:
        best = np.argsort(-s, axis=1, kind="stable")[:, :top]
        out[f"top_{top}_accuracy"] = float((best == t[:, None]).any(axis=1).mean()) if len(t) else float("nan")
    out |= _rows(labels, tp, matrix.sum(axis=0), matrix.sum(axis=1))
    out["confusion_matrix"] = {"labels": [str(x) for x in labels], "rows": "true", "columns": "predicted",
                               "counts": matrix.tolist()}
    return out


def labels_on(y_true: np.ndarray, on: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Any number of labels per example: 0/1 truth and predictions [N, L]; per label, micro over all calls."""
    t, p = np.asarray(y_true) > 0.5, np.asarray(on, dtype=bool)
    tp, predicted, support = (t & p).sum(axis=0), p.sum(axis=0), t.sum(axis=0)
    out: dict[str, Any] = {"kind": "labels", "examples": int(len(t)),
                           "label_accuracy": float((t == p).mean()) if t.size else float("nan"),
                           "exact_match": float((t == p).all(axis=1).mean()) if len(t) else float("nan")}
    out |= _rows(labels, tp, predicted, support)
    mp, mr, mf = _prf(tp.sum(), predicted.sum(), support.sum())
    out["micro_avg"] = {"precision": float(mp), "recall": float(mr), "f1": float(mf), "support": int(support.sum())}
    return out


def values(pred: np.ndarray, target: np.ndarray) -> dict[str, Any]:
    """Residuals (true - predicted) of [N, K] values: MAE, RMSE, R^2 (the mean over the K outputs, as
    scikit-learn's r2_score) and quantiles; pairs for the plot."""
    pred = np.asarray(pred, np.float64).reshape(len(target), -1)
    target = np.asarray(target, np.float64).reshape(len(target), -1)
    res = target - pred
    total = ((target - target.mean(axis=0)) ** 2).sum(axis=0)
    r2 = np.where(total > 0, 1 - (res ** 2).sum(axis=0) / np.where(total > 0, total, 1), np.nan)
    flat = res.ravel()
    return {"kind": "values", "examples": int(len(target)), "outputs": int(target.shape[1]),
            "mae": float(np.abs(flat).mean()), "rmse": float(np.sqrt((flat ** 2).mean())),
            "r2": float(np.nanmean(r2)) if np.isfinite(r2).any() else float("nan"),
            "residual_mean": float(flat.mean()), "residual_std": float(flat.std()),
            "residual_quantiles": {f"{q:g}": float(v) for q, v in zip(QUANTILES, np.quantile(flat, QUANTILES))},
            "pairs": {"true": target.ravel().tolist(), "predicted": pred.ravel().tolist()}}
