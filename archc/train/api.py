"""`archc.train.run`: one training run from Python (what `archc train` calls), in this process or under torchrun."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from archc.errors import InputError
from archc.train.recipe import Overrides, Setup, prepare
from archc.train.run_dir import LOCK_ENV, RunResult


def run(spec_path: str | Path | dict[str, Any], *, data: str | None = None, out: str | Path | None = None,
        epochs: int | None = None, batch_size: int | None = None, lr: float | None = None, device: str = "auto",
        seed: int | None = None, resume: bool = False, nproc: int = 1, quiet: bool = False,
        data_root: str | Path | None = None, force: bool = False, init: str | Path | None = None,
        init_map: str | Path | None = None) -> RunResult:
    """Train the spec's model; flags override [train]/[data]. Writes the run folder `out` (default
    runs/<model name>; archc.train.run_dir lists its files). `nproc` > 1 runs that many processes under torchrun
    (DDP). A folder holding a run is refused unless `resume` continues it or `force` moves its files aside to
    DIR.old-N (nothing is deleted). `data_root` replaces the folder relative data paths are read from (the launcher's, for its workers).
    `init` starts from a safetensors checkpoint instead of the seed's weights, through the mapping `init_map`
    (archc.weights; None: the spec's own naming)."""
    from archc.train.distributed import Dist

    from archc.weights import Init

    if nproc < 1:
        raise InputError(f"expected --nproc of at least 1, received {nproc}", where="--nproc")
    start_from = Init.open(init, init_map) if init is not None else None  # a bad file or mapping fails first
    setup = prepare(spec_path, Overrides(data=data, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed), out,
                    data_root)
    setup.init = start_from
    dist = Dist.from_env()
    if nproc > 1 and not dist.active:
        return _launch(setup, device, resume, nproc, quiet, force)
    from archc.train.loop import train

    result = train(setup, dist, device, resume, quiet, force)
    assert result is not None or not dist.main
    return result  # type: ignore[return-value]


def _launch(setup: Setup, device: str, resume: bool, nproc: int, quiet: bool, force: bool) -> RunResult:
    """Check what can fail for the user here, prepare (and lock) the run folder, run `nproc` workers under
    torchrun on its spec.json (the spec as used: every override already applied) and read rank 0's result."""
    import torch

    from archc.train.dataset import load_checked
    from archc.train.devices import pick_device
    from archc.train.distributed import launch
    from archc.tasks import objective_for

    if pick_device(device).type == "cuda" and nproc > torch.cuda.device_count():
        raise InputError(f"expected at most {torch.cuda.device_count()} processes (one per GPU), received "
                         f"{nproc}", where="--nproc")
    run_dir = setup.run_dir
    run_dir.check(resume, force)
    load_checked(setup, objective_for(setup.spec, setup.graph))
    claim = run_dir.prepare(setup.raw, resume, force)
    try:  # the workers see our pid in the lock and do not lock again
        launch(nproc, worker_args(setup, device, claim.resuming, quiet), {LOCK_ENV: str(os.getpid())})
        return run_dir.read_result()
    finally:
        claim.release()


def worker_args(setup: Setup, device: str, resume: bool, quiet: bool) -> list[str]:
    """Every rank's `archc train` arguments: the run folder's spec.json and the flags that are not in the spec."""
    run_dir = setup.run_dir
    args = [str(run_dir.spec), "--out", str(run_dir.root), "--device", device,
            "--data-root", str(setup.data_root if setup.data_root is not None else Path.cwd())]
    init = setup.init
    if init is not None:  # absolute: the workers' working folder need not be the launcher's
        args += ["--init", str(init.path.resolve())]
        args += ["--map", str(init.map_path.resolve())] if init.map_path is not None else []
    return args + ["--resume"] * resume + ["--quiet"] * quiet
