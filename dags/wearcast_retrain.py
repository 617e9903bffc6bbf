"""Retrain, gate and promote the wear model as new recordings arrive (Airflow 3, TaskFlow).

Thin on purpose: each task calls one wearcast function (src/wearcast/retrain.py and
dataset.py); configuration comes from wearcast's settings (WEARCAST_* environment), the API's
admin key from the Airflow connection ``wearcast_api`` (host = API URL, password = key).

    find_new_recordings -> featurize_batch (mapped, one task per batch of files)
      -> merge_table (updates the feature-table asset) -> train_challenger -> gate
      -> reload_api, publish_report
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Asset, dag, task

from wearcast.config import Settings

_settings = Settings()
FEATURE_TABLE = Asset(
    name="wearcast_feature_table",
    uri=f"file://{_settings.tables_dir / 'default' / 'table.parquet'}",
)


@dag(
    dag_id="wearcast_retrain",
    schedule=_settings.retrain_schedule,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["wearcast"],
    default_args={
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
    },
    doc_md=__doc__,
)
def wearcast_retrain():
    @task
    def find_new_recordings() -> list[list]:
        from wearcast.dataset import pending_files

        settings = Settings()
        tasks = pending_files(settings.watched_data_dir, settings.tables_dir / "default")
        size = settings.featurize_batch_files
        return [[list(t) for t in tasks[i : i + size]] for i in range(0, len(tasks), size)]

    @task
    def featurize_batch(batch: list[list]) -> int:
        from wearcast.dataset import featurize_files

        settings = Settings()
        return featurize_files([tuple(t) for t in batch], settings.tables_dir / "default", settings)

    # Runs when nothing was new too (the mapped task is then skipped), so that a run that
    # failed after featurizing is completed by the next one.
    @task(outlets=[FEATURE_TABLE], trigger_rule="none_failed")
    def merge_table(processed: list[int]) -> dict:
        from wearcast.dataset import build_table

        settings = Settings()
        result = build_table(settings.watched_data_dir, settings.tables_dir / "default", settings)
        return {"table": str(result.table), "rows": result.rows, "new_files": sum(processed or [])}

    @task
    def train_challenger(table: dict) -> int:
        from wearcast.retrain import train_challenger

        return train_challenger(Settings(), table["table"], reuse=True)["version"]

    @task
    def gate(table: dict, version: int) -> dict:
        from wearcast.retrain import gate_challenger

        decision = gate_challenger(Settings(), table["table"], version)
        return {"version": version, "promoted": decision.promoted, "reason": decision.reason}

    @task
    def reload_api(decision: dict) -> dict:
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowNotFoundException

        from wearcast.retrain import reload_api

        url, key = Settings().api_url, None
        try:
            conn = BaseHook.get_connection("wearcast_api")
        except AirflowNotFoundException:
            conn = None
        if conn is not None and conn.host:
            url = conn.host if "://" in conn.host else f"http://{conn.host}:{conn.port or 80}"
            key = conn.password
        return reload_api(url, key)

    @task
    def publish_report(decision: dict) -> str:
        from wearcast.retrain import publish_report

        return str(publish_report(Settings(), decision["version"]))

    processed = featurize_batch.expand(batch=find_new_recordings())
    table = merge_table(processed)
    decision = gate(table, train_challenger(table))
    reload_api(decision)
    publish_report(decision)


wearcast_retrain()
