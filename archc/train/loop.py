"""The training loop: epochs of steps over reproducible batches, validation, checkpoints, then the test split
and the export of the best weights.

Reproducibility on CPU: the seed fixes the initial weights (archc.lower), the data order (one generator per
epoch) and dropout (torch's global RNG, saved in every checkpoint). With deterministic algorithms on, two runs
of one spec, seed and data end with bit-identical weights, and so does a run killed and resumed.
"""
from __future__ import annotations

import os
import time
from itertools import islice
from pathlib import Path
from typing import Any

import torch

import archc.train.checkpoint as ckpt
from archc.errors import DataError
from archc.metadata import Facts
from archc.train.batches import batches_per_epoch, epoch_order, local_batch, steps_per_epoch
from archc.train.dataset import Data, load_data, recorded_scale, recorded_table
from archc.threads import in_force, torch_threads
from archc.train.devices import deterministic, pick_device, share_with_workers, train_threads
from archc.train.distributed import Dist, fingerprint, lost_peers
from archc.train.export_check import check_export
from archc.train.learner import Learner
from archc.tasks import objective_for
from archc.train.optim import schedule_of
from archc.train.progress import Progress, reporter
from archc.train.recipe import Setup
from archc.train.run_dir import LOCK_ENV, RunDir, RunResult
from archc.train.splits import Examples, batch_key, batches
from archc.train.tracking import Trackers
from archc.train.tuning import describe as describe_tuning
from archc.train.state import CheckpointClock, State, Tally, check_resumed_tokenizer, resume, save

__all__ = ["build", "train"]


def build(setup: Setup, dist: Dist, device: torch.device, resume: bool = False) -> tuple[Learner, Data]:
    """Data, then model, optimizer and schedule: a fresh run at step 0. Resuming, a tabular input's columns are
    encoded, and the targets scaled, as the run recorded them (not fitted again)."""
    objective = objective_for(setup.spec, setup.graph)
    data = load_for(setup, objective, device, resume, dist.world, baselines=dist.main)
    share_with_workers(data.splits, dist.world)  # loader worker processes take cores: fewer torch threads
    recipe = setup.spec.train
    steps = steps_per_epoch(len(data.splits["train"]), recipe.batch_size, recipe.accumulate)
    # pretrained weights (--init) replace the seed's before the first step (or a resume's state)
    learner = Learner.build(setup, objective, device, steps, dist.rank, dist.world, setup.init)
    return learner, data


def load_for(setup: Setup, objective: Any, device: torch.device, resume: bool = False, world: int = 1,
             baselines: bool = False) -> Data:
    """The run's data on `device`; resuming, encoded and scaled as the run recorded them (not fitted again). With
    `baselines` (rank 0), a tabular run's reference scores (archc.train.baselines)."""
    scale = recorded_scale(setup.run_dir) if resume and setup.run_dir.state.exists() else None
    return load_data(setup, objective, device, recorded_table(setup.run_dir) if resume else None, scale, world,
                     baselines=baselines)


def header(setup: Setup, learner: Learner, data: Data, world: int) -> list[str]:
    """The lines a run starts with: model, data, recipe, devices, run folder."""
    recipe, g = setup.spec.train, setup.graph
    amps = {torch.bfloat16: ", bf16 autocast", torch.float16: ", fp16 autocast"}
    amp = amps.get(learner.amp, "") if learner.amp is not None else ""
    amp += ", channels_last" if learner.channels_last else ""
    amp += ", torch.compile" if learner.compiled else ""
    norm = ", normalized with train-split mean/std" if data.preprocess else ""
    if data.target_scale:
        norm += ", targets standardized with train-split mean/std (outputs restored in the export)"
    if data.reading:
        norm += f", {data.reading}"
    augment = []
    if data.augment:
        from archc.train.augment import summary

        augment = [f"augmenting training batches: {summary(setup.spec.data.augment)}"]
    from rich.markup import escape  # names and paths are text: '[/x]' in a folder's name is not a closing tag

    plain = [f"data {data.name}: {data.sizes()}{norm}", *augment,
             f"{recipe.optimizer.name} lr {recipe.optimizer.lr:g}, {schedule_of(recipe).name} schedule, batch "
             f"{recipe.batch_size}{accumulated(recipe.batch_size, recipe.accumulate)}, {recipe.epochs} epochs on "
             f"{learner.device}{amp} x {world} process(es){strategy_note(recipe.strategy, world)}"
             f"{', activation checkpointing per block' if recipe.activation_checkpointing else ''}"
             f"{threads_note(learner.device)}",
             *filter(None, [describe_tuning(learner.model, learner.adapters, recipe)]),
             f"writing {setup.run_dir.root}"] + init_line(setup)
    return [f"[bold]{escape(g.name)}[/bold] ({escape(str(setup.file))}): {g.total_params:,} parameters, task "
            f"{learner.objective.kind}", *(escape(line) for line in plain)]


