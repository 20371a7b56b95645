"""The `archc` command: thin click commands over the library. Exit codes: 0 ok, 1 user error, 2 usage, 3 bug."""
from __future__ import annotations

import functools
import json
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any, Callable

import click

from archc import strict_json
from archc.version import __version__
from archc.clihelp import BUILD_PASS_NAMES, EXPORTER, PASS_NAMES, SEED, Number, SourceOption, Threads
from archc.errors import ArchcError, InputError
from archc.graph.located import InternalError
from archc.labels import CLASSES, TARGETS

EXIT_USER, EXIT_INTERNAL = 1, 3
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what `yes | head -1` reports for yes


def _emit_errors(err: ArchcError, as_json: bool) -> None:
    problems = err.problems()
    if as_json:
        errors = [p.to_dict() | {"line": p.line()} for p in problems]
        click.echo(strict_json.dumps({"ok": False, "errors": errors}, indent=2))
    for p in problems:
        click.echo(f"error: {p.line()}", err=True)


def file_error(e: OSError) -> ArchcError:
    """An OS failure on a named file (no permission, read-only or full disk, a directory) as a user error."""
    reason = e.strerror or type(e).__name__
    return ArchcError(reason if reason.startswith("cannot ") else f"cannot access: {reason}", file=str(e.filename))


def _named_os_error(e: BaseException) -> OSError | None:
    """The OSError naming a file that `e` is or wraps (a pass re-raises failures as InternalError), else None."""
    while e is not None:
        if isinstance(e, OSError) and e.filename is not None:
            return e
        e = e.__cause__
    return None


def _quiet_broken_pipe() -> None:
    """The reader of our stdout went away (`archc ops | head -1`): stop quietly with the shell's SIGPIPE code."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the final flush then has nowhere to fail
    except (OSError, ValueError):  # stdout is not a real file (a test runner's buffer): nothing to redirect
        pass
    sys.exit(EXIT_BROKEN_PIPE)


def command(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a command: user errors print one line each and exit 1; --debug shows the traceback."""

    @click.option("--debug", is_flag=True, help="Show a traceback for errors.")
    @functools.wraps(fn)
    def wrapper(*args: Any, debug: bool = False, **kwargs: Any) -> Any:
        debug = debug or bool(os.environ.get("ARCHC_DEBUG"))
        try:
            result = fn(*args, **kwargs)
            sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
            return result
        except BrokenPipeError:
            _quiet_broken_pipe()
        except ArchcError as e:
            if debug:
                raise
            _emit_errors(e, kwargs.get("as_json", False))
            sys.exit(EXIT_USER)
        except (click.exceptions.Exit, click.ClickException, KeyboardInterrupt):
            raise
        except Exception as e:  # a bug in archc, not the user's fault: say so, briefly
            if debug:
                raise
            os_error = _named_os_error(e)
            if os_error is not None:  # a named file the user can fix (permissions, disk space): exit 1
                _emit_errors(file_error(os_error), kwargs.get("as_json", False))
                sys.exit(EXIT_USER)
            what = str(e) if isinstance(e, InternalError) else f"{type(e).__name__}: {e}"  # located: say where
            click.echo(f"archc: internal error: {what} (rerun with --debug for a traceback)", err=True)
            sys.exit(EXIT_INTERNAL)

    return wrapper


def _refuse_unknown_scheme(text: str) -> None:
    """`--input nosuch:thing` is a misspelt data source, not a file with a strange extension: let the data
    registry name the unknown scheme and its close matches."""
    from archc.runtime.io import INPUT_FORMATS

    scheme, sep, arg = text.partition(":")
    looks_like_source = sep and arg and len(scheme) > 1 and scheme.replace("_", "").replace("-", "").isalnum()
    if looks_like_source and Path(text).suffix.lower() not in INPUT_FORMATS and not Path(text).exists():
        from archc.data.sources import parse

        parse(text)


def utf8_text(value: str, flag: str) -> str:
    """An option's text as the model reads it, UTF-8: bytes that are not (argv bytes such as $'\\xff' reach
    Python as lone surrogates) are a user error naming the option and the first bad byte."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError as e:
        ch = ord(value[e.start])
        byte = f"byte 0x{ch - 0xDC00:02x}" if 0xDC80 <= ch <= 0xDCFF else f"U+{ch:04X}, a lone surrogate,"
        at = len(value[:e.start].encode("utf-8", "surrogateescape"))
        raise InputError(f"expected UTF-8 text, received {byte} at offset {at}, which is not UTF-8", where=flag,
                         hint="the model reads the text's UTF-8 bytes: pass valid UTF-8") from None


def output_file(path: Path | None) -> Path | None:
    """An -o/--output path names a file: a directory is a user error (exit 1), found before any work runs."""
    if path is not None and path.is_dir():
        raise InputError(f"expected a file to write, received a directory: '{path}'", where="--output")
    return path


SPEC = click.argument("spec", type=click.Path(path_type=Path))  # a directory: load_file says so, exit 1
WEIGHTS = click.option("--weights", type=click.Path(path_type=Path), default=None,
                       help="Load this safetensors checkpoint into the model (strict: every tensor filled and used): "
                            "a file, a sharded checkpoint's model.safetensors.index.json, or a folder holding one.")
OPTIMIZE = click.option("--optimize/--no-optimize", "optimize", default=None,
                        help="--no-optimize: write the plain exported graph (no onnxslim); --optimize: run onnxslim "
                             "even past its size budget. Default: within the budget, kept where it removes compute "
                             "nodes (metadata archc.optimized).")


def optimize_mode(flag: bool | None) -> bool | str:
    """--optimize/--no-optimize/neither as export()'s `optimize`: "always", False, True (within the budget)."""
    from archc.export.optimize import ALWAYS

    return True if flag is None else ALWAYS if flag else False


MAP = click.option("--map", "map_path", type=click.Path(path_type=Path), default=None,
                   help="Weights mapping (TOML) from the checkpoint's names to the spec's (default: the spec's own).")


