"""The exported decoder as an ONNX Runtime GenAI package: `genai_config.json`, `tokenizer.json` and
`tokenizer_config.json` beside `model.onnx` and its KV-cache graph `model.kv.onnx`, so `onnxruntime_genai`
loads the folder unmodified (`og.Model(folder)`).

The KV-cache graph already is what GenAI's generic decoder (`type = "decoder"`) drives: one graph for the prompt
(a past of length 0) and each decode step, past and present keys/values [batch, kv_heads, past, head_size] per
layer, no shared buffer. The config maps archc's names onto GenAI's (`tokens` -> input_ids, `past.%d.key` ->
past_key_names, ...); the graph takes no attention mask or position ids (GenAI feeds only the inputs a graph
has), so positions are the past length, as in `archc infer --prompt`: one unpadded sequence at a time.

The tokenizer: a model trained with a `tokenizer.json` (archc.tokenizer kind "tokenizers") already has that file
beside it, and the package uses it (its `<|endoftext|>`, else its first special token, is bos/eos/pad). A byte
model (kind "bytes", the default) gets a byte-level BPE with no merges whose 256 tokens are the bytes (token id =
byte value, as archc feeds them). A byte model has no end-of-text token, and GenAI wants an eos id below the
vocabulary: a model of 256 ids gets byte 0 (NUL, which text does not hold; so GenAI stops early only where the
model emits NUL, which `archc infer` would print), a larger one `<|endoftext|>` at id 256, the first id that is no
byte. That id is bos and pad too (GenAI prepends nothing: the prompt is its bytes, as in `archc infer`).

Never a user's file replaced: the KV file's metadata (archc.genai) records the digest of each package file archc
wrote; at the next export those files, still as written, are removed with the stale KV file; a file of that name
that archc did not write (or that was edited since) is left alone, and the package is then not written (a note).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import archc.metadata as keys

META_KEY = keys.GENAI
CONFIG = "genai_config.json"
TOKENIZER = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
FILES = (CONFIG, TOKENIZER, TOKENIZER_CONFIG)
EOS = "<|endoftext|>"  # a byte model's end-of-text token (GPT-2's name; archc's trained BPE adds the same)
BYTES = 256
NUL = 0  # a 256-id byte model's end of text: the byte text never holds
DEFAULT_CONTEXT = 256  # archc.runtime.generate's window when nothing records one


@dataclass
class Package:
    """The package files to write beside the model (name -> bytes) and the ids chosen."""

    files: dict[str, bytes]
    context: int
    eos: int
    written: list[str] = field(default_factory=list)  # set once written: the files put in place
    folder: str = ""
    uses: str = ""  # the model's own tokenizer file the package reads (not archc's to write)

    def digests(self) -> dict[str, str]:
        return {name: hashlib.sha256(data).hexdigest() for name, data in self.files.items()}


@dataclass
class Skipped:
    """Why no GenAI package was written."""

    why: str


def byte_alphabet() -> list[str]:
    """GPT-2's byte -> printable character table (the ByteLevel pre-tokenizer's): byte b is token b."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(BYTES):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(BYTES + extra)
            extra += 1
    return [chars[b] for b in range(BYTES)]


def byte_tokenizer(vocab: int) -> dict[str, Any]:
    """A tokenizer.json whose ids are the UTF-8 bytes of the text (no merges); a model of more than 256 ids gets
    `EOS` at id 256."""
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    added = [{"id": BYTES, "content": EOS, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True}] if vocab > BYTES else []
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
            "normalizer": None, "pre_tokenizer": byte_level, "post_processor": None, "decoder": byte_level,
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                      "vocab": {c: i for i, c in enumerate(byte_alphabet())}, "merges": []}}


def _special(text: str) -> tuple[int, str] | None:
    """A tokenizer.json's end-of-text token (id, text): its `<|endoftext|>`, else its first special added token,
    else None."""
    try:
        added = json.loads(text).get("added_tokens") or []
    except (ValueError, AttributeError):
        return None
    special = [t for t in added if isinstance(t, dict) and t.get("special") and isinstance(t.get("id"), int)]
    named = [t for t in special if t.get("content") == EOS]
    first = (named or special or [None])[0]
    return (first["id"], str(first.get("content", ""))) if first else None


