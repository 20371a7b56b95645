"""The loop's position (State), this rank's running sums (Tally), and saving or resuming both with the learner."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from archc.errors import DataError, InputError, ModelError, SpecError
import archc.train.checkpoint as ckpt
from archc.train.distributed import Dist
from archc.train.learner import Learner
from archc.train.run_dir import RunDir
from archc.train.tuning import PREFIX

SUMS = 4  # a Tally's: loss, metric, examples, the metric's weight


@dataclass
class State:
    """The loop's position and bookkeeping: saved as JSON in every checkpoint."""

    spec_sha256: str
    world: int
    epoch: int = 0                  # epochs completed
    step_in_epoch: int = 0          # optimizer steps done in the current epoch (each [train] accumulate batches)
    step: int = 0                   # optimizer steps in all
    best_value: float | None = None
    best_loss: float | None = None  # the best epoch's validation loss: breaks ties on the monitored metric
    best_epoch: int | None = None
    bad_epochs: int = 0             # epochs since the best one (early stopping)
    stopped_early: bool = False
    history: list[dict] = field(default_factory=list)


class Tally:
    """This rank's sums over the current epoch: (4,) float64 loss sum, metric sum, examples, and the metric's weight
    (what its sum is divided by: Task.metric_weight, the examples unless the task counts another unit)."""

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(SUMS, dtype=torch.float64, device=device)

    def add(self, loss: torch.Tensor, metric: torch.Tensor, n: int, weight: Any) -> None:
        self.sums[0] += loss
        self.sums[1] += metric
        self.sums[2] += n
        self.sums[3] += weight

    def means(self) -> tuple[float, float]:
        """This rank's mean loss and metric so far (a device sync)."""
        loss, metric, n, weight = self.sums.tolist()
        return loss / max(n, 1), metric / max(weight, 1)

    def total(self, dist: Dist) -> tuple[float, float, int, float]:
        """Loss sum, metric sum, examples and the metric's weight over every rank."""
        loss, metric, n, weight = dist.sum(self.sums.clone()).tolist()
        return loss, metric, int(n), weight

    def restore(self, saved: torch.Tensor) -> None:
        """The sums a checkpoint saved; one of an archc that kept three (no weight) weighs the metric by examples."""
        self.sums.copy_(torch.cat([saved, saved[2:3]]) if len(saved) == SUMS - 1 else saved)

    def reset(self) -> None:
        self.sums.zero_()


SYNC_STEPS = 16  # under --nproc, ranks agree on a time-based checkpoint at steps that are multiples of this


class CheckpointClock:
    """[train] checkpoint_minutes: a mid-epoch checkpoint is due once that long has passed since the last one
    (any checkpoint: `save` resets the clock). Rank 0's clock decides; under --nproc the ranks share its decision
    at every SYNC_STEPS-th step (one tiny all-reduce), since saving is a collective every rank must join."""

    def __init__(self, minutes: float, dist: Dist, device: torch.device) -> None:
        self.seconds = minutes * 60 if minutes else None
        self.dist, self.device = dist, device if device.type == "cuda" else torch.device("cpu")
        self.last = time.monotonic()

    def due(self, step: int) -> bool:
        if self.seconds is None:
            return False
        late = time.monotonic() - self.last >= self.seconds
        if not self.dist.active:
            return late
        if step % SYNC_STEPS:
            return False
        flag = torch.tensor([1.0 if late and self.dist.main else 0.0], device=self.device)
        return bool(self.dist.sum(flag).item())

    def reset(self) -> None:
        self.last = time.monotonic()


def save(run_dir: RunDir, learner: Learner, state: State, tally: Tally, dist: Dist,
         clock: CheckpointClock | None = None) -> None:
    """Every rank contributes its RNG and partial sums; rank 0 writes the checkpoint."""
    comm = learner.device if learner.device.type == "cuda" else torch.device("cpu")
    rngs = dist.gather(ckpt.torch_rng(learner.device).to(comm))
    sums = dist.gather(tally.sums.clone())
    if learner.strategy == "fsdp":
        save_sharded(run_dir, learner, state, dist, [{"rng": g, "acc": a} for g, a in zip(rngs, sums)])
    elif dist.main:
        adapters = learner.adapters
        ckpt.save_state(run_dir, learner.model, learner.optimizer, asdict(state) | learner.scalars(),
                        [{"rng": g, "acc": a} for g, a in zip(rngs, sums)],
                        adapters.tensors() if adapters is not None else None,
                        learner.weights() if adapters is not None else None)
    if clock is not None:
        clock.reset()


