"""An image ONNX that takes raw pixels: the /255 scaling, the channel layout and `[data] normalize`'s mean/std as ONNX
nodes in front of the core model (`archc export RUN_DIR --pixels`).

The core model reads float32 [batch, C, H, W] in [0, 1], normalized by `archc.preprocess` when the run normalized
(archc infer applies it; a bare client had to). `wrap` gives it instead ONE uint8 [batch, H, W, C] input under the
same name: what `np.asarray(PIL.Image.open(f).convert("RGB"))` (or "L", then `[..., None]`) stacks to, so a bare
ONNX Runtime client feeds decoded pixels as they are. In the graph, named archc_pixels/<step>:

    Cast(float32) -> Div(255) -> Transpose(NHWC -> NCHW) -> Sub(mean) -> Div(std)   (the last two when normalized)

which is exactly archc's arithmetic (archc.data.images.read_image, then Model._preprocess: float32 throughout), so
the graph's input to the network equals what `archc infer` feeds the plain model, bit for bit, for 8-bit images of
the model's size and channels. Resize and channel conversion stay the client's (Pillow's `resize` and `convert`
work on 8-bit values, archc's rule on float32: within a rounding of each other); the model's H, W and C are in
its input shape and in `archc.pixels`.

The default export is not changed: `model.onnx` keeps its float input, so existing clients read it as before; the
pixels file is asked for (`--pixels`; default name RUN_DIR/model-pixels.onnx).
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

from archc.errors import ExportError
import archc.metadata as keys
from archc.export.fronts import ATOL, PIXELS_PREFIX, RTOL, copy_model, rename_values

if TYPE_CHECKING:
    import onnx

PREFIX = PIXELS_PREFIX              # names of the front's nodes and values
NORMALIZED = f"{PREFIX}/normalized"  # float32 [batch, C, H, W]: what the core model reads
META = keys.PIXELS                # what the front does: input, layout, scale, mean/std
SCALE = 255.0                        # 8-bit pixels to [0, 1], as archc.data.images.read_image
EXAMPLES = 16                        # random images the parity check feeds, plus an all-0 and an all-255 one


def image_input(core: "onnx.ModelProto") -> tuple[str, str, tuple[int, int, int]]:
    """The core's one image input: its name, batch axis name and (C, H, W) fixed; ExportError otherwise."""
    from onnx import TensorProto

    inputs = list(core.graph.input)
    dims = inputs[0].type.tensor_type.shape.dim if len(inputs) == 1 else []
    fixed = [d.dim_value if d.HasField("dim_value") else None for d in dims[1:]]
    if len(inputs) != 1 or len(dims) != 4 or None in fixed or \
            inputs[0].type.tensor_type.elem_type != TensorProto.FLOAT:
        shown = ", ".join(f"{i.name!r} {[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]}"
                          for i in inputs)
        raise ExportError(f"--pixels: expected a model with one image input float32 [batch, C, H, W] of fixed C, H "
                          f"and W, received {shown}", hint="export it without --pixels")
    c, h, w = fixed
    if c not in (1, 3, 4):
        raise ExportError(f"--pixels: expected an image input of 1, 3 or 4 channels (gray, RGB, RGBA), received "
                          f"{c}", hint="export it without --pixels")
    return inputs[0].name, dims[0].dim_param or "batch", (c, h, w)  # type: ignore[return-value]


def statistics(pre: dict, name: str, channels: int) -> tuple[np.ndarray, np.ndarray] | None:
    """`archc.preprocess[name]`'s mean and std as float32 [1, C, 1, 1] (None when the run did not normalize)."""
    stats = pre.get(name)
    if not isinstance(stats, dict):
        return None
    out = []
    for key, default in (("mean", 0.0), ("std", 1.0)):
        v = np.asarray(stats.get(key, default), dtype=np.float32).reshape(-1)
        if v.size not in (1, channels) or not np.isfinite(v).all() or (key == "std" and np.any(v == 0)):
            raise ExportError(f"metadata 'preprocess' {name}.{key}: expected one finite number or {channels} (one per "
                              f"channel){', non-zero' if key == 'std' else ''}, received {v.tolist()[:8]}")
        out.append(np.broadcast_to(v, (channels,)).reshape(1, channels, 1, 1).copy())
    return out[0], out[1]