def context_of(meta: dict[str, str], seq: str, max_positions: int | None) -> int:
    """The window `archc infer --prompt` uses (archc.runtime.generate.signature): archc.tokenizer's context, else
    the spec's [axes] entry of the seq axis, else 256; capped by a position table's rows."""
    whole = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1  # noqa: E731
    tok, spec = _load(meta, keys.TOKENIZER), _load(meta, keys.SPEC)
    context = tok.get("context") if isinstance(tok, dict) else None
    if not whole(context):
        axes = spec.get("axes") if isinstance(spec, dict) else None
        context = axes.get(seq) if isinstance(axes, dict) else None
    context = context if whole(context) else DEFAULT_CONTEXT
    return min(context, max_positions) if max_positions else context


def _load(meta: dict[str, str], key: str) -> Any:
    try:
        return json.loads(meta.get(key, "null"))
    except ValueError:
        return None


def plan(lay: Any, meta: dict[str, str], main: Path) -> Package | Skipped:
    """The package of the KV-cache layout `lay` (archc.export.kvcache.CacheLayout) for the model at `main` with
    metadata `meta` (its archc.* entries), or why GenAI cannot run it."""
    out = (_load(meta, keys.OUTPUTS) or {}).get(lay.output) or {}
    seq = ((_load(meta, keys.INPUTS) or {}).get(lay.input) or {}).get("shape", ["seq"])[-1]
    vocab = (out.get("shape") or [None])[-1]
    if out.get("kind", "logits") != "logits":
        return Skipped(f"output '{lay.output}' holds {out.get('kind')}, not logits (GenAI samples from logits)")
    if len(set(lay.heads)) != 1:
        return Skipped(f"GenAI expects one attention head count for every layer, received {lay.heads}")
    if len(set(lay.kv_heads)) != 1 or len(set(lay.head_dim)) != 1:
        return Skipped(f"GenAI expects one key/value head count and head size for every layer, received kv heads "
                       f"{lay.kv_heads} and head sizes {lay.head_dim}")
    if not isinstance(vocab, int):
        return Skipped(f"expected a fixed vocabulary axis on output '{lay.output}', received {vocab!r}")
    tok = _load(meta, keys.TOKENIZER)
    tok = tok if isinstance(tok, dict) else {}
    kind = tok.get("kind", "bytes")
    files: dict[str, bytes] = {}
    if kind == "bytes":
        eos = BYTES if vocab > BYTES else NUL
        eos_text = EOS if vocab > BYTES else byte_alphabet()[NUL]
        files[TOKENIZER] = json.dumps(byte_tokenizer(vocab), ensure_ascii=False, indent=1).encode("utf-8")
    else:
        name = tok.get("file")
        path = main.parent / name if isinstance(name, str) else None
        if path is None or not path.is_file():
            return Skipped(f"the model's tokenizer ({kind}) names no tokenizer.json beside it")
        if path.name != TOKENIZER:
            files[TOKENIZER] = path.read_bytes()
        found = _special(path.read_text(encoding="utf-8", errors="replace"))
        if found is None or not 0 <= found[0] < vocab:
            return Skipped(f"{path.name} has no special token below the vocabulary size {vocab} to end generation "
                           "with (GenAI needs an eos id)")
        eos, eos_text = found
    context = context_of(meta, seq, lay.max_positions)
    files[TOKENIZER_CONFIG] = _dump({"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": context,
                                     "bos_token": eos_text, "eos_token": eos_text, "pad_token": eos_text,
                                     "clean_up_tokenization_spaces": False, "add_bos_token": False,
                                     "add_eos_token": False})
    files[CONFIG] = _dump(config(lay, main, context, vocab, eos))
    return Package(files, context, eos, uses="" if kind == "bytes" or TOKENIZER in files else TOKENIZER)


def config(lay: Any, main: Path, context: int, vocab: int, eos: int) -> dict[str, Any]:
    """genai_config.json: GenAI's generic decoder over the KV-cache graph, archc's names mapped onto GenAI's."""
    from archc.runtime.kvcache import ONE_THREAD_BYTES, cache_path, weights_bytes

    options: dict[str, Any] = {"log_id": "onnxruntime-genai", "provider_options": []}
    if weights_bytes(main) < ONE_THREAD_BYTES:  # archc infer's rule: small decode steps run faster on one thread
        options["intra_op_num_threads"] = 1
    decoder = {"filename": cache_path(main).name, "session_options": options,
               "hidden_size": lay.hidden, "num_attention_heads": lay.heads[0], "num_key_value_heads": lay.kv_heads[0],
               "head_size": lay.head_dim[0], "num_hidden_layers": lay.layers,
               "inputs": {"input_ids": lay.input, "past_key_names": "past.%d.key",
                          "past_value_names": "past.%d.value"},
               "outputs": {"logits": lay.output, "present_key_names": "present.%d.key",
                           "present_value_names": "present.%d.value"}}
    return {"model": {"type": "decoder", "bos_token_id": eos, "eos_token_id": eos, "pad_token_id": eos,
                      "context_length": context, "vocab_size": vocab, "decoder": decoder},
            "search": {"max_length": context, "min_length": 0, "do_sample": False, "num_beams": 1,
                       "num_return_sequences": 1, "past_present_share_buffer": False, "temperature": 1.0,
                       "top_k": 1, "top_p": 1.0, "repetition_penalty": 1.0, "length_penalty": 1.0,
                       "early_stopping": True, "no_repeat_ngram_size": 0, "diversity_penalty": 0.0}}


