"""The training loop: epochs of steps over reproducible batches, validation, checkpoints, best-weights export.

Reproducibility on CPU: the seed fixes the initial weights (archc.lower), the data order (one generator per
epoch) and dropout (torch's global RNG, saved in every checkpoint). With deterministic algorithms on, two runs
of one spec, seed and data end with bit-identical weights, and so does a run killed and resumed.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from archc.errors import ArchcError, InputError, SpecError
from archc.tasks import Task, objective_for
from archc.train import checkpoint as ckpt
from archc.train.batches import (DeviceSplit, epoch_order, load_checked, local_batch, normalized, preprocess_of,
                                 steps_per_epoch)
from archc.train.curves import Curves
from archc.train.devices import amp_dtype, deterministic, pick_device, seed_everything
from archc.train.distributed import Dist
from archc.train.optim import build_optimizer, build_scheduler, schedule_of
from archc.train.progress import Quiet, reporter
from archc.train.recipe import RunResult, Setup

RESULT, METRICS, CURVES, ONNX, SPEC = "result.json", "metrics.jsonl", "curves.png", "model.onnx", "spec.json"
# Deleted in this order by a fresh run: the state before the result, so a rank that looks meanwhile never sees
# "a state without a result" (an unfinished run) where there was a finished one.
ARTIFACTS = (ckpt.STATE, ckpt.STATE_JSON, ckpt.WEIGHTS, ckpt.BEST, METRICS, CURVES, ONNX, SPEC, RESULT)
EVAL_BATCH = 1024

__all__ = ["RESULT", "prepare_dir", "train"]


@dataclass
class State:
    """The loop's position and bookkeeping: saved as JSON in every checkpoint."""

    spec_sha256: str
    world: int
    epoch: int = 0                  # epochs completed
    step_in_epoch: int = 0          # batches done in the current epoch
    step: int = 0                   # optimizer steps in all
    best_value: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0             # epochs since the best one (early stopping)
    stopped_early: bool = False
    history: list[dict] = field(default_factory=list)


@dataclass
class Run:
    """Everything one training process holds."""

    setup: Setup
    dist: Dist
    device: torch.device
    amp: torch.dtype | None
    objective: Task                 # the task kind's objective (archc.tasks)
    model: nn.Module                # the generated module (what is saved and exported)
    net: nn.Module                  # the module that trains: `model`, or DDP around it
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: Any                     # torch.amp.GradScaler for fp16, else None
    splits: dict[str, DeviceSplit]
    preprocess: dict | None
    state: State
    acc: torch.Tensor               # (3,) float64: this rank's loss sum, metric sum, examples this epoch
    report: Quiet
    curves: Curves | None
    steps: int                      # batches per epoch
    last_lr: float = 0.0

    @property
    def out(self) -> Path:
        return self.setup.out

    @property
    def recipe(self):
        return self.setup.spec.train


# --- the run folder ---------------------------------------------------------------------------------------------

def prepare_dir(setup: Setup, resume: bool, main: bool) -> None:
    """Check the folder fits the request (resume needs a state, a fresh run must not bury an unfinished one)."""
    out = setup.out
    has_state, done = (out / ckpt.STATE).exists(), (out / RESULT).exists()
    if resume and not has_state:
        raise InputError(f"--resume: expected a checkpoint in {str(out)!r}, received none "
                         f"({ckpt.STATE} is missing)", where="--resume", hint="train without --resume first")
    if not resume and has_state and not done:
        raise InputError(f"{str(out)!r} holds an unfinished run", where="--out",
                         hint="pass --resume to continue it, or choose another --out")
    if not main:
        return
    out.mkdir(parents=True, exist_ok=True)
    for tmp in out.glob(".*.tmp"):  # left by a process killed while writing (archc.util's atomic writes)
        tmp.unlink(missing_ok=True)
    if not resume:
        for name in ARTIFACTS:
            (out / name).unlink(missing_ok=True)
    from archc.util import write_text_atomic
    write_text_atomic(out / SPEC, json.dumps(setup.raw, indent=2) + "\n")


# --- building a run ---------------------------------------------------------------------------------------------

