#!/usr/bin/env bash
# Start the local Flink cluster, Beam's Flink job server and the Python SDK worker pool of
# runners/flink/docker-compose.yml, then wait until Flink (8081) and the job server (8099)
# accept connections. Needs Docker with Compose v2 and access to Docker Hub (flink,
# apache/beam_* images) and PyPI (building the worker image).
#   NDCL_DATA=/tmp/ndcl-data runners/flink/start.sh      # inputs/outputs must live under it
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export NDCL_DATA="${NDCL_DATA:-/tmp/ndcl-data}"
mkdir -p "$NDCL_DATA"

docker compose -f "$here/docker-compose.yml" up -d --build

wait_port() {  # host port name
  local deadline=$((SECONDS + ${NDCL_FLINK_TIMEOUT:-180}))
  until (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; do
    if ((SECONDS > deadline)); then
      echo "timed out waiting for $3 on $1:$2; see: docker compose -f $here/docker-compose.yml logs" >&2
      exit 1
    fi
    sleep 2
  done
  echo "$3 is up on $1:$2"
}
wait_port localhost 8081 "Flink REST"
wait_port localhost 8099 "Beam Flink job server"

cat <<MSG
Submit with (inputs and outputs under $NDCL_DATA):
  .venv/bin/ndcl run --workflow nd_cl --kmeans-backend local \\
      --input '$NDCL_DATA/in/*.json.gz' --output $NDCL_DATA/out \\
      --runner portable --job-endpoint localhost:8099 \\
      --environment-type EXTERNAL --environment-config localhost:50000
Flink UI: http://localhost:8081   Stop: $here/stop.sh
MSG
