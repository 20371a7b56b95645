"""The expand pass: blocks, repeats, parameter references and `from` wiring -> a flat node list."""
from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from archc.errors import ArchcError, SpecError, describe, raise_all
from archc.graph.ir import Graph, Node
from archc.graph.located import InternalError
from archc.graph.tabular import clashes, front, row_type
from archc.ops import REGISTRY, activation_names
from archc.ops.base import BATCH, Op, TensorType
from archc.language.columns import tabular
from archc.language.errors import at, close_matches, from_validation, layer_label
from archc.language.exprs import substitute
from archc.language.model import Block, Spec, Use

BROKEN = "<broken>"  # stands for the output of a layer that failed, so its dependents stay quiet
# The most nodes a spec may expand to: build's time grows about linearly up to it (benchmarks figure 5: validate,
# lower and export at 1,000, 10,000 and 100,000 nodes), and past it a build takes minutes for no architecture anyone
# writes (GPT-2 small: 113 nodes; SmolLM-135M, the zoo's largest: 183).
MAX_NODES = 100_000
# The most layer entries expansion may visit (every repeat of every block's layers, nodes or not): layers left out by
# `when` and uses with repeat = 0 make no node, so MAX_NODES alone would let nested repeats of them run for hours
# (10,000 ** 3 visits); a visit that makes no node costs ~3 µs, so this bound is a few seconds.
MAX_VISITS = 10 * MAX_NODES
MAX_BLOCK_DEPTH = 32  # uses inside uses: real specs nest a few deep; a chain of hundreds ran out of Python's stack
RESERVED = ("i", "repeat")  # the parameters every block instance is given: its repeat index and count


class _TooLarge(SpecError):
    """The expansion outgrew MAX_NODES or MAX_VISITS: reported once, where it happened, and nothing after it."""