def accumulated(batch: int, k: int) -> str:
    """' x 4 accumulated (4096 per optimizer step)': [train] accumulate, when it is on."""
    return f" x {k} accumulated ({batch * k} per optimizer step)" if k > 1 else ""


def strategy_note(strategy: str, world: int) -> str:
    """' (FSDP2: weights, gradients and optimizer state sharded)': [train] strategy, when it is fsdp."""
    if strategy != "fsdp":
        return ""
    return " (FSDP2: weights, gradients and optimizer state sharded per block)" if world > 1 else \
        " (strategy fsdp: one process, sharded checkpoints)"


def threads_note(device: torch.device) -> str:
    """', 2 threads (2 cores)': the torch threads this process computes with and why (archc.threads)."""
    choice = in_force()
    n = torch.get_num_threads()
    why = f" ({choice.reason})" if choice is not None and choice.threads == n else ""
    return f", {n} thread{'s' * (n != 1)}{why}" if device.type == "cpu" else ""


def init_line(setup: Setup) -> list[str]:
    """The checkpoint a run starts from (`--init`), when it has one."""
    init = setup.init
    if init is None:
        return []
    return [f"starting from {init.path}" + (f" through {init.map_path}" if init.map_path else "")]


# --- training ---------------------------------------------------------------------------------------------------

def train_epoch(learner: Learner, split: Examples[Any], state: State, tally: Tally, setup: Setup, dist: Dist,
                progress: Progress, clock: CheckpointClock | None = None) -> None:
    """The rest of the current epoch over the training split, from its stored step; checkpoints every N steps
    when asked. A step is an optimizer step over [train] accumulate batches (checkpoints fall between steps)."""
    recipe, k = setup.spec.train, setup.spec.train.accumulate
    steps = steps_per_epoch(len(split), recipe.batch_size, k)
    order = epoch_order(len(split), recipe.seed, state.epoch)
    learner.net.train()
    progress.report.epoch_begin(state.epoch, recipe.epochs, steps, state.step_in_epoch)
    progress.epoch_begin(state.epoch, steps)
    every = recipe.checkpoint_every
    todo = range(state.step_in_epoch * k, batches_per_epoch(len(split), recipe.batch_size))
    shares = [local_batch(order, b, recipe.batch_size, dist.rank, dist.world) for b in todo]
    keys = [batch_key(recipe.seed, state.epoch, b, dist.rank) for b in todo]
    skipped = len(getattr(split, "skipped", ()))
    loaded = iter(batches(split, [idx for idx, _ in shares], keys))
    for first in range(0, len(shares), k):
        group = shares[first:first + k]
        total = sum(n for _, n in group)  # the optimizer step's examples, over every rank
        stepped = False
        for i, ((_, n), (x, y)) in enumerate(zip(group, islice(loaded, len(group)))):
            if x is not None:  # None: every example of this share was unreadable and skipped ([data] on_error)
                loss, metric = learner.step(x, y, dist.world / total, dist, state.step, state.epoch + 1,
                                            sync=i == len(group) - 1)
                tally.add(loss, metric, len(y), learner.objective.metric_weight(y))
                stepped = True
        if stepped:
            learner.update()
        state.step += 1
        state.step_in_epoch += 1
        progress.report.step(total, tally.means)
        progress.step(state.step, state.epoch, state.step_in_epoch, tally.sums.tolist, learner.last_lr,
                      state.history)
        if ((every and state.step % every == 0) or (clock is not None and clock.due(state.step))) \
                and state.step_in_epoch < steps:  # the epoch's last step: end_epoch checkpoints
            learner.check_weights(dist, state.step)
            progress.checkpoint(state.history)  # the points so far, before the state that a resume starts from
            save(setup.run_dir, learner, state, tally, dist, clock)
    note_skipped(split, skipped, "this epoch", progress)


