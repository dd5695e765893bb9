# Two commands a newcomer needs (see README): `make demo` and `make test`.
PY := .venv/bin/python
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup demo test unit lint bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) scripts/demo.py $(if $(KEEP),--keep)

# The README's test command; CI runs exactly this after scripts/setup.sh.
test: setup lint
	$(PY) -m pytest -q -p no:cacheprovider

unit: setup
	$(PY) -m pytest -q -m "not registry and not oracle"

lint: setup
	.venv/bin/lint-imports

bench: setup
	$(PY) bench/run.py

clean:
	rm -rf .venv build *.egg-info .pytest_cache