def open_weights(path: Path | None, map_path: Path | None, flag: str) -> Any:
    """The checkpoint of --weights/--init and its --map, read and checked before any compiling (None: no flag)."""
    if path is None:
        if map_path is not None:
            raise click.UsageError(f"--map names the mapping of a checkpoint: give the checkpoint with {flag}")
        return None
    from archc.weights import Init

    return Init.open(path, map_path)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="archc")
def main() -> None:
    """archc: compile a neural network written as data (TOML/JSON) to PyTorch and ONNX."""


@main.command()
@SPEC
@click.option("--json", "as_json", is_flag=True, help="Print the summary (or the errors) as JSON.")
@click.option("--stop-after", type=click.Choice(PASS_NAMES), default=PASS_NAMES[-1],
              help="Stop after this pass (debugging).")
@click.option("--nproc", type=click.IntRange(min=1, max=1_000_000), default=1, show_default=True,
              help="Training processes the memory estimate is per rank of (as `archc train --nproc`).")
@command
def validate(spec: Path, as_json: bool, stop_after: str, nproc: int) -> None:
    """Check SPEC and print its node table (shapes, parameters, FLOPs) and its training memory per rank. Never
    imports torch."""
    from archc.pipeline import compile_spec
    from archc.summary import as_json as summary_json, as_text
    from archc.tasks import task_class

    result = compile_spec(spec, stop_after=stop_after)
    if "infer" not in result.passes:
        click.echo(strict_json.dumps({"ok": True, "passes": result.passes}) if as_json
                   else f"ok: {spec} passed {', '.join(result.passes)}")
        return
    from archc.memory import report

    memory = report(result.graph, result.spec.train, nproc)  # [train] strategy's share per rank, and the refusals
    if as_json:
        click.echo(strict_json.dumps(summary_json(result.graph, str(spec), result.sha256)
                                     | {"training_memory": memory.json}, indent=2))
    else:
        click.echo(as_text(result.graph, memory.lines))
        for warning in result.graph.warnings:  # wiring that is legal but likely a mistake
            click.echo(f"warning: {warning.located(str(spec)).line()}", err=True)
        for line in memory.warnings:  # where this machine cannot hold it: build or train would refuse
            click.echo(line, err=True)
        line = task_class(result.spec.task.kind).describe(result.graph, result.spec)  # e.g. what train means
        if line:
            click.echo(line)
        from archc.language.sweep import summary as sweep_line

        line = sweep_line(result.spec)  # the search space `archc sweep` reads
        if line:
            click.echo(line)


@main.command()
@SPEC
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="ONNX file to write (default: <model name>.onnx).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed for parameter initialization.")
@EXPORTER
@click.option("--print-code", is_flag=True, help="Print the generated PyTorch forward().")
@click.option("--stop-after", type=click.Choice(BUILD_PASS_NAMES), default=BUILD_PASS_NAMES[-1],
              help="Stop after this pass (debugging).")
@WEIGHTS
@MAP
@OPTIMIZE
@click.option("--threads", type=Threads(), default=None,
              help="torch threads for lowering, tracing and the parity check (1-1024; default: the export takes the "
                   "cores this process may use, fewer when the machine is busy).")
@click.option("--tokenizer", "tokenizer_path", type=click.Path(path_type=Path), default=None,
              help="A language model's tokenizer.json (Hugging Face tokenizers: GPT-2's, SmolLM's, one `archc "
                   "tokenizer train` made): copied beside the model and named in its metadata, so `archc infer "
                   "--prompt` and ONNX Runtime GenAI encode and decode through it.")
@command
def build(spec: Path, output: Path | None, seed: int, exporter: str, print_code: bool, stop_after: str,
          weights: Path | None, map_path: Path | None, optimize: bool | None, threads: int | None,
          tokenizer_path: Path | None) -> None:
    """Compile SPEC, export an initialized model to ONNX, and check ONNX Runtime matches torch."""
    args = (spec, output, seed, exporter, print_code, stop_after, weights, map_path, optimize, tokenizer_path)
    if threads is None:  # the export applies archc.threads' rule itself (and the early passes need no torch)
        return _build(*args)
    from archc.threads import choose, torch_threads

    with torch_threads(choose(threads)):
        _build(*args)


def _build(spec: Path, output: Path | None, seed: int, exporter: str, print_code: bool, stop_after: str,
           weights: Path | None, map_path: Path | None, optimize: bool | None,
           tokenizer_path: Path | None = None) -> None:
    """`archc build` within its threads."""
    import time

    from archc.pipeline import BUILD_PASSES, BuildOptions, compiled_from, run

    start = time.perf_counter()
    init = open_weights(weights, map_path, "--weights")
    tok = _read_tokenizer(tokenizer_path)
    options = BuildOptions(seed=seed, output=output_file(output), exporter=exporter, optimize=optimize_mode(optimize))
    c = compiled_from(spec, options=options)
    c.facts.weights = init.describe() if init is not None else None  # archc.weights
    order = list(BUILD_PASS_NAMES)
    if tok is not None:
        run(c, BUILD_PASSES, "infer")
        c.facts.tokenizer = _tokenizer_metadata(c, tok, tokenizer_path)  # archc.tokenizer
    copies: list[tuple[Path, Path]] = []
    if order.index(stop_after) >= order.index("export"):  # no file it reads replaced, none in a live run's folder
        from archc.outputs import check_writes
        from archc.pipeline import output_path
        from archc.runtime.kvcache import model_files

        run(c, BUILD_PASSES, "infer")  # the default output is named after the model
        shards = sorted(set(init.checkpoint.files.values())) if init is not None else []  # an index's files too
        check_writes({"SPEC": spec, "--weights": [weights, *shards], "--map": map_path, "--tokenizer": tokenizer_path},
                     {"--output": model_files(output_path(c))})
        if tok is not None:
            from archc.export.genai import archcs_own
            from archc.outputs import carried

            out = output_path(c)
            copies = carried(c.facts.tokenizer, tokenizer_path.parent, out, "--tokenizer's",
                             lambda dst: archcs_own(dst, out), source=tokenizer_path)
    if (print_code or init) and order.index(stop_after) >= order.index("lower"):  # code first, even if export fails
        run(c, BUILD_PASSES, "lower")
        if print_code:
            click.echo(c.module.code.strip())
        if init is not None:  # the lowered module's seeded weights are replaced before export
            click.echo(init.load(c.module).line(init.path, init.map_path))
    if copies and order.index(stop_after) >= order.index("export"):  # beside the model before its GenAI package
        from archc.util import write_bytes_atomic

        for src, dst in copies:
            dst.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(dst, src.read_bytes())
    run(c, BUILD_PASSES, stop_after)
    if c.report is None:
        click.echo(f"ok: {spec} passed {', '.join(c.passes)}")
        return
    report, graph = c.report, c.graph
    click.echo(f"wrote {report.path} ({report.bytes:,} bytes, {graph.total_params:,} parameters)")
    for name in graph.columns:  # a tabular input: nothing was fitted, so the model reads rows already encoded
        click.echo(f"input {name!r} takes the encoded row {graph.inputs[name].show()} (no data read, nothing "
                   "fitted: `archc train` fits the columns on the training split and records them as "
                   "archc.columns)")
    _print_export(report, start)


