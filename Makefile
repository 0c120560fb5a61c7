# Two commands do all set-up on a fresh machine:  `make demo` (quickstart run)  and  `make test` (test suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgevit-installed
RUN ?= runs/quickstart

.PHONY: demo test test-fast lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -e '.[all,dev]'
	touch $(STAMP)

demo: $(STAMP)  ## train -> int8 -> export to every backend -> parity report, on the built-in digits data
	$(BIN)/edgevit run recipes/quickstart.yaml --out $(RUN)
	@echo "report: $(RUN)/report.md  (machine-readable: $(RUN)/parity.json)"

test: $(STAMP)  ## the whole suite, slow end-to-end tests included (what CI runs)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)  ## the inner loop: skips the end-to-end pipeline tests
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check edgevit tests && $(BIN)/ruff format --check edgevit tests

clean:
	rm -rf runs .pytest_cache
