"""What the build fuzzer (test_build_fuzz.py) found: each class, fixed at its root, against the real thing."""
from __future__ import annotations

import pytest

from archc.compiled import BuildOptions
from archc.errors import ArchcError
from archc.pipeline import BUILD_PASSES, compile_spec, compiled_from, run

torch = pytest.importorskip("torch")


def _spec(inputs: dict, layers: list, **top) -> dict:
    return {"archc": 1, "model": {"name": "found"}, "inputs": inputs, "layers": layers} | top


def test_an_input_no_layer_reads_is_a_located_error(tmp_path):
    """It validated, then the exporter dropped it from the ONNX graph and ONNX Runtime refused the feed every caller
    gives ('Invalid input name: b'): exit 3 at the end of `build`, or of a whole training run."""
    spec = _spec({"a": {"shape": [4]}, "b": {"shape": [3]}}, [{"op": "linear", "out_features": 2, "from": "a"}])
    with pytest.raises(ArchcError) as e:
        compile_spec(spec)
    assert e.value.line() == "<spec>: inputs.b: input 'b' is read by no layer (wire it with from = \"b\", or remove it)"


def test_an_input_as_an_output_is_a_located_error(tmp_path):
    """It validated, then ONNX (one name per value) renamed the input to 'b.1' and the parity check failed:
    'Required inputs (['b.1']) are missing'. An identity layer passes an input through."""
    spec = _spec({"a": {"shape": [4]}, "b": {"shape": [3]}},
                 [{"id": "y", "op": "add", "from": ["b", "b"]},
                  {"id": "z", "op": "linear", "out_features": 2, "from": "a"}],
                 outputs=["b", "z"])
    with pytest.raises(ArchcError, match=r"outputs\[0\]: expected an output computed by a layer, received input 'b'"):
        compile_spec(spec)
    spec["layers"][0] = {"id": "y", "op": "identity", "from": "b"}
    spec["outputs"] = ["y", "z"]
    c = run(compiled_from(spec, options=BuildOptions(output=tmp_path / "m.onnx")), BUILD_PASSES)
    assert c.report is not None and c.report.checks


@pytest.mark.parametrize("shape, groups", [([1], 1), ([4], 4), ([6, 1], 6)])
def test_group_norm_of_one_value_per_group_is_a_located_error(shape, groups):
    """It validated, then torch refused it at batch 1 (inference on one example, the exporter's parity check)."""
    spec = _spec({"x": {"shape": shape}}, [{"id": "gn", "op": "group_norm", "num_groups": groups}])
    with pytest.raises(ArchcError, match=r"layers\[0\] \(gn\): group_norm: expected more than one value per group"):
        compile_spec(spec)
    module = torch.nn.GroupNorm(groups, shape[0])
    with pytest.raises(ValueError, match="more than 1 value per channel"):  # what the rule stands for
        module(torch.randn(1, *shape))


@pytest.mark.parametrize("shape, groups", [([2], 1), ([4, 3], 4), ([4, "n"], 4)])
def test_group_norm_with_several_values_per_group_builds(shape, groups, tmp_path):
    axes = {"n": 3} if "n" in shape else {}  # an [axes] entry no input has is an error
    spec = _spec({"x": {"shape": shape}}, [{"op": "group_norm", "num_groups": groups}], axes=axes)
    run(compiled_from(spec, options=BuildOptions(output=tmp_path / "m.onnx")), BUILD_PASSES)


def test_example_graph_ids_cover_every_graph():
    """The exporter's example inputs give every graph nodes, so a pooled [graphs, F] output has its declared size
    at every parity size (random ids left some graphs empty: 'validate says [8, 3], torch gives [7, 3]')."""
    from archc.export.onnx import check_sizes, example_inputs
    from archc.lower import lower

    spec = _spec({"x": {"shape": ["nodes", 3], "batched": False},
                  "batch": {"shape": ["nodes"], "dtype": "int64", "vocab": "graphs", "batched": False}},
                 [{"op": "global_mean_pool", "from": ["x", "batch"]}], axes={"nodes": 9, "graphs": 8})
    graph = compile_spec(spec).graph
    module = lower(graph)
    for seed, (batch, sizes) in enumerate([(2, graph.sizes), *check_sizes(graph)[0]]):
        feeds = example_inputs(graph, batch, sizes, seed=seed)
        out = module(*(torch.from_numpy(v) for v in feeds.values()))
        assert tuple(out.shape) == (sizes["graphs"], 3), sizes


