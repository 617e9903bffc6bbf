"""Airflow for the DAG tests: a fresh AIRFLOW_HOME with a migrated SQLite database, set up
before airflow is first imported (it reads its configuration at import)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.airflow


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory) -> Path:
    if shutil.which("airflow", path=str(Path(sys.executable).parent)) is None:
        pytest.skip(
            "Apache Airflow is not installed here (`make test` runs these in .venv-airflow)"
        )
    home = tmp_path_factory.mktemp("airflow")
    os.environ.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
    )
    subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
        check=True,
        capture_output=True,
        env=os.environ,
    )
    return home


@pytest.fixture(autouse=True)
def _isolated_home() -> None:
    """The DAG tests set WEARCAST_HOME once per module, as a deployment's environment would."""
