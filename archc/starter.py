"""`archc init SOURCE`: a whole starter spec for a data source, written as TOML that validates and trains as written
(torch-free: the data is surveyed with the readers the sources use, nothing is trained).

Each family reads its data once and sizes a plain network and a recipe to it:
    csv: / parquet:   the columns as `archc columns` declares them (archc.data.survey), the task from the target as
                      training decides it; an MLP (one ReLU layer under 1,000 rows, two above) of 32-256 units
    images:DIR        the channels and size of the images (sampled); a small CNN (conv 3x3 + max-pool stages to
                      about 4x4, global average pool, linear) of 16 or 32 base channels
    text:PATH         byte tokens; a GPT-style language model (pre-norm blocks, tied output) of 64-256 wide, with
                      a context that leaves every split at least one window
The recipe follows the training examples: epochs and early stopping (more epochs, more patience, a larger
validation share on small data), batch size and AdamW's learning rate.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from archc.errors import DataError, InputError
from archc.labels import CLASSES, TARGETS, TOKENS

SCHEMES = ("csv", "parquet", "images", "text")  # the sources a starter is written for
_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Starter:
    """A starter spec's TOML text and a one-line summary of what it holds."""

    text: str
    summary: str


@dataclass(frozen=True)
class Recipe:
    """[train] and [data] split settings sized to the training examples."""

    epochs: int
    batch_size: int
    lr: float
    early_stopping: int
    val_fraction: float

    def toml(self, why: str) -> str:
        lines = [f"# {why}", "[train]", f"epochs = {self.epochs}", f"batch_size = {self.batch_size}",
                 f'optimizer = {{ name = "adamw", lr = {self.lr:g}, weight_decay = 1e-4 }}']
        if self.early_stopping:
            lines.append(f"early_stopping = {self.early_stopping}   # stop after this many epochs without a better "
                         f"validation score")
        return "\n".join(lines) + "\n"


def recipe(examples: int) -> Recipe:
    """More epochs, patience and validation share for few examples; larger batches for many."""
    if examples < 1_000:
        return Recipe(60, 16 if examples < 500 else 32, 3e-3, 15, 0.15)
    if examples < 10_000:
        return Recipe(30, 64, 2e-3, 8, 0.1)
    if examples < 100_000:
        return Recipe(15, 128, 1e-3, 5, 0.1)
    return Recipe(6, 256, 1e-3, 3, 0.05)


def model_name(path: str) -> str:
    """A [model] name from the data's file or folder name."""
    stem = Path(path.rstrip("/\\")).stem or "model"
    return (_NAME.sub("-", stem).strip("-.") or "model")[:100]


def spec_path(arg: str, spec_dir: Path) -> str:
    """The data path as the spec records it: relative to the spec's folder (so the pair moves together and no
    absolute path is written), absolute only when no relative path leads there (another drive)."""
    if arg == "stdlib":
        return arg
    target = Path(arg).expanduser().resolve()
    try:
        return Path(os.path.relpath(target, spec_dir.resolve())).as_posix()
    except ValueError:
        return target.as_posix()


def source_text(scheme: str, arg: str, query: dict[str, str], spec_dir: Path) -> str:
    options = "&".join(f"{k}={v}" for k, v in query.items())
    return f"{scheme}:{spec_path(arg, spec_dir)}" + (f"?{options}" if options else "")


def data_table(source: str, val: float, test: float, **fields: str) -> str:
    """The [data] table: the source, its fields (a table's target) and the split shares."""
    lines = [f"{k} = {json.dumps(v, ensure_ascii=False)}" for k, v in {"source": source, **fields}.items()]
    return "\n[data]\n" + "\n".join(lines) + f"\nval_fraction = {val}\ntest_fraction = {test}\n"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def comment(text: str) -> str:
    """Text for a TOML comment line: control characters escaped (a newline would end the comment)."""
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", text)


def head(command: str, facts: str, name: str, doc: str) -> str:
    return (f"# Written by `{comment(command)}`: {comment(facts)}\n"
            "# A starting point: `archc validate` checks it, `archc train` trains it as written; edit freely.\n"
            f'archc = 1\n\n[model]\nname = {json.dumps(name)}\ndoc = {json.dumps(doc, ensure_ascii=False)}\n')


def layer(id_: str, op: str, **attrs: object) -> str:
    body = "".join(f"\n{k} = {json.dumps(v)}" for k, v in attrs.items())
    return f'[[layers]]\nid = "{id_}"\nop = "{op}"{body}\n'