def build(setup: Setup, dist: Dist, device: torch.device, quiet: bool) -> Run:
    """Data, model, optimizer, schedule: a fresh run at step 0."""
    from archc.lower import lower

    spec, recipe = setup.spec, setup.spec.train
    objective = objective_for(spec, setup.graph)
    dataset = load_checked(setup, objective)
    preprocess = preprocess_of(dataset, setup.input_name) if spec.data.normalize else None  # type: ignore[union-attr]
    if preprocess:
        dataset = normalized(dataset, preprocess[setup.input_name])
    seed_everything(recipe.seed)
    model = lower(setup.graph, seed=recipe.seed).to(device)
    if dist.rank:
        torch.manual_seed(recipe.seed + dist.rank)  # other ranks draw other dropout masks
    steps = steps_per_epoch(len(dataset.train), recipe.batch_size)
    optimizer = build_optimizer(model, recipe.optimizer)
    amp = amp_dtype(recipe.precision, device)
    splits = objective.splits(dataset, device, DeviceSplit.of)
    main = dist.main
    r = Run(setup, dist, device, amp, objective, model, model, optimizer, build_scheduler(optimizer, recipe, steps),
            torch.amp.GradScaler("cuda") if amp == torch.float16 else None, splits, preprocess,
            State(setup.sha256, dist.world), torch.zeros(3, dtype=torch.float64, device=device),
            reporter(quiet, main), Curves(setup.out / CURVES, objective.metric) if main else None, steps)
    r.report.begin(_header(r, dataset), objective.metric)
    return r


def _header(r: Run, dataset) -> list[str]:
    recipe, g = r.recipe, r.setup.graph
    amp = {torch.bfloat16: ", bf16 autocast", torch.float16: ", fp16 autocast"}.get(r.amp, "")  # type: ignore[arg-type]
    norm = ", normalized with train-split mean/std" if r.preprocess else ""
    return [f"[bold]{g.name}[/bold] ({r.setup.file}): {g.total_params:,} parameters, task {r.objective.kind}",
            f"data {dataset.name}: {len(dataset.train)} train / {len(dataset.val)} val / {len(dataset.test)} test"
            f"{norm}",
            f"{recipe.optimizer.name} lr {recipe.optimizer.lr:g}, {schedule_of(recipe).name} schedule, batch "
            f"{recipe.batch_size}, {recipe.epochs} epochs on {r.device}{amp} x {r.dist.world} process(es)",
            f"writing {r.out}"]


# --- checkpoints ------------------------------------------------------------------------------------------------

def _scalars(r: Run) -> dict[str, Any]:
    sched = {k: v for k, v in r.scheduler.state_dict().items() if k != "lr_lambdas"}
    return asdict(r.state) | {"scheduler": sched, "scaler": r.scaler.state_dict() if r.scaler else None}


def save(r: Run) -> None:
    """Every rank contributes its RNG and partial sums; rank 0 writes the checkpoint."""
    comm = r.device if r.device.type == "cuda" else torch.device("cpu")
    rngs = r.dist.gather(ckpt.torch_rng(r.device).to(comm))
    accs = r.dist.gather(r.acc.clone())
    if r.dist.main:
        ckpt.save_state(r.out, r.model, r.optimizer, _scalars(r),
                        [{"rng": g, "acc": a} for g, a in zip(rngs, accs)])


def resume(r: Run) -> None:
    """Continue from train_state.safetensors: same spec and world size, then every piece of state."""
    saved = ckpt.load_state(r.out)
    sc = saved.scalars
    if sc.get("spec_sha256") != r.setup.sha256:
        raise SpecError("--resume: expected the spec and recipe of the interrupted run, received a different "
                        "one (its hash differs)", hint=f"compare with {r.out / SPEC}")
    if sc.get("world") != r.dist.world:
        raise InputError(f"--resume: expected --nproc {sc.get('world')} as in the interrupted run, received "
                         f"{r.dist.world}", where="--nproc")
    ckpt.restore(saved, r.model, r.optimizer)
    r.scheduler.load_state_dict(sc["scheduler"] | {"lr_lambdas": [None] * len(r.optimizer.param_groups)})
    if r.scaler is not None and sc.get("scaler"):
        r.scaler.load_state_dict(sc["scaler"])
    r.state = State(**{f.name: sc[f.name] for f in fields(State)})
    mine = saved.group(f"rank.{r.dist.rank}.")
    ckpt.set_torch_rng(mine["rng"], r.device)
    r.acc.copy_(mine["acc"].to(r.device))
    r.report.note(f"resuming at epoch {r.state.epoch + 1}, step {r.state.step_in_epoch} of {r.steps} "
                  f"(global step {r.state.step})")


# --- training ---------------------------------------------------------------------------------------------------