def _dump(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode("utf-8")


def recorded(kv_path: Path) -> dict[str, str]:
    """The package files (name -> sha256) an earlier export recorded in the KV file at `kv_path`; {} if none."""
    if not kv_path.is_file():
        return {}
    try:
        got = json.loads(metadata_entry(kv_path, META_KEY) or "{}")
    except (OSError, ValueError):  # an unreadable earlier file: nothing of it is trusted as archc's
        return {}
    return {k: v for k, v in got.items() if k in FILES and isinstance(v, str)} if isinstance(got, dict) else {}


def archcs_own(path: Path, out: Path) -> bool:
    """Whether `path` is a GenAI package file archc wrote at the last export to `out` (a byte model's
    tokenizer.json), still as written: an export to `out` replaces it."""
    from archc.runtime.kvcache import cache_path

    digest = recorded(cache_path(out)).get(path.name)
    return digest is not None and path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == digest


def _varint(f: Any) -> int:
    value = shift = 0
    while True:
        byte = f.read(1)
        if not byte:
            raise ValueError("truncated varint")
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def metadata_entry(path: Path, key: str) -> str | None:
    """One metadata_props value of an ONNX file, read by walking the ModelProto's top-level fields and seeking
    past the others (the graph and its weights: hundreds of MB that onnx.load would parse)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        while f.tell() < size:
            tag = _varint(f)
            field_number, wire = tag >> 3, tag & 7
            if wire == 0:
                _varint(f)
            elif wire == 1 or wire == 5:
                f.seek(8 if wire == 1 else 4, os.SEEK_CUR)
            elif wire == 2:
                length = _varint(f)
                if field_number != 14:  # ModelProto.metadata_props
                    f.seek(length, os.SEEK_CUR)
                    continue
                entry = _entry(f.read(length))
                if entry[0] == key:
                    return entry[1]
            else:
                raise ValueError(f"unexpected wire type {wire}")
    return None


def _entry(blob: bytes) -> tuple[str, str]:
    """A StringStringEntryProto's (key, value)."""
    import io

    f, got = io.BytesIO(blob), {1: "", 2: ""}
    while f.tell() < len(blob):
        tag = _varint(f)
        if tag & 7 != 2:
            raise ValueError("expected a string field")
        got[tag >> 3] = f.read(_varint(f)).decode("utf-8")
    return got[1], got[2]


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def remove_stale(folder: Path, owned: dict[str, str]) -> None:
    """Remove the package files archc wrote at the last export (still as written): a stale package must not
    outlive the KV file it describes."""
    for name, digest in owned.items():
        p = folder / name
        if p.is_file() and not p.is_symlink() and _sha256(p) == digest:
            p.unlink()


def clashes(package: Package, folder: Path) -> list[str]:
    """The package files that exist beside the model with other content (a user's: never replaced)."""
    return [name for name, data in package.files.items()
            if os.path.lexists(folder / name) and _sha256(folder / name) != hashlib.sha256(data).hexdigest()]


def write(package: Package, folder: Path) -> Package:
    """Write the package files not already there with the same content, each atomically."""
    from archc.util import write_bytes_atomic

    package.folder = str(folder)
    for name, data in package.files.items():
        if not os.path.lexists(folder / name):
            write_bytes_atomic(folder / name, data)
        package.written.append(name)
    return package


def describe(result: Package | Skipped | None) -> str:
    """One line for the CLI and the training log ('' when no package was considered)."""
    if isinstance(result, Package):
        uses = f" with the model's {result.uses}" if result.uses else ""
        return (f"wrote the ONNX Runtime GenAI package in {result.folder or '.'} ({', '.join(result.written)}{uses}; "
                f"context {result.context}, eos id {result.eos})")
    if isinstance(result, Skipped):
        return f"note: no ONNX Runtime GenAI package ({result.why})"
    return ""
