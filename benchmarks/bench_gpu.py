"""Figure 8, on a CUDA machine: AMP (bf16 autocast) vs fp32 training throughput of the residual CNN, and ONNX
Runtime's CUDA provider vs torch CUDA inference latency. Both sides of each comparison are interleaved in one process.

On a machine without CUDA (CI, most runs of `make bench`) the figure shows the rows last measured on a GPU, kept in
benchmarks/results/gpu_results.json, which a full run of this figure on a CUDA machine writes
(`python benchmarks/run.py --only gpu`). Uses archc's generated module when archc imports, else the identical
hand-written network of handwritten.py (so it runs with only torch, and onnxruntime-gpu for the ORT rows).
"""
from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import common
from handwritten import HandResidualCNN

FIGURE = 8
KEY = "gpu"
TITLE = "GPU: AMP vs fp32 training, ORT CUDA vs torch CUDA"
A, B = "see each row", "see each row"
SPEC = common.SPECS_DIR / "residual_cnn.toml"
STORED = common.RESULTS_DIR / "gpu_results.json"
MEASURED: str | None = None  # when the rows shown were measured, if not by this run (run.py reads it)
HOW = ("GPU figures are measured by this figure on a CUDA machine (`python benchmarks/run.py --only gpu` writes "
       "benchmarks/results/gpu_results.json); elsewhere the run folds that file in when it exists.")


def model() -> tuple[nn.Module, str]:
    try:
        import archc
        return archc.compile(SPEC, seed=0), "archc-generated"
    except Exception as e:  # archc or its dependencies missing on this machine
        torch.manual_seed(0)
        return HandResidualCNN(), f"hand-written twin (archc unavailable: {type(e).__name__})"


def row(name, a, b, goal="", met=None, note="", unit="", ratio=None) -> dict:
    """common.row for this figure; ratio a / b unless given."""
    return common.row(FIGURE, name, a, b, goal=goal, met=met, note=note, unit=unit,
                      ratio=common.AUTO if ratio is None else ratio)


def interleave(fns: dict, rounds: int, inner: int) -> dict[str, float]:
    """Median seconds per call, sides alternating A B / B A, synchronized around each round."""
    for f in fns.values():
        for _ in range(inner):
            f()
    torch.cuda.synchronize()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(rounds):
        for k in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(inner):
                fns[k]()
            torch.cuda.synchronize()
            times[k].append((time.perf_counter() - start) / inner)
    return {k: statistics.median(v) for k, v in times.items()}


def amp_rows(rounds: int, batches: list[int]) -> list[dict]:
    return [r for batch in batches for r in _amp_rows(rounds, batch)]


