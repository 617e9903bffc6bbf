#!/usr/bin/env bash
# What docker/Dockerfile.api does, without a Docker engine: install from a build context cut
# by .dockerignore into a clean virtual environment, start the image's entry point with the
# image's settings, and run the image's HEALTHCHECK command against it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
PORT=13110
work="$(mktemp -d /tmp/wearcast-image.XXXXXX)"
server=""
cleanup() {
  [ -n "$server" ] && kill -TERM -- "-$server" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# The build context: the tracked files .dockerignore lets through. It has the form
# "* then !exceptions", which is all this reads (a rule of another form fails the check).
mkdir "$work/context"
git ls-files -z | "$PYTHON" -c '
import sys
rules = [r for r in open(".dockerignore").read().splitlines() if r and not r.startswith("#")]
assert rules[0] == "*" and all(r.startswith(("!", "**/")) for r in rules[1:]), rules
keep = [r[1:].rstrip("/") for r in rules if r.startswith("!")]
files = sys.stdin.read().split("\0")
print("\0".join(f for f in files if any(f == k or f.startswith(k + "/") for k in keep)), end="")
' | xargs -0 tar -cf - | tar -xf - -C "$work/context"
echo "build context: $(du -sh "$work/context" | cut -f1) ($(find "$work/context" -type f | wc -l) files)"

# RUN pip install ".[api,postgres]"  (the build stage), into a clean environment.
"$PYTHON" -m venv "$work/venv"
( cd "$work/context" && "$work/venv/bin/pip" install --quiet ".[api,postgres]" )
install -m 0755 "$work/context/docker/entrypoint.sh" "$work/venv/bin/wearcast-service"

# ENTRYPOINT ["wearcast-service"] CMD ["api"] with the image's ENV, as a non-root user would.
admin_key="image-check-$(date +%s)"
hash="$("$work/venv/bin/python" -c 'import sys; from wearcast.api.security import hash_key; print(hash_key(sys.argv[1]))' "$admin_key")"
env -i PATH="$work/venv/bin:/usr/bin:/bin" HOME="$work" \
  WEARCAST_ENV=production WEARCAST_HOME="$work/data" PYTHONUNBUFFERED=1 \
  WEARCAST_API_KEYS="[\"admin:$hash\"]" API_PORT="$PORT" BIND_HOST=127.0.0.1 \
  POSTGRES_HOST=127.0.0.1 POSTGRES_PASSWORD=unused MLFLOW_HOST=127.0.0.1 MLFLOW_PORT=13111 \
  WEARCAST_PREDICTION_DB_URL="sqlite:///$work/predictions.db" \
  setsid wearcast-service api >"$work/api.log" 2>&1 &
server=$!

# HEALTHCHECK CMD, taken from the Dockerfile itself.
check="$(sed -n 's/^  CMD \["python", "-c", "\(.*\)"\]$/\1/p' docker/Dockerfile.api)"
[ -n "$check" ] || { echo "no HEALTHCHECK CMD found in docker/Dockerfile.api" >&2; exit 1; }
for _ in $(seq 120); do
  if env API_PORT="$PORT" "$work/venv/bin/python" -c "$check" 2>/dev/null; then
    echo "image commands: installed from the context, started, HEALTHCHECK passed"
    exit 0
  fi
  kill -0 "$server" 2>/dev/null || break
  sleep 1
done
cat "$work/api.log" >&2
echo "image commands: the API never passed its HEALTHCHECK" >&2
exit 1
