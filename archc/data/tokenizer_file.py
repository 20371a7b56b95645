"""Tokenizers from a Hugging Face `tokenizer.json` (the `tokenizers` library's format: BPE, WordPiece, Unigram),
and training a byte-level BPE one on a text corpus (numpy; `tokenizers` imported only when a file is named).

A `TokenizerFile` is one file read and checked: its text (copied into a run's folder as `tokenizer.json`), its
sha256 (the token file's cache key and the model's `archc.tokenizer` metadata name it) and its vocabulary size
(the largest id + 1, added tokens included: validate compares it with the model's input vocab and embedding rows).
Ids are those `transformers.PreTrainedTokenizerFast(tokenizer_file=...)` gives for the same file: a corpus is
encoded without special tokens (windows are cut from a stream), a prompt with them (as `tokenizer(prompt)` does).

A corpus is encoded a chunk at a time (memory bounded by the chunk) when the tokenizer has no normalizer and splits
text only by regex and byte-level pre-tokenizers (GPT-2's, Llama 3's, SmolLM's, and the BPE trained here): a chunk
is cut at a space that follows a non-space, before its last two pre-tokens and never inside an added token, so the
ids equal those of the whole text encoded at once (a test checks it against PreTrainedTokenizerFast). Other
tokenizers (a normalizer, Metaspace) encode each split whole.
"""
from __future__ import annotations

import codecs
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from archc.data.tokens import Tokenizer
from archc.errors import DataError, InputError
from archc.outputs import RUN_FILES

KIND = "tokenizers"        # archc.tokenizer's kind for a tokenizer.json (bytes: "bytes")
FILE = RUN_FILES["tokenizer"]  # the name it has in a run's folder and beside an exported model
EOS = "<|endoftext|>"      # the special token a trained BPE adds (GPT-2's name for it)
BYTE_ALPHABET = 256        # a byte-level BPE starts from every byte
MIN_VOCAB = BYTE_ALPHABET + 1  # the bytes and EOS
TAIL_CHARS = 16384          # the end of a chunk that is pre-tokenized to find a cut
TAIL_PIECES = 2            # pre-tokens kept back at a chunk's end: the next chunk may extend them
SPLITTERS = frozenset({"ByteLevel", "Split", "Digits", "Sequence", "Whitespace", "WhitespaceSplit", "Punctuation"})


@dataclass(frozen=True)
class TokenizerFile:
    """A tokenizer.json read and checked: its text, sha256, vocabulary size and the `tokenizers` object."""

    path: str
    text: str
    sha256: str
    vocab_size: int
    backend: Any = None  # tokenizers.Tokenizer

    def encode(self, text: str, special: bool = True) -> list[int]:
        """Token ids of `text`, with the tokenizer's special tokens (BOS...) when `special`, as transformers adds."""
        return list(self.backend.encode(text, add_special_tokens=special).ids)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of token ids, special tokens kept (transformers' `decode` default)."""
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=False)

    def as_tokenizer(self) -> Tokenizer:
        """The token file's encode hook (archc.data.tokens): named by the file's hash in the cache key."""
        return Tokenizer(KIND, self.vocab_size, self.encode_stream, self.sha256)

    def encode_stream(self, chunks: Iterable[bytes]) -> Iterator[np.ndarray]:
        """Ids of a split's UTF-8 text given as byte chunks cut anywhere (see the module docstring)."""
        backend = self.backend
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        chunked = _chunkable(self.text)
        added = [t.content for t in backend.get_added_tokens_decoder().values() if t.content]
        pending = ""
        for chunk in chunks:
            pending += decoder.decode(chunk)
            if not chunked:
                continue
            cut = _cut(backend, pending, added)
            if cut > 0:
                yield self._ids(pending[:cut])
                pending = pending[cut:]
        pending += decoder.decode(b"", final=True)
        if pending:
            yield self._ids(pending)

    def _ids(self, text: str) -> np.ndarray:
        return np.asarray(self.backend.encode(text, add_special_tokens=False).ids, dtype=np.int64)


