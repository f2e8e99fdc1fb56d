# SunFlow Ops. `make run` and `make test` work on a fresh machine with python3 (>= 3.11).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python

.PHONY: run test soak lint format bench migrate clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Re-install when pyproject.toml changes; the stamp files keep repeat runs quick.
$(VENV)/.installed-run: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/sunflow-ops db upgrade
	exec $(BIN)/sunflow-ops serve

migrate: $(VENV)/.installed-run
	$(BIN)/sunflow-ops db upgrade

# Four workers (pytest-xdist) on two cores: the suite mostly waits on processes and sockets.
test: $(VENV)/.installed-dev
	$(PY) -m pytest -n 4 --dist worksteal $(PYTEST_ARGS)

# The long runs: fault trials at full size (20 of each pause, 100 kills, the 120 s outage...),
# two at a time; -rP prints each one's figures (docs/reliability.md records them).
soak: $(VENV)/.installed-dev
	$(PY) -m pytest -n 2 -rP -m soak $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(VENV)/.installed-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(VENV)/.installed-dev
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
