"""The infer pass: shapes, dtypes, parameter shapes and FLOPs for every node, plus whole-model checks."""
from __future__ import annotations

from pathlib import Path

from archc.errors import ArchcError, SpecError, raise_all
from archc.graph.bounds import Collector, base_axis, check as check_bounds
from archc.graph.select import check_tuning
from archc.graph.ir import Graph, Node
from archc.graph.located import InternalError
from archc.graph.memory import export_bytes, human_bytes, memory_limit, needs  # noqa: F401 (their old home)
from archc.ops.base import BATCH, TensorType
from archc.language.errors import at
from archc.language.model import Spec
from archc.tasks import REGISTRY as TASKS
from archc.tasks.base import task_class, task_output

DEFAULT_AXIS_SIZE = 32  # a symbolic axis without an [axes] entry is estimated at this size


def infer(graph: Graph, spec: Spec | None = None, root: Path | None = None) -> Graph:
    """Fill in every node's output type, parameters and FLOPs, and collect what the nodes index; ShapeErrors
    are located at spec paths. Then [axes] sizes and input vocabularies are checked against those bounds."""
    given = dict(graph.sizes)  # the spec's [axes]; the others get a default (inside the bounds)
    symbols = _symbols(graph)
    sizes = {**symbols, **graph.sizes}
    graph.sizes = sizes
    collector = Collector(graph)
    types: dict[str, TensorType | None] = dict(graph.inputs)
    errors: list[ArchcError] = []
    batch_stats: Node | None = None  # the first node that cannot train on a batch of one example
    named = {base_axis(d) for d in symbols}  # symbols of the inputs and vocabularies; the nodes add theirs (a pool's)
    for node in graph.nodes:
        ins = [types.get(i) for i in node.inputs]
        if any(t is None for t in ins):  # an input failed already: one report per problem
            types[node.id] = None
            continue
        try:
            infer_node(graph, node, ins, sizes)  # type: ignore[arg-type]
            collector.add(node, ins)  # type: ignore[arg-type]
            if batch_stats is None and node.op.batch_statistics(ins):  # type: ignore[arg-type]
                batch_stats = node
            named.update(d for d in node.out.shape if isinstance(d, str) and d not in named)  # type: ignore[union-attr]
        except ArchcError as e:
            received = ", ".join(f"{src} {t.show()}" for src, t in zip(node.inputs, ins))  # type: ignore[union-attr]
            on_act = node.act is not None and e.where == "act"
            e.where = at(node.where, f".{e.where}") if e.where else node.where
            name = node.act.name() if on_act else node.op.name()  # type: ignore[union-attr]
            e.message = f"{name}: {e.message}" + (f" (input: {received})" if len(ins) == 1 and not on_act else "")
            if node.notes:  # an input that is a left-out layer's stand-in: the likely cause, said
                e.hint = "; ".join([*node.notes, *([e.hint] if e.hint else [])])
            errors.append(e)
            types[node.id] = None
            continue
        except Exception as e:  # an op's own rule crashed: a bug in archc, reported at the node that hit it
            raise InternalError(e, node.where, node.op.name()) from e
        types[node.id] = node.out
    raise_all(errors)
    raise_all([_unused_axis(name, named) for name in given if name not in named])
    raise_all(check_bounds(graph, given))
    if spec is not None:
        if spec.train.batch_size == 1 and batch_stats is not None:
            raise SpecError(f"expected a batch size of at least 2 with {batch_stats.op.name()} at {batch_stats.where} "
                            "(it normalizes each channel over the batch), received 1", where="train.batch_size",
                            hint="raise the batch size, or use layernorm, which normalizes each example")
        check_task(graph, spec, root)
        t = spec.train
        raise_all(check_tuning(graph, t.freeze, t.lora.targets if t.lora is not None else None))
        graph.memory = needs(graph, set(given))  # figures for validate; build refuses on them (training: per run)
    check_inputs_read(graph)
    return graph


def _unused_axis(name: str, named: set[str]) -> SpecError:
    """An [axes] entry no input or layer has: a misspelt symbol would leave the real one at its default size."""
    from archc.language.errors import close_matches  # as expand does: spec.errors imports the op registry
    symbols = sorted({base_axis(d) for d in named} - {BATCH})
    return SpecError(f"expected a symbolic axis of an input or a layer, received '{name}', which none has",
                     where=f"axes.{name}", hint=close_matches(name, set(symbols)) or
                     f"symbolic axes: {', '.join(symbols) or 'none'}")