def note_skipped(split: Examples[Any], before: int, what: str, progress: Progress) -> None:
    """A note of the examples `split` left out since it had left out `before` ([data] on_error = "skip")."""
    left_out = getattr(split, "skipped", [])[before:]
    if left_out:
        progress.report.note(f"skipped {len(left_out)} unreadable example(s) {what} ([data] on_error = \"skip\"): "
                             + "; ".join(left_out[:3]) + (" ..." if len(left_out) > 3 else ""))


def end_epoch(learner: Learner, val: Examples[Any], state: State, tally: Tally, setup: Setup, dist: Dist,
              progress: Progress, seconds: float, clock: CheckpointClock | None = None) -> None:
    """Validate, log, keep the best weights, decide on early stopping, checkpoint."""
    recipe, m = setup.spec.train, learner.objective.metric
    loss_sum, metric_sum, n, weight = tally.total(dist)
    learner.check_weights(dist, state.step)  # before the best weights or a checkpoint are saved
    before = len(getattr(val, "skipped", ()))
    val_loss, val_metric, _ = learner.evaluate(val, dist)
    note_skipped(val, before, "of the validation split", progress)
    row = {"epoch": state.epoch + 1, "step": state.step, "lr": learner.last_lr, "train_loss": loss_sum / n,
           f"train_{m}": metric_sum / max(weight, 1), "val_loss": val_loss, f"val_{m}": val_metric,
           "seconds": round(seconds, 4), "samples_per_s": round(n / max(seconds, 1e-9), 1)}
    value = val_metric if recipe.monitor == "metric" else val_loss
    best = learner.objective.better(value, state.best_value, recipe.monitor, val_loss, state.best_loss)
    if best:
        state.best_value, state.best_loss, state.best_epoch, state.bad_epochs = value, val_loss, state.epoch + 1, 0
        weights = learner.weights() if dist.main or learner.sharded else None  # sharded: every rank gathers
        if weights is not None:  # before the state that records it: a crash in between redoes the epoch
            ckpt.save_weights(setup.run_dir.best, weights, {"epoch": state.epoch + 1, "step": state.step,
                                                            "spec_sha256": state.spec_sha256})
    else:
        state.bad_epochs += 1
    state.history.append(row)
    state.epoch, state.step_in_epoch = state.epoch + 1, 0
    tally.reset()
    patience = recipe.early_stopping
    state.stopped_early = bool(patience and state.bad_epochs >= patience and state.epoch < recipe.epochs)
    save(setup.run_dir, learner, state, tally, dist, clock)
    progress.epoch_end(state.history, best, last=state.epoch >= recipe.epochs or state.stopped_early)
    if setup.on_epoch is not None and dist.main:  # after the checkpoint: what it raises leaves a resumable run
        setup.on_epoch(row, m)


def fit(learner: Learner, data: Data, state: State, tally: Tally, setup: Setup, dist: Dist,
        progress: Progress) -> None:
    """Epochs until the recipe's count or early stopping."""
    recipe = setup.spec.train
    clock = CheckpointClock(recipe.checkpoint_minutes, dist, learner.device)
    while state.epoch < recipe.epochs and not state.stopped_early:
        start = time.perf_counter()
        train_epoch(learner, data.splits["train"], state, tally, setup, dist, progress, clock)
        end_epoch(learner, data.splits["val"], state, tally, setup, dist, progress, time.perf_counter() - start,
                  clock)
    if state.stopped_early:
        progress.report.note(f"early stopping: no improvement in {recipe.early_stopping} epochs")


# --- after training (rank 0) ------------------------------------------------------------------------------------

