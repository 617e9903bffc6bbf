#!/usr/bin/env bash
# How each service of the wearcast stack starts: the one definition, run by the compose file
# (the images' entry point) and by the stack test (.ci/stack-test.sh) alike.
#
#   entrypoint.sh SERVICE      SERVICE: mlflow, api, init, airflow-init, airflow-api-server,
#                              airflow-scheduler, airflow-dag-processor, airflow-triggerer,
#                              airflow-worker, or `airflow ARGS...` for any airflow command
#
# Settings shared by every deployment are in docker/stack.env. What differs between one
# (where the other services are, secrets, folders) comes from the environment:
#   BIND_HOST                        address servers listen on (0.0.0.0 in a container)
#   POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER, POSTGRES_PASSWORD (URL-safe: hex)
#   MLFLOW_HOST, MLFLOW_PORT, MLFLOW_ARTIFACTS   tracking server and where it keeps artifacts
#   API_PORT                         the API replica's port; API_URLS: every replica (commas)
#   WEARCAST_ADMIN_KEY               an admin API key (the DAG's reload); WEARCAST_API_KEYS
#   REDIS_HOST, REDIS_PORT           Celery broker (CeleryExecutor only)
#   AIRFLOW_API_HOST, AIRFLOW_API_PORT, AIRFLOW_JWT_SECRET, AIRFLOW_ADMIN_PASSWORD
#   AIRFLOW_LOG_SERVER_PORT          this Airflow component's log server
set -euo pipefail

service="${1:?usage: entrypoint.sh SERVICE (see the header of this script)}"
shift
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}" "${POSTGRES_HOST:?set POSTGRES_HOST}"

pg_url() {
  echo "postgresql+psycopg2://${POSTGRES_USER:-wearcast}:$POSTGRES_PASSWORD@$POSTGRES_HOST:${POSTGRES_PORT:-5432}/$1"
}

# wearcast (API, init job, DAG tasks): tracking server and prediction log.
export WEARCAST_TRACKING_URI="http://${MLFLOW_HOST:-mlflow}:${MLFLOW_PORT:-5000}"
export WEARCAST_PREDICTION_DB_URL="${WEARCAST_PREDICTION_DB_URL:-$(pg_url wearcast)}"

airflow_env() {
  export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="$(pg_url airflow)"
  export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://${AIRFLOW_API_HOST:-airflow-api-server}:${AIRFLOW_API_PORT:-8080}/execution/"
  export AIRFLOW__API_AUTH__JWT_SECRET="${AIRFLOW_JWT_SECRET:?set AIRFLOW_JWT_SECRET}"
  export AIRFLOW__CELERY__BROKER_URL="redis://${REDIS_HOST:-redis}:${REDIS_PORT:-6379}/0"
  export AIRFLOW__CELERY__RESULT_BACKEND="db+$(pg_url airflow)"
  export AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT="${AIRFLOW_LOG_SERVER_PORT:-8793}"
  export AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT="${AIRFLOW_LOG_SERVER_PORT:-8794}"
  export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE="${AIRFLOW_HOME:?}/passwords.json"
  # The DAG tells every API replica to reload (host: the replicas' URLs, password: admin key).
  export AIRFLOW_CONN_WEARCAST_API="{\"conn_type\": \"http\", \"host\": \"${API_URLS:?set API_URLS}\", \"password\": \"${WEARCAST_ADMIN_KEY:?set WEARCAST_ADMIN_KEY}\"}"
}

case "$service" in
  mlflow)
    # --allowed-hosts (MLFLOW_SERVER_ALLOWED_HOSTS in stack.env): MLflow 3 answers 403 to a
    # Host header it does not know, e.g. http://mlflow:5000 between containers.
    # uvicorn kills a worker that does not answer its health ping in 5 s: on a busy host
    # (MLflow's workers take long to import) that respawned them forever.
    exec mlflow server --host "${BIND_HOST:-0.0.0.0}" --port "${MLFLOW_PORT:-5000}" \
      --workers "${MLFLOW_WORKERS:-2}" --uvicorn-opts "--timeout-worker-healthcheck 120" \
      --backend-store-uri "$(pg_url mlflow)" \
      --artifacts-destination "${MLFLOW_ARTIFACTS:?set MLFLOW_ARTIFACTS}" "$@"
    ;;
  api)
    exec wearcast serve --host "${BIND_HOST:-0.0.0.0}" --port "${API_PORT:-8000}" "$@"
    ;;
  init)
    # Data and a first champion, once: a fresh stack serves a model without a person.
    if python -c 'import sys; from wearcast import registry; from wearcast.config import Settings
s = Settings(); sys.exit(registry.champion_version(registry.connect(s), s) is None)'; then
      echo "init: a champion exists already, nothing to do"
      exit 0
    fi
    data="${WEARCAST_HOME:?}/data"
    if [ -z "$(ls -A "$data" 2>/dev/null)" ]; then
      wearcast simulate "$data/simulated" --runs "${INIT_RUNS:-3}" \
        --recordings "${INIT_RECORDINGS:-120}" --faults 2
    fi
    # The watched folder itself, so that the DAG's table has the same file keys.
    exec wearcast pipeline "$data"
    ;;
  airflow-init)
    airflow_env
    exec airflow db migrate
    ;;
  airflow-api-server)
    airflow_env
    # The admin's password for the web UI (SimpleAuthManager), from the secret.
    printf '{"admin": "%s"}' "${AIRFLOW_ADMIN_PASSWORD:?set AIRFLOW_ADMIN_PASSWORD}" \
      >"$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"
    exec airflow api-server --host "${BIND_HOST:-0.0.0.0}" --port "${AIRFLOW_API_PORT:-8080}" "$@"
    ;;
  airflow-scheduler | airflow-dag-processor | airflow-triggerer)
    airflow_env
    exec airflow "${service#airflow-}" "$@"
    ;;
  airflow-worker)
    airflow_env
    exec airflow celery worker "$@"
    ;;
  airflow)  # any airflow command with the stack's settings, e.g. `airflow dags trigger ID`
    airflow_env
    exec airflow "$@"
    ;;
  *)
    echo "entrypoint.sh: unknown service '$service' (see the header of this script)" >&2
    exit 2
    ;;
esac
