"""Progress: a live bar per epoch (loss, metric, samples/s, ETA), or in a log a line every few seconds, and one
table row per epoch; or silence."""
from __future__ import annotations

import math
import time
from typing import Callable

from archc.train.run_dir import RunDir
from archc.train.tracking import Trackers

REFRESH_S = 0.1  # the bar's numbers cost a device sync: read them at most this often
LINE_EVERY_S = 5.0  # not a terminal: a plain progress line at most this often (a log file stays readable)
POINTS_PER_EPOCH = 50  # steps.jsonl: a point every ceil(steps per epoch / 50) steps, and at the epoch's end
LIVE_S = 30.0  # within an epoch, steps.jsonl and curves.png are rewritten at most this often (a plot costs ~0.1 s)


class Quiet:
    """Quiet mode (scripts, tests, ranks other than 0): prints nothing."""

    def begin(self, lines: list[str], metric: str) -> None: ...
    def epoch_begin(self, epoch: int, epochs: int, steps: int, done: int) -> None: ...
    def step(self, samples: int, stats: Callable[[], tuple[float, float]]) -> None: ...
    def epoch_end(self, row: dict, best: bool) -> None: ...
    def note(self, text: str) -> None: ...
    def close(self) -> None: ...


class Rich(Quiet):
    """rich's live bar during an epoch (transient), then a row of the epoch table. Not a terminal (a log file,
    a pipe): no bar, but a plain progress line every LINE_EVERY_S, so a log never goes silent for an epoch."""

    def __init__(self) -> None:
        from rich.console import Console
        self.console = Console(highlight=False, soft_wrap=True)
        self.progress = None
        self.metric = "metric"

    def begin(self, lines: list[str], metric: str) -> None:
        self.metric = metric
        for line in lines:  # rich markup, names and paths escaped (archc.train.loop.header)
            self.console.print(line)
        short = metric[:8]
        self.console.print(f"[bold]{'epoch':>7} {'train loss':>11} {'train ' + short:>14} {'val loss':>10} "
                           f"{'val ' + short:>12} {'lr':>9} {'time':>7}[/bold]")

    def epoch_begin(self, epoch: int, epochs: int, steps: int, done: int) -> None:
        self.epoch, self.epochs, self.steps, self.done, self.first = epoch + 1, epochs, steps, done, done
        self.samples, self.start = 0, time.perf_counter()
        if not self.console.is_terminal:
            self.shown = self.start  # the first line after LINE_EVERY_S, not at step 1
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
        self.progress = Progress(TextColumn(f"epoch {epoch + 1}/{epochs}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[stats]}"), TimeRemainingColumn(),
                                 console=self.console, transient=True,
                                 auto_refresh=False)  # no render thread: it would fight torch's threads
        self.progress.start()
        self.task = self.progress.add_task("train", total=steps, completed=done, stats="")
        self.shown = 0.0

    def step(self, samples: int, stats: Callable[[], tuple[float, float]]) -> None:
        self.samples += samples
        self.done += 1
        now = time.perf_counter()
        if self.progress is None:
            if now - self.shown >= LINE_EVERY_S:
                self.console.print(self.line(stats, now), markup=False)
                self.shown = now
            return
        if now - self.shown < REFRESH_S:
            self.progress.advance(self.task)
            return
        self.progress.update(self.task, advance=1, stats=self.stats(stats, now))
        self.progress.refresh()
        self.shown = now

    def stats(self, stats: Callable[[], tuple[float, float]], now: float) -> str:
        loss, metric = stats()  # a device sync: only when shown
        rate = self.samples / max(now - self.start, 1e-9)
        return f"loss {loss:.4f}  {self.metric} {metric:.4f}  {rate:,.0f} samples/s"

    def line(self, stats: Callable[[], tuple[float, float]], now: float) -> str:
        """`epoch 2/10  step 120/469  loss 0.4123  accuracy 0.8812  1,234 samples/s  eta 12s` (eta: this epoch)."""
        eta = max(self.steps - self.done, 0) * (now - self.start) / max(self.done - self.first, 1)
        return (f"epoch {self.epoch}/{self.epochs}  step {self.done}/{self.steps}  {self.stats(stats, now)}  "
                f"eta {eta:.0f}s")

    def epoch_end(self, row: dict, best: bool) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        m = self.metric
        self.console.print(f"{row['epoch']:>7} {row['train_loss']:>11.4f} {row[f'train_{m}']:>14.4f} "
                           f"{row['val_loss']:>10.4f} {row[f'val_{m}']:>12.4f} {row['lr']:>9.2e} "
                           f"{row['seconds']:>6.1f}s" + ("  *" if best else ""))

    def note(self, text: str) -> None:
        self.console.print(text, markup=False)  # a file's path may hold '[' (not markup)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def reporter(quiet: bool, main: bool) -> Quiet:
    """Rich on rank 0 unless quiet; silence elsewhere."""
    return Rich() if main and not quiet else Quiet()


