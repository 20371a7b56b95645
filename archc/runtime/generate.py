"""Text generation from an exported decoder-only language model with ONNX Runtime only (numpy; no torch)."""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

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
    prompt_seconds: float = 0.0  # the run that read the prompt and made the first token (shared by a batch)
    finish: str = "length"       # why it ended: "length" (max_new_tokens), "stop" (a stop string), "time"
    stop: str | None = None      # the stop string found (the text ends before it)


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


@dataclass(frozen=True)
class Sampling:
    """How one position's logits become the next token, in transformers' order: the repetition penalty on the raw
    logits, then greedy argmax (temperature 0 or top_k 1), else temperature, top-k, top-p and a softmax draw."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float = 1.0
    repetition_penalty: float = 1.0

    def check(self) -> None:
        t, k, p, r = self.temperature, self.top_k, self.top_p, self.repetition_penalty
        if not _number(t) or t < 0:
            raise InputError(f"expected a number >= 0 (0 = greedy), received {t!r}", where="temperature")
        if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1):
            raise InputError(f"expected a whole number >= 1 or none, received {k!r}", where="top_k")
        if not _number(p) or not 0 < p <= 1:
            raise InputError(f"expected a number in (0, 1] (1: no top-p), received {p!r}", where="top_p")
        if not _number(r) or r <= 0:
            raise InputError(f"expected a number > 0 (1: no penalty), received {r!r}", where="repetition_penalty")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1


def _number(value: object) -> bool:
    return (not isinstance(value, bool) and isinstance(value, (int, float, np.floating, np.integer))
            and math.isfinite(float(value)))


def penalize(logits: np.ndarray, seen: np.ndarray, penalty: float) -> np.ndarray:
    """transformers' RepetitionPenaltyLogitsProcessor: each id already in the text (`seen`, a bool mask over the
    ids) has its logit divided by `penalty` when positive, multiplied when negative."""
    if penalty == 1:
        return logits
    z = logits.copy()
    hit = z[seen]
    z[seen] = np.where(hit < 0, hit * penalty, hit / penalty)
    return z


def warp(logits: np.ndarray, sampling: Sampling) -> np.ndarray:
    """The logits a draw samples from (float64, removed ids at -inf): divided by the temperature, then top-k,
    then transformers' TopPLogitsWarper (keep the likeliest ids whose probabilities sum past top_p, at least one)."""
    z = np.asarray(logits, dtype=np.float64).reshape(-1) / float(sampling.temperature)
    k = sampling.top_k
    if k is not None and k < z.size:
        kth = np.partition(z, z.size - k)[z.size - k]
        z = np.where(z >= kth, z, -np.inf)
    if sampling.top_p < 1:
        order = np.argsort(z, kind="stable")                       # ascending, as transformers sorts
        ranked = z[order]
        p = np.exp(ranked - ranked[-1])
        drop = np.cumsum(p / p.sum()) <= 1 - sampling.top_p
        drop[-1] = False                                           # min_tokens_to_keep = 1
        z[order[drop]] = -np.inf
    return z


def next_token(logits: np.ndarray, temperature: float, top_k: int | None, rng: np.random.Generator,
               top_p: float = 1.0, repetition_penalty: float = 1.0, seen: np.ndarray | None = None) -> int:
    """Pick a token from one position's logits (see Sampling); `seen` marks the ids the penalty applies to."""
    return _pick(np.asarray(logits), Sampling(temperature, top_k, top_p, repetition_penalty), rng, seen)


def _pick(logits: np.ndarray, sampling: Sampling, rng: np.random.Generator, seen: np.ndarray | None) -> int:
    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    z = np.where(np.isnan(z), -np.inf, z)
    if seen is not None:
        z = penalize(z, seen, float(sampling.repetition_penalty))
    if sampling.greedy:
        return int(np.argmax(z))
    z = warp(z, sampling)
    z = z - np.max(z)
    p = np.exp(z)
    total = p.sum()
    if not np.isfinite(total) or total <= 0:
        return int(np.argmax(z))
    return int(rng.choice(z.size, p=p / total))