def save_sharded(run_dir: RunDir, learner: Learner, state: State, dist: Dist,
                 per_rank: list[dict[str, torch.Tensor]]) -> None:
    """[train] strategy = "fsdp": every rank writes its shards into a new folder of train_state.dcp/, then rank 0 the
    state that names it (the switch to the new checkpoint: a crash before it leaves the old one whole), then the
    older folders go."""
    import archc.train.sharding as sharding

    name = dist.broadcast(f"step-{state.step}-{time.time_ns()}")  # unique: a step saved again never overwrites
    root = run_dir.folder("sharded")
    sharding.save(root / name, learner.model, learner.optimizer)
    weights = learner.weights()  # gathered: a collective
    if dist.main:
        assert weights is not None
        ckpt.save_sharded_state(run_dir, name, weights, asdict(state) | learner.scalars(), per_rank)
        sharding.prune(root, keep=name)


def resume(run_dir: RunDir, learner: Learner, tally: Tally, dist: Dist, spec_sha256: str,
           steps: int | None = None) -> State:
    """Continue from train_state.safetensors: same spec and world size, then every piece of state. A state that
    does not restore (a corrupt or foreign file: scalars of the wrong type or range, tensors missing, of another
    shape or not finite) is a ModelError naming the file, before any step. `steps`: batches per epoch."""
    saved = _shared_state(run_dir, dist)
    sc = saved.scalars
    if sc.get("spec_sha256") != spec_sha256:
        raise SpecError("--resume: expected the spec and recipe of the interrupted run, received a different "
                        "one (its hash differs)", hint=f"compare with {run_dir.spec}")
    sharded = learner.strategy == "fsdp"
    if sc.get("world") != dist.world and not sharded:
        raise InputError(f"--resume: expected --nproc {sc.get('world')} as in the interrupted run, received "
                         f"{dist.world}", where="--nproc",
                         hint="a run with [train] strategy = \"fsdp\" resumes at another --nproc")
    try:
        state = State(**{f.name: sc[f.name] for f in fields(State) if f.name in sc})  # older states lack best_loss
        _check_state(state, steps, "history" in sc)
        state.world = dist.world  # strategy fsdp may resume at another world size: the next save records this one
        same = sc.get("world") == dist.world
        _check_tensors(saved, learner, dist, same)
        if sharded:
            _restore_sharded(run_dir, saved, learner)
        else:
            ckpt.restore(saved, learner.model, learner.optimizer)
        if learner.adapters is not None:
            learner.adapters.load({k: v for k, v in saved.tensors.items() if k.startswith(PREFIX)})
        learner.load_scalars(sc)
        if same:
            mine = saved.group(f"rank.{dist.rank}.")
            ckpt.set_torch_rng(mine["rng"], learner.device)
            tally.restore(mine["acc"].to(learner.device))
        elif dist.main:  # another world size: this rank's RNG stays its seed's; rank 0 carries the epoch's sums
            tally.restore(sum(t for k, t in saved.tensors.items() if k.endswith(".acc")).to(learner.device))
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as e:
        first = str(e).splitlines()[0][:200] if str(e) else ""
        raise ModelError(f"expected the training state archc wrote, received one that does not restore "
                         f"({type(e).__name__}: {first})", file=saved.source,
                         hint="start the run again without --resume (--force moves it aside)") from None
    if state.best_epoch is not None and dist.main:  # the test split and the export read it at the end (rank 0):
        ckpt.check_weights(run_dir.best, learner.model)  # checked before epoch 1
    return state


def _restore_sharded(run_dir: RunDir, saved: ckpt.Saved, learner: Learner) -> None:
    """The weights and optimizer state from the sharded folder the state names, re-sharded to this world size."""
    import archc.train.sharding as sharding

    name = saved.scalars["optimizer"].get("sharded") if isinstance(saved.scalars["optimizer"], dict) else None
    folder = run_dir.folder("sharded") / name if isinstance(name, str) and name.startswith("step-") else None
    if folder is None or not (folder / ".metadata").is_file():
        raise ValueError(f"expected the sharded checkpoint the state names in {run_dir.folder('sharded')}, "
                         f"received {'no such folder' if folder is not None else 'a state without one'}"
                         " (a run started with strategy ddp saves no sharded checkpoint)")
    sharding.load(folder, learner.model, learner.optimizer)
    ckpt.in_layout_of_params(learner.optimizer)
    ckpt.set_host_rng(saved.scalars["host_rng"])


