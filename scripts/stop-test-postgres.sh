#!/usr/bin/env bash
# Stop the server scripts/start-test-postgres.sh started (and only if it did) and remove its data.
set -euo pipefail
[ "${WEARCAST_TEST_POSTGRES_STARTED:-}" = 1 ] || exit 0
DATA="${WEARCAST_TEST_POSTGRES_DIR:-/tmp/wearcast-test-postgres}"
BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
RUN=(runuser -u postgres --)
[ "$(id -u)" -ne 0 ] && RUN=()
if [ -n "$BIN" ] && [ -f "$DATA/postmaster.pid" ]; then
  "${RUN[@]}" "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >&2
fi
rm -rf "$DATA"
