"""Experiment tracking: one registered class per tracker (TensorBoard, MLflow, W&B), fed by archc.train.progress on
rank 0 with what metrics.jsonl and steps.jsonl record.

A tracker is told, as the run starts, the spec as used, validate's summary and the hyperparameters (the recipe's
[train] with its defaults and the spec's [params], flattened: `train.optimizer.lr`, `params.hidden`); then each point
of steps.jsonl (tags `step/<key>`) and each row of metrics.jsonl (tags `epoch/<key>`), both at the global step; at the
end, the run's files (model.onnx, report.json, ...). A tracker that raises (a server down, a full disk, an import
that fails mid-run) is noted once on stderr and dropped: the run goes on without it and never fails for it.
tracking.json in the run folder keeps the ids of the tracker runs (MLflow's run id, W&B's), so --resume continues
the same run; TensorBoard's events past the resumed step are purged by its own reader (SummaryWriter's purge_step).

Nothing here imports torch or a tracker's package until a run opens it (`archc train --help` stays fast).
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import click

from archc.errors import InputError
from archc.train.run_dir import RunDir, say
from archc.util import write_text_atomic

if TYPE_CHECKING:
    from archc.train.recipe import Setup

NOT_LOGGED = ("step", "epoch", "examples")  # the axes of a row (and a point's example count), not curves


class Start:
    """What a tracker is told as the run starts (or resumes at global step `step`)."""

    def __init__(self, run_dir: RunDir, name: str, spec: dict[str, Any], summary: str, params: dict[str, Any],
                 metric: str, step: int, resuming: bool) -> None:
        self.run_dir, self.name, self.spec, self.summary = run_dir, name, spec, summary
        self.params, self.metric, self.step, self.resuming = params, metric, step, resuming


class Tracker:
    """One tracker: its flag, the package it needs, and the hooks a run calls (each may raise: Trackers drops it)."""

    name = ""
    flag = ""             # the `archc train` flag: turns it on, or off for a tracker on by default
    default = False       # on without a flag (TensorBoard)
    env = ""              # an environment variable that turns it on when set (MLflow's MLFLOW_TRACKING_URI)
    module = ""           # the package it imports
    extra = ""            # archc's optional extra that installs it
    help = ""

    def __init__(self, start: Start, record: dict[str, Any] | None) -> None:
        """Open the tracker's run; `record`: what `record()` returned before a resume (None: a fresh run)."""

    @classmethod
    def wanted(cls, given: bool) -> bool:
        """Whether the run uses it: the flag flips the default; the variable turns it on."""
        return given != cls.default or bool(cls.env and os.environ.get(cls.env))

    def record(self) -> dict[str, Any] | None:
        """What --resume needs to continue this tracker's run (tracking.json), or None."""
        return None

    def step(self, row: dict[str, Any]) -> None:
        """A point of steps.jsonl."""

    def epoch(self, row: dict[str, Any]) -> None:
        """A row of metrics.jsonl."""

    def flush(self) -> None:
        """Make what was logged durable (called as metrics.jsonl is written: every epoch, checkpoint, LIVE_S)."""

    def end(self, files: list[Path]) -> None:
        """The run finished: its files (model.onnx, report.json, ...) as artifacts."""

    def close(self, finished: bool) -> None:
        """Release the tracker (after `end`, or a run that failed)."""


REGISTRY: dict[str, type[Tracker]] = {}


def register(cls: type[Tracker]) -> type[Tracker]:
    """Add a tracker class under its name (its flag and help then appear in `archc train --help`)."""
    assert cls.name and cls.name not in REGISTRY, f"tracker {cls.name!r} registered twice"
    REGISTRY[cls.name] = cls
    return cls


def scalars(row: dict[str, Any], prefix: str) -> dict[str, float]:
    """A row's numbers as `prefix/key` (the axes and counts left out; None and flags too)."""
    return {f"{prefix}/{k}": float(v) for k, v in row.items()
            if k not in NOT_LOGGED and isinstance(v, (int, float)) and not isinstance(v, bool)}


