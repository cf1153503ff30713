# greenshift: two commands on a fresh machine with Python 3.11 and make.
#   make run   create .venv, install, run the main job on the embedded data set
#   make test  same venv, run the test suite
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch is installed first so that the `torch>=` requirement in
# pyproject.toml is already met; GPU users override, e.g. TORCH_SPEC='torch==2.13.0'
# with their CUDA index configured in pip.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev,dask,gpu,deploy
STAMP := $(VENV)/.greenshift-installed
BIN := $(VENV)/bin
RUN_DIR ?= runs/digits-demo

.PHONY: run test bench lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when the project's dependency list changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/greenshift search --dataset digits --backbone resnet20 --out $(RUN_DIR) --preset demo
	$(BIN)/greenshift report $(RUN_DIR)

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

lint: $(STAMP)
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts

format: $(STAMP)
	$(BIN)/ruff check --fix src tests bench scripts
	$(BIN)/ruff format src tests bench scripts

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
