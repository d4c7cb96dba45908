# Two entry points (see README): `make run` (set up + main job on the offline default) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CORES ?= 8
# Jobs call `python`, `snakemake` and `dvc` from the project's environment.
export PATH := $(BIN):$(PATH)

.PHONY: setup run report test test-fast test-real lock clean system-deps bench dvc-yaml

setup: $(STAMP)

$(STAMP): requirements.txt requirements-lock.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.txt -c requirements-lock.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m xraypipe.snakemake_hooks --install
	touch $(STAMP)

run: setup
	snakemake --cores $(CORES) results/tables/auroc.csv

# The report of what has been built (the AUROC table after `make run`, everything after `snakemake all`): a plain
# `snakemake --report` covers every job of rule all and fails on the first table or figure not built yet.
report: setup
	targets="$$($(BIN)/python -m xraypipe.report_targets --config config.yaml)" && \
	  snakemake --report report.html $$targets

test: setup system-deps
	pytest

test-fast: setup
	pytest -m "not slow"

# dvc.yaml is generated from the stage table (src/xraypipe/workflow.py); a test fails when the committed one is stale.
dvc-yaml: setup
	$(BIN)/python -m xraypipe.workflow dvc --out dvc.yaml

# requirements.txt, envs/pipeline.yaml and benchmarks/requirements.txt are generated from pyproject.toml (the one
# source of pins; standard library only, so no setup first); a test fails when one is stale.
.PHONY: requirements
requirements:
	PYTHONPATH=src $(PYTHON) -m xraypipe.requirements

# The full real-data recipes on ../shared/data (the Kermany recipe trains ~30 min on 2 cores): run before releasing
# a recipe change; not part of `make test` (CI).
test-real: setup
	pytest --run-real -m real -s

# (benchmark-only packages, benchmarks/requirements.txt, stay out of the lock)
BENCH_ONLY := $(shell sed -n 's/^\([A-Za-z0-9_.-]*\)==.*/\1/p' benchmarks/requirements.txt | paste -sd'|')
lock: setup
	( echo "# Full transitive pin set (pip freeze of a working .venv). Regenerate: make lock"; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -vi '^xraypipe' \
	  | grep -viE '^($(BENCH_ONLY))==' ) > requirements-lock.txt

# Speed benchmarks (benchmarks/README.md): installs the reference loader (torchxrayvision) into the
# .venv with the lock as constraints (torch stays at its pinned version; checked), then runs them.
TORCH_PIN := $(shell sed -n 's/^torch==//p' requirements-lock.txt)
bench: setup
	$(BIN)/python -m pip install --quiet -r benchmarks/requirements.txt -c requirements-lock.txt
	$(BIN)/python -c "import torch, sys; v = torch.__version__.split('+')[0]; \
	  sys.exit(0 if v == '$(TORCH_PIN)' else f'torch {v} installed, lock pins $(TORCH_PIN)')"
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/speed.py $(BENCH_ARGS)

# System packages the slow tests use, installed only where that is possible (root + apt-get); elsewhere
# the tests that need them skip (or fail when CI is set).
system-deps:
# --- Slurm + munge for tests/test_slurm.py (a real one-node cluster started by the test) ---
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! command -v slurmctld >/dev/null \
	    && [ ! -x /usr/sbin/slurmctld ]; then \
	  echo "installing slurmctld slurmd slurm-client munge (apt-get)"; \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
	    slurmctld slurmd slurm-client munge \
	  || echo "warning: could not install Slurm: tests/test_slurm.py will skip (fail when CI is set)" >&2; \
	fi
# --- end Slurm ---
# --- headless Chromium for tests/test_report.py (opens the Snakemake report) ---
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! command -v chromium >/dev/null; then \
	  echo "installing chromium (apt-get)"; \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium \
	  || echo "warning: could not install chromium: tests/test_report.py will skip (fail when CI is set)" >&2; \
	fi
# --- end Chromium ---

# Everything the runs made, but the files git tracks under results/ (results/README.md): `git clean` there; outside a
# git checkout (an unpacked archive) everything but results/README.md (tests/test_make_clean.py).
clean:
	@if git -C $(CURDIR) rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
	  git -C $(CURDIR) clean -ffdxq -- results; \
	else \
	  find results -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +; \
	fi
	rm -rf .snakemake