def generate(model: Model, prompt: str, max_new_tokens: int = 200, temperature: float = 1.0,
             top_k: int | None = None, seed: int | None = 0, cache: bool = True, top_p: float = 1.0,
             repetition_penalty: float = 1.0, stop: Sequence[str] = (), max_time: float | None = None,
             on_text: Callable[[int, str], None] | None = None) -> GenerationResult:
    """Continue `prompt` with a decoder-only LM, one token per model run: generate_many with one prompt.

    The prompt is encoded as UTF-8 bytes (an empty prompt starts from a newline byte), or by the tokenizer.json
    the model's archc.tokenizer names. Each step reads the logits of the last position of the last `context`
    tokens, applies the repetition penalty, temperature (0 = greedy argmax), top-k and top-p, and samples with
    `np.random.default_rng(seed)`. Only bytes 0..255 (or the tokenizer's ids) are sampled, and the new ids are
    decoded the same way.
    With `cache` and a KV-cache file beside the model (archc.runtime.kvcache), the window is prefilled once
    and each step then feeds one token with the past keys/values; once the window is full it slides, and
    positions shift, so each later step prefills the last `context` tokens again (what recompute does).
    Without (or `cache=False`) each step runs the model on the whole window, recomputed from scratch.
    The result holds the continuation alone (decoded with errors="replace") and the measured tokens/s.
    """
    if not isinstance(prompt, str):
        raise InputError(f"prompt: expected text, received {type(prompt).__name__}")
    return generate_many(model, [prompt], max_new_tokens, Sampling(temperature, top_k, top_p, repetition_penalty),
                         seed=seed, cache=cache, stop=stop, max_time=max_time, on_text=on_text)[0]


def generate_many(model: Model, prompts: Sequence[str], max_new_tokens: int = 200, sampling: Sampling = Sampling(),
                  seed: int | None = 0, cache: bool = True, stop: Sequence[str] = (),
                  max_time: float | None = None,
                  on_text: Callable[[int, str], None] | None = None) -> list[GenerationResult]:
    """Continue several prompts in one call, batched: each prompt gets exactly the tokens it gets alone.

    The KV-cache graph takes no attention mask (its positions are the past length), so rows are batched only
    where that is exact: prompts of the same length are prefilled together, and a shorter prompt's rows run
    first until they are as long as the next prompt, which is then prefilled (alone, as it would be) and joins
    them: from then on one decode run feeds every row (`_Batch`). Rows past the window recompute it together
    (every window is `context` long). Each prompt samples with its own `np.random.default_rng(seed)`, so its
    tokens are those `generate(prompt, seed=seed)` gives. `stop`: a row ends when its text holds one of these
    strings (the text is cut before it; its ids keep the token that completed it). `max_time`: seconds after
    which every row ends. `on_text(i, text)` is called with prompt i's text so far after each of its tokens.
    """
    _check_args(max_new_tokens, sampling, stop, max_time)
    if isinstance(prompts, str) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise InputError(f"prompts: expected a non-empty list of texts, received {str(prompts)[:60]!r}")
    lm = signature(model)
    if lm.context < lm.shortest:
        raise ModelError(f"expected a window of at least {lm.shortest} positions, received {lm.context} "
                         "(the model's archc.tokenizer context is below what its layers need)")
    encoded = [_encode(model, lm, p, i if len(prompts) > 1 else None) for i, p in enumerate(prompts)]
    kv, note = CachedLM.open(model) if cache and not lm.fixed_length else (None, "" if not cache else
                                                                           "the model's seq axis is fixed")
    run = _Batch(model, lm, kv, sampling, int(max_new_tokens), tuple(stop), max_time, on_text)
    rows = run.generate(encoded, seed)
    return [run.result(r, note) for r in rows]


def _check_args(max_new_tokens: int, sampling: Sampling, stop: Sequence[str], max_time: float | None) -> None:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
        raise InputError(f"max_new_tokens: expected a whole number >= 0, received {max_new_tokens!r}")
    sampling.check()
    if isinstance(stop, str) or not all(isinstance(s, str) and s for s in stop):
        raise InputError(f"expected a list of non-empty strings, received {stop!r}", where="stop")
    if max_time is not None and (not _number(max_time) or max_time <= 0):
        raise InputError(f"expected a number of seconds > 0, received {max_time!r}", where="max_time")


def _encode(model: Model, lm: LMSignature, prompt: str, index: int | None) -> list[int]:
    """The prompt's ids, checked against the vocabulary and the shortest window the layers take."""
    where = "prompt" if index is None else f"prompt {index + 1}"
    tokens = lm.encode(prompt)
    unit = "bytes" if lm.codec is None else "tokens"
    if not tokens:
        raise InputError(f"{where}: expected text the tokenizer encodes to at least one token, received none",
                         where=model.path or "model")
    if lm.vocab is not None and max(tokens) >= lm.vocab:
        raise InputError(f"{where}: expected {unit} below the model's vocabulary size {lm.vocab}, "
                         f"received {unit[:-1]} {max(tokens)}", where=model.path or "model")
    if len(tokens) < lm.shortest and not lm.fixed_length:
        raise InputError(f"{where}: expected at least {lm.shortest} {unit} (the model's layers need axis "
                         f"'{model.inputs[lm.input].shape[1]}' of at least {lm.shortest}), received {len(tokens)}",
                         where=model.path or "model")
    return tokens


