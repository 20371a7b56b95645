"""Devices, autocast precision, determinism and seeding for a training process."""
from __future__ import annotations

import contextlib
import random
from typing import Iterator

import numpy as np
import torch

from archc.errors import InputError
from archc.threads import Choice, choose, in_force, replace


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """auto: CUDA when available, else CPU; `cuda` without a GPU is a clear error."""
    if name not in ("auto", "cpu", "cuda"):
        raise InputError(f"expected --device auto, cpu or cuda, received {name!r}", where="--device")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("expected a CUDA GPU for --device cuda, received none (torch.cuda.is_available() is "
                         "false)", where="--device", hint="use --device cpu or --device auto")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: none on CPU or fp32; bf16 where the GPU has it (auto), else fp16."""
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if precision == "bf16" else torch.float16


# Step-speed choices, each kept because benchmarks/bench_train_speedups.py (figure 13) measured it faster on that
# device type, side by side with torch's default (and, for CUDA AMP, figure 8's channels_last rows):
# - the fused optimizer kernel (one kernel for every parameter's update) on CPU and CUDA;
# - channels_last memory for models with 2-d convolutions: oneDNN (CPU) and cuDNN (tensor cores under autocast)
#   run NHWC convolutions without the layout transposes NCHW costs.
FUSED_DEVICES = ("cpu", "cuda")
CHANNELS_LAST_DEVICES = ("cpu", "cuda")


def fused_optimizer(device: torch.device) -> bool:
    """Whether the optimizer takes fused=True on this device."""
    return device.type in FUSED_DEVICES


def channels_last(model: torch.nn.Module, device: torch.device) -> bool:
    """Whether to train `model` in channels_last memory format: it has a 2-d convolution and the device gains."""
    return device.type in CHANNELS_LAST_DEVICES and any(isinstance(m, torch.nn.Conv2d) for m in model.modules())


def to_channels_last(x: object) -> object:
    """A batch (a tensor, or a tuple/list of them) with its 4-d float tensors in channels_last memory format."""
    if isinstance(x, torch.Tensor):
        return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 and x.is_floating_point() else x
    if isinstance(x, (tuple, list)):
        return type(x)(to_channels_last(v) for v in x)
    return x


@contextlib.contextmanager
def deterministic(device: torch.device) -> Iterator[None]:
    """Deterministic algorithms on CPU for the run, restoring the caller's setting afterwards."""
    # torch.use_deterministic_algorithms also sets torch._inductor's flag, which costs a 2 s import; archc
    # does not compile with inductor, so set the eager flag alone when this torch has the call.
    setter = getattr(torch._C, "_set_deterministic_algorithms", torch.use_deterministic_algorithms)
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    if device.type == "cpu":
        setter(True, warn_only=True)
    try:
        yield
    finally:
        setter(before[0], warn_only=before[1])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train_threads(asked: int | None, spec_threads: int | None, world: int, workers: int = 0) -> Choice:
    """A training process's torch threads: --threads, else [train] threads, else archc.threads' rule for one rank of
    `world` with `workers` loader processes, never more than torch already has (OMP_NUM_THREADS, a caller's)."""
    if asked is not None:
        return choose(asked, where="--threads")
    if spec_threads is not None:
        return choose(spec_threads, where="[train] threads")
    return choose(ranks=world, workers=workers, cap=torch.get_num_threads())


def share_with_workers(splits: dict, world: int) -> None:
    """Loader worker processes (archc.train.loader) take cores too: with any, an automatic choice in force is made
    again counting them (a user's own count stays)."""
    workers = max((getattr(s, "workers", 0) for s in splits.values()), default=0)
    current = in_force()
    if workers and current is not None and not current.asked:
        replace(train_threads(None, None, world, workers))
