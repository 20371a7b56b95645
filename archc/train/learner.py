"""The model and what updates it: optimizer, learning-rate schedule, grad scaler and autocast, one step at a time."""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn

from archc.errors import ArchcError
from archc.tasks import Task
from archc.train.checkpoint import weights_of
from archc.train.devices import amp_dtype, channels_last, fused_optimizer, seed_everything, to_channels_last
from archc.train.distributed import Dist
from archc.train.optim import build_optimizer, build_scheduler
from archc.train.recipe import Setup
from archc.train.sharding import local
from archc.train.splits import Examples, batches
from archc.train.tuning import Adapters, Tuned, freeze, frozen

EVAL_BATCH = 1024


def all_finite(bad: torch.Tensor, dist: Dist) -> bool:
    """Did no rank flag a non-finite value? `bad` (1,) counts this rank's; summed so that every rank agrees
    (a rank that stopped alone would leave the others waiting in DDP's all-reduce)."""
    return dist.sum(bad).item() == 0


def diverged(what: str, kept: int) -> ArchcError:
    """The error that stops a diverging run; the checkpoints written up to step `kept` hold finite weights."""
    saved = f"checkpoints written so far (up to step {kept}) hold finite weights" if kept else "nothing was saved"
    return ArchcError(f"training diverged: {what}; {saved}", where="train",
                      hint="lower the learning rate, or set [train] grad_clip")


