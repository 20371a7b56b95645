"""Text generation from an exported decoder-only language model with ONNX Runtime only (numpy; no torch)."""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from archc.errors import InputError, ModelError
from archc.runtime.kvcache import CachedLM
from archc.runtime.session import Model, TensorSig, format_shape
import archc.metadata as keys
from archc.tasks import hooks

DEFAULT_CONTEXT = 256
BYTE_VOCAB = 256
NEWLINE = 10


@dataclass
class GenerationResult:
    """The continuation only (not the prompt): its text, token ids, count and speed."""

    text: str
    tokens: list[int]
    new_tokens: int
    seconds: float
    tokens_per_second: float
    cached: bool = False  # the KV-cache file ran the steps
    note: str = ""        # why the cache was not used (recompute), when it was asked for
    prompt_tokens: list[int] | None = None  # the prompt's token ids as fed (bytes, or the tokenizer's ids)


@dataclass(frozen=True)
class LMSignature:
    """How to drive a model as a token LM: input/output names, window length, vocab, and its tokenizer."""

    input: str
    output: str
    context: int
    fixed_length: bool  # the model's seq axis is a fixed size: windows are right-padded to `context`
    vocab: int | None   # the output's vocab axis when known
    shortest: int = 1   # the fewest positions the layers accept (archc.bounds: a `select` of position 4 needs 5)
    codec: Any = None   # the tokenizer.json beside the model (archc.data.tokenizer_file.TokenizerFile); None: bytes

    @property
    def sampled(self) -> int:
        """How many ids generation samples among: 256 bytes, or the tokenizer's vocabulary."""
        return BYTE_VOCAB if self.codec is None else self.codec.vocab_size

    def encode(self, prompt: str) -> list[int]:
        """The prompt's ids: UTF-8 bytes, or the tokenizer's (special tokens added, as transformers does); an empty
        prompt starts from a newline."""
        if self.codec is None:
            return list(prompt.encode("utf-8")) or [NEWLINE]
        return self.codec.encode(prompt) or self.codec.encode("\n", special=False)

    def decode(self, ids: list[int]) -> str:
        """Text of generated ids (invalid UTF-8 bytes become U+FFFD)."""
        if self.codec is None:
            return bytes(ids).decode("utf-8", errors="replace")
        return self.codec.decode(ids)


def _json(model: Model, key: str):
    raw = model.metadata.get(key)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ModelError(f"metadata {key!r}: expected JSON, received {raw[:60]!r} "
                         f"({getattr(exc, 'msg', 'nested too deeply')})") from None


def _not_lm(model: Model) -> InputError:
    ins = ", ".join(f"{s.name} {s.describe()}" for s in model.inputs.values()) or "no inputs"
    outs = ", ".join(f"{s.name} {s.describe()}" for s in model.outputs.values()) or "no outputs"
    return InputError("expected a language model with int64 tokens [batch, seq] → logits [batch, seq, vocab], "
                      f"received inputs ({ins}) → outputs ({outs})", where=model.path or "model")


def signature(model: Model) -> LMSignature:
    """Check the model is a token LM and find its context.

    Context, first found: metadata `archc.tokenizer` {"kind": "bytes", "vocab_size": 256, "context": N} (or
    {"kind": "tokenizers", "file": "tokenizer.json", "sha256": ..., ...}: that file beside the model is read);
    a fixed seq axis of the input; the spec's `axes` entry (metadata `archc.spec`) naming the symbolic seq
    axis of the input (as described by `archc.inputs`); else 256. A fixed seq axis always sets the length fed;
    a symbolic one is capped by the range the layers accept (`archc.bounds`, e.g. a position table's rows), so
    the window never grows past what the model runs on.
    """
    if len(model.inputs) != 1:
        raise _not_lm(model)
    sig: TensorSig = next(iter(model.inputs.values()))
    if len(sig.shape) != 2 or sig.dtype not in ("int64", "int32"):
        raise _not_lm(model)
    outs = [o for o in model.outputs.values() if len(o.shape) == 3 and o.dtype in ("float32", "float16", "float64")]
    if not outs:
        raise _not_lm(model)
    out = next((o for o in outs if o.kind == "logits"), outs[0])
    tok = _json(model, keys.TOKENIZER)
    if tok is not None and not isinstance(tok, dict):
        raise ModelError(f"metadata 'archc.tokenizer': expected a JSON object, received {str(tok)[:60]!r}")
    tok = tok or {}
    codec = _codec(model, tok)
    seq = sig.shape[1]
    fixed = isinstance(seq, int) and seq > 0
    context = tok.get("context")
    if fixed:
        context = seq
    if not isinstance(context, int) or isinstance(context, bool) or context < 1:
        context = None
        if isinstance(seq, str):
            spec = _json(model, keys.SPEC)
            axes = spec.get("axes") if isinstance(spec, dict) else None
            size = axes.get(seq) if isinstance(axes, dict) else None
            if isinstance(size, int) and not isinstance(size, bool) and size >= 1:
                context = size
        context = context or DEFAULT_CONTEXT
    low, high = _recorded_range(model, seq)
    if high is not None and not fixed:
        context = min(context, high)  # the layers index at most `high` positions (a position table's rows)
    vocab = out.shape[2] if isinstance(out.shape[2], int) else None
    return LMSignature(sig.name, out.name, int(context), fixed, vocab, low, codec)