def _read_tokenizer(path: Path | None) -> Any:
    """--tokenizer's file, read and checked (archc.data.tokenizer_file), or None."""
    if path is None:
        return None
    from archc.data.tokenizer_file import read

    return read(path, "--tokenizer")


def _tokenizer_metadata(c: Any, tok: Any, path: Path) -> dict[str, Any]:
    """archc.tokenizer for a language model built with --tokenizer: refused for another task, or when the model's
    token input or logits have no room for the tokenizer's ids."""
    from archc.data.tokenizer_file import FILE, KIND
    from archc.tasks import task_class

    kind = c.spec.task.kind
    if kind != "language_model":
        raise InputError(f"expected a language_model spec to give a tokenizer to, received task {kind!r}",
                         where="--tokenizer", hint="leave --tokenizer out: only a language model encodes text")
    task_class(kind).check_vocab(c.graph, c.spec, tok.vocab_size, by=f"--tokenizer {str(path)!r}")
    meta = {"kind": KIND, "file": FILE, "sha256": tok.sha256, "vocab_size": tok.vocab_size}
    seq = next(iter(c.graph.inputs.values())).shape[1]
    if isinstance(seq, str):  # generation's window: every position the layers take (GPT-2's 1024), not [axes]'s size
        from archc.graph.bounds import interval
        from archc.ops.base import base_axis

        high = interval(c.graph, base_axis(seq))[1]
        if high is not None:
            meta["context"] = high
    return meta


def _print_export(report: Any, start: float) -> None:
    """How long the export took, where parity was checked, and which axes their bounds pinned."""
    import time

    click.echo(f"export ({report.exporter}): {report.seconds:.2f} s; total {time.perf_counter() - start:.2f} s")
    batches = ", ".join(dict.fromkeys(_checked_at(check) for check in report.checks))
    click.echo(f"parity vs torch at batch {batches}: max abs diff {report.max_abs_diff:.2e} "
               f"(tolerance {report.tolerance:.1e})")
    from archc.export import report_lines

    for line in report_lines(report):  # the row or pixels front, pinned axes, the KV cache, the optimizer
        click.echo(line)


def _checked_at(check: dict[str, Any]) -> str:
    """'3' or '3 (seq 131)': a parity check's batch and symbolic-axis sizes."""
    sizes = ", ".join(f"{k} {v}" for k, v in check["sizes"].items())
    return f"{check['batch']}" + (f" ({sizes})" if sizes else "")


@main.command()
@click.argument("model", type=click.Path(path_type=Path))  # a directory: Model.open says so, exit 1
@click.option("-i", "--input", "input_path", default=None, type=click.Path(path_type=Path), cls=SourceOption,
              help="Input file (.npy, .npz with one array per input, .json, .csv), image files (a .png/.jpg/.jpeg "
                   "file, a quoted glob such as 'imgs/*.png', or a folder: with one sub-folder per class it is "
                   "labelled and scored) converted to the model's [C, H, W], or a data source SCHEME:ARGUMENT "
                   "(scored on the split it was trained with).")
@click.option("--prompt", default=None, help="Language models: generate a continuation of this text (instead of --input).")
@click.option("--prompts", "prompts_file", default=None, type=click.Path(path_type=Path),
              help="Language models: continue every prompt of this file in one batched call, one prompt a line (a "
                   ".jsonl file: a JSON string or {\"prompt\": ...} a line).")
@click.option("--max-new-tokens", type=click.IntRange(min=0), default=200, show_default=True,
              help="With --prompt: tokens to generate (bytes, or the ids of the model's tokenizer.json).")
@click.option("--temperature", type=Number(low=0), default=1.0, show_default=True,
              help="With --prompt: sampling temperature (0: greedy).")
@click.option("--top-k", type=click.IntRange(min=1), default=None,
              help="With --prompt: sample among the k likeliest. With --input on a classifier: show the k likeliest "
                   "classes with their probabilities per row (and the top-k accuracy when the data has labels).")
@click.option("--top-p", type=Number(low=0, open_low=True), default=1.0, show_default=True,
              help="With --prompt(s): sample among the likeliest ids whose probabilities sum past P, in (0, 1].")
@click.option("--repetition-penalty", type=Number(low=0, open_low=True), default=1.0, show_default=True,
              help="With --prompt(s): divide the logit of every id already in the text by this when positive, "
                   "multiply when negative (transformers' definition; 1: none).")
@click.option("--stop", multiple=True, metavar="TEXT",
              help="With --prompt(s): end a continuation where its text holds TEXT (cut before it); repeatable.")
