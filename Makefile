# The same commands the README shows. Each target sets up .venv on first use.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# Airflow caps web libraries the API pins, so the DAG runs (and is tested) in its own venv.
AIRFLOW_VENV ?= .venv-airflow
AIRFLOW_BIN := $(AIRFLOW_VENV)/bin
DATA ?=

.PHONY: run test lint bench-featurize bench-featurize-pronostia bench-serve bench-oip calibrate experiments airflow clean

$(BIN)/wearcast: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[api,dev]"
	touch $@

$(AIRFLOW_BIN)/airflow: pyproject.toml
	$(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_BIN)/pip install --quiet --upgrade pip
	$(AIRFLOW_BIN)/pip install --quiet -e ".[airflow]"
	touch $@

run: $(BIN)/wearcast  ## the main job, on the simulator's data unless DATA=folder is given
	$(BIN)/wearcast pipeline $(DATA)

# Both suites always run; the target fails if either did, so one failure never hides another.
test: $(BIN)/wearcast $(AIRFLOW_BIN)/airflow  ## the whole test suite, DAG tests included
	@status=0; \
	$(BIN)/pytest || status=1; \
	WEARCAST_API_PYTHON=$(abspath $(BIN)/python) $(AIRFLOW_BIN)/pytest tests/dags \
		-p no:cacheprovider || status=1; \
	exit $$status

lint: $(BIN)/wearcast
	$(BIN)/ruff check src tests benchmarks scripts dags
	$(BIN)/ruff format --check src tests benchmarks scripts dags

calibrate: $(BIN)/wearcast  ## rerun the simulator calibration behind docs/simulator.md
	$(BIN)/python scripts/calibrate_simulator.py

experiments: $(BIN)/wearcast  ## rerun the model experiments behind docs/model.md
	$(BIN)/python scripts/model_experiments.py

bench-featurize: $(BIN)/wearcast
	$(BIN)/python benchmarks/featurize.py

bench-featurize-pronostia: $(BIN)/wearcast  ## the six real PRONOSTIA bearings (../shared/data/femto)
	$(BIN)/python benchmarks/featurize_pronostia.py

bench-serve: $(BIN)/wearcast
	$(BIN)/python benchmarks/serve.py

bench-oip: $(BIN)/wearcast  ## Open Inference Protocol: 1,000 rows binary against JSON
	$(BIN)/python benchmarks/oip_binary.py

# standalone starts its components as `airflow` by name (so its venv's bin goes on PATH) and
# stops only on SIGINT, which a shell may have set to ignored: exec it with SIGINT restored.
airflow: $(AIRFLOW_BIN)/airflow  ## Airflow standalone (web UI on :8080) with the wearcast DAG; Ctrl-C stops it
	PATH="$(abspath $(AIRFLOW_BIN)):$$PATH" AIRFLOW__CORE__DAGS_FOLDER=$(abspath dags) \
	AIRFLOW__CORE__LOAD_EXAMPLES=False AIRFLOW__CORE__PARALLELISM=4 \
	AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT=60 \
	$(AIRFLOW_BIN)/python -c 'import os, signal; signal.signal(signal.SIGINT, signal.SIG_DFL); \
	os.execvp("airflow", ["airflow", "standalone"])'

clean:
	rm -rf $(VENV) $(AIRFLOW_VENV) .pytest_cache .ruff_cache