def front(name: str, stats: tuple[np.ndarray, np.ndarray] | None) -> list["onnx.NodeProto"]:
    """The nodes from uint8 [N, H, W, C] `name` to float32 [N, C, H, W] NORMALIZED (constants as Constant nodes:
    the front is one list of nodes, which archc quantize keeps in float32 as it is)."""
    from onnx import TensorProto, helper, numpy_helper

    def const(step: str, value: np.ndarray) -> "onnx.NodeProto":
        return helper.make_node("Constant", [], [f"{PREFIX}/{step}"], name=f"{PREFIX}/{step}",
                                value=numpy_helper.from_array(value, f"{PREFIX}/{step}"))

    nodes = [const("scale", np.asarray(SCALE, np.float32)),
             helper.make_node("Cast", [name], [f"{PREFIX}/float"], name=f"{PREFIX}/cast", to=TensorProto.FLOAT),
             helper.make_node("Div", [f"{PREFIX}/float", f"{PREFIX}/scale"], [f"{PREFIX}/unit"],
                              name=f"{PREFIX}/scaled"),
             helper.make_node("Transpose", [f"{PREFIX}/unit"], [f"{PREFIX}/nchw" if stats else NORMALIZED],
                              name=f"{PREFIX}/nchw", perm=[0, 3, 1, 2])]
    if stats is not None:
        mean, std = stats
        nodes += [const("mean", mean), const("std", std),
                  helper.make_node("Sub", [f"{PREFIX}/nchw", f"{PREFIX}/mean"], [f"{PREFIX}/centred"],
                                   name=f"{PREFIX}/centred"),
                  helper.make_node("Div", [f"{PREFIX}/centred", f"{PREFIX}/std"], [NORMALIZED],
                                   name=f"{PREFIX}/normalized")]
    return nodes


def wrap(core: "onnx.ModelProto") -> tuple["onnx.ModelProto", dict[str, Any]]:
    """`core` with the pixel front: one uint8 [batch, H, W, C] input under the core's input name; its archc.*
    metadata kept, the input's `archc.preprocess` entry moved into the graph, archc.inputs and archc.pixels set.
    Returns the model and what archc.pixels records."""
    from onnx import TensorProto, helper

    name, batch, (c, h, w) = image_input(core)
    taken = [v for n in core.graph.node for v in n.output if v.startswith(PREFIX + "/")]
    if taken:
        raise ExportError(f"--pixels: expected a model without values named '{PREFIX}/...', received {taken[0]!r}")
    model = copy_model(core)
    meta = {p.key: p.value for p in model.metadata_props}
    pre = json.loads(meta.get(keys.PREPROCESS, "{}") or "{}")
    stats = statistics(pre, name, c)
    rename_values(model.graph, {name: NORMALIZED})
    nodes = front(name, stats)
    del model.graph.input[:]
    model.graph.input.append(helper.make_tensor_value_info(name, TensorProto.UINT8, [batch, h, w, c]))
    model.graph.value_info.append(helper.make_tensor_value_info(NORMALIZED, TensorProto.FLOAT, [batch, c, h, w]))
    body = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes + body)
    record = {"input": name, "shape": [batch, h, w, c], "dtype": "uint8", "layout": "NHWC", "scale": f"1/{SCALE:g}",
              "channels": {1: "gray", 3: "RGB", 4: "RGBA"}[c],
              "mean": None if stats is None else stats[0].ravel().tolist(),
              "std": None if stats is None else stats[1].ravel().tolist(),
              "normalized": {"shape": [batch, c, h, w], "dtype": "float32"}}
    pre.pop(name, None)
    meta[keys.PREPROCESS] = json.dumps(pre)
    meta[keys.INPUTS] = json.dumps({name: {"shape": [batch, h, w, c], "dtype": "uint8"}})
    meta[META] = json.dumps(record)
    del model.metadata_props[:]
    helper.set_model_props(model, meta)
    return model, record