def train_step(r: Run, x: torch.Tensor, y: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on a batch; `scale` turns the summed loss into this rank's share of the batch mean."""
    with torch.autocast(r.device.type, dtype=r.amp, enabled=r.amp is not None):
        out, y = r.objective.forward(r.net, x, y, training=True)
        loss = r.objective.loss(out, y)
    r.optimizer.zero_grad(set_to_none=True)
    scaled = loss * scale
    (r.scaler.scale(scaled) if r.scaler is not None else scaled).backward()
    if r.recipe.grad_clip is not None:
        if r.scaler is not None:
            r.scaler.unscale_(r.optimizer)
        nn.utils.clip_grad_norm_(r.model.parameters(), r.recipe.grad_clip)
    r.last_lr = r.optimizer.param_groups[0]["lr"]
    if r.scaler is not None:
        r.scaler.step(r.optimizer)
        r.scaler.update()
    else:
        r.optimizer.step()
    r.scheduler.step()
    return loss.detach(), r.objective.metric_sum(out.detach(), y)


def train_epoch(r: Run) -> None:
    """The rest of the current epoch, from its stored step; checkpoints every N steps when asked."""
    s, recipe = r.state, r.recipe
    order = epoch_order(len(r.splits["train"]), recipe.seed, s.epoch)
    r.net.train()
    r.report.epoch_begin(s.epoch, recipe.epochs, r.steps, s.step_in_epoch)
    every = recipe.checkpoint_every
    while s.step_in_epoch < r.steps:
        idx, n = local_batch(order, s.step_in_epoch, recipe.batch_size, r.dist.rank, r.dist.world)
        x, y = r.splits["train"].take(idx)
        loss, metric = train_step(r, x, y, r.dist.world / n)
        r.acc[0] += loss
        r.acc[1] += metric
        r.acc[2] += len(idx)
        s.step += 1
        s.step_in_epoch += 1
        r.report.step(n, lambda: _running(r))
        if every and s.step % every == 0 and s.step_in_epoch < r.steps:
            save(r)


def _running(r: Run) -> tuple[float, float]:
    loss, metric, n = r.acc.tolist()
    return loss / max(n, 1), metric / max(n, 1)


@torch.no_grad()
def evaluate(r: Run, split: DeviceSplit, shard: bool = True) -> tuple[float, float, int]:
    """Mean loss and metric over a split (sharded over ranks and summed, unless shard is False)."""
    r.model.eval()
    rank, world = (r.dist.rank, r.dist.world) if shard else (0, 1)
    sums = torch.zeros(3, dtype=torch.float64, device=r.device)
    for chunk in torch.arange(len(split))[rank::world].split(EVAL_BATCH):
        x, y = split.take(chunk)
        with torch.autocast(r.device.type, dtype=r.amp, enabled=r.amp is not None):
            out, y = r.objective.forward(r.model, x, y, training=False)
            sums[0] += r.objective.loss(out, y)
        sums[1] += r.objective.metric_sum(out, y)
        sums[2] += len(chunk)
    if shard:
        r.dist.sum(sums)
    loss, metric, n = sums.tolist()
    return loss / max(n, 1), metric / max(n, 1), int(n)


def end_epoch(r: Run, seconds: float) -> None:
    """Validate, log, keep the best weights, decide on early stopping, checkpoint."""
    s, m = r.state, r.objective.metric
    loss_sum, metric_sum, n = r.dist.sum(r.acc.clone()).tolist()
    if not math.isfinite(loss_sum):
        raise ArchcError(f"training diverged: the train loss of epoch {s.epoch + 1} is {loss_sum / n}",
                         where="train", hint="lower the learning rate, or set [train] grad_clip")
    val_loss, val_metric, _ = evaluate(r, r.splits["val"])
    row = {"epoch": s.epoch + 1, "step": s.step, "lr": r.last_lr, "train_loss": loss_sum / n,
           f"train_{m}": metric_sum / n, "val_loss": val_loss, f"val_{m}": val_metric,
           "seconds": round(seconds, 4), "samples_per_s": round(n / max(seconds, 1e-9), 1)}
    value = val_metric if r.recipe.monitor == "metric" else val_loss
    best = r.objective.better(value, s.best_value, r.recipe.monitor)
    if best:
        s.best_value, s.best_epoch, s.bad_epochs = value, s.epoch + 1, 0
        if r.dist.main:  # before the state that records it: a crash in between redoes the epoch
            ckpt.save_weights(r.out / ckpt.BEST, r.model, {"epoch": s.epoch + 1, "step": s.step})
    else:
        s.bad_epochs += 1
    s.history.append(row)
    s.epoch, s.step_in_epoch = s.epoch + 1, 0
    r.acc.zero_()
    patience = r.recipe.early_stopping
    s.stopped_early = bool(patience and s.bad_epochs >= patience and s.epoch < r.recipe.epochs)
    save(r)
    if r.dist.main:
        write_metrics(r.out / METRICS, s.history)
        r.curves.update(s.history, force=s.epoch >= r.recipe.epochs or s.stopped_early)  # type: ignore[union-attr]
    r.report.epoch_end(row, best)


def write_metrics(path: Path, history: list[dict]) -> None:
    """metrics.jsonl: one JSON object per epoch (rewritten atomically, so a resumed run never repeats one)."""
    from archc.util import write_text_atomic
    write_text_atomic(path, "".join(json.dumps(row) + "\n" for row in history))


def fit(r: Run) -> None:
    """Epochs until the recipe's count or early stopping."""
    while r.state.epoch < r.recipe.epochs and not r.state.stopped_early:
        start = time.perf_counter()
        train_epoch(r)
        end_epoch(r, time.perf_counter() - start)
    if r.state.stopped_early:
        r.report.note(f"early stopping: no improvement in {r.recipe.early_stopping} epochs")


def finish(r: Run, seconds: float) -> RunResult:
    """Rank 0: the best weights on the test split, exported to model.onnx with the preprocessing recorded."""
    from archc.export import export

    s, m = r.state, r.objective.metric
    if s.history:
        r.curves.update(s.history, force=True)  # type: ignore[union-attr]
    ckpt.load_weights(r.out / ckpt.BEST, r.model)
    test_loss, test_metric, n = evaluate(r, r.splits["test"], shard=False)
    test = ({"loss": test_loss, m: test_metric, "examples": n} | r.objective.summary(test_loss, test_metric)
            if n else {})
    cpu = r.model.to("cpu").float()
    extra: dict[str, Any] = {"training": {"best_epoch": s.best_epoch, "epochs_run": s.epoch, "test": test,
                                          "data": r.setup.spec.data.source}}  # type: ignore[union-attr]
    if r.preprocess:
        extra["preprocess"] = r.preprocess
    extra |= r.objective.metadata()  # e.g. a language model's tokenizer
    report = export(cpu, r.setup.graph, r.setup.spec, r.setup.raw, r.setup.sha256, r.out / ONNX,
                    extra_metadata=extra)
    paths = {k: str(r.out / v) for k, v in (("spec", SPEC), ("checkpoint", ckpt.WEIGHTS), ("best", ckpt.BEST),
             ("train_state", ckpt.STATE), ("metrics", METRICS), ("curves", CURVES), ("onnx", ONNX),
             ("result", RESULT))}
    best_row = next((h for h in s.history if h["epoch"] == s.best_epoch), {})
    result = RunResult(str(r.out), m, s.epoch, s.best_epoch, best_row, s.history[-1] if s.history else {}, test,
                       s.stopped_early, round(seconds, 3), paths)
    from archc.util import write_text_atomic
    write_text_atomic(r.out / RESULT, result.to_json() + "\n")
    more = "".join(f", {k} {v:.4f}" for k, v in test.items() if k not in ("loss", m, "examples"))
    scored = (f"test {m} {test_metric:.4f} (loss {test_loss:.4f}{more}, {n} examples, best epoch {s.best_epoch})"
              if test else "no test split to score")
    r.report.note(f"{scored}; wrote {report.path} (parity max abs diff {report.max_abs_diff:.1e})")
    return result


def train(setup: Setup, dist: Dist, device_name: str, resume_run: bool, quiet: bool) -> RunResult | None:
    """One process's whole run; returns the result on rank 0 (None elsewhere)."""
    start = time.perf_counter()
    device = pick_device(device_name, dist.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    prepare_dir(setup, resume_run, dist.main)
    with deterministic(device):
        dist.init(device)
        try:
            r = build(setup, dist, device, quiet)
            if resume_run:
                resume(r)
            if dist.active:
                multi = len(setup.graph.outputs) > 1
                r.net = nn.parallel.DistributedDataParallel(
                    r.model, device_ids=[device.index] if device.type == "cuda" else None,
                    find_unused_parameters=multi)
            try:
                fit(r)
                result = finish(r, time.perf_counter() - start) if dist.main else None
            finally:
                r.report.close()
            dist.barrier()
            return result
        finally:
            dist.close()