class StepLog:
    """The training curve within epochs: every `every` steps of an epoch (and at its last step), the mean train loss
    and metric over the examples since the previous point. Rank 0's own examples under --nproc (no collective per
    point); the epoch rows of metrics.jsonl are over every rank. A point costs one read of the running sums (a
    device sync), about 50 per epoch."""

    def __init__(self, metric: str, rows: list[dict] | None = None, unit: str = "examples") -> None:
        self.metric, self.rows, self.unit = metric, rows or [], unit  # unit: what the metric is a mean over
        self.every, self.steps, self.base = 1, 1, [0.0, 0.0, 0.0, 0.0]

    def begin(self, epoch: int, steps: int) -> None:
        """An epoch starts (or resumes): its points so far are the baseline, so a resumed run's next point covers
        the same steps an uninterrupted run's would."""
        self.every, self.steps = max(1, math.ceil(steps / POINTS_PER_EPOCH)), steps
        mine = [r for r in self.rows if epoch < r["epoch"] <= epoch + 1]
        done = [sum(r["train_loss"] * r["examples"] for r in mine),
                sum(r[f"train_{self.metric}"] * r.get(self.unit, r["examples"]) for r in mine),
                sum(r["examples"] for r in mine), sum(r.get(self.unit, r["examples"]) for r in mine)]
        self.base = done  # resumed past its last point, the next one covers the steps in between

    def due(self, step_in_epoch: int) -> bool:
        return step_in_epoch % self.every == 0 or step_in_epoch == self.steps

    def add(self, step: int, epoch: int, step_in_epoch: int, sums: list[float], lr: float) -> bool:
        """A point from the running sums (loss, metric, examples, the metric's weight) at this step, with the weight
        under the unit's name when it is not the examples; False when no example came since the last one (every one
        skipped as unreadable)."""
        d = [now - before for now, before in zip(sums, self.base)]
        self.base = list(sums)
        if d[2] <= 0:
            return False
        weight = {self.unit: int(d[3])} if self.unit != "examples" else {}
        self.rows.append({"step": step, "epoch": round(epoch + step_in_epoch / self.steps, 6),
                          "train_loss": d[0] / d[2], f"train_{self.metric}": d[1] / max(d[3], 1),
                          "examples": int(d[2])} | weight | {"lr": lr})
        return True


class Progress:
    """What a run shows and records as it goes: the reporter's lines, and (rank 0) metrics.jsonl, steps.jsonl and
    curves.png, and the same points and rows sent to the run's trackers (archc.train.tracking)."""

    def __init__(self, report: Quiet, run_dir: RunDir | None, metric: str, unit: str = "examples") -> None:
        from archc.train.curves import Curves

        self.report, self.run_dir = report, run_dir
        self.curves = Curves(run_dir.curves, metric) if run_dir is not None else None
        self.steps = StepLog(metric, unit=unit)
        self.written = time.monotonic()
        self.track = Trackers()  # none until rank 0's run opens them (Trackers.open)

    def resume(self, step: int) -> None:
        """A resumed run keeps the points up to its saved step."""
        if self.run_dir is not None:
            self.steps.rows = self.run_dir.read_steps(step)

    def epoch_begin(self, epoch: int, steps: int) -> None:
        if self.run_dir is not None:
            self.steps.begin(epoch, steps)

    def step(self, step: int, epoch: int, step_in_epoch: int, sums: Callable[[], list[float]], lr: float,
             history: list[dict]) -> None:
        """After a training step: a point when one is due, and within a long epoch, the files and curves redrawn
        every LIVE_S, so a run is visible before its first epoch ends."""
        if self.run_dir is None or not self.steps.due(step_in_epoch):
            return
        if not self.steps.add(step, epoch, step_in_epoch, sums(), lr):
            return
        self.track.step(self.steps.rows[-1])
        if time.monotonic() - self.written >= LIVE_S and step_in_epoch < self.steps.steps:  # the last: epoch_end
            self.write(history, force=True)

    def checkpoint(self, history: list[dict]) -> None:
        """A mid-epoch checkpoint follows: the points up to it are written first, so --resume continues them."""
        if self.run_dir is not None:
            self.write(history, force=False)

    def write(self, history: list[dict], force: bool) -> None:
        assert self.run_dir is not None and self.curves is not None
        self.run_dir.write_metrics(history)
        self.run_dir.write_steps(self.steps.rows)
        self.curves.update(history, self.steps.rows, force=force)
        self.track.flush()
        self.written = time.monotonic()

    def epoch_end(self, history: list[dict], best: bool, last: bool) -> None:
        """Record the epoch (rewriting metrics.jsonl and steps.jsonl; the curves are throttled unless `last`), then
        show its row."""
        self.track.epoch(history[-1])
        if self.run_dir is not None and self.curves is not None:
            self.write(history, force=last)
        self.report.epoch_end(history[-1], best)

    def final(self, history: list[dict]) -> None:
        """The curves of every epoch (one a resumed run did not redraw included)."""
        if self.curves is not None and history:
            self.curves.update(history, self.steps.rows, force=True)
