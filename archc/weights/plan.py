"""Which file tensors fill which model tensors, and every mismatch, decided from names and shapes alone (no data).

Strict by design: every tensor of the model is filled and every tensor of the file is used (or dropped by name in
the mapping). Anything else, missing, extra, filled twice or mis-shaped, is collected and raised as ONE error that
lists it all, so a user fixing a mapping sees the whole picture at once, before any tensor is read.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from archc.errors import ModelError
from archc.weights.file import TensorInfo
from archc.weights.mapping import Mapping, Rule

SHOWN = 8  # names listed per kind of problem; the rest are counted


@dataclass(frozen=True)
class Expected:
    """A model tensor: its shape and whether it holds floats (a float file tensor may be cast, never an int)."""

    shape: tuple[int, ...]
    is_float: bool


@dataclass(frozen=True)
class Step:
    """Read `sources` from the file, apply `rule` (None: as is), fill `targets` of the model."""

    sources: tuple[str, ...]
    targets: tuple[str, ...]
    rule: Rule | None


@dataclass
class Problems:
    """What keeps a file from filling the model, by kind."""

    missing: list[str] = field(default_factory=list)     # model tensors no file tensor fills
    extra: list[str] = field(default_factory=list)       # file tensors nothing uses
    twice: list[str] = field(default_factory=list)       # model tensors two file tensors (or rules) would fill
    bad: list[str] = field(default_factory=list)         # mis-shaped: by the file, or by the rule's transpose/axis
    typed: list[str] = field(default_factory=list)       # integers for floats or back

    def error(self, weights: str, mapping: str) -> ModelError | None:
        parts = [f"{len(v)} {k}: {_listed(v)}" for k, v in (("missing", self.missing), ("extra", self.extra),
                 ("filled twice", self.twice), ("mis-shaped", self.bad), ("mis-typed", self.typed)) if v]
        if not parts:
            return None
        if not mapping:
            hint = "the file is read in the spec's own naming (archc's checkpoints); --map MAP.toml maps another " \
                   "library's names"
        elif self.twice:
            hint = "two file tensors for one of the model: `drop` the one not meant (by its name as written), or " \
                   "narrow strip_prefix or the rules"
        else:
            hint = "fix the mapping's renames, transpose or axis, or `drop` file tensors that are not weights"
        return ModelError("expected every tensor of the model filled exactly once and every tensor of the file used, "
                          "received " + "; ".join(parts), file=weights, where=f"--map {mapping}" if mapping else
                          "--weights", hint=hint)


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:SHOWN])
    return shown + (f" and {len(items) - SHOWN} more" if len(items) > SHOWN else "")


def show(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def _named(mapping: Mapping, name: str) -> str:
    """A file tensor as messages name it: with the name its rules saw, where strip_prefix changed it."""
    short = mapping.file_name(name)
    return name if short == name else f"{name} (as {short})"


def _group(mapping: Mapping, infos: dict[str, TensorInfo],
           problems: Problems) -> tuple[list[Step], dict[str, str]]:
    """File names -> steps: by the first rule one of whose sources matches (a concat gathers its sources); and the
    model tensors of groups that make no step (an incomplete concatenation, reported by its absent file tensors;
    two file tensors in one place, as strip_prefix makes of `a.w` and `w`), reported here, not again as missing."""
    if not mapping.file:  # the identity: the file is in the model's own naming
        return [Step((name,), (name,), None) for name in infos], {}
    groups: dict[tuple[int, tuple[tuple[str, str], ...]], dict[int, list[str]]] = {}
    for name in infos:
        short = mapping.file_name(name)
        if mapping.drops(name):
            continue
        hit = next(((r, s, b) for r, rule in enumerate(mapping.rules) for s in range(len(rule.sources))
                    if (b := rule.bind(s, short)) is not None), None)
        if hit is None:
            problems.extra.append(f"{name} {show(infos[name].shape)}")
            continue
        r, s, b = hit
        groups.setdefault((r, tuple(sorted(b.items()))), {}).setdefault(s, []).append(name)
    steps: list[Step] = []
    unmade: dict[str, str] = {}  # model tensor -> the file tensors that would have filled it ("": reported)
    for (r, key), found in groups.items():
        rule, values = mapping.rules[r], dict(key)
        targets = tuple(t.fill(values) for t in rule.targets)  # type: ignore[misc]  # bind: none is None
        crowded = [names for names in found.values() if len(names) > 1]
        if crowded:  # one place of the rule, several file tensors: whichever came last would silently win
            origins = [" and from ".join(_named(mapping, n) for n in names) + f", each by {rule.where}"
                       for names in crowded]
            problems.twice.extend(f"{', '.join(targets)} from {origin}" for origin in origins)
            unmade.update(dict.fromkeys(targets, origins[0]))
            continue
        if len(found) < len(rule.sources):  # part of a concatenation is not in the file
            present = ", ".join(names[0] for names in found.values())
            problems.missing.extend(f"{p.fill(values)} (file tensor, concatenated with {present} into {targets[0]} "
                                    f"by {rule.where})" for i, p in enumerate(rule.sources) if i not in found)
            unmade.update(dict.fromkeys(targets, ""))
            continue
        steps.append(Step(tuple(found[i][0] for i in range(len(rule.sources))), targets, rule))
    return steps, unmade


def produced(step: Step, infos: dict[str, TensorInfo]) -> list[tuple[int, ...]] | str:
    """The shapes a step makes (one per target), or why its rule cannot apply to the file's shapes."""
    shapes = [infos[s].shape for s in step.sources]
    rule = step.rule
    if rule is None:
        return shapes
    if rule.transpose:
        if any(len(s) != 2 for s in shapes):
            return f"transpose needs 2-D tensors, received {', '.join(map(show, shapes))}"
        shapes = [s[::-1] for s in shapes]
    if rule.kind == "rename":  # no axis: a scalar (BatchNorm's num_batches_tracked) renames like any tensor
        return shapes
    rank = len(shapes[0])
    if not -rank <= rule.axis < rank:
        return f"axis {rule.axis} is outside a tensor of rank {rank} {show(shapes[0])}"
    axis = rule.axis % rank
    if rule.kind == "concat":
        rest = {s[:axis] + s[axis + 1:] for s in shapes}
        if len(rest) > 1 or any(len(s) != rank for s in shapes):
            return f"concatenation on axis {axis} needs equal other axes, received {', '.join(map(show, shapes))}"
        return [shapes[0][:axis] + (sum(s[axis] for s in shapes),) + shapes[0][axis + 1:]]
    n, size = len(step.targets), shapes[0][axis]  # a split
    if size % n:
        return f"cannot split axis {axis} of {show(shapes[0])} into {n} equal parts"
    return [shapes[0][:axis] + (size // n,) + shapes[0][axis + 1:]] * n


def plan(mapping: Mapping, infos: dict[str, TensorInfo], expected: dict[str, Expected], weights: str) -> list[Step]:
    """The steps that fill every model tensor from the file; ModelError listing every problem otherwise."""
    problems = Problems()
    steps, unmade = _group(mapping, infos, problems)
    filled = dict(unmade)
    for step in steps:
        by = f" by {step.rule.where}" if step.rule else ""
        origin = ", ".join(step.sources) + by
        named = ", ".join(_named(mapping, s) for s in step.sources) + by  # for "filled twice": as the rules saw it
        shapes = produced(step, infos)
        if isinstance(shapes, str):
            problems.bad.append(f"{origin}: {shapes}")
            filled.update({t: named for t in step.targets})
            continue
        floats = all(infos[s].is_float for s in step.sources)
        for target, shape in zip(step.targets, shapes):
            want = expected.get(target)
            if target in filled:
                if filled[target]:  # "": an incomplete concatenation, reported as such
                    problems.twice.append(f"{target} from {filled[target]} and from {named}")
            elif want is None:  # the identity's unknown names are plain extras; a rule's target is a typo
                problems.extra.append(f"{origin} {show(shape)}" if step.rule is None else
                                      f"{origin} (to {target}, which the model does not have)")
            elif want.shape != shape:
                problems.bad.append(f"{target}: expected {show(want.shape)}, received {show(shape)} from {origin}")
            elif want.is_float != floats:  # floats cast to the model's precision; never ints to floats or back
                problems.typed.append(f"{target}: expected {'floats' if want.is_float else 'integers'}, received "
                                    f"{'/'.join(infos[s].dtype for s in step.sources)} from {origin}")
            filled.setdefault(target, named)
    problems.missing[:0] = [f"{k} {show(v.shape)}" for k, v in expected.items() if k not in filled]
    error = problems.error(weights, mapping.file)
    if error is not None:
        raise error
    return steps
