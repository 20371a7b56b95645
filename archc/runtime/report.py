"""Reports of a run on labelled data (numpy; matplotlib, Agg, imported lazily for the plot): per-class
precision/recall/F1 and a confusion matrix for classes, per-label figures for multilabel data, residual summaries
for values; `write` puts them in a folder as report.json and report.png, atomically."""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from archc.strict_json import dumps
from archc.errors import InputError
from archc.tasks.figures import QUANTILES, classes, labels_on, values  # noqa: F401  (the tasks' figures)
from archc.util import write_bytes_atomic

FILES = ("report.json", "report.png")
ANNOTATE_UP_TO = 30  # classes: counts are written in the confusion matrix's cells up to this many


# ---- the folder ---------------------------------------------------------------------------------------------------

def check_folder(folder: Path, force: bool) -> None:
    """Before anything runs: a file in the way, or a non-empty folder without --force, is an InputError."""
    if folder.exists() and not folder.is_dir():
        raise InputError(f"expected a folder for the report, received a file: {str(folder)!r}", where="--report")
    if folder.is_dir() and any(folder.iterdir()) and not force:
        raise InputError(f"expected an empty or new folder for the report, received {str(folder)!r}, which holds "
                         "files", where="--report", hint="--force moves it aside to DIR.old-N (nothing is deleted)")


def aside(folder: Path) -> Path | None:
    """--force: a non-empty folder renamed to the first free DIR.old-N (as `archc train --force` does); its path."""
    if not (folder.is_dir() and any(folder.iterdir())):
        return None
    from archc.outputs import check_writes

    check_writes({}, folders={"--report": folder}, moving=True)  # again: a run may have started since the first
    n = 1
    while (old := folder.with_name(f"{folder.name}.old-{n}")).exists():
        n += 1
    os.replace(folder, old)
    return old


def write_folder(folder: Path, report: dict[str, Any], title: str) -> list[Path]:
    """report.json and report.png in `folder` (made when missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / name for name in FILES]
    write(paths[0], paths[1], report, title)
    return paths


def write(json_path: Path, png_path: Path, report: dict[str, Any], title: str) -> None:
    """The report as JSON and as a plot, each written atomically."""
    shown = {k: v for k, v in report.items() if k != "pairs"}  # the plot's raw pairs are the outputs, not a summary
    write_bytes_atomic(json_path, (dumps(shown, indent=2) + "\n").encode("utf-8"))
    write_bytes_atomic(png_path, plot(report, title))


def summary(report: dict[str, Any]) -> str:
    """'accuracy 0.9722, macro F1 0.9718' or 'MAE 0.41, RMSE 0.55, R^2 0.87': the report in a line."""
    if report["kind"] == "values":
        return f"MAE {report['mae']:.4g}, RMSE {report['rmse']:.4g}, R^2 {report['r2']:.4f}"
    first = "accuracy" if report["kind"] == "classes" else "label_accuracy"
    return f"{first.replace('_', ' ')} {report[first]:.4f}, macro F1 {report['macro_avg']['f1']:.4f}"


def baselines_line(baselines: dict[str, Any]) -> str:
    """'baselines (accuracy): gradient boosting 0.9600, majority class 0.4400': a training run's report on tabular
    data carries archc.train.baselines' figures in report.json and under the plot's title."""
    gb = baselines.get("gradient_boosting")
    first = f"gradient boosting {gb:.4g}, " if gb is not None else ""
    return f"baselines ({baselines['metric']}): {first}{baselines['trivial_rule']} {baselines['trivial']:.4g}"


def plot(report: dict[str, Any], title: str) -> bytes:
    """A PNG: confusion matrix and per-class bars (classes), per-label bars (labels), predicted-vs-true and
    residual-vs-predicted scatters (values)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    kind = report["kind"]
    fig = Figure(figsize=(11, 4.8) if kind != "labels" else (7, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    if kind == "classes":
        left, right = fig.subplots(1, 2)
        _matrix(left, report["confusion_matrix"])
        _bars(right, report["per_class"])
    elif kind == "labels":
        _bars(fig.subplots(1, 1), report["per_class"])
    else:
        _scatter(*fig.subplots(1, 2), report)
    fig.suptitle(title + (f"\n{baselines_line(report['baselines'])}" if report.get("baselines") else ""),
                 fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _matrix(ax: Any, cm: dict[str, Any]) -> None:
    counts, labels = np.asarray(cm["counts"]), cm["labels"]
    ax.imshow(counts, cmap="Blues")
    ticks = range(len(labels))
    ax.set_xticks(ticks, labels, rotation=90 if len(labels) > 6 else 0, fontsize=7)
    ax.set_yticks(ticks, labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix")
    if len(labels) <= ANNOTATE_UP_TO:
        high = counts.max() / 2 if counts.size else 0
        for (i, j), n in np.ndenumerate(counts):
            ax.text(j, i, str(n), ha="center", va="center", fontsize=7, color="white" if n > high else "black")


def _bars(ax: Any, rows: list[dict[str, Any]]) -> None:
    x = np.arange(len(rows))
    for i, key in enumerate(("precision", "recall", "f1")):
        ax.bar(x + (i - 1) * 0.27, [r[key] for r in rows], width=0.27, label=key)
    ax.set_xticks(x, [r["label"] for r in rows], rotation=90 if len(rows) > 6 else 0, fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_title("per class")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(axis="y", alpha=0.3)


def _scatter(left: Any, right: Any, report: dict[str, Any]) -> None:
    t, p = np.asarray(report["pairs"]["true"]), np.asarray(report["pairs"]["predicted"])
    left.scatter(t, p, s=8, alpha=0.6)
    lo, hi = (float(min(t.min(), p.min())), float(max(t.max(), p.max()))) if t.size else (0.0, 1.0)
    left.plot([lo, hi], [lo, hi], "k--", linewidth=1)
    left.set_xlabel("true")
    left.set_ylabel("predicted")
    left.set_title(f"predicted vs true (R^2 {report['r2']:.3f})")
    right.scatter(p, t - p, s=8, alpha=0.6)
    right.axhline(0, color="k", linewidth=1)
    right.set_xlabel("predicted")
    right.set_ylabel("residual (true - predicted)")
    right.set_title(f"residuals (MAE {report['mae']:.3g}, RMSE {report['rmse']:.3g})")
    for ax in (left, right):
        ax.grid(alpha=0.3)
