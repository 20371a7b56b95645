# `make demo` and `make test` each set up .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ARCHC := $(VENV)/bin/archc
STAMP := $(VENV)/.installed-stamp
TEST_STAMP := $(VENV)/.test-stamp
# ONNX Runtime GenAI in an environment of its own: its onnxruntime would replace .venv's onnxruntime-gpu files.
# Only `make test` builds it (tests/export/test_genai.py runs the exported package with it in a subprocess).
GENAI_VENV := .venv-genai
GENAI_STAMP := $(GENAI_VENV)/.installed-stamp
GENAI_PACKAGES := onnxruntime-genai==0.18.0 numpy

.PHONY: demo test venv genai-venv clean bench schema fuzz

venv: $(STAMP)

# torch==2.13.0 first: it is a CPU build on local disk; the project's range then installs nothing more.
# `make demo` installs what running archc needs (1.9 GB, most of it torch and onnxruntime); `make test` adds the
# test extra (pytest, hypothesis, transformers for the reference models: +0.2 GB).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e .
	rm -f $(TEST_STAMP)
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[test]'
	touch $(TEST_STAMP)

$(GENAI_STAMP): Makefile
	$(PYTHON) -m venv $(GENAI_VENV)
	$(GENAI_VENV)/bin/python -m pip install -q --upgrade pip
	$(GENAI_VENV)/bin/python -m pip install -q $(GENAI_PACKAGES)
	touch $(GENAI_STAMP)

genai-venv: $(GENAI_STAMP)

test: $(TEST_STAMP) $(GENAI_STAMP)
	$(PY) -m pytest -q -n 2

# Train the 8x8 digits twin (sklearn's bundled set: no download) in seconds, export it (ONNX, parity-checked,
# normalization recorded), then score model.onnx on the held-out split through `archc infer` alone.
demo: $(STAMP)
	@mkdir -p out
	$(ARCHC) validate specs/digits_mlp.toml
	$(ARCHC) train specs/digits_mlp.toml $(if $(DATA),--data $(DATA)) --out out/digits --force
	$(ARCHC) infer out/digits/model.onnx --input $(or $(DATA),sklearn:digits) --limit 5

# Every figure in benchmarks/bench_*.py (CPU, ~10 minutes on 2 cores, plus training figure 9's U-Net, figure 16's
# ~6 minutes of JPEG folders and figure 17's
# ~11 minutes of whole training runs, half of them beside busy loops): writes
# benchmarks/results/RESULTS.md and results.json. Not part of `make test`; tests/benchmarks/test_bench_smoke.py
# runs every figure's quick mode.
bench: $(TEST_STAMP) $(GENAI_STAMP)
	$(PY) benchmarks/run.py

# archc.schema.json (what specs' `#:schema ../archc.schema.json` names) is `archc schema`'s output, committed:
# regenerate it after changing an op or the spec model (tests/language/test_schema.py fails while it is stale).
schema: $(STAMP)
	$(ARCHC) schema -o archc.schema.json

# The fuzzer's long profile: 13,920 mutated specs from every spec in specs/, every op example and a tabular spec; each
# one that validates is lowered, run at three sizes and exported (by archc's emitter) with the ONNX Runtime parity
# check (`make test` runs 4,350 and exports one in ten; `make fuzz FUZZ=medium` 4,350, every one exported).
# Per-base tallies go to out/fuzz.jsonl; the totals are printed last.
FUZZ ?= long
fuzz: $(TEST_STAMP)
	@mkdir -p out && rm -f out/fuzz.jsonl
	ARCHC_FUZZ=$(FUZZ) ARCHC_FUZZ_STATS=out/fuzz.jsonl $(PY) -m pytest -q -n 2 -m fuzz tests/fuzz
	@$(PY) -c 'import collections, json; t = collections.Counter(); \
	  [t.update({k: v for k, v in json.loads(l).items() if k != "base"}) for l in open("out/fuzz.jsonl")]; print(dict(t))'

clean:
	rm -rf $(VENV) $(GENAI_VENV) out build *.egg-info
