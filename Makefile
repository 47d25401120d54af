# Every target creates (once) its own virtual environment in .venv, so a fresh
# machine with Python 3.11 needs nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.installed-docs

.PHONY: demo test lint bench bench-small figures docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	MPLBACKEND=Agg $(BIN)/python -m dmft.demo --out figures/demo.png

test: $(STAMP)
	MPLBACKEND=Agg $(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check dmft tests benchmarks
	$(BIN)/ruff format --check dmft tests benchmarks

# every notebook at full size; its figures go to docs/figures/
figures: $(STAMP)
	MPLBACKEND=Agg $(BIN)/python scripts/make_figures.py

# the documentation site, built into site/; warnings (a broken link or anchor, a docstring
# griffe cannot parse) fail the build
$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install -q -e ".[docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

bench-small: $(STAMP)
	MPLBACKEND=Agg $(BIN)/python benchmarks/run_all.py --small

clean:
	rm -rf $(VENV) figures site .pytest_cache