def _codec(model: Model, tok: dict) -> Any:
    """The tokenizer archc.tokenizer names: None for bytes, else its file beside the model, read and checked
    against the recorded hash (`tokenizers` is imported only then)."""
    kind = tok.get("kind", "bytes")
    if kind == "bytes":
        return None
    from archc.data.tokenizer_file import KIND, read

    name = tok.get("file")
    if kind != KIND or not isinstance(name, str) or not name or Path(name).name != name:
        raise ModelError(f"metadata 'archc.tokenizer': expected kind 'bytes', or kind {KIND!r} with the name of a "
                         f"file beside the model, received {json.dumps(tok)[:120]}", file=model.path or "")
    path = Path(model.path or ".").parent / name
    codec = read(path, str(path))
    recorded = tok.get("sha256")
    if isinstance(recorded, str) and recorded != codec.sha256:
        raise ModelError(f"expected the {name} the model was trained with (sha256 {recorded[:12]}…), received one "
                         f"whose sha256 is {codec.sha256[:12]}…", file=str(path),
                         hint="put back the run's own tokenizer file")
    return codec


def _recorded_range(model: Model, seq: object) -> tuple[int, int | None]:
    """The sizes of the seq axis the model's layers accept, as recorded at export (archc.bounds); (1, None) when
    the axis is fixed or nothing bounds it."""
    axes = model.bounds.get("axes") if isinstance(model.bounds, dict) else None
    entry = axes.get(seq) if isinstance(seq, str) and isinstance(axes, dict) else None
    if not isinstance(entry, dict):
        return 1, None
    low, high = entry.get("min"), entry.get("max")
    valid = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1  # noqa: E731
    return (low if valid(low) else 1), (high if valid(high) else None)