@dataclass
class Learner:
    """The generated module (`model`: what is saved and exported), the module that trains (`net`: `model`, or
    DDP around it) and its optimizer state, with the objective that scores its outputs."""

    objective: Task
    model: nn.Module
    net: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: Any                     # torch.amp.GradScaler for fp16, else None
    device: torch.device
    amp: torch.dtype | None
    grad_clip: float | None
    last_lr: float = 0.0
    channels_last: bool = False     # the model trains in channels_last memory format (devices.channels_last)
    compiled: bool = False          # `net` runs through torch.compile ([train] compile)
    adapters: Adapters | None = None  # [train.lora]'s, hooked to `model`'s linear layers (archc.train.tuning)
    ddp: nn.parallel.DistributedDataParallel | None = None  # `net`'s DDP, under --nproc
    base: nn.Module | None = None   # what computes before DDP or torch.compile: `trained`, or its checkpointed form
    strategy: str = "ddp"           # [train] strategy: "fsdp" checkpoints through torch.distributed.checkpoint
    sharded: bool = False           # the model is sharded over the ranks (FSDP2: strategy fsdp under --nproc)
    main: bool = True               # rank 0: where gathered weights land

    @property
    def trained(self) -> nn.Module:
        """What the optimizer updates and DDP synchronizes: the model, with its adapters when it has some."""
        return Tuned(self.model, self.adapters) if self.adapters is not None else self.model

    @classmethod
    def build(cls, setup: Setup, objective: Task, device: torch.device, steps: int, rank: int, world: int = 1,
              init: Any = None) -> "Learner":
        """The spec's module at its seed's initial weights (or `init`'s, an archc.weights.Init), with the recipe's
        optimizer and per-step schedule; its blocks checkpointed ([train] activation_checkpointing) and, with
        strategy fsdp over `world` > 1 ranks (the process group is up), sharded, before the optimizer takes its
        parameters."""
        from archc.lower import lower
        from archc.train.sharding import checkpointed, shard

        recipe = setup.spec.train
        seed_everything(recipe.seed)
        model = lower(setup.graph, seed=recipe.seed).to(device)
        if init is not None:  # pretrained weights replace the seed's, before any sharding
            init.load(model)
        layout = channels_last(model, device)
        if layout:
            model = model.to(memory_format=torch.channels_last)
        freeze(model, frozen(setup.graph, recipe))
        adapters = Adapters.for_graph(model, setup.graph, recipe.lora, recipe.seed) if recipe.lora else None
        if rank:
            torch.manual_seed(recipe.seed + rank)  # other ranks draw other dropout masks
        body = checkpointed(model, setup.graph) if recipe.activation_checkpointing else model
        amp = amp_dtype(recipe.precision, device)
        sharded = recipe.strategy == "fsdp" and world > 1
        if sharded:  # the parameters become DTensor shards: the optimizer is built on those
            shard(model, body, setup.graph, amp)
        trained = Tuned(model, adapters) if adapters is not None else model
        base = Tuned(body, adapters) if adapters is not None else body
        optimizer = build_optimizer(trained, recipe.optimizer, fused=fused_optimizer(device))
        scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
        learner = cls(objective, model, base, optimizer, build_scheduler(optimizer, recipe, steps), scaler, device,
                      amp, recipe.grad_clip, channels_last=layout, adapters=adapters, base=base,
                      strategy=recipe.strategy, sharded=sharded, main=rank == 0)
        if recipe.compile:
            learner.compile()
        return learner

    def compile(self) -> None:
        """Train through torch.compile; what it cannot compile runs eagerly (dynamo's own fallback, with its
        warning) rather than failing the run."""
        import torch._dynamo

        torch._dynamo.config.suppress_errors = True
        self.net = torch.compile(self.net)
        self.compiled = True

    def distribute(self, several_outputs: bool) -> None:
        """Train through DistributedDataParallel (the process group is up), compiled again if it was."""
        self.net = self.ddp = nn.parallel.DistributedDataParallel(
            self.base, device_ids=[self.device.index] if self.device.type == "cuda" else None,
            find_unused_parameters=several_outputs)
        if self.compiled:
            self.compile()

    def autocast(self, enabled: bool = True) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.amp, enabled=enabled and self.amp is not None)

    def step(self, x: Any, y: torch.Tensor, scale: float, dist: Dist, done: int, epoch: int,
             sync: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch's gradients, added to those of the optimizer step's batches before it ([train] accumulate);
        `scale` turns the summed loss into this rank's share of the mean over the optimizer step's examples; `sync`:
        the step's last batch, whose backward DDP all-reduces (the others run under no_sync). `update` then steps.
        Returns the summed loss and metric (scalars). A non-finite loss on any rank stops every rank before the
        update (`done`: the optimizer steps before this one, `epoch`: from 1, for the message), so no NaN reaches
        the weights or a checkpoint."""
        if self.channels_last:
            x = to_channels_last(x)
        with self.autocast():
            out, y = self.objective.forward(self.net, x, y, training=True)
            loss = self.objective.loss(out, y)
        if not all_finite((~torch.isfinite(loss.detach())).float().reshape(1), dist):
            value = loss.item()
            shown = f"{value:g}" if not math.isfinite(value) else "NaN or inf on another rank"
            error = diverged(f"the train loss at step {done + 1} (epoch {epoch}) is {shown}", done)
            if done == 0:  # no update yet: the learning rate played no part
                error.hint = ("before any update: the starting weights or the data overflow float32 (an --init "
                              "checkpoint's magnitudes, the spec's init, or huge input values), not the learning rate")
            raise error
        scaled = loss * scale
        with self.ddp.no_sync() if self.ddp is not None and not sync else contextlib.nullcontext():
            (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
        return loss.detach(), self.objective.metric_sum(out.detach(), y)

    def update(self) -> None:
        """The optimizer step on the gradients gathered since the last one, the schedule's step, gradients cleared."""
        if self.grad_clip is not None:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.trained.parameters(), self.grad_clip)
        self.last_lr = self.optimizer.param_groups[0]["lr"]
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def weights(self) -> dict[str, torch.Tensor] | None:
        """The model's state_dict on the CPU with the adapters merged in: what the weights files hold (the spec's
        plain model, which `archc export` and `--init` read). Sharded: gathered (every rank calls it), returned on
        rank 0 and None elsewhere."""
        if self.sharded:
            from archc.train.sharding import full_weights

            return full_weights(self.model, self.main)
        own = weights_of(self.model)
        return self.adapters.merged(own) if self.adapters is not None else own

    def gathered(self, graph: Any) -> None:
        """Rank 0 after a sharded run: a plain model (its weights loaded next) for the test split and the export,
        which run on this process alone."""
        from archc.lower import lower

        self.model = self.net = self.base = lower(graph, seed=None).to(self.device)
        self.sharded = False

    def unhook(self) -> None:
        """The adapters taken off (the merged weights are loaded next): the model alone computes, as exported."""
        if self.adapters is not None:
            self.adapters.detach()

    def check_weights(self, dist: Dist, step: int) -> None:
        """Stop when a weight is NaN or inf (a finite loss can still take a step too far): run before any save."""
        with torch.no_grad():
            bad = sum((~torch.isfinite(local(p))).sum() for p in self.trained.parameters())
            bad = torch.as_tensor(bad, dtype=torch.float32, device=self.device).reshape(1)
        if not all_finite(bad, dist):
            raise diverged(f"{int(bad.item())} weight(s) are NaN or inf after step {step}", step - 1)

    @torch.no_grad()
    def evaluate(self, split: Examples, dist: Dist | None = None, exact: bool = False) -> tuple[float, float, int]:
        """Mean loss and metric over a split: sharded over the ranks of `dist` and summed, or whole (None). `exact`:
        in float32 (no autocast, no TF32), as the exported model computes, so the figure is the model.onnx's."""
        module = self.base if self.sharded else self.model  # a sharded model's forward is its root's
        self.model.eval()
        module.eval()
        rank, world = (dist.rank, dist.world) if dist is not None else (0, 1)
        sums = torch.zeros(4, dtype=torch.float64, device=self.device)  # loss, metric, examples, metric weight
        size = getattr(split, "eval_batch", EVAL_BATCH)
        plan = list(torch.arange(len(split))[rank::world].split(size))
        real = len(plan)
        if self.sharded:  # every rank joins each forward's all-gathers: as many as rank 0's, the extra ones unscored
            plan += [torch.zeros(1, dtype=torch.long)] * (len(torch.arange(len(split))[::world].split(size)) - real)
        for i, (chunk, (x, y)) in enumerate(zip(plan, batches(split, plan))):
            if x is None:  # every example of the chunk unreadable and skipped ([data] on_error)
                continue
            with self.autocast(enabled=not exact), float32_only(self.device, exact):
                out, y = self.objective.forward(module, x, y, training=False)
                if i >= real:
                    continue
                sums[0] += self.objective.loss(out, y)
            sums[1] += self.objective.metric_sum(out, y)
            sums[2] += len(y)
            sums[3] += self.objective.metric_weight(y)
        if dist is not None:
            dist.sum(sums)
        loss, metric, n, weight = sums.tolist()
        return loss / max(n, 1), metric / max(weight, 1), int(n)

    def scalars(self) -> dict[str, Any]:
        """The schedule's and grad scaler's state as JSON (the optimizer's goes with the weights)."""
        sched = {k: v for k, v in self.scheduler.state_dict().items() if k != "lr_lambdas"}
        return {"scheduler": sched, "scaler": self.scaler.state_dict() if self.scaler else None}

    def load_scalars(self, scalars: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(scalars["scheduler"] | {"lr_lambdas": [None] * len(self.optimizer.param_groups)})
        if self.scaler is not None and scalars.get("scaler"):
            self.scaler.load_state_dict(scalars["scaler"])


@contextlib.contextmanager
def float32_only(device: torch.device, on: bool = True) -> Iterator[None]:
    """CUDA's TF32 matmuls and convolutions off (their 10-bit mantissas are not float32's) for the block (`on`)."""
    if device.type != "cuda" or not on:
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
