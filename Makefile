# Two entry points (see README): `make run` (set up + main job on the offline default) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CORES ?= 8
# Jobs call `python`, `snakemake` and `dvc` from the project's environment.
export PATH := $(BIN):$(PATH)

.PHONY: setup run test test-fast lock clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-lock.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.txt -c requirements-lock.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

run: setup
	snakemake --cores $(CORES) results/tables/auroc.csv

test: setup
	pytest

test-fast: setup
	pytest -m "not slow"

lock: setup
	( echo "# Full transitive pin set (pip freeze of a working .venv). Regenerate: make lock"; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -vi '^xraypipe' ) > requirements-lock.txt

clean:
	rm -rf results/* .snakemake
