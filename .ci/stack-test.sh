#!/usr/bin/env bash
# The stack test (tests/stack): the compose file's services as processes on loopback, started
# by docker/entrypoint.sh with docker/stack.env. Installs Debian's PostgreSQL and Redis when
# missing; uses the .venv and .venv-airflow that `make test` built.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v redis-server >/dev/null || need+=(redis-server)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing ${need[*]} from Debian" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi
start=$(date +%s)
WEARCAST_STACK_TEST=1 WEARCAST_AIRFLOW_VENV="${AIRFLOW_VENV:-$PWD/.venv-airflow}" \
  "${VENV:-.venv}/bin/pytest" tests/stack -p no:cacheprovider -s -ra
echo "stack test: $(($(date +%s) - start)) s"
