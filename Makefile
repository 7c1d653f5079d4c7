# pgvar: every target sets up .venv first, so a fresh clone needs only `make test` or `make report`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test report bench measure-example clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test,dask]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests --ignore=tests/benchmarks

report: $(STAMP)
	$(BIN)/pgvar sweep configs/default.toml
	$(BIN)/pgvar report results/default --out reports/out

bench: $(STAMP)
	mkdir -p .benchmarks
	$(BIN)/python -m pytest -q tests/benchmarks --benchmark-only --benchmark-json=.benchmarks/last.json
	$(BIN)/python tests/benchmarks/ratios.py .benchmarks/last.json

measure-example: $(STAMP)
	$(BIN)/pgvar measure --env frozenlake --estimator reinforce --est-opt baseline=rloo \
		--batch-size 16 --reps 1000 --seed 0

clean:
	rm -rf $(VENV) .benchmarks .pytest_cache results reports/out