@dataclass(eq=False)
class _Row:
    """One prompt's generation: its ids so far (prompt, then new), its sampler and timings."""

    index: int
    tokens: list[int]
    prompt: list[int]
    rng: np.random.Generator
    seen: np.ndarray | None                 # the ids in the text, for the repetition penalty
    new: list[int] = field(default_factory=list)
    text: str = ""
    start: float | None = None
    end: float = 0.0
    prompt_seconds: float = 0.0
    finish: str = ""
    stop: str | None = None


@dataclass(eq=False)
class _Group:
    """Rows run together: their texts are equally long; `mode` is prefill (nothing cached yet), kv (past holds
    every fed token's keys and values, all but the last token's) or recompute (the window is run whole)."""

    rows: list[_Row]
    mode: str
    past: list[np.ndarray] | None = None

    @property
    def length(self) -> int:
        return len(self.rows[0].tokens)


class _Batch:
    """The scheduler of generate_many: groups of rows whose next runs are the same shape, smallest text first."""

    def __init__(self, model: Model, lm: LMSignature, kv: CachedLM | None, sampling: Sampling, max_new: int,
                 stop: tuple[str, ...], max_time: float | None, on_text: Callable[[int, str], None] | None) -> None:
        self.model, self.lm, self.kv, self.sampling, self.max_new = model, lm, kv, sampling, max_new
        self.stop, self.max_time, self.on_text = stop, max_time, on_text
        self.window = min(lm.context, kv.max_positions or lm.context) if kv is not None else lm.context
        self.dtype = np.dtype(model.inputs[lm.input].dtype)
        self.decodes = bool(stop) or on_text is not None

    def generate(self, encoded: list[list[int]], seed: int | None) -> list[_Row]:
        penalty = self.sampling.repetition_penalty != 1
        rows = [_Row(i, list(t), list(t), np.random.default_rng(seed), self._seen(t) if penalty else None)
                for i, t in enumerate(encoded)]
        groups = [] if self.max_new == 0 else [_Group([r], "prefill" if self.kv is not None else "recompute")
                                               for r in rows]
        for r in rows:
            r.finish = "length" if self.max_new == 0 else ""
        start = time.perf_counter()
        while groups:
            groups = self._merged(groups)
            if self.max_time is not None and time.perf_counter() - start >= self.max_time:
                for g in groups:
                    for r in g.rows:
                        r.finish, r.end = "time", time.perf_counter()
                break
            g = min(groups, key=lambda g: g.length)
            self._step(g)
            groups = [g for g in groups if g.rows]
        return rows

    def _seen(self, tokens: list[int]) -> np.ndarray:
        seen = np.zeros(self.lm.sampled, dtype=bool)
        ids = np.asarray(tokens, dtype=np.int64)
        seen[ids[ids < self.lm.sampled]] = True
        return seen

    def _key(self, g: _Group) -> tuple:
        """Groups of equal keys run as one: the same fed length, and for kv the same past length."""
        if g.mode == "prefill":
            return "prefill", min(g.length, self.window)
        if g.mode == "kv":
            return "kv", g.past[0].shape[2]
        return "recompute", self.lm.context if self.lm.fixed_length else min(g.length, self.lm.context)

    def _merged(self, groups: list[_Group]) -> list[_Group]:
        by: dict[tuple, _Group] = {}
        for g in groups:
            key = self._key(g)
            if key not in by:
                by[key] = g
                continue
            into = by[key]
            into.rows = into.rows + g.rows
            if into.past is not None:
                into.past = [np.concatenate([a, b]) for a, b in zip(into.past, g.past)]
        return list(by.values())

    def _step(self, g: _Group) -> None:
        """One run for the group's rows: a token each; finished rows leave it."""
        t0 = time.perf_counter()
        if g.mode == "prefill":
            feed = np.asarray([r.tokens[-self.window:] for r in g.rows], dtype=np.int64)
            logits, g.past = self.kv.run(feed, self.kv.empty(len(g.rows)))
            last = logits[:, -1]
            g.mode = "kv"
        elif g.mode == "kv":
            logits, g.past = self.kv.run(np.asarray([[r.tokens[-1]] for r in g.rows], dtype=np.int64), g.past)
            last = logits[:, -1]
        else:
            last = self._recompute(g.rows)
        first = [r for r in g.rows if r.start is None]
        for r in first:
            r.start, r.prompt_seconds = t0, time.perf_counter() - t0
        keep = []
        for i, r in enumerate(g.rows):
            self._add(r, _pick(last[i, :self.lm.sampled], self.sampling, r.rng, r.seen))
            if r.finish:
                r.end = time.perf_counter()
            else:
                keep.append(i)
        if g.mode == "kv" and g.past[0].shape[2] + 1 > self.window:   # the window slid: positions shift
            g.mode, g.past = "recompute", None
        if len(keep) < len(g.rows):
            g.rows = [g.rows[i] for i in keep]
            if g.past is not None and keep:
                g.past = [p[keep] for p in g.past]

    def _add(self, r: _Row, tok: int) -> None:
        r.tokens.append(tok)
        r.new.append(tok)
        if r.seen is not None and tok < r.seen.size:
            r.seen[tok] = True
        if self.decodes:
            r.text = self.lm.decode(r.new)
            found = [(r.text.find(s), s) for s in self.stop if s in r.text]
            if found:
                at, r.stop = min(found)
                r.text, r.finish = r.text[:at], "stop"
            if self.on_text is not None:
                self.on_text(r.index, r.text)
        if not r.finish and len(r.new) >= self.max_new:
            r.finish = "length"

    def _recompute(self, rows: list[_Row]) -> np.ndarray:
        """The next token's logits [rows, vocab] from the model run on each row's whole window, the last `context`
        tokens (equally long, or right-padded to a fixed seq size)."""
        lm = self.lm
        windows = [r.tokens[-lm.context:] for r in rows]
        last = [len(w) - 1 for w in windows]
        if lm.fixed_length:
            # A causal model's earlier positions ignore later ones, so right-padding leaves `last` intact.
            windows = [w + [0] * (lm.context - len(w)) for w in windows]
        feeds = {lm.input: np.asarray(windows, dtype=self.dtype)}
        logits = self.model.run(feeds)[lm.output]
        shape = (len(rows), len(windows[0]))
        if logits.ndim != 3 or logits.shape[:2] != shape:
            raise InputError("expected a language model with int64 tokens [batch, seq] → logits [batch, seq, vocab], "
                             f"received logits {format_shape(logits.shape)} for tokens {format_shape(shape)}",
                             where=self.model.path or "model")
        return logits[np.arange(len(rows)), last]

    def result(self, r: _Row, note: str) -> GenerationResult:
        text = r.text if self.decodes else self.lm.decode(r.new)
        seconds = r.end - r.start if r.start is not None else 0.0
        rate = len(r.new) / seconds if seconds > 0 else 0.0
        return GenerationResult(text, r.new, len(r.new), seconds, rate, self.kv is not None, note if self.kv is None
                                else "", r.prompt, r.prompt_seconds, r.finish or "length", r.stop)


