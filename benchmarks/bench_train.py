"""Training step time: the module archc generates vs the same network written by hand in PyTorch.

Both get the same weights, the same batch and the same step (forward, cross-entropy, backward, AdamW). Runs are
interleaved in one process (A then B, then B then A, ...) so drift in the machine's load hits both alike; the
figure is the ratio of median step times (target: <= 1.03). Not a test: run it by hand.

    .venv/bin/python benchmarks/bench_train.py [--rounds 30] [--json out/bench_train.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import archc

ROOT = Path(__file__).resolve().parents[1]


class HandMLP(nn.Module):
    """specs/digits_mlp.toml by hand: [B, 1, 8, 8] -> 64 -> 256 -> 128 -> 10."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.logits = nn.Linear(64, 256), nn.Linear(256, 128), nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)                    # (B, 64)
        x = F.relu(self.fc1(x))             # (B, 256)
        x = F.relu(self.fc2(x))             # (B, 128)
        return self.logits(x)               # (B, 10)


class Res(nn.Module):
    """conv-bn-relu-conv-bn, plus the input, then relu (specs/residual_cnn.toml's block `res`)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1, bias=False)
        self.batchnorm_1 = nn.BatchNorm2d(ch)  # named as the spec's (unnamed) layer is
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.batchnorm_1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(y)))


class HandResidualCNN(nn.Module):
    """specs/residual_cnn.toml by hand: [B, 1, 28, 28] -> stem 16 -> 2 x res 16 -> down 32 -> 2 x res 32 -> 10."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 3, padding=1)
        self.stage1 = nn.Sequential(Res(16), Res(16))
        self.down = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.stage2 = nn.Sequential(Res(32), Res(32))
        self.logits = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))                         # (B, 16, 28, 28)
        x = F.relu(self.down(self.stage1(x)))            # (B, 32, 14, 14)
        return self.logits(self.stage2(x).mean((2, 3)))  # (B, 10)


def copy_state(src: nn.Module, dst: nn.Module) -> None:
    """Same parameters and buffers (the hand-written modules are named as the spec's nodes)."""
    dst.load_state_dict(src.state_dict(), strict=True)


def stepper(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    """A closure running one training step of `model` on (x, y)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def time_steps(step, n: int, device: torch.device) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(n):
        step()
    sync()
    return (time.perf_counter() - start) / n


def compare(name: str, spec: str, hand: nn.Module, shape: tuple[int, ...], batch: int, rounds: int,
            steps: int, device: torch.device) -> dict:
    """Interleaved rounds of `steps` steps each; medians of the per-round means."""
    generated = archc.compile(ROOT / spec, seed=0)
    copy_state(generated, hand)
    generated, hand = generated.to(device), hand.to(device)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(batch, *shape, generator=g), torch.randint(0, 10, (batch,), generator=g)
    x, y = x.to(device), y.to(device)
    runs = {"generated": stepper(generated, x, y), "hand": stepper(hand, x, y)}
    for step in runs.values():
        time_steps(step, steps, device)  # warm up
    times: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(rounds):
        for key in (list(runs) if r % 2 == 0 else list(reversed(runs))):
            times[key].append(time_steps(runs[key], steps, device))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"model": name, "spec": spec, "device": str(device), "batch": batch, "rounds": rounds,
            "steps_per_round": steps, "generated_ms": med["generated"] * 1e3, "hand_ms": med["hand"] * 1e3,
            "ratio": med["generated"] / med["hand"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--json", type=Path, default=ROOT / "out" / "bench_train.json")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = [compare("mlp 64-256-128-10", "specs/digits_mlp.toml", HandMLP(), (1, 8, 8), args.batch, args.rounds,
                    50, device),
            compare("residual cnn", "specs/residual_cnn.toml", HandResidualCNN(), (1, 28, 28), args.batch,
                    args.rounds, 5, device)]
    print(f"device {device}, {torch.get_num_threads()} threads")
    print(f"{'model':<20} {'batch':>5} {'generated ms':>13} {'hand ms':>9} {'ratio':>7}")
    for r in rows:
        print(f"{r['model']:<20} {r['batch']:>5} {r['generated_ms']:>13.3f} {r['hand_ms']:>9.3f} "
              f"{r['ratio']:>7.3f}")
    report = {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
              "processor": platform.processor(), "results": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