def _cut(backend: Any, text: str, added: list[str]) -> int:
    """Where `text` can be cut so that encoding both sides apart gives the ids of the whole; 0 when there is no
    such place yet. A cut is the start of a pre-token before the last TAIL_PIECES that is a space after a
    non-space character (no pre-token of a regex split spans one, whatever text follows: trailing whitespace runs
    and contractions can still change), far enough from the end that an added token cut by it is whole in `text`
    (one that is, is kept whole: the cut moves before it). Only the last TAIL_CHARS are pre-tokenized, from such a
    place (pre-tokenizing is as slow as encoding)."""
    start = _space_after_text(text, len(text) - TAIL_CHARS)
    pieces = backend.pre_tokenizer.pre_tokenize_str(text[start:])
    limit = len(text) - max((len(t) for t in added), default=0)
    cut = next((start + a for _, (a, _) in reversed(pieces[:-TAIL_PIECES])
                if 0 < start + a <= limit and text[start + a] == " " and not text[start + a - 1].isspace()), 0)
    for token in added if cut else ():
        at = text.rfind(token, max(0, cut - len(token) + 1), cut + len(token) - 1)
        if at != -1 and at < cut:
            cut = at
    return cut


def _space_after_text(text: str, end: int) -> int:
    """The last position at or before `end` holding a space that follows a non-space character (0: none)."""
    at = text.rfind(" ", 1, max(end, 0) + 1)
    while at > 0 and text[at - 1].isspace():
        at = text.rfind(" ", 1, at)
    return max(at, 0)


def _chunkable(text: str) -> bool:
    """Whether a tokenizer.json's pre-tokenizer splits text the same in chunks as whole: no normalizer, and only
    regex and byte-level splitting (a Metaspace or a ByteLevel that adds a prefix space would add one per chunk)."""
    try:
        config = json.loads(text)
    except ValueError:
        return False
    if not isinstance(config, dict) or config.get("normalizer") is not None:
        return False
    todo, seen = [config.get("pre_tokenizer")], 0
    while todo:
        node = todo.pop()
        if not isinstance(node, dict) or node.get("type") not in SPLITTERS or node.get("add_prefix_space"):
            return False
        todo.extend(node.get("pretokenizers") or [])
        seen += 1
    return seen > 0


def _library():
    """The `tokenizers` module, or one clear error when it is missing."""
    try:
        import tokenizers
    except ImportError:
        raise DataError("expected the `tokenizers` library (pip install tokenizers) to read a tokenizer.json, "
                        "received an environment without it", where="tokenizer") from None
    return tokenizers


def read(path: str | Path, where: str) -> TokenizerFile:
    """Read and check a tokenizer.json: DataError (where, expected, received) when it is missing or malformed."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise DataError(f"expected a tokenizer.json file, received {str(p)!r}, which does not exist",
                        where=where, hint="make one with `archc tokenizer train text:PATH --vocab-size N -o FILE`") \
            from None
    except OSError as e:
        raise DataError(f"expected a readable tokenizer.json file, received {str(p)!r} ({e.strerror or e})",
                        where=where) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"expected a tokenizer.json (UTF-8 JSON), received {str(p)!r}, which is not UTF-8",
                        where=where) from None
    tokenizers = _library()
    try:
        backend = tokenizers.Tokenizer.from_str(text)
    except Exception as e:  # the library raises plain Exceptions with serde's message
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise DataError(f"expected a tokenizer.json in the Hugging Face tokenizers format, received {str(p)!r}, "
                        f"which it cannot read ({reason})", where=where) from None
    ids = backend.get_vocab(with_added_tokens=True).values()
    if not ids:
        raise DataError(f"expected a tokenizer with a vocabulary, received {str(p)!r}, whose vocabulary is empty",
                        where=where)
    return TokenizerFile(str(p), text, hashlib.sha256(raw).hexdigest(), max(ids) + 1, backend)


def check_vocab_size(vocab_size: int) -> None:
    """A trained BPE holds every byte and EOS: InputError for a smaller --vocab-size."""
    if vocab_size < MIN_VOCAB:
        raise InputError(f"expected at least {MIN_VOCAB} ids (the {BYTE_ALPHABET} bytes and {EOS}), received "
                         f"{vocab_size}", where="--vocab-size")


def train_bpe(texts: Iterable[str], vocab_size: int) -> str:
    """A byte-level BPE (GPT-2's scheme: every byte in the alphabet, so any text encodes) trained on `texts` with
    at most `vocab_size` ids, `EOS` the one special token; its tokenizer.json text."""
    check_vocab_size(vocab_size)
    tokenizers = _library()
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return tok.to_str(pretty=True)
