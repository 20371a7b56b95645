"""Progress: a live bar per epoch (loss, metric, samples/s, ETA) and one table row per epoch; or silence."""
from __future__ import annotations

import time
from typing import Callable

from archc.train.run_dir import RunDir

REFRESH_S = 0.1  # the bar's numbers cost a device sync: read them at most this often


class Quiet:
    """Quiet mode (scripts, tests, ranks other than 0): prints nothing."""

    def begin(self, lines: list[str], metric: str) -> None: ...
    def epoch_begin(self, epoch: int, epochs: int, steps: int, done: int) -> None: ...
    def step(self, samples: int, stats: Callable[[], tuple[float, float]]) -> None: ...
    def epoch_end(self, row: dict, best: bool) -> None: ...
    def note(self, text: str) -> None: ...
    def close(self) -> None: ...


class Rich(Quiet):
    """rich's live bar during an epoch (transient), then a row of the epoch table."""

    def __init__(self) -> None:
        from rich.console import Console
        self.console = Console(highlight=False, soft_wrap=True)
        self.progress = None
        self.metric = "metric"

    def begin(self, lines: list[str], metric: str) -> None:
        self.metric = metric
        for line in lines:
            self.console.print(line)
        short = metric[:8]
        self.console.print(f"[bold]{'epoch':>7} {'train loss':>11} {'train ' + short:>14} {'val loss':>10} "
                           f"{'val ' + short:>12} {'lr':>9} {'time':>7}[/bold]")

    def epoch_begin(self, epoch: int, epochs: int, steps: int, done: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
        # Not a terminal (a log file, a pipe): no live bar, only the table rows.
        self.progress = Progress(TextColumn(f"epoch {epoch + 1}/{epochs}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[stats]}"), TimeRemainingColumn(),
                                 console=self.console, transient=True, disable=not self.console.is_terminal,
                                 auto_refresh=False)  # no render thread: it would fight torch's threads
        self.progress.start()
        self.task = self.progress.add_task("train", total=steps, completed=done, stats="")
        self.samples, self.start, self.shown = 0, time.perf_counter(), 0.0

    def step(self, samples: int, stats: Callable[[], tuple[float, float]]) -> None:
        self.samples += samples
        now = time.perf_counter()
        if now - self.shown < REFRESH_S:
            self.progress.advance(self.task)
            return
        loss, metric = stats()
        rate = self.samples / max(now - self.start, 1e-9)
        self.progress.update(self.task, advance=1,
                             stats=f"loss {loss:.4f}  {self.metric} {metric:.4f}  {rate:,.0f} samples/s")
        self.progress.refresh()
        self.shown = now

    def epoch_end(self, row: dict, best: bool) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        m = self.metric
        self.console.print(f"{row['epoch']:>7} {row['train_loss']:>11.4f} {row[f'train_{m}']:>14.4f} "
                           f"{row['val_loss']:>10.4f} {row[f'val_{m}']:>12.4f} {row['lr']:>9.2e} "
                           f"{row['seconds']:>6.1f}s" + ("  *" if best else ""))

    def note(self, text: str) -> None:
        self.console.print(text)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def reporter(quiet: bool, main: bool) -> Quiet:
    """Rich on rank 0 unless quiet; silence elsewhere."""
    return Rich() if main and not quiet else Quiet()


class Progress:
    """What a run shows and records as it goes: the reporter's lines, and (rank 0) metrics.jsonl and curves.png."""

    def __init__(self, report: Quiet, run_dir: RunDir | None, metric: str) -> None:
        from archc.train.curves import Curves

        self.report, self.run_dir = report, run_dir
        self.curves = Curves(run_dir.curves, metric) if run_dir is not None else None

    def epoch_end(self, history: list[dict], best: bool, last: bool) -> None:
        """Record the epoch (rewriting metrics.jsonl; the curves are throttled unless `last`), then show its row."""
        if self.run_dir is not None and self.curves is not None:
            self.run_dir.write_metrics(history)
            self.curves.update(history, force=last)
        self.report.epoch_end(history[-1], best)

    def final(self, history: list[dict]) -> None:
        """The curves of every epoch (one a resumed run did not redraw included)."""
        if self.curves is not None and history:
            self.curves.update(history, force=True)
