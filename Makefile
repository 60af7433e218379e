# Entry points: `make demo` runs the whole pipeline on built-in demo data, `make test` the tests.
.PHONY: install demo test lint bench clean

VENV := .venv
PY := $(VENV)/bin/python

install:
	bash scripts/bootstrap.sh

demo: install
	bash scripts/demo.sh

test: install
	$(PY) -m ruff check .
	$(PY) -m pytest -q

lint: install
	$(PY) -m ruff check .

bench: install
	$(PY) -m bench.run

clean:
	rm -rf runs bench/results.json