@click.option("--max-time", type=Number(low=0, open_low=True), default=None, metavar="SECONDS",
              help="With --prompt(s): stop generating after this many seconds.")
@click.option("--no-cache", is_flag=True,
              help="With --prompt: recompute the whole window per token even when MODEL.kv.onnx (the KV cache) "
                   "is beside the model.")
@click.option("--seed", type=SEED, default=0, show_default=True,
              help="With --prompt or --num-samples: sampling seed.")
@click.option("--num-samples", type=click.IntRange(min=1), default=None,
              help="Diffusion models: draw this many images (instead of --input); --output FILE.npy also "
                   "writes FILE.png, a grid.")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="With --num-samples: denoising steps, a subsequence of the model's T (default: T for ddpm, "
                   "50 for ddim).")
@click.option("--sampler", type=click.Choice(["ddpm", "ddim"]), default="ddpm", show_default=True,
              help="With --num-samples: ancestral DDPM or deterministic DDIM (eta = 0).")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Write results: .npy/.npz (raw outputs; .npz with each example's row or file), .json/.csv (one "
                   "record per example, its row or file first).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Run in chunks of this size.")
@click.option("--limit", type=int, default=None,
              help="Rows to show (0: all) [default: 20 in the table, every record with --json].")
@click.option("--split", type=click.Choice(["test", "val", "train", "all"]), default=None,
              help="With a data source or a folder of class sub-folders as --input: which split to run and score "
                   "(all: every example) [default: test for a data source, all for image files and folders].")
@click.option("--report", "report_dir", type=click.Path(path_type=Path), default=None,
              help="With labelled data: write DIR/report.json and DIR/report.png (per-class precision/recall/F1 "
                   "and a confusion matrix; regression: residuals). A folder holding files is refused unless "
                   "--force.")
@click.option("--force", is_flag=True, help="With --report: move a folder holding files aside to DIR.old-N first "
                                            "(never one holding an input or a folder a live run writes).")
@click.option("--target", default=None, metavar="COLUMN",
              help="With a csv: source as --input: the target column to score against (default: the spec's "
                   "[data] target, else the last column).")
@click.option("--threads", type=Threads(), default=None,
              help="ONNX Runtime's intra-op threads (1-1024; default: the cores this process may use, fewer when "
                   "the machine is busy).")
@click.option("--json", "as_json", is_flag=True, help="Print per-example records as JSON.")
@command
def infer(model: Path, input_path: Path | None, prompt: str | None, prompts_file: Path | None, max_new_tokens: int,
          temperature: float, top_k: int | None, top_p: float, repetition_penalty: float, stop: tuple[str, ...],
          max_time: float | None, no_cache: bool, seed: int, num_samples: int | None, steps: int | None, sampler: str,
          output: Path | None, device: str, batch_size: int | None, limit: int | None, split: str | None,
          report_dir: Path | None, force: bool, target: str | None, threads: int | None, as_json: bool) -> None:
    """Run MODEL (an .onnx file) on an input file, image files or a data source (e.g. sklearn:digits) with ONNX
    Runtime only; or, with --prompt, generate text with a language model; or, with --num-samples, sample a
    diffusion model. The model's recorded task kind says which of these it supports."""
    from archc.runtime import Model, check_output_path
    from archc.tasks.base import check_mode

    if (input_path is not None) + (prompt is not None) + (prompts_file is not None) + (num_samples is not None) != 1:
        raise click.UsageError("expected exactly one of --input (run on inputs), --prompt or --prompts (generate "
                               "text) or --num-samples (sample a diffusion model)")
    texts = None
    if prompt is not None or prompts_file is not None:
        texts = _prompts(prompt, prompts_file, top_p, stop)
    if texts is not None and output is not None:
        raise click.UsageError("--output is for --input runs; --prompt prints the generated text")
    if report_dir is not None and input_path is None:
        raise click.UsageError("--report is for --input runs on labelled data")
    if input_path is not None and output is not None:
        check_output_path(output)
    from archc.data.sources import paths_read
    from archc.outputs import check_writes
    from archc.runtime.kvcache import model_files

    samples = [output, output.with_suffix(".png")] if num_samples is not None and output is not None else []
    check_writes({"MODEL": model_files(model), "--input": paths_read(None if input_path is None else str(input_path))},
                 {"--output": samples or output}, {"--report": report_dir}, moving=force)
    if report_dir is not None:
        from archc.runtime.report import check_folder

        check_folder(report_dir, force)
    from archc.threads import choose

    m = Model.open(model, device=device, threads=choose(threads).threads)
    check_mode(m, "--num-samples" if num_samples is not None else "--prompt" if texts is not None else "--input")
    if num_samples is not None:
        _sample(m, num_samples, steps, sampler, seed, output, batch_size, as_json)
        return
    if texts is not None:
        from archc.runtime.generate import Sampling

        _generate(m, texts, prompts_file is not None, max_new_tokens,
                  Sampling(temperature, top_k, top_p, repetition_penalty), seed, as_json, stop, max_time,
                  cache=not no_cache)
        return
    _run_inputs(m, str(input_path), split, target, top_k or 0, output, batch_size, limit, report_dir, as_json)


def _read_input(m: Any, text: str, split: str | None, target: str | None) -> Any:
    """--input as a Labelled (feeds, labels or None, description, notes, file names): a tabular model's CSV (labels
    empty without its target column), a data source, image files, or a file of values (unlabelled)."""
    from archc.runtime import files
    from archc.runtime.io import read_input_rows
    from archc.runtime.evaluate import is_source, load_split
    from archc.runtime.tabular import csv_input
    from archc.tasks.base import Labelled

    _refuse_unknown_scheme(text)
    rows = csv_input(m, text, target)  # a tabular model's CSV file: every row, by column name
    if rows is not None:
        return rows
    if target is not None and not is_source(text):
        raise click.UsageError("--target names the target column of a data source or of a tabular model's CSV "
                               "file: give --input csv:FILE or FILE.csv")
    if is_source(text):
        return load_split(m, text, split or "test", target)
    if files.is_raw(text):
        return files.read(m, text, split)
    if split is not None:
        raise click.UsageError("--split is for a data source or a folder of images as --input")
    feeds, rows = read_input_rows(text, m)
    first = next(iter(feeds.values()), None)
    if rows is None and first is not None and len(getattr(first, "shape", ())) > 0:  # .npy/.npz/.json: positions from 0
        rows = list(range(len(first)))
    return Labelled(feeds, None, text, rows=rows)


