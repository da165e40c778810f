# chat-store: `make serve` and `make test` work on a fresh clone (they build the environment first).
PYTHON ?= python3
TOOLS  := .tools
UV     := $(TOOLS)/bin/uv
VENV   := .venv
BIN    := $(VENV)/bin
export UV_PYTHON_DOWNLOADS := never

.PHONY: venv serve test lint typecheck test-sqlite test-postgres test-unit bench clean

# uv, installed from PyPI into a private tool folder unless one is already on PATH.
$(UV):
	@if command -v uv >/dev/null 2>&1; then \
		mkdir -p $(TOOLS)/bin && ln -sf "$$(command -v uv)" $(UV); \
	else \
		$(PYTHON) -m venv $(TOOLS) && $(TOOLS)/bin/pip install --quiet --disable-pip-version-check "uv>=0.5"; \
	fi

# The virtual environment, exactly as uv.lock pins it. Bytecode compiled at install: with
# PYTHONDONTWRITEBYTECODE set, every process (each server the e2e tests and the bench start)
# would otherwise compile its imports again, about 4 s each here.
$(VENV)/.synced: $(UV) uv.lock pyproject.toml
	$(UV) sync --frozen --compile-bytecode --python $(PYTHON)
	@touch $@

venv: $(VENV)/.synced

serve: venv
	$(BIN)/chat-store serve

LINTED := src tests $(wildcard scripts)

lint: venv
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

typecheck: venv
	$(BIN)/mypy

test-sqlite: venv
	TEST_BACKEND=sqlite $(BIN)/pytest

test-postgres: venv
	TEST_BACKEND=postgres $(BIN)/pytest

test: lint typecheck test-sqlite test-postgres

# Load benchmark (docs/benchmarks.md); wrk comes from Debian's packages when missing.
bench: venv
	@command -v wrk >/dev/null || (apt-get update && apt-get install -y wrk)
	$(BIN)/python scripts/bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