def test_an_input_whose_branch_feeds_no_output_is_a_located_error(tmp_path):
    """specs/two_branch.json without its concat layer validated, then ONNX dropped the dead image branch and its
    input: 'Invalid input name: image' from ONNX Runtime at the end of `build`."""
    import json
    from pathlib import Path

    spec = json.loads((Path(__file__).resolve().parents[2] / "specs" / "two_branch.json").read_text())
    joined = next(i for i, layer in enumerate(spec["layers"]) if layer.get("id") == "joined")
    del spec["layers"][joined]
    with pytest.raises(ArchcError, match=r"inputs\.image: input 'image' reaches no output \(the layers reading it "
                                         r"\(conv\) feed no output"):
        compile_spec(spec)
    spec["outputs"] = [*spec["outputs"], "img_feat"]  # the branch named as an output: it builds and exports
    run(compiled_from(spec, options=BuildOptions(output=tmp_path / "m.onnx")), BUILD_PASSES)


def test_a_step_the_tracer_shares_between_layers_is_not_named_as_a_layer_output(tmp_path):
    """Three timestep embeddings of one input (two of them dead ends): the tracer recorded the no-op cast of the
    input in the first layer's scope and let the others read it there, so the exporter's annotation took that
    cast ([batch, 1]) for the first layer's output, typed it [batch, 8], and ONNX Runtime refused the file
    ('Incompatible dimensions'). Only values read along the spec's own edges are named and typed now."""
    import onnx

    layers = [{"op": "timestep_embedding", "id": "node", "from": "x0", "dim": 8, "max_period": 100.0},
              {"op": "timestep_embedding", "id": "node_again", "from": "x0", "dim": 8},
              {"op": "timestep_embedding", "id": "node_again_again", "from": "x0", "dim": 8}]
    spec = _spec({"x0": {"shape": [1]}}, layers, task={"kind": "regression"})
    c = run(compiled_from(spec, options=BuildOptions(output=tmp_path / "m.onnx")), BUILD_PASSES)
    assert c.report is not None and c.report.checks
    model = onnx.load(tmp_path / "m.onnx")
    assert {v.name for v in model.graph.value_info} <= {n.id for n in c.graph.nodes}
    assert "node" not in {v.name for v in model.graph.value_info}  # the dead layers' outputs were never exported


def test_conv_transpose_output_padding_beyond_the_stride_is_a_located_error(tmp_path):
    """torch takes output_padding < max(stride, dilation); ONNX Runtime refuses output_padding >= stride ('may be too
    large for stride (1)'): it validated, then the export's parity check failed. Found by the long fuzz profile."""
    import io

    import onnxruntime as ort

    layer = {"id": "up", "op": "conv_transpose2d", "out_channels": 2, "kernel_size": 3, "dilation": 2,
             "output_padding": [1, 0]}
    with pytest.raises(ArchcError, match=r"layers\[0\] \(up\): conv_transpose2d: expected output_padding smaller "
                                         r"than stride \(as ONNX Runtime requires\)"):
        compile_spec(_spec({"x": {"shape": [2, 4, 4]}}, [layer]))
    module, x, f = torch.nn.ConvTranspose2d(2, 2, 3, dilation=2, output_padding=(1, 0)), torch.randn(1, 2, 4, 4), \
        io.BytesIO()
    torch.onnx.export(module, (x,), f, dynamo=False)  # torch runs it ...
    sess = ort.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match="output_padding"):  # ... ONNX Runtime does not
        sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    layer |= {"stride": 2}  # below the stride: both run it
    run(compiled_from(_spec({"x": {"shape": [2, 4, 4]}}, [layer]), options=BuildOptions(output=tmp_path / "m.onnx")),
        BUILD_PASSES)
