"""Figure 13: what archc's trainer picks to make a step faster, measured on this machine's training device (CUDA when
there is one, else the CPU): the fused optimizer kernel vs torch's default (single-tensor loop on CPU, foreach on
CUDA), channels_last vs NCHW memory for convolutional models, and torch.compile vs eager. archc keeps a choice only
where this figure shows it faster (archc/train/devices.py names the rows its defaults rest on).

Every comparison times the same spec's generated module, same weights, same inputs and loss (bench_train's), in
interleaved rounds, and reports medians and their paired ratio (> 1: the option is slower).
"""
from __future__ import annotations

import time

import torch

import common
from bench_train import make_loss

FIGURE = 13
KEY = "train_speedups"
TITLE = "Training step options: fused optimizer, channels_last, torch.compile"
A, B = "with the option (ms/step)", "without (ms/step)"
SPECS = ("digits_mlp", "digit_classifier", "residual_cnn", "vit_digits", "gpt_stdlib")
QUICK = ("digits_mlp",)
COMPILE_SPECS = ("digits_mlp", "residual_cnn")


def _setup(name: str, device: torch.device, batch: int = 64):
    import archc
    from archc.export.onnx import example_inputs
    from archc.pipeline import compile_spec

    path = common.spec_path(name)
    compiled = compile_spec(path)
    feeds = example_inputs(compiled.graph, batch, compiled.graph.sizes, seed=0)
    inputs = tuple(torch.from_numpy(v).to(device) for v in feeds.values())
    with torch.no_grad():
        sample = archc.compile(path, seed=0)(*[t.cpu() for t in inputs])
    loss = make_loss(compiled, sample)
    return path, inputs, loss


def _step(model, inputs, loss_fn, device, **opt_kw):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, **opt_kw)
    model.train()

    def step() -> None:
        out = model(*inputs)
        out = [o.float().cpu() for o in out] if isinstance(out, (tuple, list)) else out.float().cpu()
        loss = loss_fn(out)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    return step


def _model(path, device, channels_last: bool = False):
    import archc
    m = archc.compile(path, seed=0).to(device)
    return m.to(memory_format=torch.channels_last) if channels_last else m


def _has_conv2d(model) -> bool:
    return any(isinstance(m, torch.nn.Conv2d) for m in model.modules())


def _compare(fig_name: str, a, b, rounds: int, round_s: float, note: str = "") -> dict:
    steps = {"a": a, "b": b}
    inner = common.inner_for(b, round_s, cap=100)
    times = common.interleave(steps, rounds, inner=inner, warmup=1)
    ratio = common.paired_ratio(times["a"], times["b"])
    return common.row(FIGURE, fig_name, common.median(times["a"]) * 1e3, common.median(times["b"]) * 1e3,
                      unit="ms", ratio=ratio, note=f"{rounds} rounds x {inner} steps; {note}".rstrip("; "))


def rows_for(name: str, device: torch.device, rounds: int, round_s: float, compile_too: bool) -> list[dict]:
    path, inputs, loss = _setup(name, device)
    where = f"{device.type}, batch 64"
    out = [_compare(f"{name}: fused AdamW vs default ({where})",
                    _step(_model(path, device), inputs, loss, device, fused=True),
                    _step(_model(path, device), inputs, loss, device), rounds, round_s)]
    if _has_conv2d(_model(path, device)):
        cl_inputs = tuple(t.contiguous(memory_format=torch.channels_last) if t.ndim == 4 else t for t in inputs)
        out.append(_compare(f"{name}: channels_last vs NCHW ({where}, fused AdamW)",
                            _step(_model(path, device, True), cl_inputs, loss, device, fused=True),
                            _step(_model(path, device), inputs, loss, device, fused=True), rounds, round_s))
    if compile_too:
        compiled = torch.compile(_model(path, device))
        start = time.perf_counter()
        first = _step(compiled, inputs, loss, device, fused=True)
        first()
        warm = time.perf_counter() - start
        out.append(_compare(f"{name}: torch.compile vs eager ({where}, fused AdamW)", first,
                            _step(_model(path, device), inputs, loss, device, fused=True), rounds, round_s,
                            note=f"first step (compilation) {warm:.1f} s"))
    return out


def run(quick: bool = False) -> tuple[list[dict], str]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rounds, round_s = (3, 0.02) if quick else (15, 0.2)
    rows: list[dict] = []
    for name in QUICK if quick else SPECS:
        if common.spec_path(name) is None:
            rows.append(common.skipped(FIGURE, name, "spec not found"))
            continue
        try:
            rows += rows_for(name, device, rounds, round_s, compile_too=not quick and name in COMPILE_SPECS)
        except Exception as e:  # an option this torch or device lacks is a row, not a failed figure
            rows.append(common.skipped(FIGURE, name, f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"))
    return rows, ("A ratio below 1 means the option makes the step faster. archc/train/devices.py applies the fused "
                  "optimizer and channels_last where these rows show a gain on that device type; torch.compile "
                  "is opt-in (`[train] compile = true`), as its first step compiles for seconds to minutes.")
