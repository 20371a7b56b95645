"""Figure 19: ONNX Runtime GenAI against `archc infer --prompt` on the same exported package (model.onnx,
model.kv.onnx, genai_config.json, tokenizer.json), greedy generation on CPU.

Rows: a GPT-2-architecture byte model of gpt_stdlib's size (128 wide, 4 heads, 4 layers, context 128) filling its
context from a 4-byte prompt, and (full run only) GPT-2 small's size (124M parameters, 50,257 ids, context 128, 32
tokens). Weights are random (speed does not depend on them). onnxruntime_genai runs in its own environment
(.venv-genai, `make bench` builds it): a worker process of this file's, started once, generates when told and
answers with its tokens; the archc side runs here, interleaved round by round with it (each side timed from the
request to the tokens, the worker's pipe round trip included, well under a millisecond). Figures are medians of
tokens/s; a = archc, b = GenAI.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

FIGURE = 19
KEY = "genai"
TITLE = "ONNX Runtime GenAI vs archc infer on the same exported package"
A, B = "archc infer (tokens/s)", "onnxruntime_genai (tokens/s)"
PROMPT = "def "
GENAI_PYTHON = Path(__file__).resolve().parents[1] / ".venv-genai" / "bin" / "python"


class Worker:
    """onnxruntime_genai in a process of .venv-genai's python, holding the package's model open."""

    def __init__(self, folder: Path) -> None:
        import os

        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        self.proc = subprocess.Popen([str(GENAI_PYTHON), __file__, "--worker", str(folder)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        ready = self.proc.stdout.readline()
        if not ready.startswith("ready"):
            raise RuntimeError(f"the onnxruntime_genai worker did not start: {ready!r}")

    def generate(self, new: int) -> list[int]:
        self.proc.stdin.write(json.dumps({"prompt": PROMPT, "new": new}) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())["tokens"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def package(name: str, raw: dict) -> Path:
    """`raw` built with seed-0 weights into its own folder: the package archc export writes."""
    import common

    from archc.pipeline import BUILD_PASSES, BuildOptions, compiled_from, run

    folder = common.workdir() / f"genai-{name}"
    folder.mkdir(exist_ok=True)
    c = run(compiled_from(raw, options=BuildOptions(seed=0, output=folder / "model.onnx")), BUILD_PASSES)
    if not (folder / "genai_config.json").is_file():
        from archc.export.kvcache import describe_package

        raise RuntimeError(describe_package(c.report.kvcache) or "no KV-cache export")
    return folder / "model.onnx"


def compare(name: str, raw: dict, new: int, rounds: int) -> dict:
    import common
    from bench_generate import speed

    from archc.runtime import Model, generate

    path = package(name, raw)
    model = Model.open(path, device="cpu")
    worker = Worker(path.parent)
    try:
        got: dict[str, list[int]] = {}
        fns = {"archc": lambda: got.__setitem__("archc", generate(model, PROMPT, new, temperature=0).tokens),
               "genai": lambda: got.__setitem__("genai", worker.generate(new))}
        rate = speed(fns, new, rounds)
    finally:
        worker.close()
    eos = json.loads((path.parent / "genai_config.json").read_text())["model"]["eos_token_id"]
    ours = got["archc"][: got["archc"].index(eos) + 1] if eos in got["archc"] else got["archc"]
    same = got["genai"] == ours
    vocab = raw["inputs"]["tokens"]["vocab"]
    note = (f"greedy tokens identical: {same}" if vocab == 256 else
            "speed only: archc picks among bytes, GenAI among all ids")
    if len(got["genai"]) != new:
        note += f"; GenAI stopped at its eos after {len(got['genai'])} tokens (its rate counts {new})"
    return common.row(FIGURE, f"{name}: {new} tokens after a 4-byte prompt, greedy", rate["archc"], rate["genai"],
                      ratio=rate["ratio:genai"], note=note + "; medians of interleaved rounds")


def run(quick: bool = False) -> tuple[list[dict], str]:
    import common
    from bench_generate import gpt2_spec

    start = time.perf_counter()
    cases = [("gpt2-bytes 32 wide, 2 layers, context 32", gpt2_spec(256, 32, 2, 2, 32, 32), 12, 2)] if quick else [
        ("gpt2-bytes 128 wide, 4 layers, context 128 (gpt_stdlib size)", gpt2_spec(256, 128, 4, 4, 128, 128), 124, 7),
        ("GPT-2 small size (124M, 50,257 ids), context 128", gpt2_spec(50257, 768, 12, 12, 128, 1024), 32, 3)]
    if not GENAI_PYTHON.is_file():
        return [common.skipped(FIGURE, c[0], "no .venv-genai (make genai-venv builds it)") for c in cases], ""
    rows = [compare(*case) for case in cases]
    details = ("Both sides run the same model.kv.onnx on CPU: archc with its own session options, GenAI with the "
               "package's genai_config.json as written (both one intra-op thread below 40 MB of weights, ONNX "
               "Runtime's default above). "
               "ratio = the median over interleaved rounds of GenAI's time / archc's time (> 1: archc faster). "
               f"Figure took {time.perf_counter() - start:.0f} s.")
    return rows, details


def _worker(folder: str) -> None:
    """The .venv-genai side: load the package once, then one greedy generation per request line."""
    import onnxruntime_genai as og

    model = og.Model(folder)
    tokenizer = og.Tokenizer(model)
    print("ready", flush=True)
    for line in sys.stdin:
        ask = json.loads(line)
        ids = tokenizer.encode(ask["prompt"])
        params = og.GeneratorParams(model)
        params.set_search_options(do_sample=False, max_length=len(ids) + ask["new"])
        generator = og.Generator(model, params)
        generator.append_tokens(ids)
        tokens = []
        while not generator.is_done():
            generator.generate_next_token()
            tokens.append(int(generator.get_next_tokens()[0]))
        print(json.dumps({"tokens": tokens}), flush=True)


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    _worker(sys.argv[2])
