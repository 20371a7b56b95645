"""Figure 8, on a CUDA machine: AMP (bf16 autocast) vs fp32 training throughput of the residual CNN, and ONNX
Runtime's CUDA provider vs torch CUDA inference latency. Standalone: prints JSON rows (run.py's row format) and
writes them with --json; `benchmarks/run.py` folds benchmarks/gpu_results.json into RESULTS.md when it exists.

    python benchmarks/bench_gpu.py --json benchmarks/gpu_results.json

Uses archc's generated module when archc imports, else an identical hand-written network (so it runs with only
torch, and onnxruntime-gpu for the ORT rows). Both sides of each comparison are interleaved in one process.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "specs" / "residual_cnn.toml"


class _Res(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1, bias=False)
        self.batchnorm_1 = nn.BatchNorm2d(ch)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.bn2(self.conv2(F.relu(self.batchnorm_1(self.conv1(x))))))


class _ResidualCNN(nn.Module):
    """specs/residual_cnn.toml by hand (bench_train.HandResidualCNN, repeated so this file needs no archc)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.down = nn.Conv2d(1, 16, 3, padding=1), nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.stage1, self.stage2 = nn.Sequential(_Res(16), _Res(16)), nn.Sequential(_Res(32), _Res(32))
        self.logits = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.down(self.stage1(F.relu(self.stem(x)))))
        return self.logits(self.stage2(x).mean((2, 3)))


def model() -> tuple[nn.Module, str]:
    try:
        import archc
        return archc.compile(SPEC, seed=0), "archc-generated"
    except Exception as e:  # archc or its dependencies missing on this machine
        torch.manual_seed(0)
        return _ResidualCNN(), f"hand-written twin (archc unavailable: {type(e).__name__})"


def row(name, a, b, goal="", met=None, note="", unit="", ratio=None) -> dict:
    if ratio is None and a is not None and b:
        ratio = a / b
    return {"figure": 8, "name": name, "a": a, "b": b, "ratio": ratio, "goal": goal, "met": met, "note": note,
            "unit": unit}


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--batch", default="256,4096", help="training batch sizes, comma separated")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: figure 8 needs a GPU", file=sys.stderr)
        sys.exit(1)
    name = torch.cuda.get_device_name(0)
    rows = amp_rows(args.rounds, [int(b) for b in args.batch.split(",")]) + ort_rows(args.rounds)
    for r in rows:
        r["note"] = f"{name}; " + r["note"]
    try:
        import onnxruntime as ort
        ort_version = ort.__version__
    except ImportError:
        ort_version = None
    report = {"device": name, "torch": torch.__version__, "onnxruntime": ort_version,
              "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "rows": rows}
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(text + "\n")
        tmp.replace(args.json)


if __name__ == "__main__":
    main()
