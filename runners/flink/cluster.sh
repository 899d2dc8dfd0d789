#!/usr/bin/env bash
# A standalone Flink cluster on this machine without Docker: JobManager, TaskManager with N
# slots and Beam's SDK worker pool, from what `make flink` fetched (runners/flink/cluster.py).
#   runners/flink/cluster.sh start [--slots 2] [--rest-port 8081] [--tm-memory 4g]
#       [--state-backend hashmap|rocksdb]
#   runners/flink/cluster.sh status
#   runners/flink/cluster.sh stop        # ends only what start started
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python="${NDCL_PYTHON:-$root/.venv/bin/python}"
cd "$root"
exec "$python" -m runners.flink.cluster "$@"