def flatten(table: dict[str, Any], prefix: str) -> dict[str, Any]:
    """`{"optimizer": {"lr": 1e-3}}` -> `{"train.optimizer.lr": 1e-3}`; lists as JSON text, None as "null"."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}.{key}"
        if isinstance(value, dict):
            out |= flatten(value, name)
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            out[name] = json.dumps(value)
    return out


def hyperparameters(setup: Setup) -> dict[str, Any]:
    """The recipe's [train] (with its defaults) and the spec's [params], flattened."""
    recipe = setup.spec.train.model_dump(mode="json")
    return flatten(recipe, "train") | flatten(dict(setup.spec.params), "params")


# --- the trackers -----------------------------------------------------------------------------------------------

@register
class TensorBoard(Tracker):
    """Event files in RUN_DIR/tensorboard: scalars per point and per epoch, the spec and validate's summary as text,
    the hyperparameters in the HParams tab."""

    name, flag, default, module, extra = "tensorboard", "--no-tensorboard", True, "tensorboard", ""
    help = "Write no TensorBoard event files (by default RUN_DIR/tensorboard holds them)."

    def __init__(self, start: Start, record: dict[str, Any] | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: TensorBoard's reader hides the events at or past it that an earlier writer left: the points a
        # killed run logged after its last checkpoint (the resumed run logs them again), or all of a run killed
        # before its first checkpoint (a fresh run starts at 0)
        purge = start.step + 1 if start.resuming else 0
        folder = start.run_dir.folder("tensorboard")
        described = start.resuming and any(folder.glob("events.out.tfevents.*"))  # by the run being resumed
        self.writer = SummaryWriter(str(folder), purge_step=purge)
        if not described:
            self.describe(start)
        self.writer.flush()

    def describe(self, start: Start) -> None:
        """The spec and summary as text (markdown code blocks), the hyperparameters for the HParams tab."""
        from torch.utils.tensorboard.summary import hparams

        self.writer.add_text("spec", block(json.dumps(start.spec, indent=2)), 0)
        self.writer.add_text("summary", block(start.summary), 0)
        metrics = {f"epoch/val_{key}": math.nan for key in ("loss", start.metric)}  # the columns HParams shows
        for summary in hparams(start.params, metrics):  # experiment, session start, session end
            self.writer.file_writer.add_summary(summary)  # type: ignore[union-attr]

    def step(self, row: dict[str, Any]) -> None:
        for tag, value in scalars(row, "step").items():
            self.writer.add_scalar(tag, value, row["step"])

    def epoch(self, row: dict[str, Any]) -> None:
        for tag, value in scalars(row, "epoch").items():
            self.writer.add_scalar(tag, value, row["step"])

    def flush(self) -> None:
        self.writer.flush()

    def close(self, finished: bool) -> None:
        self.writer.close()


def block(text: str) -> str:
    """Text as a markdown code block (TensorBoard's text tab renders markdown: keep the table's columns)."""
    return "```\n" + text + "\n```"


@register
class MLflow(Tracker):
    """An MLflow run (experiment: MLFLOW_EXPERIMENT_NAME, else the model's name; run name: the run folder's): the
    hyperparameters as params, the points and rows as metrics (sent in batches as metrics.jsonl is written), the
    run's files as artifacts at the end."""

    name, flag, env, module, extra = "mlflow", "--mlflow", "MLFLOW_TRACKING_URI", "mlflow", "mlflow"
    help = ("Log to MLflow (also when MLFLOW_TRACKING_URI is set; default store: MLflow's own, ./mlflow.db): "
            "params, metrics per point and epoch, the exported model and the report as artifacts.")
    BATCH = 1000  # MLflow's limit of metrics per log_batch request

    def __init__(self, start: Start, record: dict[str, Any] | None) -> None:
        # a server that is down fails a request in seconds, not after MLflow's minutes of retries (the user's own
        # settings win)
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        from mlflow.tracking import MlflowClient

        self.pending: list[Any] = []
        self.ended = False
        if record is not None and isinstance(record.get("run_id"), str):  # the store the run was started in
            self.client = MlflowClient(record.get("tracking_uri") or None)
            self.run_id = record["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            self.logged = {key: self.last_step(key) for key in ("step", "epoch")}
            return
        self.client = MlflowClient()  # MLFLOW_TRACKING_URI, else MLflow's default store
        experiment = os.environ.get("MLFLOW_EXPERIMENT_ID") or self.experiment(
            os.environ.get("MLFLOW_EXPERIMENT_NAME") or start.name)
        run = self.client.create_run(experiment, run_name=start.run_dir.root.name,
                                     tags={"archc.run_dir": str(start.run_dir.root.resolve())})
        self.run_id, self.logged = run.info.run_id, {"step": -1, "epoch": -1}
        from mlflow.entities import Param

        params = [Param(k, str(v)) for k, v in start.params.items()]
        for i in range(0, len(params), 100):  # MLflow's limit of params per request
            self.client.log_batch(self.run_id, params=params[i:i + 100])
        self.client.log_text(self.run_id, start.summary + "\n", "summary.txt")

    def record(self) -> dict[str, Any] | None:
        return {"run_id": self.run_id, "tracking_uri": self.client.tracking_uri}

    def experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        return found.experiment_id if found is not None else self.client.create_experiment(name)

    def last_step(self, prefix: str) -> int:
        """The last global step a run being resumed logged under `prefix`: a bit-identical resume logs the same
        values again up to it, which MLflow (no purge) would hold twice."""
        history = self.client.get_metric_history(self.run_id, f"{prefix}/train_loss")
        return max((m.step for m in history), default=-1)

    def add(self, row: dict[str, Any], prefix: str) -> None:
        from mlflow.entities import Metric

        if row["step"] <= self.logged[prefix]:
            return
        now = int(1000 * time.time())
        self.pending += [Metric(tag, value, now, row["step"]) for tag, value in scalars(row, prefix).items()]

    def step(self, row: dict[str, Any]) -> None:
        self.add(row, "step")

    def epoch(self, row: dict[str, Any]) -> None:
        self.add(row, "epoch")

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        for i in range(0, len(pending), self.BATCH):
            self.client.log_batch(self.run_id, metrics=pending[i:i + self.BATCH])

    def end(self, files: list[Path]) -> None:
        self.flush()
        for path in files:
            self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, "FINISHED")
        self.ended = True

    def close(self, finished: bool) -> None:
        if not self.ended:  # a run that failed (--resume sets it running again)
            self.flush()
            self.client.set_terminated(self.run_id, "FAILED")