class Expander:
    """Walks the spec's layers (recursively through blocks) collecting nodes and errors."""

    def __init__(self, spec: Spec | None) -> None:
        self.spec = spec
        self.nodes: list[Node] = []
        self.errors: list[ArchcError] = []
        self.visits = 0
        self.left: list[dict[str, str]] = []  # per list of layers being expanded: left-out id -> what it stands for
        self.warnings: list[SpecError] = []

    def run(self) -> Graph:
        spec = self.spec
        tables = tabular(spec)
        inputs = {name: row_type(tables[name]) if name in tables else
                  TensorType(((BATCH,) if inp.batched else ()) + tuple(inp.shape or ()), inp.dtype)
                  for name, inp in spec.inputs.items()}
        self.inputs = set(inputs)
        scope = {name: name for name in inputs}
        for name, columns in tables.items():  # layers reading a tabular input read its embedding front, if any
            node = front(name, columns)
            if node is not None:
                self.nodes.append(node)
                scope[name] = node.id
        prev = scope[next(iter(inputs))] if len(inputs) == 1 else None
        for name, block in spec.blocks.items():  # one name per input: a repeated one dropped an input silently
            seen = set()
            for j, bname in enumerate(block.inputs):
                if bname in seen:
                    raise SpecError(f"expected distinct input names, received '{bname}' again",
                                    where=f"blocks.{name}.inputs[{j}]", hint="each input of the block needs its name")
                seen.add(bname)
        self.params = self.global_params()
        last = self.layers(spec.layers, "layers", "", dict(self.params), scope, prev, "", ())
        outputs: dict[str, str] = {}
        for i, name in enumerate(spec.outputs or []):
            if name not in scope:
                self.errors.append(SpecError(f"unknown node '{name}'", where=f"outputs[{i}]",
                                             hint=_known(name, scope)))
            elif scope[name] in inputs:
                self.errors.append(_output_is_input(name, scope[name], f"outputs[{i}]"))
            elif name in outputs:  # one ONNX output per name: a second would be dropped without a word
                first = spec.outputs.index(name)  # type: ignore[union-attr]
                self.errors.append(SpecError(f"expected each output once, received {name!r} again (outputs[{first}])",
                                             where=f"outputs[{i}]", hint="remove the repeated name"))
            else:
                outputs[name] = scope[name]
        if not spec.outputs and last in inputs:  # the last layers were left out (repeat = 0, when = false)
            ids = {r.get("id") for r in spec.layers if isinstance(r, dict)}  # the user's names, not generated ones
            name = next((k for k, v in reversed(scope.items()) if v == last and k in ids), last)
            self.errors.append(_output_is_input(name, last, f"layers[{len(spec.layers) - 1}]"))
        elif not spec.outputs and last not in (None, BROKEN):
            outputs[_public_name(last, scope)] = last
        self.errors += clashes(tables, list(inputs), list(outputs))
        raise_all(self.errors)
        sizes = {**spec.axes}
        vocab = {name: inp.vocab for name, inp in spec.inputs.items() if inp.vocab}
        graph = Graph(spec.model.name, inputs, self.nodes, outputs, sizes, vocab, tables)  # type: ignore[arg-type]
        graph.warnings = self.warnings
        return graph

    def global_params(self) -> dict[str, Any]:
        """[params] in order: a value may refer to the parameters above it (`b = "${a * 2}"`); a reference that
        fails is reported at params.NAME, not at each layer that uses it."""
        params: dict[str, Any] = {}
        if self.spec.blocks:
            _not_reserved(self.spec.params, "params", "inside a block")
        for key, value in self.spec.params.items():
            try:
                params[key] = substitute(value, params)
            except SpecError as e:
                e.where = f"params.{key}"
                if any(f"'{later}'" in e.message for later in list(self.spec.params)[len(params):]):
                    e.hint = "a parameter may refer only to parameters defined above it"
                raise
        return params

    # ---- one list of layers (the top level, or one block instance) -------------------------
    def layers(self, raws: list[Any], path: str, prefix: str, params: dict[str, Any], scope: dict[str, str],
               prev: str | None, context: str, stack: tuple[str, ...]) -> str | None:
        """Expand `raws` in order; returns the id of the last output (or BROKEN)."""
        self.left.append({})
        try:
            return self._layers(raws, path, prefix, params, scope, prev, context, stack)
        finally:
            self.left.pop()

    def _layers(self, raws: list[Any], path: str, prefix: str, params: dict[str, Any], scope: dict[str, str],
                prev: str | None, context: str, stack: tuple[str, ...]) -> str | None:
        declared = {r["id"]: i for i, r in enumerate(raws) if isinstance(r, dict) and isinstance(r.get("id"), str)}
        local_where: dict[str, str] = {}
        for i, raw in enumerate(raws):
            where = f"{path}[{i}]{layer_label(raw)}{context}"
            self.visits += 1
            if self.visits > MAX_VISITS:
                raise _TooLarge(f"expected at most {MAX_VISITS:,} layer instances after expansion (nodes or layers "
                                "left out), received more", where=where,
                                hint="check `repeat` counts of nested blocks")
            n_errors = len(self.errors)
            try:
                if not isinstance(raw, dict):
                    raise SpecError(f"expected a table with 'op' (or 'use'), received {describe(raw)}")
                if not self.present(raw, params, where):
                    local, out = self.left_out(raw, i, scope, prev, declared, where)
                else:  # `when` is consumed here (block layers are shared by every repeat: never mutated)
                    layer = {k: v for k, v in raw.items() if k != "when"} if "when" in raw else raw
                    local, out = (self.use if "use" in raw else self.layer)(
                        layer, i, where, prefix, params, scope, prev, declared, stack)
            except _TooLarge as e:
                if not context:  # reported at the top-level layer whose expansion grew too large
                    e.where = where
                raise  # the whole expansion stops: going on with the next layer would only repeat it
            except ArchcError as e:
                if not e.where:
                    e.where = where
                self.errors.append(e)
                local, out = (raw.get("id") if isinstance(raw, dict) else None), BROKEN
            except InternalError:
                raise  # already located, in a block's layer
            except Exception as e:  # an op's own validation crashed: a bug in archc, reported at this layer
                raise InternalError(e, where, str(raw.get("op") or raw.get("use"))) from e
            if len(self.errors) > n_errors:
                out = BROKEN
            if isinstance(local, str) and local in scope and local not in local_where:
                # scope holds this level's inputs besides its ids: an id equal to one would shadow it
                what = "a block input" if prefix else "an input"
                self.errors.append(SpecError(f"id '{local}' is already the name of {what}", where=at(where, ".id"),
                                             hint="ids and input names share one namespace: rename the layer"))
            elif isinstance(local, str):
                if local in local_where:
                    self.errors.append(SpecError(f"id '{local}' is already used by {local_where[local]}",
                                                 where=where, hint="ids must be unique"))
                local_where[local] = where
                scope[local] = out
            prev = out
            if len(self.nodes) > MAX_NODES:
                raise _TooLarge(f"expected at most {MAX_NODES:,} nodes after expansion, received more",
                                where=where, hint="check `repeat` counts: archc builds and exports up to this many")
        return prev

    def resolve(self, from_: str | list[str] | None, i: int, scope: dict[str, str], prev: str | None,
                declared: dict[str, int], path_of: str, key: str = "from") -> list[str]:
        """The node ids a layer reads: `from` (or another reference attribute, `key`), or the previous layer."""
        if from_ is None:
            if prev is None:
                names = ", ".join(n for n in scope)
                raise SpecError(f"expected 'from' naming this layer's input: the model has several inputs ({names})")
            return [prev]
        refs = [from_] if isinstance(from_, str) else list(from_)
        if not refs:
            raise SpecError("expected 'from' to name at least one node, received []")
        out = []
        for ref in refs:
            if ref in scope:
                out.append(scope[ref])
            elif ref in declared:
                j = declared[ref]
                what = "its own id" if j == i else f"defined later at {path_of}[{j}]"
                raise SpecError(f"expected '{key}' to name an input or an earlier layer, received '{ref}' ({what})",
                                hint="graphs are acyclic: a layer reads only what comes before it")
            else:
                raise SpecError(f"'{key}' names unknown node '{ref}'", hint=_known(ref, scope))
        return out

    # ---- `when`: layers present in some repeats only -----------------------------------------
    def present(self, raw: dict, params: dict, where: str) -> bool:
        """A layer's `when` (default true), evaluated over the parameters in scope."""
        if "when" not in raw:
            return True
        try:
            value = substitute(raw["when"], params)
        except SpecError as e:
            e.where = at(where, ".when")
            raise
        if not isinstance(value, bool):
            raise SpecError(f"expected true or false, received {describe(value)}", where=at(where, ".when"),
                            hint='when = "${i == 0}" keeps a layer in the first repeat only')
        return value

    def left_out(self, raw: dict, i: int, scope: dict, prev: str | None, declared: dict,
                 where: str) -> tuple[str | None, str]:
        """A layer whose `when` is false: no node; its id (if any) names its first input, passed on unchanged."""
        local = raw.get("id") if isinstance(raw.get("id"), str) else None
        refs = raw.get("from")
        if not (refs is None or isinstance(refs, str) or (isinstance(refs, list)
                                                          and all(isinstance(r, str) for r in refs))):
            raise SpecError(f"expected a node id or a list of them, received {describe(refs)}",
                            where=at(where, ".from"))
        try:
            inputs = self.resolve(refs, i, scope, prev, declared, where.split("[")[0])
        except SpecError as e:
            e.where = at(where, ".from")
            raise
        if local is not None and inputs[0] != BROKEN:  # a `from` naming it reads its input: said where it matters
            shown = next((k for k, v in scope.items() if v == inputs[0]), inputs[0])
            self.left[-1][local] = (f"'{local}' stands for '{shown}' here: {where} is left out (its `when` is "
                                    "false) and passes its input on")
        return local, inputs[0]

    # ---- an op layer -----------------------------------------------------------------------
    def layer(self, raw: dict, i: int, where: str, prefix: str, params: dict, scope: dict, prev: str | None,
              declared: dict, stack: tuple) -> tuple[str | None, str]:
        local = raw.get("id") if isinstance(raw.get("id"), str) else None
        op = self.own(raw, where, params)
        if op is None:
            return local, BROKEN
        name, cls = raw["op"], type(op)
        local = op.id or _generated(f"{name}_{i}", declared, scope)
        act = self.activation(op.act, where)  # checked even when an input is broken: it is this layer's own problem
        path_of = where.split("[")[0]
        inputs = self.resolve(op.from_, i, scope, prev, declared, path_of)
        lo, hi = cls.arity
        if not (lo <= len(inputs) and (hi is None or len(inputs) <= hi)):
            want = f"{lo}" if lo == hi else f"at least {lo}" if hi is None else f"{lo} to {hi}"
            raise SpecError(f"expected {want} input{'s' if want != '1' else ''} for op '{name}', "
                            f"received {len(inputs)}", hint="set 'from' to list the inputs")
        for key in cls.reads:  # other nodes read through an attribute (bias_from): inputs after `from`'s
            ref = getattr(op, key)
            if ref is None:
                continue
            try:
                inputs = inputs + self.resolve(ref, i, scope, prev, declared, path_of, key)
            except SpecError as e:
                e.where = at(where, f".{key}")
                raise
        if BROKEN in inputs:
            return local, BROKEN
        refs = [op.from_] if isinstance(op.from_, str) else list(op.from_ or [])
        notes = tuple(self.left[-1][r] for r in dict.fromkeys(refs) if r in self.left[-1])
        twice = next((v for v in inputs if inputs.count(v) > 1), None)
        if notes and twice is not None:  # add(x, proj) with proj left out: x + x, no error to hint at
            shown = next((k for k, v in scope.items() if v == twice), twice)
            self.warnings.append(SpecError(f"'from' reads '{shown}' twice; {'; '.join(notes)}",
                                           where=at(where, ".from"), hint="leave this layer out with the same "
                                           "`when`, or name another node"))
        tied = None
        if cls.ties is not None:  # weight tying names another node, resolved like `from`
            try:
                (tied,) = self.resolve(getattr(op, cls.ties), i, scope, prev, declared, path_of, cls.ties)
            except SpecError as e:
                e.where = at(where, f".{cls.ties}")
                raise
            if tied in self.inputs:
                raise SpecError(f"expected a layer whose parameters to reuse, received input '{tied}'",
                                where=at(where, f".{cls.ties}"))
        node = Node(prefix + local, op, inputs, where, act, tied, notes=notes)
        self.nodes.append(node)
        return local, node.id

    def own(self, raw: dict, where: str, params: dict) -> Op | None:
        """The layer's op with its attributes validated (parameters substituted); None when its attributes fail
        (their errors collected, and the activation's, if any, raised), SpecError when its op is missing or
        unknown."""
        name = raw.get("op")
        if name is None:
            raise SpecError("missing 'op' (or 'use' naming a block)", hint=f"keys: {', '.join(map(str, raw))}")
        if not isinstance(name, str) or name not in REGISTRY:
            hint = close_matches(str(name), set(REGISTRY)) or "`archc ops` lists every op"
            raise SpecError(f"unknown op {describe(name)}", hint=hint)
        cls = REGISTRY[name]
        values = self.substitute(raw, params, where)
        try:
            return cls.model_validate(values)
        except ValidationError as e:
            errors = from_validation(e, cls, where=where)
        self.errors.extend(errors)
        act = values.get("act")
        if isinstance(act, (str, dict)) and not any(_under(err.where, at(where, ".act")) for err in errors):
            self.activation(act, where)  # its own problem, beside the attributes'
        return None

    def activation(self, act: str | dict[str, Any] | None, where: str) -> Op | None:
        """The `act` sugar as an op: a name ("relu") or a table of an activation and its attributes."""
        if act is None:
            return None
        table = act if isinstance(act, dict) else {"op": act}
        if "when" in table:  # as a layer's: the activation is left out where it is false (it was applied regardless)
            if not isinstance(table["when"], bool):
                raise SpecError(f"expected true or false, received {describe(table['when'])}",
                                where=at(where, ".act.when"), hint='when = "${i == 0}" keeps it in the first repeat only')
            if not table["when"]:
                return None
            table = {k: v for k, v in table.items() if k != "when"}
        name = table.get("op")
        cls = REGISTRY.get(name) if isinstance(name, str) else None
        if cls is None or not cls.is_activation:
            sub = ".act.op" if isinstance(act, dict) else ".act"
            what = "missing 'op'" if name is None else f"unknown activation {describe(name)}"
            hint = (close_matches(name, activation_names()) if isinstance(name, str) else "") or (
                "expected one of: " + ", ".join(activation_names()))
            raise SpecError(what, where=at(where, sub), hint=hint)
        wiring = sorted(set(table) & {"id", "from", "act"})
        if wiring:  # an activation is part of its layer: it has no name, inputs or activation of its own
            raise SpecError(f"unknown attribute '{wiring[0]}' for an activation", where=at(where, f".act.{wiring[0]}"),
                            hint=f"{name}'s attributes: " + (", ".join(cls.attribute_fields()) or "none"))
        try:
            return cls.model_validate(table)
        except ValidationError as e:
            errors = from_validation(e, cls, where=at(where, ".act"))
            self.errors.extend(errors[1:])
            raise errors[0] from None

    def substitute(self, raw: dict, params: dict, where: str) -> dict:
        out = {}
        for key, value in raw.items():
            try:
                out[key] = value if key in ("op", "id", "from", "use") else substitute(value, params)
            except SpecError as e:
                e.where = at(where, f".{key}")
                raise
        return out

    # ---- a block instance ------------------------------------------------------------------
    def use(self, raw: dict, i: int, where: str, prefix: str, params: dict, scope: dict, prev: str | None,
            declared: dict, stack: tuple) -> tuple[str | None, str | None]:
        try:
            u = Use.model_validate(self.substitute(raw, params, where))
        except ValidationError as e:
            self.errors.extend(from_validation(e, Use, where=where))
            return (raw.get("id") if isinstance(raw.get("id"), str) else None), BROKEN
        block = self.spec.blocks.get(u.use)
        if block is None:
            hint = close_matches(u.use, set(self.spec.blocks)) or (
                "blocks defined: " + (", ".join(self.spec.blocks) or "none"))
            raise SpecError(f"unknown block '{u.use}'", where=at(where, ".use"), hint=hint)
        if u.use in stack:
            raise SpecError(f"block '{u.use}' uses itself: {' -> '.join(stack + (u.use,))}", where=at(where, ".use"))
        if len(stack) >= MAX_BLOCK_DEPTH:
            raise SpecError(f"expected blocks nested at most {MAX_BLOCK_DEPTH} deep, received deeper: "
                            f"{' -> '.join(stack[:3])} -> ... -> {' -> '.join(stack[-2:] + (u.use,))}",
                            where=at(where, ".use"), hint="a block may use another; flatten some levels")
        local = u.id or _generated(f"{u.use}_{i}", declared, scope)
        inputs = self.resolve(u.from_, i, scope, prev, declared, where.split("[")[0])
        if len(inputs) != len(block.inputs):
            raise SpecError(f"expected {len(block.inputs)} input(s) for block '{u.use}' ({', '.join(block.inputs)}), "
                            f"received {len(inputs)}", where=at(where, ".from"))
        bparams = self.block_params(u, block, params, where)
        if BROKEN in inputs:
            return local, BROKEN
        out: str | None = inputs[0]  # repeat = 0 passes the block's first input on
        indexed = "repeat" in u.model_fields_set  # a written repeat names every instance by its index, 1 or many
        for r in range(u.repeat):
            tag = f".{r}" if indexed else ""
            # the whole chain of uses, innermost first: "blocks.res.layers[1] in layers[2] (stage) repeat 1 in ..."
            context = " in " + at(where, f" repeat {r}" if indexed else "")
            # repeat chains the block's first input; any others (a time embedding, a mask) go to every repeat
            bscope = dict(zip(block.inputs, inputs if r == 0 else [out, *inputs[1:]]))
            before = len(self.errors)
            rparams = {**bparams, **{k: v[r] for k, v in u.with_.items() if isinstance(v, list)}, "i": r}
            out = self.layers(block.layers, f"blocks.{u.use}.layers", f"{prefix}{local}{tag}.",
                              rparams, bscope, bscope[block.inputs[0]], context, stack + (u.use,))
            if len(self.errors) > before or out == BROKEN:
                return local, BROKEN  # one report per problem, not one per repeat
            if block.output is not None:
                if block.output not in bscope:
                    raise SpecError(f"block output names unknown node '{block.output}'",
                                    where=f"blocks.{u.use}.output", hint=_known(block.output, bscope))
                out = bscope[block.output]
        return local, out

    def block_params(self, u: Use, block: Block, params: dict, where: str) -> dict:
        unknown = set(u.with_) - set(block.params)
        if unknown:
            name = sorted(unknown)[0]
            hint = close_matches(name, set(block.params)) or (
                "its parameters: " + (", ".join(block.params) or "none"))
            raise SpecError(f"unknown parameter '{name}' for block '{u.use}'", where=at(where, ".with"), hint=hint)
        _not_reserved(block.params, f"blocks.{u.use}.params", "in this block")
        merged = dict(self.params)
        for key, value in block.params.items():
            try:
                merged[key] = substitute(value, self.params)
            except SpecError as e:
                e.where = f"blocks.{u.use}.params.{key}"
                raise
        for key, value in u.with_.items():  # a list holds one value per repeat, picked in `use`
            if isinstance(value, list) and len(value) != u.repeat:
                raise SpecError(f"expected {u.repeat} value{'s' if u.repeat != 1 else ''} (one per repeat), "
                                f"received {len(value)}", where=at(where, f".with.{key}"),
                                hint="a list in `with` gives each repeat its own value")
        merged.update(u.with_)
        merged["repeat"] = u.repeat  # RESERVED
        return merged