def evaluate_test(learner: Learner, test: Examples[Any], best: Path) -> dict[str, float]:
    """The best weights (loaded into the learner's model) on the whole test split, in float32 (a figure the exported
    model.onnx reproduces, whatever autocast trained it); {} without one."""
    learner.unhook()  # the best weights hold the adapters merged in
    ckpt.load_weights(best, learner.model)
    loss, metric, n = learner.evaluate(test, exact=True)
    if not n:
        return {}
    return {"loss": loss, learner.objective.metric: metric, "examples": n} | learner.objective.summary(loss, metric)


def export_model(model: torch.nn.Module, setup: Setup, path: Path, facts: Facts) -> Any:
    """model.onnx (and a language model's KV-cache file) from the model on the CPU in float32, checked against
    torch: archc.export.passes.EXPORT_PASSES; its report (path, parity)."""
    from archc.export import export

    cpu = model.to("cpu").float()
    return export(setup.compiled, path, module=cpu, exporter=setup.exporter, extra_metadata=facts,
                  optimize=setup.optimize, kv_cache=True)


def write_report(setup: Setup, objective: Any, baselines: dict | None = None, held: Any = None) -> str | None:
    """report.json and report.png of the exported model.onnx on the test split, made as `archc infer model.onnx
    --input SOURCE --report DIR` makes them (the same reader, ONNX Runtime, the same report); a line saying so, or
    None for task kinds without a report. `held`: the test split as training read it (archc.train.dataset.held_test),
    scored without reading the source again; None, or a split read_split cannot take: read from the source."""
    from archc.runtime import Model
    from archc.runtime.evaluate import load_split, read_split
    from archc.runtime.report import summary, write
    from archc.runtime.session import EVAL_BATCH
    from archc.runtime.tabular import scored
    from archc.tasks.base import for_model, makes_report

    if not makes_report(type(objective)):
        return None
    run_dir, source = setup.run_dir, rooted(setup.spec.data.source, setup.data_root)  # type: ignore[union-attr]
    model = Model.open(run_dir.onnx, device="cpu")
    try:  # a lazy split is read as it is scored: an unreadable file can surface in either
        data = (read_split(model, source, held) if held is not None else None) or load_split(model, source, "test")
        if data.y is None or not len(data.y):
            return None
        outputs, y = scored(model.run(data.feeds, batch_size=EVAL_BATCH), data.y)
    except DataError as e:
        if setup.spec.data.on_error != "skip":  # type: ignore[union-attr]
            raise
        return f"no test split report: {e} ([data] on_error = \"skip\")"  # an unreadable file, as in training
    detail = for_model(model).report(model, outputs, y)
    if detail is None:
        return None
    if baselines:  # the tabular run's reference scores on the same split (archc.train.baselines)
        detail["baselines"] = baselines
    write(run_dir.path("report"), run_dir.path("report_png"), detail, data.description)
    return f"test split report ({summary(detail)}): wrote {run_dir.path('report')} and {run_dir.path('report_png')}"


def rooted(source: str, root: Path | None) -> str:
    """`source` with a relative path argument read against `root` (the spec's folder, where training read it) and
    written relative to the working folder, so that infer's reader finds the same file and the report's title
    holds no absolute path the user did not write; other sources as they are."""
    from archc.data.sources import rebased

    return rebased(source, root, Path.cwd())


def data_metadata(objective: Any, data: Data, setup: Setup) -> Facts:
    """The data's facts the export writes (archc.metadata): the preprocessing, the task's own (e.g. a language
    model's tokenizer), and the source with its path relative to the run folder (the spec's own is relative to the
    spec's folder; never the user's absolute path), so `archc quantize` finds the held-out split from the model's
    folder. Written to the run folder as the run starts (export.json), so `archc export` adds the same to any
    checkpoint (rebased to the folder it writes to)."""
    source = None
    if setup.spec.data is not None:
        from archc.data.sources import rebased

        source = rebased(setup.spec.data.source, setup.data_root, setup.run_dir.root)
    facts = Facts(labels=data.labels,  # archc.task's labels: the names of the data's classes
                  source=source, preprocess=data.preprocess or None,
                  target_scale=data.target_scale or None,  # restored in the graph (archc.export.restore)
                  features=data.features or None,  # a csv: source's feature columns, matched to a header by name
                  columns=data.table,  # the fitted Table: what turns a row of named cells into the model's input
                  augment=data.augment or None)  # what training did to its batches (not in the graph)
    return facts.merged(Facts.from_record(objective.metadata()))


