# t2igan: `make train` trains the default experiment, `make test` runs the suite.
# Both create .venv and install everything on first use.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# TensorFlow flavour: cpu (tensorflow-cpu) or gpu (tensorflow[and-cuda]).
TF_EXTRA ?= cpu
# The text encoder's torch. Pinning it keeps pip from pulling a multi-GB CUDA build; on a
# machine without a local CPU wheel, set TORCH_INDEX to PyTorch's CPU wheel index.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
STAMP := $(VENV)/.installed-$(TF_EXTRA)
ARGS ?=

export HF_HUB_OFFLINE := 1

.PHONY: help install train test bench study ui clean

help: ## List the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_SPEC) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e ".[$(TF_EXTRA),dev]"
	touch $@

install: $(STAMP) ## Create .venv and install t2igan with its dependencies

train: $(STAMP) ## Train the default experiment (ARGS="model.width=0.5 ..." for overrides)
	$(PY) -m t2igan.train $(ARGS)

test: $(STAMP) ## Run the test suite (CPU; ~13 minutes on 2 cores, 2 workers)
	$(PY) -m pytest -q $(ARGS)

bench: $(STAMP) ## Print training and generation throughput (images/s)
	$(PY) -m t2igan.bench $(ARGS)

study: $(STAMP) ## Convergence study: recipes x seeds on toybirds, resumable (an hour or more)
	$(PY) -m t2igan.study $(ARGS)

ui: $(STAMP) ## MLflow UI for the local runs on http://127.0.0.1:5000
	$(PY) -m mlflow ui --backend-store-uri sqlite:///$(abspath $(or $(T2IGAN_ROOT),$(CURDIR)))/mlflow.db --host 127.0.0.1 --port 5000

clean: ## Remove the virtual environment (runs, caches and mlflow.db stay)
	rm -rf $(VENV)
