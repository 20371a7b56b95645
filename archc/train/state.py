"""The loop's position (State), this rank's running sums (Tally), and saving or resuming both with the learner."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import torch

from archc.errors import InputError, SpecError
import archc.train.checkpoint as ckpt
from archc.train.distributed import Dist
from archc.train.learner import Learner
from archc.train.run_dir import RunDir


@dataclass
class State:
    """The loop's position and bookkeeping: saved as JSON in every checkpoint."""

    spec_sha256: str
    world: int
    epoch: int = 0                  # epochs completed
    step_in_epoch: int = 0          # batches done in the current epoch
    step: int = 0                   # optimizer steps in all
    best_value: float | None = None
    best_loss: float | None = None  # the best epoch's validation loss: breaks ties on the monitored metric
    best_epoch: int | None = None
    bad_epochs: int = 0             # epochs since the best one (early stopping)
    stopped_early: bool = False
    history: list[dict] = field(default_factory=list)


class Tally:
    """This rank's sums over the current epoch: (3,) float64 loss sum, metric sum, examples."""

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)

    def add(self, loss: torch.Tensor, metric: torch.Tensor, n: int) -> None:
        self.sums[0] += loss
        self.sums[1] += metric
        self.sums[2] += n

    def means(self) -> tuple[float, float]:
        """This rank's mean loss and metric so far (a device sync)."""
        loss, metric, n = self.sums.tolist()
        return loss / max(n, 1), metric / max(n, 1)

    def total(self, dist: Dist) -> tuple[float, float, int]:
        """Loss sum, metric sum and examples over every rank."""
        loss, metric, n = dist.sum(self.sums.clone()).tolist()
        return loss, metric, int(n)

    def reset(self) -> None:
        self.sums.zero_()


def save(run_dir: RunDir, learner: Learner, state: State, tally: Tally, dist: Dist) -> None:
    """Every rank contributes its RNG and partial sums; rank 0 writes the checkpoint."""
    comm = learner.device if learner.device.type == "cuda" else torch.device("cpu")
    rngs = dist.gather(ckpt.torch_rng(learner.device).to(comm))
    sums = dist.gather(tally.sums.clone())
    if dist.main:
        ckpt.save_state(run_dir, learner.model, learner.optimizer, asdict(state) | learner.scalars(),
                        [{"rng": g, "acc": a} for g, a in zip(rngs, sums)])


def resume(run_dir: RunDir, learner: Learner, tally: Tally, dist: Dist, spec_sha256: str) -> State:
    """Continue from train_state.safetensors: same spec and world size, then every piece of state."""
    saved = ckpt.load_state(run_dir)
    sc = saved.scalars
    if sc.get("spec_sha256") != spec_sha256:
        raise SpecError("--resume: expected the spec and recipe of the interrupted run, received a different "
                        "one (its hash differs)", hint=f"compare with {run_dir.spec}")
    if sc.get("world") != dist.world:
        raise InputError(f"--resume: expected --nproc {sc.get('world')} as in the interrupted run, received "
                         f"{dist.world}", where="--nproc")
    ckpt.restore(saved, learner.model, learner.optimizer)
    if sc.get("best_epoch") is not None:  # the test split and the export read it at the end: checked before epoch 1
        ckpt.check_weights(run_dir.best, learner.model)
    learner.load_scalars(sc)
    mine = saved.group(f"rank.{dist.rank}.")
    ckpt.set_torch_rng(mine["rng"], learner.device)
    tally.sums.copy_(mine["acc"].to(learner.device))
    return State(**{f.name: sc[f.name] for f in fields(State) if f.name in sc})  # older states lack best_loss
