"""diffusion: a DDPM denoiser (x_t, t) -> eps trained by noise prediction; `archc infer` samples it."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from archc.errors import InputError, SpecError
from archc.tasks.base import F, Example, SpecLike, Task, register, task_output, torch

if TYPE_CHECKING:
    from archc.ops.base import TensorType

DEFAULT_SCHEDULE = ("cosine", 1000)  # without [train] diffusion: language.model.DiffusionRecipe's defaults


def _roles(graph) -> tuple[list[str], list[str]]:
    """(timestep inputs, image inputs): a timestep is batched with features [] or [1]."""
    times = [n for n, t in graph.inputs.items() if t.batched and t.features in ((), (1,))]
    return times, [n for n in graph.inputs if n not in times]


@register
class Diffusion(Task):
    """DDPM noise prediction: the model maps (x_t, t) to the noise eps that made x_t from a clean image x_0.

    Images come from the source in its range (e.g. [0, 1]) and are scaled to [-1, 1]; t ~ U{0..T-1}, eps ~ N(0, I),
    x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps. Loss and metric: the per-example mean squared error
    of the predicted noise. The exported model is the denoiser; its metadata carries the schedule and scaling.
    """

    kind = "diffusion"
    diffusion_recipe = True
    data_task = None  # images with any labels (ignored)
    metric = "mse"
    higher_is_better = False
    losses = ("mse",)
    own_inputs = True
    modes = ("sample", "run")
    noun = "diffusion model"
    EVAL_SEED = 0  # validation draws the same t and eps every epoch, so epochs compare fairly

    @classmethod
    def check_inputs(cls, graph, spec: SpecLike) -> None:
        """Two inputs, a noised image [batch, ...] and its timestep [batch] or [batch, 1]; images unnormalized."""
        times, images = _roles(graph)
        if len(graph.inputs) != 2 or len(times) != 1 or len(images) != 1:
            shown = ", ".join(f"{n} {t.show()}" for n, t in graph.inputs.items())
            raise SpecError(f"diffusion training expects two inputs, a noised image [batch, ...] and its timestep "
                            f"[batch] or [batch, 1], received {shown}", where="inputs")
        if spec.data is not None and spec.data.normalize:
            raise SpecError("expected normalize = false for diffusion, received true", where="data.normalize",
                            hint="images are scaled to [-1, 1] from the source's range by the objective")

    @classmethod
    def check_output(cls, name: str, out: TensorType, spec: SpecLike) -> None:
        """Not known here: the output is checked against the image input in `validate`."""

    @classmethod
    def validate(cls, graph, spec: SpecLike) -> None:
        """The base rule, then: the output is shaped like the image (the predicted noise)."""
        super().validate(graph, spec)
        name = task_output(graph, spec)
        out, image = graph.type_of(graph.outputs[name]), graph.inputs[_roles(graph)[1][0]]
        if out.shape != image.shape or out.dtype != "float32":
            raise SpecError(f"diffusion training expects the output '{name}' shaped like the image "
                            f"{image.show()} (the predicted noise), received {out.show()}", where="task.kind")

    @classmethod
    def load_split(cls, model, source, split="test", target=None):
        raise InputError(f"expected an .npz of noised images and timesteps to run a diffusion model, received the "
                         f"data source {source!r}", hint="draw images with --num-samples N --output FILE.npy")

    @classmethod
    def example(cls) -> Example:
        return Example({"archc": 1, "model": {"name": "tiny-ddpm"},
                        "inputs": {"x": {"shape": [1, 8, 8]}, "t": {"shape": [1]}}, "task": {"kind": "diffusion"},
                        "layers": [{"id": "temb", "op": "timestep_embedding", "from": "t", "dim": 8},
                                   {"id": "tproj", "op": "linear", "out_features": 4, "act": "silu"},
                                   {"id": "h", "op": "conv2d", "from": "x", "out_channels": 4, "kernel_size": 3,
                                    "padding": "same", "act": "silu"},
                                   {"op": "add_channels", "from": ["h", "tproj"]},
                                   {"id": "eps", "op": "conv2d", "out_channels": 1, "kernel_size": 3,
                                    "padding": "same"}],
                        "train": {"epochs": 1, "batch_size": 64, "monitor": "last",
                                  "diffusion": {"steps": 20, "schedule": "linear"}},
                        "data": {"source": "sklearn:digits"}},
                       infer=(("--num-samples", "2", "--steps", "2", "--output", "{dir}/samples.npy"),))

    # ---- train ----
    def __init__(self, spec, graph) -> None:
        from archc.tasks.noise import Schedule

        super().__init__(spec, graph)
        times, images = _roles(graph)
        self.order, self.time_input, self.data_input = list(graph.inputs), times[0], images[0]
        self.time_type = graph.inputs[self.time_input]
        recipe = spec.train.diffusion
        self.schedule = Schedule.of(*((recipe.schedule, recipe.steps) if recipe else DEFAULT_SCHEDULE))
        self.data_range = (0.0, 1.0)

    def check(self, dataset) -> None:
        """Record the data's range: the sources' [0, 1], widened when the training images exceed it."""
        x = dataset.train.x
        lo, hi = min(0.0, float(x.min())), max(1.0, float(x.max()))
        self.data_range = (lo, hi)

    def forward(self, net, x, y, training):
        lo, hi = self.data_range
        x0 = (x.float() - lo) * (2.0 / (hi - lo)) - 1.0                             # (B, C, H, W) in [-1, 1]
        g = None if training else torch.Generator(device=x.device).manual_seed(self.EVAL_SEED)
        t = torch.randint(0, self.schedule.steps, (len(x0),), device=x.device, generator=g)   # (B,)
        eps = torch.randn(x0.shape, device=x.device, generator=g)                   # (B, C, H, W)
        feeds = {self.data_input: self.schedule.noised(x0, t, eps),
                 self.time_input: t.to(torch.float32 if self.time_type.dtype == "float32" else torch.int64)
                 .view(len(t), *self.time_type.features)}                           # (B,) or (B, 1)
        return self.select(net(*[feeds[n] for n in self.order])), eps

    def loss(self, out, y):
        return F.mse_loss(out.float(), y.float(), reduction="none").reshape(len(out), -1).mean(dim=1).sum()

    def metric_sum(self, out, y):
        return self.loss(out, y)

    def metadata(self) -> dict[str, Any]:
        """archc.diffusion: T, the schedule and its betas, and how images map to the model's [-1, 1]."""
        return {"diffusion": self.schedule.metadata() | {
            "prediction": "epsilon", "data_range": list(self.data_range), "model_range": [-1.0, 1.0],
            "image_input": self.data_input, "timestep_input": self.time_input}}
