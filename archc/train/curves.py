"""curves.png: train and validation loss and metric per epoch, with the training curve within epochs
(steps.jsonl) behind them (matplotlib's Agg backend, written atomically)."""
from __future__ import annotations

import io
import time
from pathlib import Path

from archc.util import write_bytes_atomic

MIN_INTERVAL_S = 5.0  # a plot costs ~0.1 s (the first ~0.5 s, importing matplotlib): redraw at most this often,
# and not before a run has trained this long (a run of a few seconds draws once, at its end)


def plot(history: list[dict], metric: str, path: str | Path, steps: list[dict] = ()) -> None:
    """Two panels (loss, metric), each with a train and a validation line over epochs, and the per-step training
    points as a thin line (an epoch's row is its mean, drawn at its end: x = epochs done)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(9, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    epochs = [row["epoch"] for row in history]
    for ax, key in zip(fig.subplots(1, 2), ("loss", metric)):
        if steps:
            ax.plot([row["epoch"] for row in steps], [row.get(f"train_{key}") for row in steps], "-", linewidth=0.8,
                    alpha=0.45, color="tab:gray", label="train (steps)")
        for split, style in (("train", "-"), ("val", "--")):
            ax.plot(epochs, [row.get(f"{split}_{key}") for row in history], style, marker="o", markersize=3,
                    label=split)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(left=0)
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    write_bytes_atomic(path, buf.getvalue())


class Curves:
    """Redraws curves.png, throttled to MIN_INTERVAL_S (from the run's start too) unless forced (the last epoch, a
    live redraw in an epoch)."""

    def __init__(self, path: str | Path, metric: str) -> None:
        self.path, self.metric, self.last, self.drawn = Path(path), metric, time.monotonic(), (-1, -1)

    def update(self, history: list[dict], steps: list[dict] = (), force: bool = False) -> None:
        if not (history or steps) or (len(history), len(steps)) == self.drawn:
            return
        if force or time.monotonic() - self.last >= MIN_INTERVAL_S:
            plot(history, self.metric, self.path, list(steps))
            self.last, self.drawn = time.monotonic(), (len(history), len(steps))
