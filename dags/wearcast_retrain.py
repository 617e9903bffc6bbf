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

from wearcast.config import load_settings

_settings = load_settings()
FEATURE_TABLE = Asset(
    name="wearcast_feature_table",
    uri=f"file://{_settings.watched_table_dir / 'table.parquet'}",
)


# Every task has a deadline: a hung task (stuck mount, dead worker pool) fails and is retried
# instead of holding its executor slot forever.
_train_timeout = timedelta(seconds=3 * _settings.search_budget_s) + timedelta(minutes=30)


@dag(
    dag_id="wearcast_retrain",
    schedule=_settings.retrain_schedule or None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["wearcast"],
    default_args={
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
        "execution_timeout": timedelta(minutes=30),
    },
    doc_md=__doc__,
)
def wearcast_retrain():
    @task
    def find_new_recordings(run_id: str | None = None) -> list[str]:
        """Paths of batch manifests: a million new files are a few thousand short strings."""
        import logging

        from wearcast.dataset import pending_files, write_batches

        settings = load_settings()
        table_dir = settings.watched_table_dir
        unreadable = []
        tasks = pending_files(settings.watched_data_dir, table_dir, unreadable=unreadable)
        for folder in unreadable:
            logging.getLogger(__name__).warning("skipped %s: %s", folder.file, folder.reason)
        folder = table_dir / "batches" / run_id.replace(":", "-").replace("+", "-")
        return write_batches(tasks, folder, settings.featurize_batch_files)

    @task(execution_timeout=timedelta(hours=2))
    def featurize_batch(manifest: str) -> int:
        from wearcast.dataset import featurize_batch

        settings = load_settings()
        return featurize_batch(manifest, settings.watched_table_dir, settings)

    # Runs when nothing was new too (the mapped task is then skipped), so that a run that
    # failed after featurizing is completed by the next one.
    @task(outlets=[FEATURE_TABLE], trigger_rule="none_failed", execution_timeout=timedelta(hours=2))
    def merge_table(processed: list[int]) -> dict:
        import shutil

        from wearcast.dataset import build_table

        settings = load_settings()
        table_dir = settings.watched_table_dir
        result = build_table(settings.watched_data_dir, table_dir, settings)
        shutil.rmtree(table_dir / "batches", ignore_errors=True)  # one run at a time
        return {
            "table": str(result.table),
            "rows": result.rows,
            "new_files": sum(processed or []),
            "quarantined": result.quarantined,
        }

    @task(execution_timeout=_train_timeout)
    def train_challenger(table: dict) -> int:
        from wearcast.retrain import train_challenger

        return train_challenger(load_settings(), table["table"], reuse=True)["version"]

    @task(execution_timeout=_train_timeout)
    def gate(table: dict, version: int) -> dict:
        from wearcast.retrain import gate_challenger

        decision = gate_challenger(load_settings(), table["table"], version)
        return {"version": version, "promoted": decision.promoted, "reason": decision.reason}

    @task(execution_timeout=timedelta(minutes=10))
    def reload_api(decision: dict) -> dict:
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowNotFoundException

        from wearcast.retrain import reload_replicas

        urls, key = load_settings().api_urls, None
        try:
            conn = BaseHook.get_connection("wearcast_api")
        except AirflowNotFoundException:
            conn = None
        if conn is not None and conn.host:
            # host: one API URL, or several (replicas) separated by commas.
            urls = [u.strip() for u in conn.host.split(",") if u.strip()]
            key = conn.password
        return reload_replicas(urls, key)

    @task(execution_timeout=timedelta(minutes=10))
    def publish_report(decision: dict) -> str:
        from wearcast.retrain import publish_report

        return str(publish_report(load_settings(), decision["version"]))

    processed = featurize_batch.expand(manifest=find_new_recordings())
    table = merge_table(processed)
    decision = gate(table, train_challenger(table))
    reload_api(decision)
    publish_report(decision)


wearcast_retrain()