def _run_inputs(m: Any, text: str, split: str | None, target: str | None, top: int, output: Path | None,
                batch_size: int | None, limit: int | None, report_dir: Path | None, as_json: bool) -> None:
    """`infer --input`: run, present (with the true label when known), score, and write the output and report."""
    from archc.runtime import records, table, write_outputs
    from archc.runtime.evaluate import score
    from archc.runtime.session import EVAL_BATCH
    from archc.runtime.tabular import scored
    from archc.tasks.base import for_model

    data = _read_input(m, text, split, target)
    read = data.y is not None  # a source or a CSV read by columns: records and metrics, even with nothing to score
    labelled = read and len(data.y) > 0
    task = for_model(m, strict=False)
    if report_dir is not None and not labelled:
        raise InputError("expected labelled data for --report (a data source, a folder with one sub-folder per "
                         "class, or a glob whose files all sit in folders named like the model's classes, e.g. "
                         f"'pets/*/*.png'), received {data.description}", where="--report",
                         hint="a report scores predictions against true labels: put the files in class folders")
    outputs = m.run(data.feeds, batch_size=batch_size or (EVAL_BATCH if labelled else None))
    recs = records(m, outputs, top)
    # where each record comes from (a file, or a row: see README "Inference"), then the true label
    columns = {"file": data.names, "row": data.rows, "true": task.truth(m, data.y) if labelled else None}
    # leading columns, one value per record (graph node tasks score fewer examples than they print: no column)
    extra = {k: v for k, v in columns.items() if v is not None and len(v) == len(recs)}
    recs = [{k: v[i] for k, v in extra.items()} | r for i, r in enumerate(recs)]
    kept = scored(outputs, data.y) if labelled else None  # rows with a target (a CSV's missing cells: not scored)
    metrics = score(m, *kept) if kept else {}
    detail = task.report(m, *kept, top) if kept else None
    metrics |= {k: v for k, v in (detail or {}).items() if k.startswith("top_")}
    if output is not None:
        keys = {k: v for k, v in extra.items() if k != "true"}  # the npz's join keys beside the outputs
        write_outputs(output, outputs, recs, main=task.main_output(m), keys=keys)
    written = _write_report(report_dir, detail, data.description, task.kind) if report_dir is not None else []
    for note in data.notes:
        click.echo(f"note: {note}", err=True)
    if as_json:
        shown = recs if not limit or limit <= 0 else recs[:limit]  # every record unless --limit says otherwise
        click.echo(strict_json.dumps({"records": shown, "metrics": metrics} if read else shown, indent=2))
        return
    click.echo(table(m, outputs, limit=20 if limit is None else limit, extra=extra, top=top))
    click.echo(f"{len(recs)} example(s) on {', '.join(m.providers)}"
               + (f"; wrote {output}" if output is not None else "")
               + (f"; wrote {' and '.join(map(str, written))}" if written else ""))
    if read:
        click.echo(f"{data.description}" + "".join(f"{', ' if i else ': '}{k} {v:.4f}"
                                                   for i, (k, v) in enumerate(metrics.items())))


def _write_report(folder: Path, detail: dict | None, title: str, kind: str) -> list[Path]:
    """--report DIR: the task's report as DIR/report.json and DIR/report.png (a folder holding files moved aside
    first: check_folder refused it earlier unless --force)."""
    from archc.runtime.report import aside, write_folder

    if detail is None:
        raise InputError(f"expected a model whose task kind makes a report, received a {kind or 'task-less'} model",
                         where="--report")
    old = aside(folder)
    if old is not None:
        click.echo(f"note: --force: moved the earlier {folder} to {old}", err=True)
    return write_folder(folder, detail, title)


def _sample(m: Any, num_samples: int, steps: int | None, sampler: str, seed: int, output: Path | None,
            batch_size: int | None, as_json: bool) -> None:
    """`infer --num-samples`: images from a diffusion model to --output (.npy) and a PNG grid beside it."""
    import time

    from archc.runtime.sample import Diffusion, sample, write_samples

    if output is None:
        raise click.UsageError("--num-samples needs --output FILE.npy (the grid goes to FILE.png)")
    start = time.perf_counter()
    images = sample(m, num_samples, steps=steps, sampler=sampler, seed=seed, batch_size=batch_size)
    png = write_samples(output, images, Diffusion.of(m).data_range)
    seconds = time.perf_counter() - start
    if as_json:
        click.echo(strict_json.dumps({"samples": str(output), "grid": str(png), "shape": list(images.shape),
                                      "sampler": sampler, "seconds": seconds}, indent=2))
        return
    click.echo(f"{num_samples} sample(s) {list(images.shape[1:])} with {sampler} in {seconds:.1f} s on "
               f"{', '.join(m.providers)}; wrote {output} and {png}")


def _prompts(prompt: str | None, prompts_file: Path | None, top_p: float, stop: tuple[str, ...]) -> list[str]:
    """The texts to continue, and the generation flags checked before the model is opened (exit 1)."""
    if top_p > 1:
        raise InputError(f"expected a number in (0, 1] (1: no top-p), received {top_p:g}", where="--top-p")
    for s in stop:
        if not s:
            raise InputError("expected a non-empty text, received ''", where="--stop")
        utf8_text(s, "--stop")
    if prompt is not None:
        return [utf8_text(prompt, "--prompt")]
    from archc.runtime.generate import read_prompts

    return read_prompts(prompts_file)


