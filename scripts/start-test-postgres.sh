#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on loopback for the prediction-log tests, installing
# Debian's postgresql package first if it is missing. Prints the SQLAlchemy URL to use.
# Usage: eval "$(scripts/start-test-postgres.sh)"   (exports WEARCAST_TEST_POSTGRES_URL, and
# WEARCAST_TEST_POSTGRES_STARTED=1 if this call started the server: scripts/stop-test-postgres.sh
# then stops it, and leaves alone a server someone else started)
set -euo pipefail
PORT="${WEARCAST_TEST_POSTGRES_PORT:-55432}"
DATA="${WEARCAST_TEST_POSTGRES_DIR:-/tmp/wearcast-test-postgres}"

server_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

if [ -z "$(server_bin)" ] || [ ! -x "$(server_bin)/postgres" ]; then
  echo "installing Debian's postgresql package" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
fi
BIN="$(server_bin)"
RUN=(runuser -u postgres --)
[ "$(id -u)" -ne 0 ] && RUN=()

if ! "${RUN[@]}" "$BIN/pg_isready" -h 127.0.0.1 -p "$PORT" -q; then
  rm -rf "$DATA"
  mkdir -p "$DATA"
  [ "$(id -u)" -eq 0 ] && chown postgres "$DATA"
  "${RUN[@]}" "$BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 >/dev/null
  "${RUN[@]}" "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w \
    -o "-h 127.0.0.1 -p $PORT -k $DATA" start >&2
  "${RUN[@]}" "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres wearcast_test
  echo "export WEARCAST_TEST_POSTGRES_STARTED=1"
fi
echo "export WEARCAST_TEST_POSTGRES_URL=postgresql+psycopg2://postgres@127.0.0.1:$PORT/wearcast_test"
