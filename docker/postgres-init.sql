-- One server, one database per user of it: the prediction log (POSTGRES_DB=wearcast), the MLflow
-- registry and Airflow's metadata (both keep an alembic_version table, so they cannot share).
CREATE DATABASE mlflow;
CREATE DATABASE airflow;
