"""A bare ONNX Runtime GenAI client (run by the .venv-genai python, never imported by the suite): greedy tokens of
each prompt from an exported archc package folder, as JSON on stdout.

    python genai_client.py FOLDER MAX_NEW_TOKENS PROMPT... -> {"prompts": [{"ids": [...], "tokens": [...],
                                                                "text": "...", "seconds": s}, ...]}
"""
import json
import sys
import time

import onnxruntime_genai as og


def greedy(model, tokenizer, prompt: str, max_new: int) -> dict:
    ids = tokenizer.encode(prompt)
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(ids) + max_new)
    generator = og.Generator(model, params)
    start = time.perf_counter()
    generator.append_tokens(ids)
    tokens = []
    while not generator.is_done():
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    seconds = time.perf_counter() - start
    return {"ids": [int(i) for i in ids], "tokens": tokens, "text": tokenizer.decode(tokens), "seconds": seconds}


def main() -> None:
    folder, max_new, prompts = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    model = og.Model(folder)
    tokenizer = og.Tokenizer(model)
    json.dump({"prompts": [greedy(model, tokenizer, p, max_new) for p in prompts]}, sys.stdout)


if __name__ == "__main__":
    main()