def training_summary(best_epoch: int | None, epochs_run: int, test: dict, source: str) -> dict[str, Any]:
    """The ONNX's `archc.training` metadata: the run's summary."""
    return {"training": {"best_epoch": best_epoch, "epochs_run": epochs_run, "test": test, "data": source}}


def training_metadata(learner: Learner, data: Data, state: State, setup: Setup, test: dict) -> Facts:
    """The facts the final export writes (archc.metadata): the run's summary, the data's, the task's own."""
    summary = training_summary(state.best_epoch, state.epoch, test, setup.spec.data.source)  # type: ignore[union-attr]
    return data_metadata(learner.objective, data, setup).merged(Facts.from_record(summary))


def result_of(run_dir: RunDir, metric: str, state: State, test: dict, seconds: float,
              labels: list[str] | None = None, threads: int | None = None) -> RunResult:
    best_row = next((h for h in state.history if h["epoch"] == state.best_epoch), {})
    return RunResult(str(run_dir.root), metric, state.epoch, state.best_epoch, best_row,
                     state.history[-1] if state.history else {}, test, state.stopped_early, round(seconds, 3),
                     run_dir.paths(), labels, threads)


def tracked_files(run_dir: RunDir) -> list[Path]:
    """What a run's trackers keep as artifacts at its end: the ONNX files, the report, the spec, result and curves."""
    from archc.runtime.kvcache import model_files

    roles = ("report", "report_png", "spec", "result", "metrics", "steps", "curves")
    return model_files(run_dir.onnx) + [run_dir.path(role) for role in roles]


def peak_memory(dist: Dist, device: torch.device) -> dict[str, list[int]]:
    """Every rank's peak memory so far, gathered (a collective: every rank calls it), bytes in rank order: "rss",
    the process's peak resident set (getrusage's ru_maxrss), and on CUDA "cuda", torch's peak allocation."""
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    mine = [rss] + ([torch.cuda.max_memory_allocated(device)] if device.type == "cuda" else [])
    parts = dist.gather(torch.tensor(mine, dtype=torch.int64, device=device))
    rows = torch.stack(parts).cpu().tolist()
    return {"rss": [r[0] for r in rows]} | ({"cuda": [r[1] for r in rows]} if device.type == "cuda" else {})


def conclude(learner: Learner, data: Data, state: State, setup: Setup, progress: Progress,
             start: float, peak: dict[str, list[int]] | None = None) -> RunResult:
    """Rank 0: score the best weights on the test split, export them, write the result, say so."""
    m, run_dir, seconds = learner.objective.metric, setup.run_dir, time.perf_counter() - start
    progress.final(state.history)
    before = len(getattr(data.splits["test"], "skipped", ()))
    test = evaluate_test(learner, data.splits["test"], run_dir.best)
    note_skipped(data.splits["test"], before, "of the test split", progress)
    report = export_model(learner.model, setup, run_dir.onnx, training_metadata(learner, data, state, setup, test))
    from archc.train.baselines import lines as baseline_lines, verdict

    baselines = verdict(data.baselines, test)  # with "behind": archc's score trails the gradient boosting's
    detail = write_report(setup, learner.objective, baselines, data.held) if test else None
    result = result_of(run_dir, m, state, test, seconds, data.labels, torch.get_num_threads())
    result.baselines = baselines
    result.peak_memory = peak
    run_dir.write_result(result)
    progress.track.end(tracked_files(run_dir))
    more = "".join(f", {k} {v:.4f}" for k, v in test.items() if k not in ("loss", m, "examples"))
    scored = (f"test {m} {test[m]:.4f} (loss {test['loss']:.4f}{more}, {test['examples']} examples, best epoch "
              f"{state.best_epoch})" if test else "no test split to score")
    progress.report.note(f"{scored}; wrote {report.path} (parity max abs diff {report.max_abs_diff:.1e})")
    if detail:
        progress.report.note(detail)
    for line in baseline_lines(baselines, test, bool(data.preprocess) or data.table is not None):
        progress.report.note(line)
    from archc.export import report_lines

    for line in report_lines(report):  # the row front, the KV cache, the optimizer (archc.export.passes)
        progress.report.note(line)
    return result


