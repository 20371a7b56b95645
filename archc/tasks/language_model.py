"""language_model: next-token logits [batch, seq, vocab]; cross-entropy, bits per byte, text generation."""
from __future__ import annotations

import math
from typing import Any

from archc.errors import DataError, InputError, SpecError
from archc.tasks.base import Example, F, Task, np, register, score_output, task_output, torch
from archc.tasks.hooks import lm_signature
from archc.labels import TOKENS

CORPUS = "".join(f"def f{i}(x):\n    return x * {i % 7} + {i % 3}\n" for i in range(60))  # the example's text


def log_softmax(x: np.ndarray) -> np.ndarray:
    """Stable log-softmax over the last axis, float64."""
    z = np.asarray(x, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


@register
class LanguageModel(Task):
    """Next-token cross-entropy over [batch, seq, vocab] outputs against y [batch, seq]; metric: bits per byte.

    Each example's loss is the mean over its positions (summed over the batch, as everywhere). With byte
    tokens the mean cross-entropy in nats over ln 2 is bits per byte; perplexity is exp(mean cross-entropy).
    With a tokenizer, bits per byte is the bits of every target token over the UTF-8 bytes they stand for
    (TokenizerFile.byte_lengths), over a whole split; bits per token and perplexity (per token) come beside it.
    """

    kind = "language_model"
    smooths_labels = True
    data_task = TOKENS
    metric = "bpb"
    higher_is_better = False
    losses = ("cross_entropy",)
    scores = True
    modes = ("generate", "table")
    noun = "language model"
    output_axes = ("batch", "seq", "vocab")
    score_noun = "logits"

    @classmethod
    def check_inputs(cls, graph, spec) -> None:
        """One int64 token input [batch, seq] whose positions the output keeps ([batch, seq, vocab]): what
        training's next-token windows and `archc infer --prompt` feed and read (check_vocab: room for the ids the
        [data] source draws)."""
        ins = graph.inputs
        name, t = next(iter(ins.items())) if len(ins) == 1 else ("", None)
        if t is None or t.dtype != "int64" or not t.batched or t.rank != 2:
            shown = ", ".join(f"{n} {v.dtype} {v.show()}" for n, v in ins.items())
            raise SpecError(f"language_model expects one int64 token input [batch, seq], received {shown}",
                            where="inputs", hint='e.g. [inputs.tokens] shape = ["seq"], dtype = "int64", vocab = 256')
        out_name = task_output(graph, spec)
        out = graph.type_of(graph.outputs[out_name])
        if out.rank == 3 and out.shape[1] != t.shape[1]:
            raise SpecError(f"language_model expects the output '{out_name}' to keep the input's positions "
                            f"[batch, {t.shape[1]}, vocab] (one next-token score per input token), received "
                            f"{out.show()}", where="task.kind")

    @classmethod
    def check_vocab(cls, graph, spec, drawn: int | None, by: str | None = None) -> None:
        """Room for every token id the [data] source draws (text: bytes, 256, or its tokenizer's vocabulary) in the
        token input's vocab (declared, or the smallest table the ids index: archc.graph.bounds) and the output's
        logits, which training would otherwise refuse. `by`: what draws them (default: the [data] source)."""
        if not drawn:
            return
        by = by or f"{spec.data.source}"
        name, _ = next(iter(graph.inputs.items()))
        out_name = task_output(graph, spec)
        out = graph.type_of(graph.outputs[out_name])
        vocab = graph.vocab.get(name)
        if isinstance(vocab, int) and vocab < drawn:
            raise SpecError(f"language_model on {by} expects input '{name}' to take {drawn} token ids "
                            f"(0..{drawn - 1}), received vocab = {vocab}", where=f"inputs.{name}",
                            hint=f"set vocab = {drawn} and the embedding's num_embeddings to at least {drawn}")
        if out.rank == 3 and isinstance(out.shape[2], int) and out.shape[2] < drawn:
            raise SpecError(f"language_model on {by} expects the output '{out_name}' to score "
                            f"{drawn} next tokens per position, received {out.show()}", where="task.kind")

    # ---- infer ----
    @classmethod
    def load_options(cls, model) -> dict[str, Any]:
        """Windows of the model's context (its tokenizer metadata, fixed seq axis or [axes] entry), and its
        tokenizer.json (beside the model) when it has one, unless the source sets ?context= or ?tokenizer= itself."""
        lm = lm_signature(model)
        return {"defaults": {"context": lm.context, "tokenizer": None if lm.codec is None else lm.codec.path}}

    @classmethod
    def match_classes(cls, model, ds, source):
        """The data as loaded when their ids are the model's: the tokenizer it was trained with (the same file
        content, by sha256), or bytes for a bytes model; an InputError otherwise (another tokenizer's ids would be
        scored as the model's vocabulary, silently wrong)."""
        codec = lm_signature(model).codec
        tok = getattr(ds, "tokenizer", None) or {}
        received = tok.get("sha256") if tok.get("kind", "bytes") != "bytes" else None
        expected = None if codec is None else codec.sha256
        if received == expected:
            return ds
        path = getattr(ds, "tokenizer_path", None)
        got = "byte tokens (no ?tokenizer=)" if received is None else f"{path!r}, whose sha256 is {received[:12]}…"
        if codec is None:
            raise InputError(f"expected byte tokens, as the model was trained on, received the ids of {got}",
                             where="--input", hint="leave ?tokenizer= out: the model reads bytes")
        raise InputError(f"expected the tokenizer the model was trained with ({codec.path!r}, sha256 "
                         f"{expected[:12]}…), received {got}", where="--input",
                         hint="leave ?tokenizer= out: the model's own tokenizer.json is used")

    @classmethod
    def score(cls, model, outputs, y):
        """Bits per byte and perplexity of the next tokens (numpy), as `archc train` reports them; with a tokenizer,
        bits per byte over the bytes the targets stand for, and bits per token."""
        name = score_output(model, outputs)
        values = np.asarray(outputs[name])
        kind = getattr(model.outputs.get(name), "kind", None)
        logp = (np.log(np.clip(values, 1e-12, None)) if kind == "probs" else
                values.astype(np.float64) if kind == "log_probs" else log_softmax(values))      # (N, T, V)
        ids = np.asarray(y, dtype=np.int64)          # a text: source's windows are its token file's (uint8 for bytes)
        nll = -np.take_along_axis(logp, ids[..., None], axis=-1)[..., 0]                          # (N, T)
        mean = float(nll.mean())
        perplexity = {"perplexity": math.exp(mean) if mean < 700 else math.inf}
        codec = lm_signature(model).codec
        if codec is None:
            return {"bpb": mean / math.log(2)} | perplexity
        nbytes = int(codec.byte_lengths()[ids].sum())
        return {"bpb": float(nll.sum()) / math.log(2) / max(nbytes, 1), "bits_per_token": mean / math.log(2)} \
            | perplexity

    @classmethod
    def example(cls) -> Example:
        return Example({"archc": 1, "model": {"name": "tiny-lm"},
                        "inputs": {"tokens": {"shape": ["seq"], "dtype": "int64", "vocab": 256}},
                        "axes": {"seq": 16}, "task": {"kind": "language_model"},
                        "layers": [{"id": "emb", "op": "embedding", "num_embeddings": 256, "embedding_dim": 8},
                                   {"op": "attention", "num_heads": 2, "causal": True},
                                   {"id": "logits", "op": "tied_linear", "tie": "emb"}],
                        "train": {"epochs": 1, "batch_size": 16},
                        "data": {"source": "text:corpus.txt", "val_fraction": 0.2, "test_fraction": 0.2}},
                       infer=(("--prompt", "def ", "--max-new-tokens", "8"), ("--input", "text:{dir}/corpus.txt")),
                       files={"corpus.txt": CORPUS})

    # ---- train ----
    def __init__(self, spec, graph) -> None:
        super().__init__(spec, graph)
        self.vocab = self.out_type.shape[2]
        self.tokenizer: dict[str, Any] = {}
        self.tokenizer_text: str | None = None  # a tokenizer.json's text, copied beside the model
        self.tokenizer_path: str | None = None  # where it was read from
        self.token_bytes: Any = None  # with a tokenizer: (vocab,) int64 tensor, the UTF-8 bytes each id stands for
        self.baselines: dict[str, float] = {}

    def check(self, dataset) -> None:
        """Targets must be token ids below the vocabulary; also notes the tokenizer and the held-out baselines."""
        for name, split in (("train", dataset.train), ("val", dataset.val), ("test", dataset.test)):
            if len(split) and int(split.y.max()) >= self.vocab:
                raise DataError(f"{name}: expected token ids in 0..{self.vocab - 1} (the output "
                                f"'{self.output_name}' has {self.vocab} logits per position), received "
                                f"{int(split.y.max())}", where=f"data {dataset.name}")
        self.tokenizer = dict(getattr(dataset, "tokenizer", {}) or {})
        self.tokenizer_text = getattr(dataset, "tokenizer_text", None)
        self.tokenizer_path = getattr(dataset, "tokenizer_path", None)
        text = getattr(dataset, "text", None)
        bytes_ = self.tokenizer.get("kind", "bytes") == "bytes"  # the baselines are byte models
        lengths = getattr(dataset, "token_bytes", None)
        if not bytes_ and lengths is not None:
            self.token_bytes, self.metric_unit = torch.as_tensor(lengths, dtype=torch.int64), "bytes"
        if bytes_ and text and len(text.get("test", ())) and len(text.get("train", ())):
            from archc.data.text import baselines
            self.baselines = baselines(text["train"], text["test"])

    def log_probs(self, out):
        """(B, T, V) log-probabilities from logits, probs or log_probs."""
        if self.out_kind == "probs":
            return out.float().clamp_min(1e-12).log()
        return out.float() if self.out_kind == "log_probs" else F.log_softmax(out.float(), dim=-1)

    def token_nll(self, out, y, smoothing: float = 0.0):
        """Cross-entropy per position: (B, T) in nats."""
        logp = self.log_probs(out)                                           # (B, T, V)
        nll = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)                 # (B, T)
        return nll if smoothing == 0 else (1 - smoothing) * nll - smoothing * logp.mean(dim=-1)

    def loss(self, out, y):
        return self.token_nll(out, y, self.label_smoothing).mean(dim=1).sum()

    def metric_sum(self, out, y):
        """Bits per byte summed over the batch (bytes: per window), or with a tokenizer the batch's bits (divided by
        metric_weight's bytes)."""
        if self.token_bytes is None:
            return (self.token_nll(out, y).mean(dim=1) / math.log(2)).sum()
        return self.token_nll(out, y).double().sum() / math.log(2)

    def metric_weight(self, y):
        """The windows (bytes), or with a tokenizer the UTF-8 bytes the batch's target tokens stand for."""
        if self.token_bytes is None:
            return len(y)
        if self.token_bytes.device != y.device:
            self.token_bytes = self.token_bytes.to(y.device)
        return self.token_bytes[y].sum()

    def metadata(self) -> dict[str, Any]:
        """The ONNX metadata generation needs: the tokenizer (kind, vocab_size, context)."""
        return {"tokenizer": self.tokenizer} if self.tokenizer else {}

    def files(self) -> dict[str, str]:
        """The tokenizer.json the data were encoded with (archc.tokenizer's `file`), when one was named."""
        name = self.tokenizer.get("file")
        return {name: self.tokenizer_text} if isinstance(name, str) and self.tokenizer_text is not None else {}

    def summary(self, loss: float, metric: float) -> dict[str, float]:
        """Test figures besides loss and bpb: perplexity (per token), with a tokenizer bits per token, and for bytes
        the unigram/bigram baselines in bpb."""
        ppl = math.exp(loss) if loss < 700 else math.inf
        per_token = {"bits_per_token": loss / math.log(2)} if self.token_bytes is not None else {}
        return per_token | {"perplexity": ppl, **self.baselines}

