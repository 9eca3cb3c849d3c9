# The two commands people need: `make demo` and `make test`. Both set everything up first.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck check bench clean

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null || { echo "need $(PY)"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv
	$(BIN)/python -m uv pip install -q -p $(BIN)/python -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/budgetwarden demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check core integrations

# mypy cannot follow setuptools' editable import hook: give it the package as installed
# (core/ as budgetwarden, integrations/ as budgetwarden.integrations) through symlinks.
typecheck: $(STAMP)
	rm -rf build/typecheck && mkdir -p build/typecheck/budgetwarden
	cp -as "$(CURDIR)/core/." build/typecheck/budgetwarden/
	ln -s "$(CURDIR)/integrations" build/typecheck/budgetwarden/integrations
	MYPYPATH=build/typecheck $(BIN)/mypy -p budgetwarden
	# user code as the README writes it, checked without the pydantic plugin
	MYPYPATH=build/typecheck $(BIN)/mypy --config-file tests/typing/mypy.ini tests/typing/readme_usage.py

check: lint typecheck test

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
