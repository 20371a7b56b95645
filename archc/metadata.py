"""Every `archc.*` key of an exported model's metadata, in one place, and the run's data facts as one typed record.

Writers (archc.export) and readers (archc.runtime, archc quantize, tasks) name keys through these constants; the
data facts training fills (labels, source, preprocessing, fitted columns, target scale, tokenizer, ...) travel as
`Facts`, written to the ONNX with `to_metadata`, to the run folder's export.json with `to_record` and read back
with `from_record` / `from_metadata`. Plain data only: no torch, no onnx (`archc infer` reads it).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from typing import Any

PREFIX = "archc."

# what every export writes (archc.export.onnx.metadata)
VERSION = "archc.version"            # the archc that wrote the file
SPEC = "archc.spec"                  # the spec as used (JSON)
SPEC_SHA256 = "archc.spec_sha256"    # its hash (archc.compiled.spec_hash)
TASK = "archc.task"                  # {"kind", "labels"}
INPUTS = "archc.inputs"              # {name: {"shape", "dtype"}}
OUTPUTS = "archc.outputs"            # {name: {"shape", "dtype", "kind"}}
BOUNDS = "archc.bounds"              # axis ranges and input vocabularies `archc infer` checks
# the run's data facts (Facts below)
TRAINING = "archc.training"          # the run's summary: best epoch, epochs run, test scores, data
SOURCE = "archc.source"              # the data source, relative to the model's folder
PREPROCESS = "archc.preprocess"      # {input: {"mean", "std", ...}}
TARGET_SCALE = "archc.target_scale"  # {output: {"mean", "std"}}: standardized targets, restored in the graph
FEATURES = "archc.features"          # a csv source's feature columns
COLUMNS = "archc.columns"            # the fitted table (archc.data.columns.Table.to_json)
AUGMENT = "archc.augment"            # what training did to its batches
TOKENIZER = "archc.tokenizer"        # a language model's tokenizer
DIFFUSION = "archc.diffusion"        # a diffusion model's schedule
WEIGHTS = "archc.weights"            # `archc build --weights`: where the weights came from
# written by export passes and variants
OPTIMIZED = "archc.optimized"        # the optimizer's decision (archc.export.optimize)
ENCODED_INPUT = "archc.encoded_input"  # a model taking a row: what its core reads (archc.export.tabular)
PIXELS = "archc.pixels"              # a model taking uint8 pixels (archc.export.pixels)
KVCACHE = "archc.kvcache"            # the KV-cache file's layout (archc.export.kvcache)
GENAI = "archc.genai"                # the GenAI package files written (archc.export.genai)
QUANTIZATION = "archc.quantization"  # a variant of `archc quantize`
TRAIN_STATE = "archc.train_state"    # a checkpoint's training state (safetensors metadata, archc.train.checkpoint)


@dataclass
class Facts:
    """What training knows of its data and run beyond the spec: the typed fields an export writes as metadata.

    `columns` is the fitted Table itself in the process that fitted it (no JSON round trip), or its JSON form when
    read back from export.json or a model. `labels` become archc.task's labels (the data's class names)."""

    training: dict[str, Any] | None = None
    labels: list[str] | None = None
    source: str | None = None
    preprocess: dict[str, Any] | None = None
    target_scale: dict[str, Any] | None = None
    features: list[str] | None = None
    columns: Any = None
    augment: Any = None
    tokenizer: dict[str, Any] | None = None
    diffusion: dict[str, Any] | None = None
    weights: Any = None
    other: dict[str, Any] = field(default_factory=dict)  # an entry of no field above (a task's own, newer keys)

    @classmethod
    def from_record(cls, record: dict[str, Any] | None) -> "Facts":
        """From export.json's form: {"labels": ..., "source": ..., "columns": ..., ...} (keys without the prefix)."""
        known = {f.name for f in fields(cls)} - {"other"}
        record = dict(record or {})
        return cls(**{k: v for k, v in record.items() if k in known},
                   other={k: v for k, v in record.items() if k not in known})

    def to_record(self) -> dict[str, Any]:
        """export.json's form: `labels` (null: the spec's), then the set fields, JSON-ready (the fitted table as
        its JSON)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "other":
                out.update(value)
            elif value is not None or f.name == "labels":
                out[f.name] = value.to_json() if hasattr(value, "to_json") else value
        return out

    def merged(self, other: "Facts") -> "Facts":
        """These facts with `other`'s set fields over them (no field serialized)."""
        out = replace(self, other=self.other | other.other)
        for f in fields(other):
            if f.name != "other" and getattr(other, f.name) is not None:
                setattr(out, f.name, getattr(other, f.name))
        return out

    def __contains__(self, name: str) -> bool:
        """Whether the fact `name` is set (read like its export.json record: `"columns" in facts`)."""
        return name in self.other if name not in FIELDS else getattr(self, name) is not None

    def __getitem__(self, name: str) -> Any:
        """The fact `name` (read like its export.json record: `facts["target_scale"]`); KeyError when unset."""
        if name not in self:
            raise KeyError(name)
        return getattr(self, name) if name in FIELDS else self.other[name]

    def to_metadata(self) -> dict[str, str]:
        """The archc.* entries these facts add to a model's metadata (values JSON text, a plain string as it is);
        `labels` go into archc.task instead."""
        return {PREFIX + k: v if isinstance(v, str) else json.dumps(v)
                for k, v in self.to_record().items() if k != "labels"}

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> "Facts":
        """The facts a model's metadata holds (archc.task's labels included)."""
        record: dict[str, Any] = {}
        for key, text in meta.items():
            name = key[len(PREFIX):] if key.startswith(PREFIX) else None
            if name in FACT_KEYS:
                record[name] = text if name == "source" else loads(text)
        task = loads(meta.get(TASK, ""))
        if isinstance(task, dict) and task.get("labels") is not None:
            record["labels"] = task["labels"]
        return cls.from_record(record)


def pixel_front(meta: dict[str, str]) -> dict[str, Any] | None:
    """What a file's pixel front does (archc.pixels: input, shape [batch, H, W, C], mean/std); None without one."""
    value = loads(meta.get(PIXELS, ""))
    ok = isinstance(value, dict) and isinstance(value.get("input"), str) and isinstance(value.get("shape"), list) \
        and len(value["shape"]) == 4 and all(isinstance(d, int) for d in value["shape"][1:])
    return value if ok else None


def pixel_input(meta: dict[str, str]) -> tuple[str, tuple[int, int, int]] | None:
    """The pixel input's name and the (C, H, W) its images are read to; None for a model without a pixel front."""
    rec = pixel_front(meta)
    if rec is None:
        return None
    _, h, w, c = rec["shape"]
    return rec["input"], (c, h, w)


FIELDS = tuple(f.name for f in fields(Facts) if f.name != "other")
FACT_KEYS = tuple(name for name in FIELDS if name != "labels")  # each written as archc.<name>


def loads(text: str | None) -> Any:
    """A metadata value's JSON, or None when absent or not JSON."""
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None