def _amp_rows(rounds: int, batch: int) -> list[dict]:
    """fp32 vs AMP, and AMP with channels_last (NHWC) memory format: the cheap fix for AMP convolutions, which
    cuDNN runs on tensor cores in NHWC; in NCHW every bf16 convolution pays layout transposes."""
    dev = torch.device("cuda")
    net, origin = model()
    fp32 = net.to(dev)
    state = fp32.state_dict()
    amp, _ = model()
    amp.load_state_dict(state)
    amp = amp.to(dev)
    amp_cl, _ = model()
    amp_cl.load_state_dict(state)
    amp_cl = amp_cl.to(dev, memory_format=torch.channels_last)
    x = torch.randn(batch, 1, 28, 28, device=dev)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=dev)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def stepper(m: nn.Module, autocast: bool, inp: torch.Tensor):
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
        m.train()

        def step() -> None:
            with torch.autocast("cuda", dtype=dtype, enabled=autocast):
                loss = F.cross_entropy(m(inp), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step
    t = interleave({"amp": stepper(amp, True, x), "fp32": stepper(fp32, False, x),
                    "amp_cl": stepper(amp_cl, True, x_cl)}, rounds, inner=20 if batch <= 512 else 5)
    sps = {k: batch / v for k, v in t.items()}
    tf32 = torch.backends.cudnn.allow_tf32
    kind = str(dtype).split(".")[-1]
    return [row(f"residual_cnn training, batch {batch}: AMP {kind} vs fp32", sps["amp"], sps["fp32"],
                unit="samples/s", note=f"{origin}; ratio = AMP / fp32 throughput (> 1: AMP faster); "
                                       f"cudnn.allow_tf32={tf32} (fp32 convolutions may use TF32)"),
            row(f"residual_cnn training, batch {batch}: AMP {kind}, channels_last vs NCHW", sps["amp_cl"],
                sps["amp"], unit="samples/s",
                note=f"optimization before/after: a = AMP + channels_last, b = AMP in NCHW; vs fp32 "
                     f"{sps['amp_cl'] / sps['fp32']:.2f}x")]


def ort_rows(rounds: int) -> list[dict]:
    import numpy as np
    try:
        import onnxruntime as ort
    except ImportError:
        return [row("ORT CUDA vs torch CUDA", None, None, note="skipped: onnxruntime not installed")]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return [row("ORT CUDA vs torch CUDA", None, None,
                    note=f"skipped: onnxruntime {ort.__version__} has no CUDA provider (install onnxruntime-gpu)")]
    dev = torch.device("cuda")
    net, origin = model()
    net = net.eval()
    path = Path(tempfile.mkdtemp()) / "rcnn.onnx"
    torch.onnx.export(net, (torch.randn(2, 1, 28, 28),), str(path), input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, opset_version=18, dynamo=False)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    if sess.get_providers()[0] != "CUDAExecutionProvider":
        return [row("ORT CUDA vs torch CUDA", None, None, note="skipped: the CUDA provider did not load")]
    net = net.to(dev)
    out = []
    for batch in (1, 64):
        x_np = np.random.default_rng(0).standard_normal((batch, 1, 28, 28)).astype(np.float32)
        x = torch.from_numpy(x_np).to(dev)
        y = torch.empty(batch, 10, device=dev)
        binding = sess.io_binding()  # inputs and outputs stay on the GPU, as torch's do
        binding.bind_input("image", "cuda", 0, np.float32, list(x.shape), x.data_ptr())
        binding.bind_output("logits", "cuda", 0, np.float32, list(y.shape), y.data_ptr())

        def torch_run() -> None:
            with torch.inference_mode():
                net(x)

        def ort_bound() -> None:
            sess.run_with_iobinding(binding)

        def ort_numpy() -> None:
            sess.run(None, {"image": x_np})
        ort_bound()
        with torch.inference_mode():
            assert torch.allclose(y, net(x), atol=1e-3, rtol=1e-3)
        t = interleave({"ort": ort_bound, "torch": torch_run, "ort_numpy": ort_numpy}, rounds, inner=50)
        out.append(row(f"residual_cnn inference batch {batch}: ORT CUDA (I/O binding) vs torch CUDA eager",
                       t["ort"] * 1e3, t["torch"] * 1e3, unit="ms",
                       note=f"{origin}; ORT with numpy in/out (host copies) {t['ort_numpy'] * 1e3:.3f} ms"))
    return out


def measure(quick: bool) -> dict:
    """The figure's rows on this machine's first CUDA device, as the stored file holds them."""
    rounds, batches = (3, [256]) if quick else (15, [256, 4096])
    name = torch.cuda.get_device_name(0)
    rows = amp_rows(rounds, batches) + ort_rows(rounds)
    for r in rows:
        r["note"] = f"{name}; " + r["note"]
    try:
        import onnxruntime as ort
        ort_version = ort.__version__
    except ImportError:
        ort_version = None
    return {"device": name, "torch": torch.__version__, "onnxruntime": ort_version,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "rows": rows}


def stored() -> tuple[list[dict], str]:
    """The rows last measured on a GPU (no CUDA here)."""
    if not STORED.exists():
        return [common.skipped(FIGURE, "GPU figures", "no CUDA device here and no benchmarks/results/"
                                                      "gpu_results.json: run this figure on a CUDA machine")], HOW
    global MEASURED
    data = json.loads(STORED.read_text())
    MEASURED = data.get("date")
    rows = [common.row(FIGURE, "where the GPU figures come from", None, None,
                       note=f"benchmarks/results/gpu_results.json, measured on {data.get('device')} at "
                            f"{data.get('date')}; not re-measured by this run (no CUDA device here)")] + data["rows"]
    return rows, (f"{HOW} Measured on {data.get('device')} (torch {data.get('torch')}, onnxruntime "
                  f"{data.get('onnxruntime')}) at {data.get('date')}.\n\n{NOTES}")


def run(quick: bool = False) -> tuple[list[dict], str]:
    if not torch.cuda.is_available():
        return stored()
    report = measure(quick)
    if not quick:  # the record CPU-only runs fold in
        common.write_atomic(STORED, json.dumps(report, indent=2) + "\n")
    return report["rows"], (f"Measured here on {report['device']} (torch {report['torch']}, onnxruntime "
                            f"{report['onnxruntime']}).\n\n{NOTES}")


NOTES = """**Reading the GPU rows.** AMP (bf16 autocast) in the default NCHW layout is *slower* than fp32 on this
16/32-channel CNN: cuDNN runs reduced-precision convolutions on tensor cores in NHWC, so every bf16 convolution in
NCHW pays layout transposes, and autocast adds casts around every BatchNorm (kept in fp32), while fp32 convolutions
already use TF32 tensor cores (`cudnn.allow_tf32` is on by default). With `channels_last` (model and input) AMP is
2.5x fp32 at batch 4096. At batch 256 the step is launch-bound (~100 small kernels; ~5-7 ms of Python and launch
overhead per step), so no precision change helps there; CUDA graphs or `torch.compile` would. **Suggestion for
`archc train`** (not applied: `archc/train` is not this harness's): when autocast is on and the model has 2-D
convolutions, move the model and each batch to `torch.channels_last`. **ORT CUDA vs torch CUDA** was not measured:
the GPU machine lent here has onnxruntime without the CUDA provider, and onnxruntime-gpu (~300 MB) cannot be
carried to it; run this figure from the project's venv (which installs onnxruntime-gpu) on a CUDA machine to fill
that row (it times ORT with I/O binding, so inputs and outputs stay on the GPU as torch's do, and plain numpy
in/out for the cost of the host copies)."""
