"""The retraining DAG on a real Airflow installation (SQLite metadata database, dag.test()).

Two scheduled runs on simulated data: the first registers and promotes a model and tells a
running wearcast API to serve it; new recordings arrive; the second featurizes only those,
trains, and the gate decides. A forced training failure leaves the champion as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import time

import httpx
import pytest

from wearcast import registry
from wearcast.config import Settings
from wearcast.dataset import read_table
from wearcast.simulate import plan_simulation, simulate

pytestmark = [pytest.mark.airflow, pytest.mark.slow]
ADMIN_KEY = "dag-test-admin-key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def world(airflow_home, tmp_path_factory, request):
    """Wearcast settings in the environment (as a deployment would set them), recordings, and
    the wearcast API (from the project's main environment) running on loopback."""
    home = tmp_path_factory.mktemp("wearcast")
    env = {
        "WEARCAST_HOME": str(home),
        "WEARCAST_WORKERS": "1",  # parallelism comes from the mapped tasks here
        "WEARCAST_SEARCH_BUDGET_S": "4",
        "WEARCAST_FEATURIZE_BATCH_FILES": "40",
    }
    os.environ.update(env)
    settings = Settings()
    simulate(
        plan_simulation(settings, runs=2, recordings=60, faults_per_run=1, seed=12),
        settings.watched_data_dir,
    )
    server = None
    api_python = os.environ.get("WEARCAST_API_PYTHON")
    if api_python:
        port = _free_port()
        os.environ["AIRFLOW_CONN_WEARCAST_API"] = json.dumps(
            {"conn_type": "http", "host": f"http://127.0.0.1:{port}", "password": ADMIN_KEY}
        )
        server_env = {
            **os.environ,
            "WEARCAST_RELOAD_INTERVAL_S": "0",
            "WEARCAST_API_KEYS": json.dumps(
                [f"admin:{hashlib.sha256(ADMIN_KEY.encode()).hexdigest()}"]
            ),
        }
        server = subprocess.Popen(
            [api_python, "-m", "wearcast", "serve", "--port", str(port)],
            env=server_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(200):
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        settings_api = f"http://127.0.0.1:{port}"
    else:
        settings_api = None
    yield settings, settings_api
    if server:
        server.terminate()
        server.wait(timeout=30)


def _run_dag(prepare=None):
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"]).get_dag("wearcast_retrain")
    if prepare:
        prepare(dag)
    run = dag.test()
    return run, {(ti.task_id, ti.map_index): ti for ti in run.get_task_instances()}


def _mapped(tis: dict, task_id: str) -> list:
    return sorted(
        (ti for (t, m), ti in tis.items() if t == task_id and m >= 0), key=lambda ti: ti.map_index
    )


def test_dag_integrity(airflow_home):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    assert bag.import_errors == {}
    dag = bag.get_dag("wearcast_retrain")
    assert set(dag.task_ids) == {
        "find_new_recordings",
        "featurize_batch",
        "merge_table",
        "train_challenger",
        "gate",
        "reload_api",
        "publish_report",
    }
    for t in dag.tasks:
        assert t.retries >= 1 and t.retry_exponential_backoff, t.task_id
    assert dag.schedule == Settings().retrain_schedule
    # A topological order exists: no cycles.
    assert [t.task_id for t in dag.topological_sort()][0] == "find_new_recordings"
    assert any(o.name == "wearcast_feature_table" for o in dag.get_task("merge_table").outlets)


def test_two_runs_then_a_forced_failure(world, monkeypatch):
    settings, api = world
    client = registry.connect(settings)

    # First run: everything is new.
    run, tis = _run_dag()
    assert run.state == "success"
    batches = _mapped(tis, "featurize_batch")
    assert len(batches) == 3 and all(ti.state == "success" for ti in batches)
    assert (
        sum(ti.xcom_pull(task_ids="featurize_batch", map_indexes=ti.map_index) for ti in batches)
        == 120
    )
    table = read_table(settings.watched_table_dir)
    assert len(table) == (120 - 2) * 4  # two faulty recordings quarantined
    assert registry.champion_version(client, settings) == 1
    assert client.get_model_version(settings.model_name, "1").tags["gate_decision"] == "promoted"
    assert (settings.reports_dir / "published" / "v1" / "report.md").exists()
    if api:
        assert httpx.get(f"{api}/readyz").json()["version"] == 1

    # New recordings arrive: only those are featurized, a challenger is trained and gated.
    simulate(
        plan_simulation(settings, runs=1, recordings=40, seed=13, run_prefix="late"),
        settings.watched_data_dir,
    )
    run, tis = _run_dag()
    assert run.state == "success"
    batches = _mapped(tis, "featurize_batch")
    assert (
        sum(ti.xcom_pull(task_ids="featurize_batch", map_indexes=ti.map_index) for ti in batches)
        == 40
    )
    assert len(read_table(settings.watched_table_dir)) == (160 - 2) * 4
    v2 = client.get_model_version(settings.model_name, "2")
    decision = v2.tags["gate_decision"]
    assert decision in ("promoted", "challenger") and v2.tags["gate_reason"]
    champion = registry.champion_version(client, settings)
    assert champion == (2 if decision == "promoted" else 1)
    if api:
        assert httpx.get(f"{api}/readyz").json()["version"] == champion

    # The same interval again: nothing new, nothing retrained, nothing changed.
    run, tis = _run_dag()
    assert run.state == "success"
    assert len(client.search_model_versions(f"name='{settings.model_name}'")) == 2
    assert registry.champion_version(client, settings) == champion

    # More data, but training fails: the champion stays.
    simulate(
        plan_simulation(settings, runs=1, recordings=20, seed=14, run_prefix="later"),
        settings.watched_data_dir,
    )

    def out_of_memory(*_args, **_kwargs):
        raise MemoryError("training ran out of memory (forced by the test)")

    monkeypatch.setattr(
        "wearcast.retrain.train_challenger", out_of_memory
    )  # dag.test runs in-process

    def no_retries(dag):
        for t in dag.tasks:
            t.retries = 0

    run, tis = _run_dag(no_retries)
    assert run.state == "failed"
    assert tis[("train_challenger", -1)].state == "failed"
    assert tis[("gate", -1)].state == "upstream_failed"
    assert registry.champion_version(client, settings) == champion
    assert len(client.search_model_versions(f"name='{settings.model_name}'")) == 2
