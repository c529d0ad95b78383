# Entry points for a fresh machine: `make demo` (install, run the main job), `make serve` (the web page of the demo
# model), `make test` and `make docs` (the documentation site, docs/_build/html/index.html).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo serve test docs lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# otkit is its own distribution (./otkit, torch its only dependency); otseg depends on it.
$(VENV)/.installed: pyproject.toml otkit/pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ./otkit -e .
	touch $@

$(VENV)/.installed-app: pyproject.toml otkit/pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ./otkit -e '.[app]'
	touch $(VENV)/.installed $@

# The tests include the browser test of `otseg serve` (the app extra and Playwright, driving the system's
# Chromium) and the checks of the documentation site's sources (the docs extra).
$(VENV)/.installed-dev: pyproject.toml otkit/pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ./otkit -e '.[dev,app,docs]'
	touch $(VENV)/.installed $(VENV)/.installed-app $(VENV)/.installed-docs $@

$(VENV)/.installed-docs: pyproject.toml otkit/pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ./otkit -e '.[docs]'
	touch $(VENV)/.installed $@

demo: $(VENV)/.installed
	$(BIN)/otseg demo

# EXAMPLES=DIR: a folder of your own example images; by default the ADE20K sample beside the checkout, if there.
EXAMPLES ?= $(wildcard ../shared/fixtures/ade20k_sample)
serve: $(VENV)/.installed-app
	$(BIN)/otseg serve $(if $(EXAMPLES),--examples $(EXAMPLES))

# OMP_WAIT_POLICY=PASSIVE: OpenMP threads waiting at a barrier sleep instead of spinning. With spinning (the
# default), a two-thread test on a 2-core machine shared with any other work ran 9x slower (348 s against 39 s for
# the tiny CLIP pre-training test): every operation waited for the thread that had lost its core.
# The suite runs in TEST_WORKERS processes (pytest-xdist) of one thread each: two one-thread processes keep two cores
# busier than one two-thread process. A test module stays in one worker (--dist loadscope), so its fixtures (a served
# model, a browser) start once.
TEST_WORKERS ?= 2
test: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope

# The site builds offline (MathJax and search are served with it), with warnings as errors (-W) and every
# cross-reference resolved (-n); the notebooks run during the build, their outputs cached by content in
# docs/_build/.jupyter_cache, so a rebuild reruns only a notebook whose code changed. One thread per process, as
# for the tests: on a shared 2-core machine a two-thread notebook waits for its descheduled thread.
docs: $(VENV)/.installed-docs
	OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 $(BIN)/python -m sphinx -b html -n -W --keep-going docs docs/_build/html

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/sinkhorn_bench.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache docs/_build docs/api docs/notebooks