def _check_args(max_new_tokens: int, temperature: float, top_k: int | None) -> None:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
        raise InputError(f"max_new_tokens: expected a whole number >= 0, received {max_new_tokens!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.floating, np.integer)) \
            or not math.isfinite(float(temperature)) or temperature < 0:
        raise InputError(f"temperature: expected a number >= 0 (0 = greedy), received {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise InputError(f"top_k: expected a whole number >= 1 or none, received {top_k!r}")


def next_token(logits: np.ndarray, temperature: float, top_k: int | None, rng: np.random.Generator) -> int:
    """Pick a token from one position's logits: argmax at temperature 0, else sample softmax(logits / T) over top-k."""
    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    z = np.where(np.isnan(z), -np.inf, z)
    if top_k is not None and top_k < z.size:
        kth = np.partition(z, z.size - top_k)[z.size - top_k]
        z = np.where(z >= kth, z, -np.inf)
    if temperature == 0 or top_k == 1:
        return int(np.argmax(z))
    z = z / float(temperature)
    z = z - np.max(z)
    p = np.exp(z)
    total = p.sum()
    if not np.isfinite(total) or total <= 0:
        return int(np.argmax(z))
    return int(rng.choice(z.size, p=p / total))


def generate(model: Model, prompt: str, max_new_tokens: int = 200, temperature: float = 1.0,
             top_k: int | None = None, seed: int | None = 0, cache: bool = True) -> GenerationResult:
    """Continue `prompt` with a decoder-only LM, one token per model run.

    The prompt is encoded as UTF-8 bytes (an empty prompt starts from a newline byte), or by the tokenizer.json
    the model's archc.tokenizer names. Each step reads the logits of the last position of the last `context`
    tokens, applies temperature (0 = greedy argmax) and top-k, and samples with `np.random.default_rng(seed)`.
    Only bytes 0..255 (or the tokenizer's ids) are sampled, and the new ids are decoded the same way.
    With `cache` and a KV-cache file beside the model (archc.runtime.kvcache), the window is prefilled once
    and each step then feeds one token with the past keys/values; once the window is full it slides, and
    positions shift, so each later step prefills the last `context` tokens again (what recompute does).
    Without (or `cache=False`) each step runs the model on the whole window, recomputed from scratch.
    The result holds the continuation alone (decoded with errors="replace") and the measured tokens/s.
    """
    _check_args(max_new_tokens, temperature, top_k)
    if not isinstance(prompt, str):
        raise InputError(f"prompt: expected text, received {type(prompt).__name__}")
    lm = signature(model)
    tokens = lm.encode(prompt)
    unit = "bytes" if lm.codec is None else "tokens"
    if not tokens:
        raise InputError("prompt: expected text the tokenizer encodes to at least one token, received none",
                         where=model.path or "model")
    if lm.vocab is not None and max(tokens) >= lm.vocab:
        raise InputError(f"prompt: expected {unit} below the model's vocabulary size {lm.vocab}, "
                         f"received {unit[:-1]} {max(tokens)}", where=model.path or "model")
    if len(tokens) < lm.shortest and not lm.fixed_length:
        raise InputError(f"prompt: expected at least {lm.shortest} {unit} (the model's layers need axis "
                         f"'{model.inputs[lm.input].shape[1]}' of at least {lm.shortest}), received {len(tokens)}",
                         where=model.path or "model")
    if lm.context < lm.shortest:
        raise ModelError(f"expected a window of at least {lm.shortest} positions, received {lm.context} "
                         "(the model's archc.tokenizer context is below what its layers need)")
    dtype = np.dtype(model.inputs[lm.input].dtype)
    rng = np.random.default_rng(seed)
    kv, note = CachedLM.open(model) if cache and not lm.fixed_length else (None, "" if not cache else
                                                                           "the model's seq axis is fixed")
    fed = list(tokens)
    if kv is not None:
        result = _generate_cached(model, kv, lm, tokens, int(max_new_tokens), float(temperature), top_k, rng)
    else:
        new: list[int] = []
        start = time.perf_counter()
        for _ in range(int(max_new_tokens)):
            tok = next_token(_recompute(model, lm, tokens, dtype), float(temperature), top_k, rng)
            tokens.append(tok)
            new.append(tok)
        result = _result(lm, new, time.perf_counter() - start, cached=False, note=note)
    result.prompt_tokens = fed
    return result


def _recompute(model: Model, lm: LMSignature, tokens: list[int], dtype: np.dtype) -> np.ndarray:
    """The next token's logits (sampled ids only) from the model run on the whole window: the last `context`
    tokens."""
    window = tokens[-lm.context:]
    last = len(window) - 1
    if lm.fixed_length and len(window) < lm.context:
        # A causal model's earlier positions ignore later ones, so right-padding leaves `last` intact.
        window = window + [0] * (lm.context - len(window))
    feeds = {lm.input: np.asarray([window], dtype=dtype)}
    logits = model.run(feeds)[lm.output]
    if logits.ndim != 3 or logits.shape[0] != 1 or logits.shape[1] != len(window):
        raise InputError("expected a language model with int64 tokens [batch, seq] → logits [batch, seq, vocab], "
                         f"received logits {format_shape(logits.shape)} for tokens {format_shape((1, len(window)))}",
                         where=model.path or "model")
    return logits[0, last, :lm.sampled]


def _result(lm: LMSignature, new: list[int], seconds: float, cached: bool, note: str = "") -> GenerationResult:
    text = lm.decode(new)
    rate = len(new) / seconds if seconds > 0 else 0.0
    return GenerationResult(text, new, len(new), seconds, rate, cached, note)


def _generate_cached(model: Model, kv: CachedLM, lm: LMSignature, tokens: list[int], max_new_tokens: int,
                     temperature: float, top_k: int | None, rng: np.random.Generator) -> GenerationResult:
    """generate() with the KV cache: the same windows (and so the same tokens) as the recompute loop.

    Once the text outgrows the window, every later window starts one token further on and all positions shift,
    so no cached key stays valid: those steps are the recompute's own (the plain model on the window, which
    measured faster than prefilling the cache graph: 335 vs 321 tokens/s for gpt_stdlib)."""
    window = min(lm.context, kv.max_positions or lm.context)
    dtype = np.dtype(model.inputs[lm.input].dtype)
    new: list[int] = []
    past: list[np.ndarray] | None = None
    start = time.perf_counter()
    for _ in range(max_new_tokens):
        cached = 0 if past is None else past[0].shape[2]
        if past is not None and cached + 1 > window:               # the window slid: positions shift
            tok = next_token(_recompute(model, lm, tokens, dtype), temperature, top_k, rng)
            tokens.append(tok)
            new.append(tok)
            continue
        if past is not None:
            feed, state = tokens[-1:], past                        # decode: the one new token at position `cached`
        else:
            feed, state = tokens[-window:], kv.empty(1)            # prefill
        logits, past = kv.run(np.asarray([feed], dtype=np.int64), state)
        tok = next_token(logits[0, -1, :lm.sampled], temperature, top_k, rng)
        tokens.append(tok)
        new.append(tok)
    return _result(lm, new, time.perf_counter() - start, cached=True)


hooks.MODEL.lm_signature = signature  # the language-model task kind reads a model's context and tokenizer