def _shared_state(run_dir: RunDir, dist: Dist) -> "ckpt.Saved":
    """The run's train_state: read from the run folder by every rank on one machine; on several, read by rank 0 and
    sent to the others, whose node need not share its disk."""
    if dist.nodes == 1:
        return ckpt.load_state(run_dir)
    blob = dist.share_file(run_dir.state)
    if dist.main:
        return ckpt.load_state(run_dir)
    if blob is None:
        raise ModelError("expected rank 0's training state to resume from, received none", file=str(run_dir.state))
    import tempfile

    with tempfile.TemporaryDirectory(prefix="archc-state-") as folder:
        copy = Path(folder) / run_dir.state.name
        copy.write_bytes(blob)
        return ckpt.load_state_at(copy, str(run_dir.state))


def check_resumed_tokenizer(run_dir: RunDir, metadata: dict[str, Any], path: str | None) -> None:
    """--resume continues on the ids the interrupted run's tokenizer gave: a tokenizer file whose content changed
    since (its sha256 in the data's `metadata` is not the one the run recorded in export.json as it started) is
    refused, before anything in the run folder is written (its own tokenizer.json stays the one it trained with)."""
    recorded_file = run_dir.path("export")
    if not recorded_file.is_file():
        return
    recorded, given = run_dir.read_json("export").get("tokenizer"), metadata.get("tokenizer")
    expected, received = (t.get("sha256") if isinstance(t, dict) else None for t in (recorded, given))
    if expected == received:
        return
    shown = {h: f"sha256 {h[:12]}…" if isinstance(h, str) else "bytes (no tokenizer)" for h in (expected, received)}
    raise DataError(f"--resume: expected the tokenizer the interrupted run trained with ({shown[expected]}, as "
                    f"{recorded_file.name} recorded it), received {path or 'none'!r}, whose content differs "
                    f"({shown[received]})", where="data.source",
                    hint=f"put back the file the run started with (its copy is {run_dir.path('tokenizer')}), "
                         "or start a new run")


def _count(value: object, what: str, low: int = 0, high: float = float("inf")) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        bounds = f"in [{low}, {high}]" if high != float("inf") else f"of at least {low}"
        raise ValueError(f"{what}: expected an integer {bounds}, received {value!r:.60}")


def _check_state(state: State, steps: int | None, has_history: bool = True) -> None:
    """The position's scalars: integers in range, numbers or null, a history of one row (a table) per epoch (when
    the state has one)."""
    _count(state.epoch, "epoch")
    _count(state.step, "step")
    _count(state.bad_epochs, "bad_epochs")
    _count(state.step_in_epoch, "step_in_epoch", high=steps - 1 if steps else float("inf"))
    if state.best_epoch is not None:
        _count(state.best_epoch, "best_epoch", 1, state.epoch)
    for name in ("best_value", "best_loss"):
        v = getattr(state, name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise ValueError(f"{name}: expected a number or null, received {v!r:.60}")
    if not isinstance(state.stopped_early, bool):
        raise ValueError(f"stopped_early: expected true or false, received {state.stopped_early!r:.60}")
    if has_history and not (isinstance(state.history, list) and len(state.history) == state.epoch
            and all(isinstance(row, dict) and row.get("epoch") == i + 1 for i, row in enumerate(state.history))):
        raise ValueError(f"history: expected one row per epoch completed ({state.epoch}), received "
                         f"{state.history!r:.60}")


def _check_tensors(saved: ckpt.Saved, learner: Learner, dist: Dist, same_world: bool = True) -> None:
    """The optimizer's tensors have the shapes of the parameters they follow (torch's load_state_dict does not
    check: a foreign one would broadcast, or fail at the first step); the weights are finite; this rank's RNG and
    sums are there."""
    params = [p for group in learner.optimizer.param_groups for p in group["params"]]
    for name, t in saved.tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            shape = tuple(params[int(idx)].shape)
            if t.dim() and tuple(t.shape) != shape:
                raise ValueError(f"{name}: expected the shape {list(shape)} of parameter {idx}, received "
                                 f"{list(t.shape)}")
        elif name.startswith(("model.", PREFIX)) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name}: expected finite weights, received nan or inf")
    for key, (dtype, n) in {"rng": (torch.uint8, 8), "acc": (torch.float64, SUMS)}.items() if same_world else ():
        t = saved.tensors.get(f"rank.{dist.rank}.{key}")
        if t is None or t.dtype != dtype or t.dim() != 1 or (key == "acc" and len(t) not in (n - 1, n)) or \
                (key == "rng" and (len(t) < n or len(t) < 8 + int(t[:8].view(torch.int64)[0]))):
            raise ValueError(f"rank.{dist.rank}.{key}: expected this rank's {key} state, received "
                             f"{'none' if t is None else f'{t.dtype} {list(t.shape)}'}")
