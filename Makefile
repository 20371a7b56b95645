# `make demo` and `make test` each set up .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ARCHC := $(VENV)/bin/archc
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test venv clean

venv: $(STAMP)

# torch==2.13.0 first: it is a CPU build on local disk; the project's range then installs nothing more.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -n 2

demo: $(STAMP)
	@mkdir -p out
	$(ARCHC) validate specs/digit_classifier.toml
	$(ARCHC) build specs/digit_classifier.toml -o out/digit_classifier.onnx
	$(PY) -c "import numpy as np; np.save('out/demo_input.npy', np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32))"
	$(ARCHC) infer out/digit_classifier.onnx --input out/demo_input.npy

clean:
	rm -rf $(VENV) out build *.egg-info