class TextStream:
    """Writes one prompt's continuation as it is made (`archc infer --prompt` on a terminal): each update writes
    the text not yet written, less a last U+FFFD (a character whose bytes are not all made yet) and a tail that may begin a stop
    string; `close` writes the rest of the final text."""

    def __init__(self, write: Callable[[str], None], stop: Sequence[str] = ()) -> None:
        self.write, self.stop, self.written = write, tuple(stop), ""

    def update(self, text: str) -> None:
        safe = text[:-1] if text.endswith("\ufffd") else text   # an incomplete character decodes to one U+FFFD
        hold = next((k for k in range(min(len(safe), max((len(s) for s in self.stop), default=1) - 1), 0, -1)
                     if any(s.startswith(safe[-k:]) for s in self.stop)), 0)
        self._emit(safe[:len(safe) - hold])

    def close(self, text: str) -> None:
        self._emit(text)

    def _emit(self, text: str) -> None:
        if len(text) > len(self.written) and text.startswith(self.written):
            self.write(text[len(self.written):])
            self.written = text


def read_prompts(path: str | Path) -> list[str]:
    """`--prompts FILE`: a .jsonl file holds one prompt a line (a JSON string, or an object with a "prompt"
    string); any other file one prompt a line as it is (its line break removed). Blank lines are skipped. At least
    one prompt, else an InputError naming the file."""
    p = Path(path)
    where = f"--prompts {p}"
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise InputError(f"expected a readable file of prompts, received {e.strerror or e}", where=where) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise InputError(f"line {line}: expected UTF-8 text, received byte 0x{raw[e.start]:02x}", where=where) \
            from None
    prompts = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if p.suffix.lower() != ".jsonl":
            prompts.append(line)
            continue
        try:
            value = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            value = None
        if isinstance(value, dict):
            value = value.get("prompt")
        if not isinstance(value, str):
            raise InputError(f'line {n}: expected a JSON string or an object with a "prompt" string, received '
                             f"{line[:60]!r}", where=where)
        prompts.append(value)
    if not prompts:
        raise InputError("expected at least one prompt (one a line), received none", where=where)
    return prompts


hooks.MODEL.lm_signature = signature  # the language-model task kind reads a model's context and tokenizer