def _terminal() -> bool:
    """Whether stdout is a terminal (where one prompt's text is printed as it is made)."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def _generate(m: Any, prompts: list[str], batched: bool, max_new_tokens: int, sampling: Any, seed: int,
              as_json: bool, stop: tuple[str, ...], max_time: float | None, cache: bool = True) -> None:
    """`infer --prompt/--prompts`: each prompt and its continuation on stdout (one prompt on a terminal: as it is
    made), the speed on stderr; or all as JSON (--prompt: one object, --prompts: every prompt's and the totals)."""
    import time

    from archc.runtime.generate import TextStream, generate_many

    stream = None
    if not as_json and not batched and _terminal():
        click.echo(prompts[0], nl=False)
        stream = TextStream(lambda t: (sys.stdout.write(t), sys.stdout.flush()), stop)
    start = time.perf_counter()
    results = generate_many(m, prompts, max_new_tokens, sampling, seed=seed, cache=cache, stop=stop,
                            max_time=max_time, on_text=None if stream is None else lambda i, t: stream.update(t))
    seconds = time.perf_counter() - start
    new = sum(r.new_tokens for r in results)
    rate = new / seconds if seconds > 0 else 0.0
    if as_json:
        records = [{"prompt": p, "prompt_tokens": r.prompt_tokens, "text": r.text, "tokens": r.tokens,
                    "new_tokens": r.new_tokens, "finish": r.finish, "stop": r.stop, "prompt_seconds": r.prompt_seconds,
                    "seconds": r.seconds, "tokens_per_second": r.tokens_per_second, "kv_cache": r.cached}
                   for p, r in zip(prompts, results)]
        click.echo(strict_json.dumps({"prompts": records, "new_tokens": new, "seconds": seconds,
                                      "tokens_per_second": rate, "kv_cache": results[0].cached} if batched
                                     else records[0], indent=2))
        return
    if stream is not None:
        stream.close(results[0].text)
        click.echo("")
    else:
        click.echo("\n\n".join(p + r.text for p, r in zip(prompts, results)))
    r = results[0]
    how = ("KV cache" if r.cached else "full recompute per token, no KV cache"
           + (f": {r.note}" if r.note else " (--no-cache)" if not cache else ""))
    ended = sorted({x.finish for x in results} - {"length"})
    click.echo((f"{len(results)} prompts, " if batched else "") + f"{new} new token(s) in {seconds:.2f} s "
               f"({rate:.1f} tokens/s, {how}) on {', '.join(m.providers)}"
               + (f"; ended by {' and '.join(ended)}" if ended else ""), err=True)


@main.command("export")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--checkpoint", default="best", show_default=True,
              help="Which weights: best, last, or a .safetensors file of this run's model.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="ONNX file to write (default: RUN_DIR/model.onnx for best, RUN_DIR/model-last.onnx for last, "
                   "RUN_DIR/model-STEM.onnx for a file).")
@EXPORTER
@click.option("--pixels", is_flag=True, default=False,
              help="An image model's file takes uint8 [batch, H, W, C] pixels, with /255 and the run's mean/std "
                   "in the graph (default file: RUN_DIR/model-pixels.onnx; model.onnx is left as it is).")
@OPTIMIZE
@command
def export_command(run_dir: Path, checkpoint: str, output: Path | None, exporter: str, pixels: bool,
                   optimize: bool | None) -> None:
    """Export a checkpoint of the training run in RUN_DIR (an `archc train --out` folder) to ONNX, with the
    parity check and metadata of the run's own model.onnx."""
    import time

    from archc.train.api import export_run

    start = time.perf_counter()
    report = export_run(run_dir, checkpoint, output_file(output), exporter, optimize=optimize_mode(optimize),
                        pixels=pixels)
    click.echo(f"wrote {report.path} ({report.bytes:,} bytes) from the {checkpoint} weights")
    _print_export(report, start)


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--int8", type=click.Choice(["dynamic", "static"]), is_flag=False, flag_value="dynamic", default=None,
              help="Write an int8 variant: dynamic (weights int8, activations per batch; no data needed) or static "
                   "(QDQ, activations calibrated on the train split of the data). `--int8` alone: dynamic.")
@click.option("--fp16", is_flag=True, help="Write an fp16 variant (inputs and outputs stay float32).")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="File to write when one variant is asked for (default: MODEL.int8.onnx, MODEL.int8-static.onnx, "
                   "MODEL.fp16.onnx beside MODEL).")
@click.option("--data", default=None, cls=SourceOption,
              help="Data source SCHEME:ARGUMENT to score (and calibrate) on (default: the model's recorded [data] "
                   "source).")
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True,
              help="The held-out split both models are scored on (split as in training).")
@click.option("--max-drop", type=Number(low=0), default=1.0, show_default=True,
              help="Refuse a variant whose metric is worse by more than this: percentage points for accuracy-like "
                   "metrics, percent of the base value for errors and losses.")
@click.option("--force", is_flag=True, help="Write a variant even when its metric drops more than --max-drop.")
@click.option("--json", "as_json", is_flag=True, help="Print the reports as JSON.")
@command
def quantize(model: Path, int8: str | None, fp16: bool, output: Path | None, data: str | None, split: str,
             max_drop: float, force: bool, as_json: bool) -> None:
    """Write int8 and/or fp16 variants of MODEL (an archc .onnx file; no flag: int8 dynamic and fp16), each
    scored against MODEL on the held-out split and recorded in its archc.quantization metadata. Never imports
    torch; `archc infer` runs the variants unchanged."""
    from archc.export.quantize import quantize as make_variants

    methods = ([f"int8-{int8}"] if int8 else []) + (["fp16"] if fp16 else [])
    if output is not None and len(methods or [0, 0]) != 1:
        raise click.UsageError("-o names one file: ask for one variant (--int8 or --fp16), or leave -o out")
    on_report = None if as_json else functools.partial(_print_variant, max_drop=max_drop)
    reports = make_variants(model, methods or ["int8-dynamic", "fp16"], output, data, split, max_drop, force,
                            on_report)
    if as_json:
        from dataclasses import asdict

        click.echo(strict_json.dumps([asdict(r) for r in reports], indent=2))
    refused = [ArchcError(f"not written: {r.metric} {_worse(r)}, more than --max-drop {max_drop:g} allows",
                          file=r.path, hint="--force writes it anyway") for r in reports if not r.written]
    if refused and as_json:  # stdout holds one JSON document, whose records say "written": false
        for e in refused:
            click.echo(f"error: {e.line()}", err=True)
        sys.exit(EXIT_USER)
    if refused:
        from archc.errors import ErrorList

        raise ErrorList(refused)