def reference(pixels: np.ndarray, record: dict[str, Any]) -> np.ndarray:
    """What archc feeds the plain model for uint8 [N, H, W, C] `pixels`: read_image's /255 in float32, then
    Model._preprocess's `(x - mean) / std` (float32 [N, C, H, W])."""
    x = np.ascontiguousarray(np.transpose(pixels, (0, 3, 1, 2))).astype(np.float32) / np.float32(SCALE)
    if record.get("mean") is None:
        return x
    c = x.shape[1]
    mean = np.asarray(record["mean"], np.float32).reshape(1, c, 1, 1)
    std = np.asarray(record["std"], np.float32).reshape(1, c, 1, 1)
    return ((x - mean) / std).astype(np.float32, copy=False)


def check(wrapped: "onnx.ModelProto", record: dict[str, Any], module, outputs: list[str],
          seed: int = 0) -> tuple[float, float, int]:
    """The wrapped model under ONNX Runtime on uint8 images (random, all 0, all 255) against the torch module fed
    their preprocessed values (`reference`): (max abs diff, tolerance, images); ExportError past it."""
    import torch

    from archc.runtime.session import check_session

    _, h, w, c = record["shape"]
    rng = np.random.default_rng(seed)
    pixels = np.concatenate([rng.integers(0, 256, (EXAMPLES, h, w, c), dtype=np.uint8),
                             np.zeros((1, h, w, c), np.uint8), np.full((1, h, w, c), 255, np.uint8)])
    try:
        sess = check_session(wrapped.SerializeToString())
        got = sess.run(outputs, {record["input"]: pixels})
    except Exception as e:  # onnxruntime raises its own exception types
        raise ExportError(f"ONNX Runtime failed on the model that takes pixels: {str(e).splitlines()[0][:300]}") \
            from e
    module.eval()
    with torch.no_grad():
        ref = module(torch.from_numpy(reference(pixels, record)))
    refs = [ref] if isinstance(ref, torch.Tensor) else list(ref)
    worst, tol = 0.0, 0.0
    for name, r, g in zip(outputs, refs, got):
        r = r.detach().numpy().astype(np.float64)
        diff = float(np.max(np.abs(r - g))) if r.size else 0.0
        bound = ATOL + RTOL * (float(np.max(np.abs(r))) if r.size else 0.0)
        worst, tol = max(worst, diff), max(tol, bound)
        if not diff <= bound:  # also catches NaN
            raise ExportError(f"output '{name}': expected the model that takes pixels to match torch on the "
                              f"preprocessed images within {bound:.1e}, received a max abs difference of {diff:.3e}")
    return worst, tol, len(pixels)


def takes_pixels(core: "onnx.ModelProto", module, outputs: list[str]) -> tuple[bytes, dict[str, Any]]:
    """The core model (checked against torch) wrapped to take uint8 pixels, checked by onnx.checker (full) and
    against the torch module on the preprocessed images: its bytes, and what to report."""
    import onnx

    wrapped, record = wrap(core)
    try:
        onnx.checker.check_model(wrapped, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"onnx.checker rejected the model that takes pixels: {str(e).splitlines()[0]}") from e
    worst, tol, images = check(wrapped, record, module, outputs)
    return wrapped.SerializeToString(), {"input": record["input"], "shape": record["shape"],
                                         "normalized": record["mean"] is not None, "images": images,
                                         "max_abs_diff": worst, "tolerance": tol}


def describe(px: dict[str, Any] | None) -> str:
    """One line for the CLI about a model that takes pixels ('' for any other model)."""
    if not px:
        return ""
    shape = ", ".join(str(d) for d in px["shape"])
    steps = "/255, NHWC to NCHW" + (", mean/std" if px["normalized"] else "")
    return (f"takes pixels: {px['input']!r} uint8 [{shape}] ({steps} in the graph); "
            f"matches torch on the preprocessed images ({px['images']}): max abs diff {px['max_abs_diff']:.2e}")
