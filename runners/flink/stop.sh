#!/usr/bin/env bash
# Stop what runners/flink/start.sh started and remove its artifact volume (the data under
# NDCL_DATA stays).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
docker compose -f "$here/docker-compose.yml" down --volumes --remove-orphans
