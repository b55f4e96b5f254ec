# The two commands of the README. Each creates the virtual environment .venv if it is missing.
#   make demo   the whole pipeline on the embedded default (offline, CPU is enough)
#   make test   lint and the offline test suite
#
# torch is installed first, pinned: an unpinned torch pulls a CUDA build of several GB. On a GPU
# machine pick your build, e.g. `make demo TORCH_SPEC="torch==2.13.0" TORCH_INDEX=https://download.pytorch.org/whl/cu128`.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
DEMO_WORKDIR ?= demo-workdir
BIN := $(VENV)/bin

.PHONY: demo test lint clean-demo

$(BIN)/.oripid-installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

demo: $(BIN)/.oripid-installed
	$(BIN)/oripid demo --workdir $(DEMO_WORKDIR)

lint: $(BIN)/.oripid-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -q

clean-demo:
	rm -rf $(DEMO_WORKDIR)