def _not_reserved(params: dict[str, Any], path: str, where: str) -> None:
    """`$i` and `$repeat` are a block's repeat index and count: a parameter of that name would be replaced by them
    without a word (its value, or a `with` value, never used)."""
    for name in RESERVED:
        if name in params:
            raise SpecError(f"expected a parameter name other than '{name}', received '{name}'", where=f"{path}.{name}",
                            hint=f"'${name}' {where} is the repeat {'index' if name == 'i' else 'count'}: "
                                 "rename the parameter")


def _output_is_input(name: str, source: str, where: str) -> SpecError:
    """An output must be computed: an input passed through unchanged is not a model output (ONNX has no such)."""
    what = f"input '{source}'" if name == source else f"'{name}', which passes input '{source}' on unchanged"
    return SpecError(f"expected an output computed by a layer, received {what}", where=where,
                     hint="outputs name what layers compute; a layer with op = \"identity\" copies its input")


def _known(name: str, scope: dict[str, str]) -> str:
    hint = close_matches(name, set(scope))
    names = ", ".join(list(scope)[:12]) + (", …" if len(scope) > 12 else "")
    return hint or f"defined so far: {names or 'nothing'}"


def _under(where: str, place: str) -> bool:
    """Whether `where` is `place` or inside it ('layers[0].act.op' is under 'layers[0].act'), block context aside."""
    head, place = where.partition(" in ")[0], place.partition(" in ")[0]
    return head == place or head.startswith((place + ".", place + "["))


