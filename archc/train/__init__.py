"""`archc train`: the spec's [train] and [data] recipe, run to a folder of artifacts (imports torch when run)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from archc.train.recipe import Overrides, RunResult, Setup, prepare

__all__ = ["RunResult", "run"]


def run(spec_path: str | Path | dict[str, Any], *, data: str | None = None, out: str | Path | None = None,
        epochs: int | None = None, batch_size: int | None = None, lr: float | None = None, device: str = "auto",
        seed: int | None = None, resume: bool = False, nproc: int = 1, quiet: bool = False) -> RunResult:
    """Train the spec's model; flags override [train]/[data]. Writes `out` (default runs/<model name>):
    spec.json, checkpoint.safetensors + train_state.safetensors, best.safetensors, metrics.jsonl, curves.png,
    model.onnx and result.json. `nproc` > 1 runs that many processes under torchrun (DDP)."""
    from archc.errors import InputError
    from archc.train.distributed import Dist

    if nproc < 1:
        raise InputError(f"expected --nproc of at least 1, received {nproc}", where="--nproc")
    overrides = Overrides(data=data, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    setup = prepare(spec_path, overrides, out)
    dist = Dist.from_env()
    if nproc > 1 and not dist.active:
        return _launch(spec_path, setup, overrides, device, resume, nproc, quiet)
    from archc.train.loop import train

    result = train(setup, dist, device, resume, quiet)
    assert result is not None or not dist.main
    return result  # type: ignore[return-value]


def _launch(spec_path: str | Path | dict[str, Any], setup: Setup, o: Overrides, device: str, resume: bool,
            nproc: int, quiet: bool) -> RunResult:
    """Check what can fail for the user here, then run `nproc` workers under torchrun and read rank 0's result."""
    import json

    import torch

    from archc.errors import InputError
    from archc.train.batches import load_checked
    from archc.train.distributed import launch
    from archc.train.devices import pick_device
    from archc.train.loop import RESULT, prepare_dir
    from archc.tasks import objective_for

    if pick_device(device).type == "cuda" and nproc > torch.cuda.device_count():
        raise InputError(f"expected at most {torch.cuda.device_count()} processes (one per GPU), received "
                         f"{nproc}", where="--nproc")
    load_checked(setup, objective_for(setup.spec, setup.graph))
    prepare_dir(setup, resume, main=True)
    if isinstance(spec_path, dict):  # workers read a file: the spec as used, overrides already applied
        spec_path, o = setup.out / ".launch-spec.json", Overrides()
        spec_path.write_text(json.dumps(setup.raw))
    args = [str(spec_path), "--out", str(setup.out), "--device", device]
    for flag, value in (("--data", o.data), ("--epochs", o.epochs), ("--batch-size", o.batch_size),
                        ("--lr", o.lr), ("--seed", o.seed)):
        if value is not None:
            args += [flag, repr(value) if isinstance(value, float) else str(value)]
    args += ["--resume"] * resume + ["--quiet"] * quiet
    launch(nproc, args)
    return RunResult.from_json((setup.out / RESULT).read_text())