@register
class WandB(Tracker):
    """A W&B run in RUN_DIR/wandb, offline unless WANDB_MODE says otherwise (`wandb sync` uploads it later): the
    hyperparameters as its config, the points and rows as history, the run's files as an artifact at the end."""

    name, flag, module, extra = "wandb", "--wandb", "wandb", "wandb"
    help = "Log to Weights & Biases (offline unless WANDB_MODE says otherwise; pip install 'archc[wandb]')."

    def __init__(self, start: Start, record: dict[str, Any] | None) -> None:
        import wandb

        previous = record.get("id") if record is not None else None
        self.after = start.step if start.resuming else -1  # W&B drops a step below its last: not sent again
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT") or start.name, name=start.run_dir.root.name,
                              dir=str(start.run_dir.root),  # W&B's own folder in it: RUN_DIR/wandb
                              config=start.params, id=previous,
                              resume="allow" if previous else None, mode=os.environ.get("WANDB_MODE") or "offline")
        self.name_of_model = start.name

    def record(self) -> dict[str, Any] | None:
        return {"id": self.run.id}

    def step(self, row: dict[str, Any]) -> None:
        if row["step"] > self.after:
            self.run.log(scalars(row, "step"), step=row["step"])

    def epoch(self, row: dict[str, Any]) -> None:
        if row["step"] > self.after:
            self.run.log(scalars(row, "epoch") | {"epoch": row["epoch"]}, step=row["step"])

    def end(self, files: list[Path]) -> None:
        import wandb

        artifact = wandb.Artifact(re.sub(r"[^\w.-]", "-", self.name_of_model) + "-run", type="model")  # W&B's charset
        for path in files:
            artifact.add_file(str(path))
        self.run.log_artifact(artifact)

    def close(self, finished: bool) -> None:
        self.run.finish(exit_code=0 if finished else 1)


# --- choosing and running them ----------------------------------------------------------------------------------

def options(command: Callable) -> Callable:
    """The trackers' `archc train` flags (each `track_<name>`, True when given), from the registry."""
    for cls in reversed(list(REGISTRY.values())):
        command = click.option(cls.flag, f"track_{cls.name}", is_flag=True, help=cls.help)(command)
    return command


def chosen(given: dict[str, bool] | None = None) -> tuple[str, ...]:
    """The trackers a run uses: `given` maps `track_<name>` (or a name) to whether its flag was given."""
    given = {k.removeprefix("track_"): v for k, v in (given or {}).items()}
    return tuple(name for name, cls in REGISTRY.items() if cls.wanted(bool(given.get(name))))


def flags(names: tuple[str, ...]) -> list[str]:
    """The flags that choose `names` (a --nproc launcher's, for its workers)."""
    return [cls.flag for name, cls in REGISTRY.items() if (name in names) != cls.default]