def _worse(r: Any) -> str:
    """'0.9721 -> 0.9693 (0.28 points worse)'."""
    if r.metric is None:
        return "not measured"
    change = f"{abs(r.worse_by):.2f} {r.unit} {'worse' if r.worse_by > 0 else 'better'}" if r.worse_by else "unchanged"
    return f"{r.before[r.metric]:.4f} -> {r.after[r.metric]:.4f} ({change})"


def _print_variant(r: Any, max_drop: float) -> None:
    """One variant's line: file, sizes, the metric before and after; a loud warning when it dropped too far."""
    if not r.written:
        return  # reported as an error once every variant is done
    size = f"{r.ratio:.1f}x smaller" if r.ratio >= 1 else f"{1 / r.ratio:.1f}x larger: too small a model to gain"
    click.echo(f"wrote {r.path} ({r.method}): {r.bytes_before:,} -> {r.bytes_after:,} bytes ({size})"
               f"; {r.metric or 'metric'} {_worse(r)}"
               + (f" on {r.data}; max abs output diff {r.max_abs_diff:.1e}" if r.metric else ""))
    if r.metric is None:
        click.echo(f"note: {r.path}: the metric was not measured: {r.note}", err=True)
    if r.hint:
        click.echo(f"note: {r.path}: {r.hint}", err=True)
    if r.worse_by is not None and r.worse_by > max_drop:
        click.echo(f"WARNING: {r.path}: {r.metric} {_worse(r)}, more than --max-drop {max_drop:g}; written because "
                   "of --force", err=True)


@main.command("columns")
@click.argument("file")
@click.option("--target", default=None, metavar="COLUMN", help="The target column (default: the last column).")
@click.option("--input", "input_name", default="row", show_default=True, help="The spec's input name.")
@click.option("--max-categories", type=click.IntRange(min=1), default=20, show_default=True,
              help="A text column of at most this many values lists its categories (more: learned in training).")
@command
def columns(file: str, target: str | None, input_name: str, max_categories: int) -> None:
    """Read FILE (a CSV, or csv:FILE?delimiter=C&header=false&skip=N&decimal=,), infer each column's type, missing
    cells and categories, and print the [inputs.NAME.columns] table to paste into a spec."""
    from archc.data.sources import make_options, parse
    from archc.data.survey import survey, toml_block
    from archc.data.tabular import target_column, read_table

    from archc.data.base import REGISTRY

    from archc.ops.base import ID_PATTERN

    if not re.fullmatch(ID_PATTERN, input_name):  # it names [inputs.NAME] in the table printed
        raise InputError(f"expected an input name of letters, digits and _ that does not start with a digit, "
                         f"received {input_name!r}", where="--input")
    scheme = file.partition(":")[0]
    if scheme in REGISTRY and scheme != "csv" and not Path(file).exists():
        raise click.UsageError(f"expected a CSV file, received the {scheme}: source {file!r}")
    source = file if scheme == "csv" else f"csv:{file}"
    cls, arg, query = parse(source)
    options = make_options(cls, source, query, {"target": target} if target else {}, {})
    raw = read_table(Path(arg), source, options.dialect(source))  # type: ignore[attr-defined]
    name = target_column(raw.columns, options.target, source)  # type: ignore[attr-defined]
    surveyed = survey(raw, name, max_categories)
    reading = "&".join(f"{k}={v}" for k, v in query.items() if k != "target")  # [data] target names the target
    comma = [s for s in surveyed if s.decimal_comma]
    if comma:
        which = f"column {comma[0].name!r} holds" if len(comma) == 1 else \
            f"columns {', '.join(repr(s.name) for s in comma)} hold"
        click.echo(f"note: {source}: {which} numbers with a decimal comma ({comma[0].decimal_comma!r}), left out: if "
                   f"the comma is the decimal mark, read them as numbers with "
                   f"'csv:{arg}?{reading + '&' if reading else ''}decimal=,'", err=True)
    for s in (s for s in surveyed if s.refused):  # declared, but training would stop at these cells
        click.echo(f"note: {source}: column {s.name!r} holds {s.refused}: training refuses it (clean those cells, "
                   f"or empty them for the column's missing rule)", err=True)
    click.echo(toml_block(Path(arg), raw, name, input_name, surveyed, f"csv:{arg}" + (f"?{reading}" if reading
                                                                                     else "")), nl=False)


@main.group("tokenizer")
def tokenizer_group() -> None:
    """Tokenizers (Hugging Face tokenizer.json) for text: sources: `text:PATH?tokenizer=FILE`."""


@tokenizer_group.command("train")
@click.argument("source")
@click.option("--vocab-size", type=click.IntRange(min=1), required=True,
              help="Ids in the tokenizer: the 256 bytes, the special token <|endoftext|> and the merges learnt "
                   "(at least 257; a small corpus may give fewer).")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path("tokenizer.json"), show_default=True,
              help="The tokenizer.json to write; an existing file is refused unless --force.")
