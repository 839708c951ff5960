# Set-up is part of every target: the first call creates .venv and installs into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The CPU wheel of torch; a range without this pin could pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: run test test-slow cluster lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

## main job: normal regression on the built-in SyntheticShapes, printing the comparison table
## (about 15 minutes on 2 idle cores without torch-cluster; results in runs/compare_quick/)
run: $(STAMP)
	$(PY) -m examples.normals compare --preset quick

## the test suite (fast tests; `make test-slow` runs the slow ones)
test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q

test-slow: $(STAMP)
	$(PY) -m pytest -m slow -q || [ $$? -eq 5 ]   # 5: no slow test collected

## optional accelerated neighbour search: compiles torch-cluster from source (10-20 min once,
## pip caches the wheel). The library works without it (pure-torch fallback: the same neighbour
## sets up to ties at the k-th distance, see README).
cluster: $(STAMP)
	$(PY) -m pip install --quiet scipy
	$(PY) -m pip install --quiet --no-build-isolation "torch-cluster>=1.6"

lint: $(STAMP)
	$(PY) -m ruff check tensorframes tests examples models

bench: $(STAMP)
	$(PY) -m tensorframes.bench all --quick

clean:
	rm -rf $(VENV) bench_out .pytest_cache .ruff_cache