def check(names: tuple[str, ...]) -> None:
    """Before any data is read: each chosen tracker's package is installed (InputError naming the flag if not)."""
    for name in names:
        if name not in REGISTRY:
            raise InputError(f"expected a tracker ({', '.join(REGISTRY)}), received {name!r}", where="track")
        cls = REGISTRY[name]
        if importlib.util.find_spec(cls.module) is None:
            install = f"pip install 'archc[{cls.extra}]'" if cls.extra else f"pip install {cls.module}"
            off = f", or pass {cls.flag}" if cls.default else \
                f" (or unset {cls.env})" if cls.env and os.environ.get(cls.env) else ""
            why = "TensorBoard's event files (on by default)" if cls.default else \
                cls.env if cls.env and os.environ.get(cls.env) else cls.flag
            raise InputError(f"expected the {cls.module} package for {why}, received none installed",
                             where=cls.flag, hint=f"{install}{off}")


class Trackers:
    """The run's trackers (rank 0; none elsewhere): every hook goes to each; one that raises is noted and dropped."""

    def __init__(self, live: list[Tracker] | None = None, run_dir: RunDir | None = None,
                 records: dict[str, Any] | None = None) -> None:
        self.live, self.run_dir, self.records = live or [], run_dir, records or {}

    @classmethod
    def open(cls, names: tuple[str, ...], setup: Setup, metric: str, step: int, resuming: bool) -> "Trackers":
        """Open each tracker named (a resumed run continues the runs tracking.json names)."""
        if not names:
            return cls()
        from archc.summary import as_text

        start = Start(setup.run_dir, setup.spec.model.name, setup.raw, as_text(setup.graph), hyperparameters(setup),
                      metric, step, resuming)
        records = read_records(setup.run_dir) if resuming else {}
        trackers = cls(run_dir=setup.run_dir, records=records)
        for name in names:
            try:
                trackers.live.append(REGISTRY[name](start, records.get(name)))
            except Exception as e:  # noqa: BLE001 - whatever a tracker raises, the run goes on
                trackers.note(name, e, "could not start")
        try:
            trackers.save()
        except OSError as e:  # a full disk: the trackers go on, a resume starts new runs of them
            trackers.note(setup.run_dir.path("tracking").name, e, "could not be written",
                          "a --resume will start new tracker runs")
        return trackers

    def save(self) -> None:
        """tracking.json: what --resume needs to continue each tracker's run (a tracker this resume left out keeps
        its record for the next)."""
        records = self.records | {t.name: r for t in self.live if (r := t.record()) is not None}
        if self.run_dir is not None and records and records != read_records(self.run_dir):
            write_text_atomic(self.run_dir.path("tracking"), json.dumps(records, indent=2) + "\n")

    def note(self, name: str, e: BaseException, what: str, then: str = "training goes on without it") -> None:
        """One line on stderr, --quiet or not: `archc: tracking: mlflow failed (OSError: ...); training goes on ...`."""
        first = (str(e).strip().splitlines() or [""])[0][:300]
        say(f"tracking: {name} {what} ({type(e).__name__}{': ' + first if first else ''}); {then}")

    def call(self, hook: str, *args: Any) -> None:
        for tracker in list(self.live):
            try:
                getattr(tracker, hook)(*args)
            except Exception as e:  # noqa: BLE001 - a tracker never fails the run
                self.live.remove(tracker)
                self.note(tracker.name, e, "failed")
                try:
                    tracker.close(False)
                except Exception:  # noqa: BLE001 - already noted; its own teardown may fail the same way
                    pass

    def step(self, row: dict[str, Any]) -> None:
        self.call("step", row)

    def epoch(self, row: dict[str, Any]) -> None:
        self.call("epoch", row)

    def flush(self) -> None:
        self.call("flush")

    def end(self, files: list[Path]) -> None:
        self.call("end", [p for p in files if p.is_file()])

    def close(self, finished: bool) -> None:
        """Release every tracker (a close that raises is noted like any hook)."""
        live, self.live = self.live, []
        for tracker in live:
            try:
                tracker.close(finished)
            except Exception as e:  # noqa: BLE001 - a tracker never fails the run
                self.note(tracker.name, e, "failed as it closed")


def read_records(run_dir: RunDir) -> dict[str, Any]:
    """tracking.json's records; none when it is missing or not archc's (a fresh tracker run starts instead)."""
    try:
        value = json.loads(run_dir.path("tracking").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return {}
    return {k: v for k, v in value.items() if isinstance(v, dict)} if isinstance(value, dict) else {}
