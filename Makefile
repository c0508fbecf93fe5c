# carp — two commands do all the set-up:  `make demo`  and  `make test`.
PY ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export DVC_NO_ANALYTICS := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export TORCH_EXTENSIONS_DIR := $(CURDIR)/.torch_extensions
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test lint format bench clean lock

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: anything else would pull a multi-GB CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0
	# every other library at the version in constraints.txt (reproducible runs)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,dask]' torch==2.13.0
	touch $@

install: $(VENV)/.installed

demo: install  ## set up, run the default pipeline with DVC, print the summary
	carp validate params.yaml
	carp compile params.yaml --check
	dvc repro
	carp report params.yaml

test: install  ## set up, lint, run the default test suite
	ruff check .
	ruff format --check .
	pytest -q

lock: install  ## rewrite constraints.txt from the installed environment
	{ sed -n '1,/^# pyproject/p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu$$/torch==\1/'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

lint:
	ruff check . && ruff format --check .

format:
	ruff check --fix . && ruff format .

bench: install
	@echo "see benchmarks/README.md for each benchmark's command"

clean:
	rm -rf artifacts reports checkpoints mlflow.db mlartifacts .carp