def check_inputs_read(graph: Graph) -> None:
    """Every input reaches an output. The exporter drops one that does not (no layer reads it, or only a branch
    that feeds no output) from the ONNX graph, which then refuses the feed every caller gives (`archc infer`, the
    parity check): a wiring mistake, found last so that other errors come first."""
    live = set(graph.outputs.values())
    readers_of: dict[str, list[str]] = {name: [] for name in graph.inputs}  # one walk: not one per input
    for node in reversed(graph.nodes):  # nodes are in topological order: what the outputs depend on
        if node.id in live:
            live.update(node.inputs)
        for i in dict.fromkeys(node.inputs):
            if i in readers_of:
                readers_of[i].append(node.id)
    errors: list[ArchcError] = []
    for name in graph.inputs:
        readers = readers_of[name][::-1]
        if not readers:
            errors.append(SpecError(f"input '{name}' is read by no layer", where=f"inputs.{name}",
                                    hint=f"wire it with from = \"{name}\", or remove it"))
        elif name not in live:
            errors.append(SpecError(f"input '{name}' reaches no output", where=f"inputs.{name}",
                                    hint=f"the layers reading it ({', '.join(readers[:3])}) feed no output: wire "
                                         "their branch in, or name its last layer in outputs"))
    raise_all(errors)


def infer_node(graph: Graph, node: Node, ins: list[TensorType], sizes: dict[str, int]) -> None:
    """One node: output type (the activation checked on it), parameter shapes and count, FLOPs."""
    node.out = node.op.infer_tied(ins, graph.node(node.tied).params) if node.tied else node.op.infer(ins)
    if node.act is not None:
        try:
            node.act.infer([node.out])
        except ArchcError as e:
            e.where = "act"  # the layer's `act` sugar, not the layer itself, is at fault
            raise
    node.params = node.op.param_shapes(ins)
    node.num_params = node.op.num_params(ins)
    node.flops = node.op.flops(ins, node.out, sizes) + (node.act.flops([node.out], node.out, sizes) if node.act else 0)


def _symbols(graph: Graph) -> dict[str, int]:
    """Default sizes of the symbolic axes of inputs, and of axes named only as an int64 input's range."""
    names = [d for t in graph.inputs.values() for d in t.features if isinstance(d, str)]
    names += [v for v in graph.vocab.values() if isinstance(v, str)]
    return {d: DEFAULT_AXIS_SIZE for d in names}


def check_task(graph: Graph, spec: Spec, root: Path | None = None) -> None:
    """The rule of the spec's task kind (archc.tasks), the one `archc train` applies too. A bare architecture
    (no [task], [train] or [data]) declares no task: only its task output must exist."""
    if {"task", "train", "data"} & spec.model_fields_set:
        task_class(spec.task.kind).validate(graph, spec)
        if spec.data is not None:
            check_source(spec, graph, root)
        if {"train", "data"} & spec.model_fields_set and not TASKS[spec.task.kind].own_inputs:
            check_single_input(graph)
            (name, only), = graph.inputs.items()
            if spec.data is not None and spec.data.normalize and only.dtype != "float32":
                raise SpecError(f"expected normalize = false for the {only.dtype} input '{name}' (it standardizes "
                                "float features), received true", where="data.normalize",
                                hint="token or class ids are not normalized")
    else:
        task_output(graph, spec)


def check_source(spec: Spec, graph: Graph, root: Path | None = None) -> None:
    """The [data] source as `archc train` would load it, without reading anything: the scheme, its options (the
    `target` included), the named argument, the task it feeds, for a tabular input a columns reader, and the token
    ids it draws against the model (a named tokenizer.json is read: its vocabulary)."""
    from archc.data.sources import checked, located_options  # here: archc.data imports numpy (other specs never do)
    data = spec.data
    assert data is not None
    try:
        cls, _, opts = checked(data.source, task=TASKS[spec.task.kind].data_task, target=data.target,
                               tabular=next(iter(graph.columns), None), root=root)
        drawn = cls.vocab(located_options(cls, opts, root), data.source)  # a tokenizer's: its file is read
    except ArchcError as e:
        raise SpecError(e.message if not e.where or e.where in (data.source, "data") else f"{e.where}: {e.message}",
                        where="data.source", hint=e.hint) from None
    task_class(spec.task.kind).check_vocab(graph, spec, drawn)


def check_single_input(graph: Graph, file: str = "") -> None:
    """Task kinds without their own inputs train one input with a batch axis (validate checks it for a spec with
    [train] or [data], `archc train` for any)."""
    own = tuple(kind for kind, task in TASKS.items() if task.own_inputs)
    if len(graph.inputs) != 1:
        raise SpecError(f"training needs a single-input spec for now, received {len(graph.inputs)} inputs "
                        f"({', '.join(graph.inputs)})", where="inputs", file=file,
                        hint=f"task kinds {', '.join(own)} feed several inputs")
    only = next(iter(graph.inputs.values()))
    if not only.shape or only.shape[0] != BATCH:
        raise SpecError(f"training needs an input with a batch axis, received {only.show()}", where="inputs",
                        file=file, hint=f"task kinds {', '.join(own)} feed their own inputs (e.g. whole graphs)")
