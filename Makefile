# Entry points: `make demo` runs the whole pipeline on built-in demo data, `make test` the checks
# and the tests.
.PHONY: install demo test lint bench clean

VENV := .venv
PY := $(VENV)/bin/python

install:
	bash scripts/bootstrap.sh

demo: install
	bash scripts/demo.sh

# lint-imports: the dependency rule (docs/ARCHITECTURE.md) as the contracts in pyproject.toml
test: install
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

lint: install
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports

bench: install
	$(PY) -m bench.run

clean:
	rm -rf runs bench/results.json