@click.option("--force", is_flag=True, help="Move an existing --output aside to FILE.old-N (nothing is deleted).")
@command
def tokenizer_train(source: str, vocab_size: int, output: Path, force: bool) -> None:
    """Train a byte-level BPE tokenizer (GPT-2's scheme, with the `tokenizers` library) on the text of SOURCE,
    text:FILE|DIR|stdlib[?max_bytes=N] (every file, as the source reads them), and write its tokenizer.json."""
    from archc.data.sources import paths_read
    from archc.data.text import corpus_texts
    from archc.data.tokenizer_file import check_vocab_size, read, train_bpe
    from archc.outputs import check_writes
    from archc.util import write_new

    check_vocab_size(vocab_size)
    check_writes({"SOURCE": paths_read(source)}, {"--output": output_file(output)})
    corpus, texts = corpus_texts(source)
    text = train_bpe(texts, vocab_size)
    moved = write_new(output, text, force)
    if moved is not None:
        click.echo(f"--force: moved the earlier {output} to {moved}", err=True)
    made = read(output, str(output))
    click.echo(f"wrote {output}: byte-level BPE, {made.vocab_size} ids (asked {vocab_size}) from {len(corpus)} "
               f"file(s), {sum(n for *_, n in corpus):,} bytes\nnext: --data 'text:PATH?tokenizer={output}'")


@main.command("init")
@click.argument("source")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path("spec.toml"), show_default=True,
              help="The spec to write ('-': print it); an existing file is refused unless --force.")
@click.option("--target", default=None, metavar="COLUMN", help="A table's target column (default: the last column).")
@click.option("--task", type=click.Choice([CLASSES, TARGETS]), default=None,
              help="A table's task (default: classification for text or up to 20 integer values, else regression).")
@click.option("--force", is_flag=True, help="Move an existing --output aside to FILE.old-N (nothing is deleted).")
@command
def init(source: str, output: Path, target: str | None, task: str | None, force: bool) -> None:
    """Write a starter spec for SOURCE that validates and trains as written: a CSV or Parquet table (FILE,
    csv:FILE, parquet:FILE), a folder of class folders of images (images:DIR) or text (text:FILE|DIR). The task comes
    from the target; identifiers and dates are left out with a comment; the network and [train] are sized to the
    data."""
    from archc.data.sources import paths_read
    from archc.outputs import check_writes
    from archc.util import write_new
    from archc.starter import check, starter

    for flag, text in (("SOURCE", source), ("--target", target or "")):  # the spec is TOML: UTF-8 only
        if text.encode("utf-8", "replace").decode("utf-8") != text:  # argv bytes that are not UTF-8
            raise InputError(f"expected UTF-8 text, received {text.encode('utf-8', 'backslashreplace').decode()!r}",
                             where=flag, hint="a TOML spec names UTF-8 paths and columns only: rename it")
    to_stdout = str(output) == "-"
    if not to_stdout:  # not over the data it reads, nor into a folder a live run writes
        check_writes({"SOURCE": paths_read(source)}, {"--output": output_file(output)})
    spec_dir = Path.cwd() if to_stdout else output.parent
    given = ["archc", "init", source, *(["--target", target] if target else []), *(["--task", task] if task else [])]
    made = starter(source, spec_dir, target, task, command=shlex.join(given))
    check(made.text, "-" if to_stdout else str(output))
    if to_stdout:
        click.echo(made.text, nl=False)
        return
    moved = write_new(output, made.text, force)
    if moved is not None:
        click.echo(f"--force: moved the earlier {output} to {moved}", err=True)
    spec = shlex.quote(str(output))
    click.echo(f"wrote {output}: {made.summary}\nnext: archc validate {spec} && archc train {spec}")


@main.command()
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Write the schema to this file instead of stdout.")
@command
def schema(output: Path | None) -> None:
    """Print the spec's JSON Schema (point a TOML spec at it with `#:schema FILE`)."""
    from archc.language.schema import json_schema
    from archc.outputs import check_writes
    from archc.util import write_text_atomic

    check_writes({}, {"--output": output_file(output)})  # not into a folder a live run writes
    text = json.dumps(json_schema(), indent=2)
    if output is None:
        click.echo(text)
    else:
        write_text_atomic(output, text + "\n")
        click.echo(f"wrote {output}")


@main.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@command
def ops(name: str | None, as_json: bool) -> None:
    """List every op with its attributes, defaults and a one-line doc (or one op: NAME)."""
    from archc.language.errors import close_matches
    from archc.language.schema import op_table

    table = op_table()
    if name is not None:
        table = [o for o in table if o["op"] == name]
        if not table:
            raise InputError(f"unknown op '{name}'", hint=close_matches(name, [o["op"] for o in op_table()])
                             or "`archc ops` lists every op")
    if as_json:
        click.echo(strict_json.dumps(table, indent=2))
        return
    for o in table:
        arity = o["inputs"]
        n_in = f"{arity[0]}" if arity[0] == arity[1] else f"{arity[0]}+" if arity[1] is None else f"{arity[0]}-{arity[1]}"
        click.echo(f"{o['op']:<16} [{o['family']}] {o['doc']}  (inputs: {n_in})")
        for a in o["attributes"]:
            default = "required" if a["required"] else f"default {json.dumps(a['default'])}"
            click.echo(f"    {a['name']:<20} {a['type']:<28} {default:<18} {a['doc']}")


def _add_train() -> None:
    """`archc train` lives in archc.train.command; give it the same error handling and --debug."""
    from archc.train.command import train_command

    train_command.params.append(click.Option(["--debug"], is_flag=True, help="Show a traceback for errors."))
    train_command.callback = command(train_command.callback)
    main.add_command(train_command)


def _add_sweep() -> None:
    """`archc sweep` lives in archc.sweep.command; the same error handling and --debug."""
    from archc.sweep.command import sweep_command

    sweep_command.params.append(click.Option(["--debug"], is_flag=True, help="Show a traceback for errors."))
    sweep_command.callback = command(sweep_command.callback)
    main.add_command(sweep_command)


_add_train()
_add_sweep()

if __name__ == "__main__":
    main()
