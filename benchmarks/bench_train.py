"""Figure 1: training step time of every example spec's generated module vs the same network written by hand.

Every spec with a twin in handwritten.py: both sides load the same weights, take the same inputs and the same loss
(cross-entropy on a scoring task's output, MSE elsewhere), AdamW, and are timed in interleaved rounds (A B, then
B A, ...). Goal: generated / hand <= 1.03.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import common
from handwritten import TWINS, copy_state

FIGURE = 1
KEY = "train"
TITLE = "Training step: generated module vs hand-written PyTorch"
A, B = "generated (ms/step)", "hand-written (ms/step)"
GOAL = 1.03
GRAPH_SPECS = ("gcn_karate", "graph_classifier")


def _outputs(out) -> list[torch.Tensor]:
    return [out] if isinstance(out, torch.Tensor) else list(out)


def make_loss(compiled, sample_out):
    """Cross-entropy on the task's scored output, MSE against a fixed random target on any other output."""
    from archc.export.onnx import SCORE_TASKS

    spec, names = compiled.spec, list(compiled.graph.outputs)
    task_out = spec.task.output or names[0]
    g = torch.Generator().manual_seed(1)
    targets = []
    for name, o in zip(names, _outputs(sample_out)):
        if name == task_out and spec.task.kind in SCORE_TASKS:
            k = o.shape[-1]
            targets.append(("ce", torch.randint(0, k, (o.numel() // k,), generator=g)))
        else:
            targets.append(("mse", torch.randn(o.shape, generator=g)))

    def loss(out) -> torch.Tensor:
        total = torch.zeros(())
        for o, (kind, t) in zip(_outputs(out), targets):
            total = total + (F.cross_entropy(o.reshape(-1, o.shape[-1]), t) if kind == "ce" else F.mse_loss(o, t))
        return total
    return loss


def stepper(model: torch.nn.Module, inputs: tuple, loss_fn):
    """One training step of `model` (forward, loss, backward, AdamW) on any inputs."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()

    def step() -> None:
        loss = loss_fn(model(*inputs))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def compare(name: str, path, rounds: int, round_s: float) -> dict:
    import archc
    from archc.export.onnx import example_inputs
    from archc.pipeline import compile_spec

    twin = TWINS[name]
    try:
        compiled = compile_spec(path)
        generated = archc.compile(path, seed=0)
    except Exception as e:  # a spec that does not build (yet) is reported, not fatal
        return common.skipped(FIGURE, name, f"does not build: {str(e).splitlines()[0][:160]}")
    hand, control = twin.make(), twin.make()
    try:
        copy_state(generated, hand)
        copy_state(generated, control)
    except Exception as e:
        return common.skipped(FIGURE, name, f"hand-written twin no longer matches the spec's parameters "
                                            f"({str(e).splitlines()[0][:120]})")
    graph = compiled.graph
    feeds = example_inputs(graph, twin.batch, graph.sizes, seed=0)
    inputs = tuple(torch.from_numpy(v) for v in feeds.values())
    generated.eval(), hand.eval()
    with torch.no_grad():
        out_g, out_h = generated(*inputs), hand(*inputs)
    diff = max(float((a - b).abs().max()) for a, b in zip(_outputs(out_g), _outputs(out_h)))
    if not diff <= 1e-4:
        return common.skipped(FIGURE, name, f"hand-written twin computes something else (max |diff| {diff:.1e})")
    loss = make_loss(compiled, out_g)
    # three sides: the control is a second copy of the hand-written model, so hand2 / hand is this run's noise
    # (the A/A ratio); the order generated, hand, control / control, hand, generated keeps the two outer sides alike
    steps = {"generated": stepper(generated, inputs, loss), "hand": stepper(hand, inputs, loss),
             "control": stepper(control, inputs, loss)}
    inner = common.inner_for(steps["hand"], round_s, cap=200)
    times = common.interleave(steps, rounds, inner=inner, warmup=1)
    g, h = common.median(times["generated"]), common.median(times["hand"])
    ratio = common.paired_ratio(times["generated"], times["hand"])
    noise = common.paired_ratio(times["control"], times["hand"])
    size = f"batch {twin.batch}" if any(t.batched for t in graph.inputs.values()) else "one graph"
    met = common.at_most(ratio, GOAL)
    verdict = ""
    if met is False and ratio <= max(noise, 2 - noise) * GOAL:
        verdict = "within this run's noise (A/A control as far off); "
    return common.row(FIGURE, f"{name} ({twin.family}, {size})", g * 1e3, h * 1e3, goal=f"<= {GOAL}",
                      met=met, unit="ms", ratio=ratio,
                      note=f"{verdict}A/A control {noise:.3f}; {rounds} rounds x {inner} steps; outputs equal to "
                           f"{diff:.0e}")


def run(quick: bool = False) -> tuple[list[dict], str]:
    rounds, round_s = (3, 0.03) if quick else (25, 0.1)
    rows = []
    for name, path in common.example_specs(quick):
        if path is None:
            rows.append(common.skipped(FIGURE, name, "spec not in specs/ yet"))
        elif name not in TWINS:
            rows.append(common.skipped(FIGURE, name, "no hand-written twin in benchmarks/handwritten.py yet"))
        else:
            rows.append(compare(name, path, rounds, round_s))
            r = rows[-1]
            if name in GRAPH_SPECS and r["a"] is not None:
                rows.append(common.row(FIGURE, f"eager message passing without the export-only Functions "
                                               f"(suggested), {name}", r["b"], r["a"], unit="ms",
                                       ratio=1 / r["ratio"], note="optimization before/after: a = index_add_ as in "
                                       "the hand-written twin, b = archc/nn/gnn.py today (same rounds as above)"))
    details = (f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU. Both sides load the generated "
               "module's weights, run the same inputs, loss and AdamW step; rounds alternate A B / B A; ratio = the "
               "median of per-round ratios (a and b are the medians of each side). 'A/A control' times a second, "
               "identical copy of the hand-written model in the same rounds: its ratio to the first is the noise "
               "floor of that row (1.000 on a quiet machine).")
    return rows, details


MISSES = """**Graph specs (gcn_karate, graph_classifier):** archc's message passing (`archc/nn/gnn.py`) exports
every scatter as ScatterND with a reduction through a small `autograd.Function`. Before the eager fast path, training
ran those Functions too: 2x the aten calls of the hand-written `index_add_` version, and the step was 1.35x
(gcn_karate) and 1.13x (graph_classifier) in the 20:43 run. Since then, outside export (`torch.onnx.is_in_onnx_export()
or torch.jit.is_tracing()`) it uses `index_add_` / `scatter_reduce` directly: graph_classifier 0.97x, gcn_karate
1.09x. What remains on the 34-node karate graph is the float degree count and the normalization ops around tiny
kernels, where every aten call is overhead (the hand-written twin counts degrees with the same scatter but fuses the
normalization). Rows marked 'within this run's noise' miss by less than the A/A control moved: rerun on a quieter
machine."""
