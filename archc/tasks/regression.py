"""regression: float32 values per example; mean squared (default) or absolute error, scored by MSE and MAE.

Targets are standardized for training with the training split's mean and std (per target value; [data]
scale_target = false turns it off): a loss that starts near 1 whatever the targets' units, so one learning rate
fits diabetes' hundreds and a probability alike. The metric stays in the targets' units, and the exported model
restores its output to them (archc.export.restore), so `archc infer` and a bare ONNX Runtime client read real units.
"""
from __future__ import annotations

from typing import Any

from archc.errors import DataError
from archc.tasks.base import Example, F, Task, np, plain, recorded_output, register, torch
from archc.labels import TARGETS


@register
class Regression(Task):
    """Mean squared (default) or absolute error over any float32 output; metric: mean absolute error."""

    kind = "regression"
    data_task = TARGETS
    metric = "mae"
    higher_is_better = False
    losses = ("mse", "mae")
    noun = "regression model"
    scales_targets = True

    # validate: the base rule (float32 values); infer: the base scoring (MSE, MAE) and value records

    @classmethod
    def truth(cls, model, y):
        """The target values (a number, or a list for several outputs)."""
        return [plain(v) for v in np.asarray(y)]

    @classmethod
    def report(cls, model, outputs, y, top=0):
        """Residual summaries: MAE, RMSE, R^2, quantiles; the pairs for the plots."""
        from archc.tasks.figures import values

        return values(outputs[recorded_output(model) or next(iter(outputs))], np.asarray(y))

    @classmethod
    def example(cls) -> Example:
        return Example({"archc": 1, "model": {"name": "diabetes"}, "inputs": {"x": {"shape": [10]}},
                        "task": {"kind": "regression"},
                        "layers": [{"op": "linear", "out_features": 8, "act": "relu"},
                                   {"op": "linear", "out_features": 1}],
                        "train": {"epochs": 1, "batch_size": 32, "loss": "mae"},
                        "data": {"source": "sklearn:diabetes", "normalize": True}},
                       infer=(("--input", "sklearn:diabetes"),))

    # ---- train ----
    def check(self, dataset) -> None:
        want = int(np.prod([d for d in self.out_type.features if isinstance(d, int)]))
        got = int(np.prod(dataset.train.y.shape[1:]))
        if want != got:
            raise DataError(f"expected {want} target value(s) per example (the output '{self.output_name}' "
                            f"{self.out_type.show()}), received {got}", where=f"data {dataset.name}")

    def __init__(self, spec, graph) -> None:
        super().__init__(spec, graph)
        self.target_mean: np.ndarray | None = None  # float32, shaped like one example's output (or a scalar)
        self.target_std: np.ndarray | None = None
        self._on: dict[Any, tuple[Any, Any]] = {}  # the statistics as tensors, by device

    def standardize(self, train, recorded: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """Mean and std of each target value over the training split (one pair for all values when the output has
        a symbolic axis); a constant target keeps std 1 (it is only shifted). `recorded`: used as they are."""
        if recorded is not None:
            self.target_mean, self.target_std = self.recorded_stats(recorded)
            return recorded
        if len(train) == 0:
            return None
        y = np.asarray(train.y, dtype=np.float64).reshape(len(train), -1)  # (N, K)
        shape = self.stats_shape()
        mean, std = (y.mean(axis=0), y.std(axis=0)) if shape else (y.mean(), y.std())
        std = np.where(std > 0, std, 1.0)
        self.target_mean = np.asarray(mean, dtype=np.float32).reshape(shape)
        self.target_std = np.asarray(std, dtype=np.float32).reshape(shape)
        return {self.output_name: {"mean": self.target_mean.tolist(), "std": self.target_std.tolist()}}

    def stats_shape(self) -> tuple[int, ...]:
        """One statistic per output value (the output's features), or one for all when an axis is symbolic."""
        features = self.out_type.features
        return tuple(features) if all(isinstance(d, int) for d in features) else ()

    def recorded_stats(self, recorded: dict[str, Any]) -> tuple[Any, Any]:
        """(mean, std) of the output from a run's record; DataError when they are not the output's numbers."""
        stats = recorded.get(self.output_name)
        try:
            mean, std = (np.asarray(stats[k], dtype=np.float32) for k in ("mean", "std"))  # type: ignore[index]
        except (KeyError, TypeError, ValueError):
            mean = std = None
        if mean is None or std is None or {mean.shape, std.shape} - {(), self.stats_shape()}:
            raise DataError(f"expected the recorded target_scale of output '{self.output_name}' (mean and std "
                            f"values), received {recorded!r:.200}", where="export.json") from None
        return mean, std

    def stats(self, like) -> tuple[Any, Any] | None:
        """(mean, std) as tensors on `like`'s device, shaped to broadcast over its batch; None when unscaled."""
        if self.target_mean is None or self.target_std is None:
            return None
        if like.device not in self._on:
            self._on[like.device] = (torch.as_tensor(self.target_mean, device=like.device),
                                     torch.as_tensor(self.target_std, device=like.device))
        return self._on[like.device]

    def loss(self, out, y):
        """Against the standardized targets: the model's output is in standardized units while it trains."""
        fn = F.mse_loss if self.loss_name == "mse" else F.l1_loss
        target = y.view_as(out).float()
        stats = self.stats(out)
        if stats is not None:
            target = (target - stats[0]) / stats[1]
        per_value = fn(out.float(), target, reduction="none")
        return per_value.reshape(len(out), -1).mean(dim=1).sum()  # each example: the mean over its values

    def metric_sum(self, out, y):
        """Mean absolute error in the targets' units: the output restored (out * std + mean) as the export does."""
        pred = out.float()
        stats = self.stats(out)
        if stats is not None:
            pred = pred * stats[1] + stats[0]
        return (pred - y.view_as(out).float()).abs().reshape(len(out), -1).mean(dim=1).sum()