def train(setup: Setup, dist: Dist, device_name: str, resume_run: bool, quiet: bool,
          force: bool = False) -> RunResult | None:
    """One process's whole run; returns the result on rank 0 (None elsewhere). The run folder is checked first
    (read-only) and claimed by rank 0 only once the data and model are built: a bad --data touches nothing."""
    start = time.perf_counter()
    device = pick_device(device_name, dist.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if dist.node == 0:  # another node's ranks may not see node 0's disk, where the run folder is
        setup.run_dir.check(resume_run, force)
    with deterministic(device), torch_threads(train_threads(setup.threads, setup.spec.train.threads, dist.world)):
        dist.init(device)
        try:
            try:
                learner, data = build(setup, dist, device, resume_run)
                if resume_run and setup.run_dir.state.exists():  # before the claim rewrites the run's tokenizer.json
                    check_resumed_tokenizer(setup.run_dir, learner.objective.metadata(),
                                            getattr(learner.objective, "tokenizer_path", None))
                if not (dist.active and os.environ.get(LOCK_ENV)):  # a --nproc launcher checked it; else every rank
                    check_export(setup, data_metadata(learner.objective, data, setup))  # fails alike, before a claim
                # every rank trains on rank 0's spec and split: on several machines each read its own copies
                dist.agree({"spec sha256": setup.sha256, "data split": fingerprint(data.splits)})
                claim = setup.run_dir.prepare(setup.raw, resume_run, force) if dist.main else None
                resuming = dist.decide(claim.resuming if claim is not None else False)  # rank 0 sees the folder
                try:
                    if claim is not None:
                        setup.run_dir.write_files(learner.objective.files())  # before the metadata that names them
                        setup.run_dir.write_export_metadata(data_metadata(learner.objective, data, setup).to_record())
                    return run_built(learner, data, setup, dist, resuming, quiet, start)
                finally:
                    if claim is not None:
                        claim.release()
            except RuntimeError as e:  # a collective whose peer is gone: one message, not a gloo traceback
                lost = lost_peers(e, dist)
                if lost is None:
                    raise
                raise lost from None
        finally:
            dist.close()


def run_built(learner: Learner, data: Data, setup: Setup, dist: Dist, resuming: bool, quiet: bool,
              start: float) -> RunResult | None:
    """Fit from step 0 or the saved state, then conclude on rank 0."""
    progress = Progress(reporter(quiet, dist.main), setup.run_dir if dist.main else None, learner.objective.metric,
                        learner.objective.metric_unit)
    progress.report.begin(header(setup, learner, data, dist.world), learner.objective.metric)
    tally = Tally(learner.device)
    state = State(setup.sha256, dist.world)
    if resuming:
        recipe = setup.spec.train
        steps = steps_per_epoch(len(data.splits["train"]), recipe.batch_size, recipe.accumulate)
        state = resume(setup.run_dir, learner, tally, dist, setup.sha256, steps)
        progress.resume(state.step)
        progress.report.note(f"resuming at epoch {state.epoch + 1}, step {state.step_in_epoch} of {steps} "
                             f"(global step {state.step})")
    if dist.main:  # after the resume: a tracker continues from the saved step
        progress.track = Trackers.open(setup.track, setup, learner.objective.metric, state.step, resuming)
    if dist.active and not learner.sharded:  # FSDP2 shards as the learner is built
        learner.distribute(several_outputs=len(setup.graph.outputs) > 1)
    result = None
    try:
        fit(learner, data, state, tally, setup, dist, progress)
        peak = peak_memory(dist, learner.device)  # training's, before rank 0's test split and export
        if learner.sharded and dist.main:  # the test split and the export: rank 0 alone, on the best weights
            learner.gathered(setup.graph)
        result = conclude(learner, data, state, setup, progress, start, peak) if dist.main else None
    finally:
        progress.track.close(finished=result is not None)
        progress.report.close()
        for split in data.splits.values():  # loader workers persist between epochs
            getattr(split, "close", lambda: None)()
    dist.barrier()
    return result
