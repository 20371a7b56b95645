"""The export check a run makes before its first step: the final export on trained-like weights, so a spec whose
export would fail ends before any training time is spent (tests/train/test_export_check.py)."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from archc.errors import ArchcError
from archc.metadata import Facts
from archc.train.recipe import Setup

TRAINED_SCALE = 4.0  # trained weights of the small models are 2-4x their initial RMS (penguins: 2.0x, 3.7x)


def check_export(setup: Setup, facts: Facts) -> None:
    """Export the model as the run will end, before any training time is spent: the final export's own pass list
    (archc.export.passes, with its `check` flag) and the data's facts (a fitted table's row front and its parity
    check, the targets' restore), on weights scaled to trained-like sizes (`--init`'s weights as they are), into a
    temporary folder removed at once.

    What the flag leaves out cannot end a run: the optimizer keeps the plain graph when its candidate fails (it
    runs here only in front of a row front, which wraps the graph it chose: cheap for a tabular model), and a
    failed KV-cache export is a note. The file is not kept: an untrained model.onnx in the run folder could be
    taken for the trained one."""
    import torch

    from archc.export import export
    from archc.lower import lower

    import archc.tempfiles as tempfiles

    with torch.random.fork_rng(devices=[]), tempfile.TemporaryDirectory(prefix="archc-export-check-") as tmp, \
            tempfiles.tracked(tmp):  # a SIGTERM or SIGINT removes it too
        module = lower(setup.graph, seed=setup.spec.train.seed)
        if setup.init is not None:
            setup.init.load(module)
        else:
            trained_like(module, setup)
        try:
            export(setup.compiled, Path(tmp) / "initialized.onnx", module=module, exporter=setup.exporter,
                   extra_metadata=facts, optimize=setup.optimize, kv_cache=True, check=True)
        except ArchcError as e:
            e.hint = "; ".join(h for h in (e.hint, "found by exporting the model before training (trained-size "
                                           "weights, the data's fitted columns and target scale): the run would "
                                           "have ended here") if h)
            raise e.located(setup.file)


def trained_like(module: Any, setup: Setup) -> bool:
    """Scale `module`'s weight matrices (parameters of rank >= 2) by TRAINED_SCALE, a power of two: exact, and undone
    exactly where the scaled model's outputs would not be finite (a deep stack without normalization); whether the
    scale was kept."""
    import torch

    from archc.export.onnx import example_inputs

    weights = [p for p in module.parameters() if p.ndim >= 2 and p.is_floating_point()]
    with torch.no_grad():
        for p in weights:
            p.mul_(TRAINED_SCALE)
        module.eval()
        feeds = example_inputs(setup.graph, 1, setup.graph.sizes)
        out = module(*(torch.from_numpy(v) for v in feeds.values()))
        if all(bool(torch.isfinite(o).all()) for o in ([out] if isinstance(out, torch.Tensor) else out)):
            return True
        for p in weights:
            p.div_(TRAINED_SCALE)
    return False
