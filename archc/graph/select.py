"""Which parameters and linear layers a [train] pattern names: `freeze` and `[train.lora] targets` (no torch).

A pattern is a name in the spec's own naming, as mapping files write model tensors: a node id, dotted inside
blocks (`layers.3.self_attn`), optionally followed by a parameter (`embed_tokens.weight`, `self_attn.q_proj`).
`{i}` (any name in braces) stands for a decimal index, as in mapping files; `*` stands for any run of characters
within one dotted part. A pattern names a thing when it spells its whole name or a dotted beginning of it, so a
block instance (`layers.3`) or a repeat (`layers`) names everything inside. Nothing a user writes is compiled as a
regular expression.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from archc.errors import SpecError
from archc.graph.ir import Graph

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
SHOWN = 3  # close names offered in a hint


@dataclass(frozen=True)
class Selector:
    """One pattern, compiled: matches a name or any dotted beginning of it."""

    text: str
    regex: re.Pattern[str]

    @classmethod
    def parse(cls, text: str, where: str) -> "Selector":
        pieces = _PLACEHOLDER.split(text)  # literal, name, literal, name, ..., literal
        literal = pieces[::2]
        if any("{" in part or "}" in part for part in literal) or text.startswith(".") or text.endswith(".") \
                or ".." in text:
            raise SpecError(f"expected a node id or a pattern such as 'layers.{{i}}.attn' ({{name}} for an index, "
                            f"* within a name), received {text!r}", where=where)
        body = ""
        for i, part in enumerate(pieces):
            if i % 2:
                body += r"(?:0|[1-9][0-9]*)"
            else:
                body += r"[^.]*".join(re.escape(chunk) for chunk in part.split("*"))
        return cls(text, re.compile(body + r"(?:\..+)?"))

    def matches(self, name: str) -> bool:
        return self.regex.fullmatch(name) is not None


@dataclass(frozen=True)
class Param:
    """A trainable tensor in the spec's naming: its node's id and its name on the node (weight, q_proj.weight)."""

    node: str
    key: str

    @property
    def name(self) -> str:
        return f"{self.node}.{self.key}"


@dataclass(frozen=True)
class LinearPart:
    """A linear layer LoRA can adapt: its node's id and the projection's path on the node ('' for a linear node)."""

    node: str
    part: str
    shape: tuple[int, ...]          # the weight's (out_features, in_features)

    @property
    def name(self) -> str:
        return f"{self.node}.{self.part}" if self.part else self.node


def parameters(graph: Graph) -> list[Param]:
    """Every parameter tensor of the model, by node in graph order (a tied node's belong to the node it ties to)."""
    return [Param(n.id, key) for n in graph.nodes if not n.tied for key in n.params]


def linear_parts(graph: Graph) -> list[LinearPart]:
    """Every linear layer of the model (each op's `linear_parts`), in graph order."""
    out = []
    for n in graph.nodes:
        if n.tied:
            continue
        for part in n.op.linear_parts():
            out.append(LinearPart(n.id, part, n.params[f"{part}.weight" if part else "weight"]))
    return out


def select(patterns: list[str], names: list[str], where: str, what: str, others: list[str] | None = None
           ) -> tuple[set[str], list[SpecError]]:
    """The names any of `patterns` names, and an error for each pattern that names none (`what`: what it should
    name, for the message; `others`: names of the model a pattern may name but that are not `what`)."""
    chosen: set[str] = set()
    errors: list[SpecError] = []
    for i, text in enumerate(patterns):
        at = f"{where}[{i}]"
        try:
            sel = Selector.parse(text, at)
        except SpecError as e:
            errors.append(e)
            continue
        hit = {n for n in names if sel.matches(n)}
        if hit:
            chosen |= hit
            continue
        wrong = [n for n in others or () if sel.matches(n)]
        if wrong:
            errors.append(SpecError(f"expected {what}, received {text!r}, which names only {wrong[0]!r}"
                                    + (f" and {len(wrong) - 1} more like it" if len(wrong) > 1 else ""),
                                    where=at, hint=f"here: {_some(names)}"))
        else:
            errors.append(SpecError(f"expected {what}, received {text!r}, which names none", where=at,
                                    hint=_close(text, names)))
    return chosen, errors


def _some(names: list[str]) -> str:
    shown = list(dict.fromkeys(_generic(n) for n in names))
    return ", ".join(shown[:4]) + (" ..." if len(shown) > 4 else "") if shown else "none in this model"


def _generic(name: str) -> str:
    """'layers.3.mlp.up_proj' -> 'layers.{i}.mlp.up_proj': the pattern that names it in every repeat."""
    return re.sub(r"(?<=\.)(0|[1-9][0-9]*)(?=\.|$)", "{i}", name)


def _close(text: str, names: list[str]) -> str:
    """'did you mean ...?' over the names and their dotted beginnings, written as patterns; else some names."""
    from archc.language.errors import close_matches  # as infer does: language.errors imports the op registry

    prefixes = {_generic(".".join(n.split(".")[:k])) for n in names for k in range(1, n.count(".") + 2)}
    return close_matches(text, prefixes) or f"names here: {_some(names)}"


def _shared(graph: Graph, chosen: set[str]) -> list[SpecError]:
    """An adapter on a layer whose weight another node reuses (weight tying) would be merged into that node's weight
    too, which computed without it: refused."""
    tied_by = {n.tied: n.id for n in graph.nodes if n.tied}
    return [SpecError(f"expected linear layers whose weight no other node reuses, received '{name}', whose weight "
                      f"'{tied_by[name]}' also uses (tie = \"{name}\"): the merged adapter would change '{tied_by[name]}' "
                      "too", where="train.lora.targets", hint="leave it out of the targets")
            for name in sorted(chosen) if name in tied_by]


def check_tuning(graph: Graph, freeze: list[str] | None, lora_targets: list[str] | None) -> list[SpecError]:
    """[train] freeze names parameters and [train.lora] targets name linear layers, each pattern at least one; and
    something is left to train."""
    params = [p.name for p in parameters(graph)]
    errors: list[SpecError] = []
    if lora_targets is not None:
        linear = [p.name for p in linear_parts(graph)]
        chosen, bad = select(lora_targets, linear, "train.lora.targets",
                             "linear layers (linear, attention's or gated_mlp's projections)", params)
        errors += bad + _shared(graph, chosen)
    if freeze is not None:
        frozen, bad = select(freeze, params, "train.freeze", "parameters of the model")
        errors += bad
        if not bad and lora_targets is None and len(frozen) == len(params):
            errors.append(SpecError(f"expected some parameters left to train, received patterns that freeze all "
                                    f"{len(params)}", where="train.freeze",
                                    hint="leave a layer out of freeze, or add [train.lora] adapters"))
    return errors