# --- tabular: csv:, parquet: ------------------------------------------------------------------------------------

def _read(scheme: str, arg: str, query: dict[str, str], target: str | None, source: str):
    """(the table's cells as text, the target's name, columns no source reads {name: Arrow type})."""
    from archc.data.base import REGISTRY
    from archc.data.parquet import text_table
    from archc.data.sources import make_options
    from archc.data.tabular import read_table, target_column

    options = make_options(REGISTRY[scheme], source, query, {"target": target} if target else {}, {})
    refused: dict[str, str] = {}
    if scheme == "csv":
        raw = read_table(Path(arg), source, options.dialect(source))  # type: ignore[attr-defined]
        header = raw.columns
    else:
        raw, refused, header = text_table(Path(arg), source)
    name = target_column(header, options.target, source)  # type: ignore[attr-defined]
    if name in refused:
        raise DataError(f"target column {name!r}: expected numbers, strings or booleans, received Arrow type "
                        f"{refused[name]}", where=source, hint="name another target column with --target")
    return raw, name, refused


def mlp(rows: int, width: int, outputs: int, kind: str) -> tuple[list[str], int]:
    """ReLU layers sized to the rows and the encoded width (one under 1,000 rows, two above), and the output."""
    hidden = max(32 if rows < 1_000 else 64 if rows < 10_000 else 128, min(256, 2 ** math.ceil(math.log2(width))))
    layers = [layer("hidden1", "linear", out_features=hidden, act="relu")]
    if rows >= 1_000:
        layers.append(layer("hidden2", "linear", out_features=hidden // 2, act="relu"))
    layers.append(layer("logits" if kind == CLASSES else "out", "linear", out_features=outputs))
    return layers, hidden


def tabular(scheme: str, arg: str, query: dict[str, str], spec_dir: Path, target: str | None, task: str | None,
            command: str) -> Starter:
    """An MLP over the table's usable columns (archc.data.survey's rules), the task from the target."""
    from archc.data.survey import Surveyed, key, survey, toml_block
    from archc.data.tabular import target_values

    source = f"{scheme}:{arg}"
    raw, name, refused = _read(scheme, arg, query, target, source)
    _, classes, kind = target_values(raw.cells[name], name, raw.lines, task, source)
    surveyed = survey(raw, name) + [Surveyed(c, None, 0, 0, f"Arrow type {t}: left out (no source reads it: cast "
                                                         f"it to a number or a string)") for c, t in refused.items()]
    used = [s.column for s in surveyed if s.column is not None]
    if not used:
        raise DataError(f"expected at least one usable feature column besides the target {name!r}, received none "
                        f"({'; '.join(f'{s.name}: {s.note}' for s in surveyed) or 'no other columns'})", where=source)
    rows, width = len(raw), sum(c.width() for c in used)
    data = source_text(scheme, arg, {k: v for k, v in query.items() if k != "target"}, spec_dir)
    block = toml_block(Path(arg), raw, name, "row", surveyed, data)
    layers, hidden = mlp(rows, width, len(classes) if kind == CLASSES else 1, kind)
    left = [s.name for s in surveyed if s.column is None]
    facts = (f"{rows} rows, {len(raw.columns) + len(refused)} columns; target {name!r} ({kind}"
             + (f", {len(classes)} classes" if kind == CLASSES else "") + f"), {plural(len(used), 'feature column')} "
             f"({plural(width, 'feature')} encoded)" + (f", {len(left)} left out" if left else ""))
    doc = f"{kind} of {name} from {plural(len(used), 'column')}: {plural(len(layers) - 1, 'ReLU layer')} of {hidden}"
    r = recipe(int(rows * 0.7))
    text = (head(command, facts, model_name(arg), doc) + "\n" + block[block.index("[inputs.row]"):]
            + f'\n[task]\nkind = "{kind}"\n\n' + "\n".join(layers) + "\n"
            + r.toml(f"{rows} rows, about {int(rows * 0.7)} to train on: a recipe for that size.")
            + data_table(data, r.val_fraction, 0.2, target=name))
    summary = f"{kind} of {key(name)} from {plural(len(used), 'column')}, {rows} rows" + (
        f"; left out: {', '.join(left)}" if left else "")
    return Starter(text, summary)


# --- images:DIR ---------------------------------------------------------------------------------------------------

SAMPLE = 200  # images whose headers are read for the channels and size


def _look(path: Path) -> tuple[int, int, int]:
    """(channels, height, width) of one image file, from its header (a .npy: its array)."""
    from PIL import Image

    from archc.data.images import read_image

    if path.suffix.lower() == ".npy":
        c, h, w = read_image(path).shape
        return c, h, w
    with Image.open(path) as im:
        w, h = im.size
        return (1 if im.mode in ("1", "L", "I", "I;16", "F", "LA") else 3), h, w


def _class_files(arg: str, source: str) -> tuple[list[str], list[Path]]:
    """The class folders (sorted) and every image file in them; at least 2 classes, none empty."""
    from archc.data.images import Conversions, class_folders, image_files

    folder = Path(arg).expanduser()
    if not folder.is_dir():
        raise DataError(f"expected a folder with one sub-folder per class, received {arg!r}, which is not a folder",
                        where=source)
    classes = class_folders(folder)
    files = {c: image_files(folder / c, Conversions()) for c in classes}
    empty = [c for c in classes if not files[c]]
    if len(classes) < 2 or empty:
        raise DataError(f"expected at least 2 class sub-folders holding images, received {len(classes)} "
                        f"sub-folder(s)" + (f", {len(empty)} without images ({', '.join(empty[:5])})" if empty else ""),
                        where=source)
    return classes, [p for c in classes for p in files[c]]


def _image_shape(files: list[Path], options, source: str) -> tuple[int, int, int, str]:
    """(channels, height, width) for the input, from a sample of the images' headers or the source's options, and
    how the size was found."""
    from archc.data.images import parse_size

    try:
        looks = [_look(p) for p in files[::max(1, len(files) // SAMPLE)]]
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"expected readable images, received one that fails to open ({e})", where=source) from None
    channels = options.channels or (3 if any(c >= 3 for c, _, _ in looks) else 1)
    sizes = {(h, w) for _, h, w in looks}
    try:
        given = parse_size(options.size)
    except ValueError as e:
        raise DataError(f"size: {e}", where=source) from None
    if given is not None:
        return channels, *given, "as ?size= says"
    if len(sizes) == 1 and max(next(iter(sizes))) <= 128:
        return channels, *next(iter(sizes)), "as found"
    side = 64 if len(files) >= 1_000 else 32  # mixed or large images: training resizes them to the input's size
    return channels, side, side, f"resized from {len(sizes)} size(s) seen"


def cnn(h: int, w: int, n: int, classes: int) -> tuple[list[str], int, int]:
    """3x3 conv + 2x2 max-pool stages down to about 4x4 (16 base channels, 32 from 2,000 images, doubling to
    128), global average pool, linear; with the stage count and base channels."""
    stages = max(0, min(4, int(math.log2(min(h, w))) - 1))
    base = 16 if n < 2_000 else 32
    layers, ch = [], base
    for i in range(stages):
        layers.append(layer(f"conv{i + 1}", "conv2d", out_channels=ch, kernel_size=3, padding="same", act="relu"))
        layers.append(layer(f"pool{i + 1}", "max_pool2d", kernel_size=2))
        ch = min(128, ch * 2)
    layers.append(layer("features", "global_avg_pool") if stages else layer("features", "flatten"))
    layers.append(layer("logits", "linear", out_features=classes))
    return layers, stages, base


def images(scheme: str, arg: str, query: dict[str, str], spec_dir: Path, target: str | None, task: str | None,
           command: str) -> Starter:
    """A small CNN for the folder's image size and channels, one class per sub-folder."""
    from archc.data.base import REGISTRY
    from archc.data.sources import make_options

    source = f"{scheme}:{arg}"
    options = make_options(REGISTRY[scheme], source, query, {}, {})
    classes, files = _class_files(arg, source)
    n = len(files)
    channels, h, w, sized = _image_shape(files, options, source)
    layers, stages, base = cnn(h, w, n, len(classes))
    r = recipe(int(n * 0.7))
    facts = f"{n} images in {len(classes)} classes, {plural(channels, 'channel')}, {h}x{w} ({sized})"
    doc = f"image classifier: {stages} conv + max-pool stages from {base} channels, global average pool, linear"
    query = {k: v for k, v in query.items() if k not in ("size", "channels")}  # training takes both from the input
    text = (head(command, facts, model_name(arg), doc)
            + f"\n[inputs.image]\nshape = [{channels}, {h}, {w}]   # training converts and resizes every image "
              f"to this\n\n[task]\nkind = \"{CLASSES}\"\nlabels = {json.dumps(classes, ensure_ascii=False)}\n\n"
            + "\n".join(layers) + "\n"
            + r.toml(f"{n} images, about {int(n * 0.7)} to train on: a recipe for that size.")
            + data_table(source_text(scheme, arg, query, spec_dir), r.val_fraction, 0.2))
    return Starter(text, f"classification of {len(classes)} classes from {n} images at {channels}x{h}x{w}")


# --- text:PATH ----------------------------------------------------------------------------------------------------

TEXT_SPLITS = (0.1, 0.1)  # val, test shares of the bytes


def _split_bytes(arg: str, max_bytes: int | None, name: str) -> tuple[int, int]:
    """(total bytes, bytes of the smallest split) as the text source will cut them (archc.data.text.plan)."""
    from archc.data.text import STDLIB_MAX_BYTES, corpus_paths, scan_corpus, split_by_file

    base, paths = corpus_paths(arg if arg == "stdlib" else Path(arg).expanduser(), name)
    cap = (STDLIB_MAX_BYTES if arg == "stdlib" else None) if max_bytes is None else (max_bytes or None)
    sizes = [n for _, _, n in scan_corpus(base, paths, cap, name)]
    total = sum(sizes) + len(sizes) - 1
    val, test = TEXT_SPLITS
    if len(sizes) >= 3:
        groups = split_by_file(sizes, [test, val], 0)
        return total, min(sum(sizes[i] for i in g) + len(g) - 1 for g in groups)
    return total, min(int(round(total * test)), int(round(total * val)), total)


def gpt(dim: int, heads: int, depth: int, context: int) -> str:
    """[params], the pre-norm block and the layers of specs/gpt_stdlib.toml's byte-level GPT, sized."""
    block = "".join(f"\n[[blocks.block.layers]]\n{body}" for body in (
        'id = "norm1"\nop = "layernorm"\n', 'id = "attn"\nop = "attention"\nnum_heads = "$heads"\ncausal = true\n',
        'id = "res1"\nop = "add"\nfrom = ["x", "attn"]\n', 'id = "norm2"\nop = "layernorm"\n',
        'id = "up"\nop = "linear"\nout_features = "${dim * 4}"\nact = "gelu"\n',
        'id = "down"\nop = "linear"\nout_features = "$dim"\n', 'id = "res2"\nop = "add"\nfrom = ["res1", "down"]\n'))
    layers = "\n".join([
        layer("emb", "embedding", num_embeddings=256, embedding_dim="$dim"),
        layer("pos", "pos_embedding", max_len=context),
        f'[[layers]]\nid = "blocks"\nuse = "block"\nwith = {{ dim = "$dim", heads = "$heads" }}\nrepeat = {depth}\n',
        layer("norm", "layernorm"),
        '[[layers]]\nid = "logits"\nop = "tied_linear"\ntie = "emb"\n'])
    return (f"[params]\ndim = {dim}\nheads = {heads}\n\n"
            "# pre-norm block: h = x + attn(norm(x)), then h + mlp(norm(h)). `x` is the block's input.\n"
            f"[blocks.block]\nparams = {{ dim = {dim}, heads = {heads} }}\n{block}\n{layers}")


def text(scheme: str, arg: str, query: dict[str, str], spec_dir: Path, target: str | None, task: str | None,
         command: str) -> Starter:
    """A byte-level GPT-style language model sized to the corpus, with a context every split can fill."""
    from archc.data.base import REGISTRY
    from archc.data.sources import make_options

    source = f"{scheme}:{arg}"
    options = make_options(REGISTRY[scheme], source, query, {}, {})
    total, smallest = _split_bytes(arg, options.max_bytes, source)  # type: ignore[attr-defined]
    context = 128
    while context > 8 and smallest < context + 1:
        context //= 2
    if smallest < context + 1:
        raise DataError(f"expected text enough for a window of {context + 1} bytes in each split (10% each for "
                        f"validation and test), received {total} bytes", where=source, hint="add text")
    dim, depth, heads = (64, 2, 4) if total < 1_000_000 else (128, 4, 4) if total < 20_000_000 else (256, 6, 8)
    windows = max(1, int(total * 0.8) // context)
    epochs = max(1, min(30, math.ceil(4_000_000 / max(total, 1))))  # about 4 MB of training bytes in all
    batch = max(1, min(32, windows // 4))
    query = {k: v for k, v in query.items() if k != "context"}  # training takes the context from [axes] seq
    facts = f"{total:,} bytes of text; context {context}, model width {dim}, {depth} blocks"
    doc = f"byte-level GPT: embedding, learned positions, {depth} causal pre-norm blocks, tied output projection"
    body = (head(command, facts, model_name(arg), doc)
            + f'\n[inputs.tokens]\nshape = ["seq"]\ndtype = "int64"\nvocab = 256\n\n[axes]\nseq = {context}'
              f"                     # the context: training windows and generation both use it\n\n"
              f'[task]\nkind = "{TOKENS}"      # next-byte cross-entropy; metric bits per byte\n\n'
            + gpt(dim, heads, depth, context)
            + f"\n# About {windows:,} training windows of {context} bytes, {plural(epochs, 'epoch')}: "
              f"{epochs * windows * context / 1e6:.2g} MB seen in all (aimed at 4 MB, at most 30 epochs).\n"
              f"[train]\nepochs = {epochs}\nbatch_size = {batch}\n"
              f'optimizer = {{ name = "adamw", lr = 3e-3, weight_decay = 0.1 }}\n'
              f'schedule = {{ name = "cosine", warmup_epochs = {min(0.1 * epochs, 1):g} }}\ngrad_clip = 1.0\n'
            + data_table(source_text(scheme, arg, query, spec_dir), *TEXT_SPLITS))
    return Starter(body, f"language model over {total:,} bytes, context {context}")


FAMILIES: dict[str, Callable[..., Starter]] = {"csv": tabular, "parquet": tabular, "images": images, "text": text}


def resolve_source(source: str) -> tuple[str, str, dict[str, str]]:
    """(scheme, path argument, options) of SOURCE: 'scheme:PATH[?options]', or a bare path whose kind the source
    registry recognises (a .csv/.tsv or .parquet file, a .txt/.md file, a folder of class folders)."""
    from archc.data.base import REGISTRY
    from archc.data.sources import parse

    scheme, sep, rest = source.partition(":")
    if sep and rest and scheme in REGISTRY and not Path(source).exists():
        if scheme not in SCHEMES:
            raise InputError(f"expected a source of {', '.join(s + ':' for s in SCHEMES)} or a path, received the "
                             f"{scheme}: source {source!r}", where="SOURCE")
        _, arg, query = parse(source)
        return scheme, arg, query
    path = Path(source).expanduser()
    if not path.exists():
        raise InputError(f"expected a data file or folder, received {source!r}, which does not exist",
                         where="SOURCE", hint="or a source such as csv:FILE, parquet:FILE, images:DIR, text:FILE")
    if path.is_dir():
        has_classes = any(p.is_dir() and not p.name.startswith(".") for p in path.iterdir())
        return ("images" if has_classes else "text"), source, {}
    guess = next((s for s in SCHEMES if REGISTRY[s].claims(path)), "csv")
    return guess, source, {}


def starter(source: str, spec_dir: Path, target: str | None = None, task: str | None = None,
            command: str = "archc init") -> Starter:
    """The starter spec for SOURCE, its data path written relative to `spec_dir`."""
    scheme, arg, query = resolve_source(source)
    if scheme not in ("csv", "parquet"):
        for flag, value in (("--target", target), ("--task", task)):
            if value is not None:
                raise InputError(f"expected {flag} only for a table (csv:, parquet:), received it for the {scheme}: "
                                 f"source {source!r}", where=flag)
    if task is not None and task not in (CLASSES, TARGETS):
        raise InputError(f"expected {CLASSES} or {TARGETS}, received {task!r}", where="--task")
    return FAMILIES[scheme](scheme, arg, query, spec_dir, target, task, command)


def check(text: str, where: str) -> None:
    """Validate archc's own starter in-process (the torch-free passes): one that fails is a bug in archc."""
    from archc.errors import ArchcError
    from archc.language.load import load_text
    from archc.pipeline import compile_spec

    try:
        compile_spec(load_text(text, "toml", where), name=where)
    except ArchcError as e:
        problems = "; ".join(p.line() for p in e.problems())
        raise RuntimeError(f"the starter spec archc wrote for {where} does not validate: {problems}") from e
