"""regression: float32 values per example; mean squared (default) or absolute error, scored by MSE and MAE."""
from __future__ import annotations

from archc.errors import DataError
from archc.tasks.base import Example, F, Task, np, plain, recorded_output, register
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

    # validate: the base rule (float32 values); infer: the base scoring (MSE, MAE) and value records

    @classmethod
    def truth(cls, model, y):
        """The target values (a number, or a list for several outputs)."""
        return [plain(v) for v in np.asarray(y)]

    @classmethod
    def report(cls, model, outputs, y, top=0):
        """Residual summaries: MAE, RMSE, R^2, quantiles; the pairs for the plots."""
        from archc.runtime.report import values

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

    def loss(self, out, y):
        fn = F.mse_loss if self.loss_name == "mse" else F.l1_loss
        per_value = fn(out.float(), y.view_as(out).float(), reduction="none")
        return per_value.reshape(len(out), -1).mean(dim=1).sum()  # each example: the mean over its values

    def metric_sum(self, out, y):
        return (out.float() - y.view_as(out).float()).abs().reshape(len(out), -1).mean(dim=1).sum()
