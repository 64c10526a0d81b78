# mtkit: `make demo` runs Multi30k end to end, `make test` runs lint and tests,
# `make bench` prints speed and memory figures, `make docs` regenerates the option
# reference in docs/reference/ from the CLI. Each sets up .venv by itself.
# `make gpu-check` runs bench/gpu.sh, the one-call check of a GPU machine.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch for machines without an NVIDIA GPU. Here pip finds it on
# disk; elsewhere point TORCH_INDEX at PyTorch's CPU wheel index to avoid a CUDA download.
TORCH_CPU ?= torch==2.13.0
TORCH_INDEX ?=
MULTI30K ?= ../shared/data/multi30k

.PHONY: all install test lint check demo bench docs gpu-check clean

all: test

install: $(VENV)/.installed

# unbabel-comet (score --metrics comet) beside the dev extra without its pins
# (transformers<5, numpy<2 would replace the ones NLLB import and export are built on);
# docs/score.md says why these versions and what mtkit.comet bridges.
COMET_BESIDE = unbabel-comet==2.2.7 pytorch-lightning==2.6.6 lightning-utilities==0.15.3 \
	torchmetrics==0.10.3 jsonargparse==3.13.1 entmax==1.3 scipy==1.17.1 "setuptools<81"

# Decided when make reads this file, so `make -n install` prints the very commands
# this machine would run (bench/gpu.sh --dry-run shows them).
NVIDIA_SMI ?= $(shell command -v nvidia-smi 2>/dev/null)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
ifneq ($(NVIDIA_SMI),)
	@echo "NVIDIA GPU found: installing the default (CUDA) torch"
else
	@echo "no NVIDIA GPU: installing the CPU build of torch ($(TORCH_CPU))"
	$(BIN)/pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_CPU)"
endif
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps $(COMET_BESIDE)
	touch $@

lint: install
	$(BIN)/ruff check mtkit tests bench
	$(BIN)/ruff format --check mtkit tests bench

test: lint
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

check: test

demo: install
	$(MAKE) -f recipes/multi30k.mk BIN=$(abspath $(BIN)) MULTI30K=$(MULTI30K) show

bench: install
	$(BIN)/python -m bench

docs: install
	$(BIN)/python -m mtkit.reference docs/reference

# The one-call GPU check (docs/gpu.md): installs, CUDA tests, one table of figures.
gpu-check:
	bench/gpu.sh

clean:
	rm -rf $(VENV) data runs
