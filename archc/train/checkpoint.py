"""Checkpoints in safetensors (no pickle): weights for people and tools, and one file that resumes a run.

Where they go is the run folder's (archc.train.run_dir.RunDir); what they hold:
  weights (latest, best)  a plain state_dict; metadata: step, epoch, spec hash
  the resume state        everything `--resume` needs, in ONE file so it can never be half old, half new:
                          a copy of the weights (model.*), the optimizer's tensors (optim.*), RNG states and
                          partial-epoch sums (rank.<r>.*), and the scalars as JSON in the header metadata
                          (optimizer hyper-parameters, scheduler and grad-scaler state, epoch and step in
                          the epoch, best value, history)
  its readable copy       those scalars as JSON, written last; the step names the weights above

The weights copy doubles the weights on disk (the optimizer state already holds two more copies for Adam):
the price of a resume state that is consistent by construction, with no two-file protocol to get right.
"""
from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file as st_save_file

from archc.errors import ModelError
import archc.metadata as keys
from archc.train.run_dir import RunDir
from archc.util import publish, temp_beside, write_text_atomic

META_KEY = keys.TRAIN_STATE


def _cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu").contiguous()


def weights_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state_dict (parameters and buffers) on the CPU."""
    return {k: _cpu(v) for k, v in model.state_dict().items()}


def save_weights(path: str | Path, model: torch.nn.Module | dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """A plain safetensors state_dict (a module's, or one given on the CPU) with string metadata."""
    weights = model if isinstance(model, dict) else weights_of(model)
    save_atomic(path, weights, {k: str(v) for k, v in meta.items()})


def save_atomic(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """A safetensors file written atomically (a temporary beside it, fsync, rename) straight from the tensors'
    memory: safetensors' save_file writes each tensor from its own buffer, where `save` (bytes) first made the
    whole file in memory, doubling rank 0's peak at every checkpoint (figure 20: 3.2 GiB against 1.8 GiB for the
    rank that only trains). Its errors (a full disk) are an OSError naming `path`."""
    import errno

    with temp_beside(path) as tmp:
        try:
            st_save_file(tensors, tmp, metadata=metadata)
        except OSError:
            raise
        except Exception as e:  # safetensors reports I/O failures as its own error type
            raise OSError(errno.EIO, str(e).splitlines()[0][:200] if str(e) else type(e).__name__) from e
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        publish(tmp, path)


def read_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata of a safetensors file; ModelError when it is unreadable."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own error types for truncated or foreign files
        raise ModelError(f"could not read checkpoint {str(path)!r}: expected a safetensors file, received one "
                         f"that fails to load ({str(e).splitlines()[0][:200]})") from None


def load_weights(path: str | Path, model: torch.nn.Module) -> dict[str, str]:
    """Load a weights file into `model` (exact keys, shapes and kinds of dtype, finite values); returns its
    metadata."""
    tensors, meta = _read_checked(path, model)
    model.load_state_dict(tensors)
    return meta


def check_weights(path: str | Path, model: torch.nn.Module) -> None:
    """ModelError unless `load_weights(path, model)` would succeed (readable, the model's keys, shapes and kinds
    of dtype, finite); `model` is left as it is. A resumed run checks its best weights so, before training: the
    test split and the export load them at its end."""
    if not Path(path).is_file():
        raise ModelError("expected the best epoch's weights the run recorded, received no such file",
                         file=str(path), hint="start the run again without --resume (--force moves it aside)")
    _read_checked(path, model)


def _read_checked(path: str | Path, model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The file's tensors and metadata, once they are finite and fit `model` (keys, shapes, kinds of dtype)."""
    from archc.weights import check_finite, read_header

    tensors, meta = read_file(path)
    infos = read_header(path)
    check_finite(path, infos, list(infos))  # named here, not as a parity check "within nan" after the export
    _mismatch(model, tensors, str(path))
    return tensors, meta


def _mismatch(model: torch.nn.Module, tensors: dict[str, torch.Tensor], where: str) -> None:
    own = model.state_dict()
    bad = sorted(set(own) ^ set(tensors)) + [k for k in own if k in tensors and own[k].shape != tensors[k].shape]
    bad += [f"{k} ({str(tensors[k].dtype).removeprefix('torch.')} for the model's "  # load_state_dict would cast
            f"{str(own[k].dtype).removeprefix('torch.')})" for k in own
            if k in tensors and own[k].is_floating_point() != tensors[k].is_floating_point()]
    if bad:
        raise ModelError(f"expected the weights of this spec's model, received a checkpoint that differs at "
                         f"{', '.join(bad[:5])}", where=where)


def _load_into(model: torch.nn.Module, tensors: dict[str, torch.Tensor], where: str) -> None:
    _mismatch(model, tensors, where)
    model.load_state_dict(tensors)


# --- optimizer state: tensors to safetensors, everything else to JSON ----------------------------------------

def flatten_optimizer(sd: dict) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state_dict into tensors `optim.<param>.<key>` and JSON-able scalars."""
    tensors, scalars = {}, {}
    for idx, entry in sd["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):  # a copy: never alias the live state of the optimizer
                tensors[f"optim.{idx}.{key}"] = value.detach().to("cpu", copy=True).contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "state": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], js: dict[str, Any]) -> dict:
    """The inverse of flatten_optimizer."""
    state: dict[int, dict[str, Any]] = {int(i): dict(v) for i, v in js["state"].items()}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": js["param_groups"]}


# --- RNG states -----------------------------------------------------------------------------------------------

def host_rng() -> dict[str, Any]:
    """Python's and numpy's global RNG states as JSON."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    version, state, py_gauss = random.getstate()
    return {"python": [version, list(state), py_gauss],
            "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)]}


def set_host_rng(js: dict[str, Any]) -> None:
    version, state, gauss = js["python"]
    random.setstate((version, tuple(state), gauss))
    kind, keys, pos, has_gauss, cached = js["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def torch_rng(device: torch.device) -> torch.Tensor:
    """This process's torch RNG state (CPU, then the CUDA device's when training there) as one uint8 tensor."""
    parts = [torch.get_rng_state()]
    if device.type == "cuda":
        parts.append(torch.cuda.get_rng_state(device))
    return torch.cat([torch.tensor([len(parts[0])], dtype=torch.int64).view(torch.uint8), *parts])


def set_torch_rng(t: torch.Tensor, device: torch.device) -> None:
    n = int(t[:8].view(torch.int64)[0])
    torch.set_rng_state(t[8:8 + n].clone())
    if device.type == "cuda" and len(t) > 8 + n:
        torch.cuda.set_rng_state(t[8 + n:].clone(), device)


# --- the resume file ------------------------------------------------------------------------------------------

@dataclass
class Saved:
    """A loaded train_state: scalars (JSON) and tensors by prefix."""

    scalars: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    source: str                     # the file it came from, for messages

    def group(self, prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: v for k, v in self.tensors.items() if k.startswith(prefix)}


def save_state(run_dir: RunDir, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               scalars: dict[str, Any], per_rank: list[dict[str, torch.Tensor]],
               adapters: dict[str, torch.Tensor] | None = None, merged: dict[str, torch.Tensor] | None = None) -> None:
    """Write the resume state (atomic, complete), then the latest weights and the state's readable copy. With LoRA
    ([train.lora]) the state holds the model's own weights and the adapters (`adapters`, named lora.*), and the
    latest weights file the two `merged` (a plain model's)."""
    opt_tensors, opt_scalars = flatten_optimizer(optimizer.state_dict())
    tensors = {f"model.{k}": v for k, v in weights_of(model).items()} | opt_tensors
    tensors |= {k: _cpu(v) for k, v in (adapters or {}).items()}
    for rank, entries in enumerate(per_rank):
        tensors |= {f"rank.{rank}.{k}": _cpu(v) for k, v in entries.items()}
    body = scalars | {"optimizer": opt_scalars, "host_rng": host_rng()}
    _write_state(run_dir, tensors, body, merged if merged is not None else model)


def save_sharded_state(run_dir: RunDir, sharded: str, weights: dict[str, torch.Tensor], scalars: dict[str, Any],
                       per_rank: list[dict[str, torch.Tensor]]) -> None:
    """The resume state of [train] strategy = "fsdp": the weights and optimizer state are in the run's sharded
    checkpoint folder `sharded` (torch.distributed.checkpoint, written first by every rank); this file names it and
    holds the rest (scalars, RNG states and partial sums per rank), then the latest (gathered) weights."""
    tensors = {f"rank.{rank}.{k}": _cpu(v) for rank, entries in enumerate(per_rank) for k, v in entries.items()}
    body = scalars | {"optimizer": {"sharded": sharded}, "host_rng": host_rng()}
    _write_state(run_dir, tensors, body, weights)


def _write_state(run_dir: RunDir, tensors: dict[str, torch.Tensor], body: dict[str, Any],
                 weights: torch.nn.Module | dict[str, torch.Tensor]) -> None:
    save_atomic(run_dir.state, tensors, {META_KEY: json.dumps(body)})
    meta = {k: body[k] for k in ("step", "epoch", "spec_sha256")}
    save_weights(run_dir.weights, weights, meta)
    readable = {k: v for k, v in body.items() if k not in ("history", "optimizer", "host_rng")}
    write_text_atomic(run_dir.state_json, json.dumps(readable, indent=2) + "\n")


def load_state(run_dir: RunDir) -> Saved:
    """Read the resume state; ModelError when it is missing its scalars."""
    return load_state_at(run_dir.state, str(run_dir.state))


def load_state_at(path: str | Path, source: str) -> Saved:
    """The resume state in file `path`, errors naming `source` (the run folder's file a copy came from)."""
    tensors, meta = read_file(path)
    if META_KEY not in meta:
        raise ModelError(f"expected archc training state in {source!r}, received a file without it")
    return Saved(_state_scalars(meta[META_KEY], source), tensors, source)


def _state_scalars(text: str, source: str) -> dict[str, Any]:
    """The state's JSON scalars; a corrupt or foreign body is a ModelError naming the file, not a crash."""
    try:
        body = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ModelError(f"expected the training state's JSON scalars, received text that does not parse ({e})",
                         file=source) from None
    missing = [k for k in ("step", "epoch", "optimizer", "host_rng") if not isinstance(body, dict) or k not in body]
    if missing:
        raise ModelError(f"expected the training state's scalars, received JSON missing {', '.join(missing)}",
                         file=source, hint="start the run again without --resume")
    return body


def restore(saved: Saved, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Weights, optimizer state and the host RNGs from a loaded train_state (torch RNG: per rank, by the loop)."""
    _load_into(model, saved.group("model."), saved.source)
    optimizer.load_state_dict(unflatten_optimizer(saved.tensors, saved.scalars["optimizer"]))
    in_layout_of_params(optimizer)
    set_host_rng(saved.scalars["host_rng"])


def in_layout_of_params(optimizer: torch.optim.Optimizer) -> None:
    """Each state tensor shaped like its parameter (Adam's moments) in the parameter's memory layout: the file
    holds them contiguous, and a channels_last model's fused or foreach step walks a state tensor's storage as
    if it were laid out as the parameter, so a contiguous moment beside a channels_last weight is updated at the
    wrong elements and a resumed run drifts from the uninterrupted one."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            entry = optimizer.state.get(p, {})
            for key, value in entry.items():
                if isinstance(value, torch.Tensor) and value.shape == p.shape and value.stride() != p.stride():
                    entry[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)
