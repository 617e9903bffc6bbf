# The same commands the README shows. Each target sets up .venv on first use.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?=

.PHONY: run test lint bench-featurize calibrate experiments clean

$(BIN)/wearcast: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[api,dev]"
	touch $@

run: $(BIN)/wearcast  ## the main job, on the simulator's data unless DATA=folder is given
	$(BIN)/wearcast pipeline $(DATA)

test: $(BIN)/wearcast  ## the whole test suite
	$(BIN)/pytest

lint: $(BIN)/wearcast
	$(BIN)/ruff check src tests benchmarks scripts dags
	$(BIN)/ruff format --check src tests benchmarks scripts dags

calibrate: $(BIN)/wearcast  ## rerun the simulator calibration behind docs/simulator.md
	$(BIN)/python scripts/calibrate_simulator.py

experiments: $(BIN)/wearcast  ## rerun the model experiments behind docs/model.md
	$(BIN)/python scripts/model_experiments.py

bench-featurize: $(BIN)/wearcast
	$(BIN)/python benchmarks/featurize.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
