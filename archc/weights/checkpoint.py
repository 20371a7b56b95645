"""A checkpoint as it ships: one safetensors file, or shards named by an index (transformers' sharded format).

    model.safetensors.index.json     {"metadata": {...}, "weight_map": {"model.norm.weight": "model-00002-of-00002.safetensors", ...}}
    model-00001-of-00002.safetensors
    model-00002-of-00002.safetensors

`--weights`/`--init` take a file, an index, or a folder (its model.safetensors.index.json, else its one .safetensors
file). Every shard's header is checked (archc.weights.file.read_header) and held against the index before anything is
allocated: a shard the index names that is missing, a tensor the index places in a shard that does not hold it, and
a shard tensor the index does not place there are each one error naming the files.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archc.errors import ModelError
from archc.strict_json import DuplicateKey, distinct_keys
from archc.weights.file import Reader, TensorInfo, check_finite, read_header

INDEX = "model.safetensors.index.json"
MAX_INDEX = 64 * 2**20  # bytes: transformers' indexes are kilobytes; refuse garbage before reading it
SHOWN = 4


@dataclass(frozen=True)
class Checkpoint:
    """The tensors of a checkpoint, each with the file that holds it."""

    path: Path                      # what the user named: a file, an index or a folder
    infos: dict[str, TensorInfo]
    files: dict[str, Path]          # tensor -> its file (one file: every tensor in it)

    @classmethod
    def open(cls, path: str | Path) -> "Checkpoint":
        path = Path(path)
        target, sharded = _resolve(path)
        if sharded:
            return _sharded(path, target)
        infos = read_header(target)
        return cls(path, infos, dict.fromkeys(infos, target))

    def by_file(self, names: list[str]) -> dict[Path, list[str]]:
        out: dict[Path, list[str]] = {}
        for name in names:
            out.setdefault(self.files[name], []).append(name)
        return out

    def check_finite(self, names: list[str]) -> None:
        """Every tensor of `names` finite (archc.weights.file.check_finite, shard by shard)."""
        for file, some in self.by_file(names).items():
            check_finite(file, {n: self.infos[n] for n in some}, some)

    def reader(self) -> "ShardReader":
        return ShardReader(self)


class ShardReader:
    """Reads tensors one at a time from whichever shard holds each (opened on first use, closed at exit)."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        self.checkpoint = checkpoint
        self.open: dict[Path, Reader] = {}

    def __enter__(self) -> "ShardReader":
        return self

    def __exit__(self, *exc: object) -> None:
        for reader in self.open.values():
            reader.__exit__(None, None, None)
        self.open.clear()

    def get(self, name: str) -> Any:
        file = self.checkpoint.files[name]
        if file not in self.open:
            self.open[file] = Reader(file)
        return self.open[file].get(name)


def _resolve(path: Path) -> tuple[Path, bool]:
    """The file `path` stands for and whether it is an index: a folder's index, else its one .safetensors file."""
    if not path.is_dir():
        return path, path.suffix == ".json"
    if (path / INDEX).is_file():
        return path / INDEX, True
    files = sorted(p.name for p in path.glob("*.safetensors") if p.is_file())
    if len(files) == 1:
        return path / files[0], False
    found = (f"{len(files)} .safetensors files and no index ({', '.join(files[:SHOWN])}"
             f"{', ...' if len(files) > SHOWN else ''})") if files else "neither"
    raise ModelError(f"expected a folder holding {INDEX} or one .safetensors file, received {found}",
                     file=str(path), hint="name the checkpoint file, or its index, instead of the folder")


def _sharded(path: Path, index: Path) -> Checkpoint:
    weight_map = _weight_map(index)
    folder = index.parent
    shards: dict[str, list[str]] = {}
    for tensor, shard in weight_map.items():
        shards.setdefault(shard, []).append(tensor)
    missing = [s for s in shards if not (folder / s).is_file()]
    if missing:
        raise ModelError(f"expected the shards {index.name} names beside it, received {len(missing)} missing: "
                         + "; ".join(f"{s} (for {len(shards[s])} tensors, e.g. {shards[s][0]})"
                                     for s in missing[:SHOWN]), file=str(index),
                         hint="copy every shard of the checkpoint into the index's folder")
    infos: dict[str, TensorInfo] = {}
    files: dict[str, Path] = {}
    problems: list[str] = []
    for shard, tensors in shards.items():
        header = read_header(folder / shard)  # each shard's header checked against its size, nothing allocated
        absent = [t for t in tensors if t not in header]
        if absent:
            problems.append(f"{len(absent)} tensor{'s' if len(absent) > 1 else ''} the index places in {shard} that "
                            f"it does not hold: {', '.join(absent[:SHOWN])}{', ...' if len(absent) > SHOWN else ''}")
        unlisted = [t for t in header if weight_map.get(t) != shard]
        if unlisted:
            problems.append(f"{len(unlisted)} tensor{'s' if len(unlisted) > 1 else ''} {shard} holds that the index "
                            f"does not place there: " + ", ".join(
                                t + (f" (placed in {weight_map[t]})" if t in weight_map else "")
                                for t in unlisted[:SHOWN]) + (", ..." if len(unlisted) > SHOWN else ""))
        for t in tensors:
            if t in header:
                infos[t], files[t] = header[t], folder / shard
    if problems:
        raise ModelError("expected the index's weight_map to match its shards, received " + "; ".join(problems),
                         file=str(index), hint="the index and its shards come from different saves: save again")
    return Checkpoint(path, infos, files)


def _weight_map(index: Path) -> dict[str, str]:
    """The index's weight_map: tensor name -> a shard's file name beside the index."""
    try:
        size = index.stat().st_size
        if size > MAX_INDEX:
            raise ModelError(f"expected a checkpoint index of at most {MAX_INDEX:,} bytes, received {size:,}",
                             file=str(index))
        data = json.loads(index.read_text(encoding="utf-8"), object_pairs_hook=distinct_keys)
    except OSError as e:
        raise ModelError(f"cannot read: {e.strerror or e}", file=str(index)) from None
    except DuplicateKey as e:
        raise ModelError(f"expected each tensor once in the index, received {e.key[:200]!r} twice",
                         file=str(index)) from None
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ModelError(f"expected a sharded checkpoint's index ({INDEX}: JSON with a weight_map), received text "
                         "that is not JSON", file=str(index)) from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ModelError(f"expected a sharded checkpoint's index ({INDEX}: JSON with a weight_map of tensor names "
                         f"to shard files), received no weight_map", file=str(index))
    for tensor, shard in weight_map.items():
        if not (isinstance(shard, str) and shard.endswith(".safetensors") and Path(shard).name == shard
                and shard not in (".", "..") and "\\" not in shard):
            raise ModelError(f"expected each tensor's shard named as a .safetensors file beside the index, received "
                             f"{json.dumps(shard)[:200]} for {tensor[:200]!r}", file=str(index),
                             hint="archc reads shards from the index's own folder only, and safetensors only")
    return weight_map