def _generated(base: str, declared: dict[str, int], scope: dict[str, str]) -> str:
    """The name of a layer without `id`: `base` ('linear_3'), made to differ from every id and input name."""
    while base in declared or base in scope:
        base += "_"
    return base


def _public_name(node_id: str, scope: dict[str, str]) -> str:
    """The name a user would use for an output: its top-level id when it has one."""
    return next((k for k, v in scope.items() if v == node_id), node_id)


def expand(spec: Spec) -> Graph:
    """Spec -> flat Graph of nodes (no shapes yet); SpecError(s) located at spec paths."""
    return Expander(spec).run()


def own_errors(raws: list[Any], params: dict[str, Any] | None) -> list[ArchcError]:
    """Each top-level op layer's own problems (unknown op, unknown or mistyped attribute, activation), without its
    wiring: what validate reports beside the spec's other errors when those keep the whole graph from expanding.
    Skipped, as their checks hang on more than the layer: a `use` of a block, a layer whose `when` is not plainly
    true, and, when `params` is None (the spec's [params] are broken), a layer whose references do not resolve."""
    checker = Expander(None)
    for i, raw in enumerate(raws):
        if not isinstance(raw, dict) or "use" in raw or raw.get("when", True) is not True:
            continue
        where = f"layers[{i}]{layer_label(raw)}"
        layer = {k: v for k, v in raw.items() if k != "when"}
        try:
            if params is None:
                try:
                    checker.substitute(layer, {}, where)
                except SpecError:
                    continue  # it names a parameter, and the parameters are broken: a knock-on
            op = checker.own(layer, where, params or {})
            if op is not None:
                checker.activation(op.act, where)
        except ArchcError as e:
            if not e.where:
                e.where = where
            checker.errors.append(e)
    return checker.errors
