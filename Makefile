# pgvar: every target sets up .venv first, so a fresh clone needs only `make test` or `make report`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test report bench bench-compare measure-example clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test,dask]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests --ignore=tests/benchmarks --durations=20

report: $(STAMP)
	$(BIN)/pgvar sweep configs/default.toml
	$(BIN)/pgvar sweep configs/train.toml
	$(BIN)/pgvar report results/default --training results/train --out reports/out

# `bench` saves every run under .benchmarks/<machine>/; `bench-compare` runs again and fails when a
# benchmark's median is more than 25% slower than in the last saved run on this machine.
# glibc would return the 0.6 GB of per-trajectory scores to the OS after each round and page-fault them
# in again (measured: +25% end to end at B = 16384 without it); set before the process starts.
bench bench-compare: export MALLOC_MMAP_MAX_ := 0
bench bench-compare: export MALLOC_TRIM_THRESHOLD_ := 17179869184

bench: $(STAMP)
	mkdir -p .benchmarks
	$(BIN)/python -m pytest -q tests/benchmarks --benchmark-only --benchmark-autosave --benchmark-json=.benchmarks/last.json
	$(BIN)/python tests/benchmarks/ratios.py .benchmarks/last.json

bench-compare: $(STAMP)
	@ls .benchmarks/*/[0-9]*.json >/dev/null 2>&1 || { echo "bench-compare: no saved run on this machine; run 'make bench' first" >&2; exit 2; }
	$(BIN)/python -m pytest -q tests/benchmarks --benchmark-only --benchmark-compare --benchmark-compare-fail=median:25% \
		--benchmark-json=.benchmarks/compare.json
	$(BIN)/python tests/benchmarks/ratios.py .benchmarks/compare.json

measure-example: $(STAMP)
	$(BIN)/pgvar measure --env frozenlake --estimator reinforce --est-opt baseline=rloo \
		--batch-size 16 --reps 1000 --seed 0

clean:
	rm -rf $(VENV) .benchmarks .pytest_cache results reports/out
