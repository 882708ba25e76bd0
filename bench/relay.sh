#!/usr/bin/env bash
# OUTLINE, not runnable yet: what a relay costs (docs/cluster-relay.md).
# Two release `vigil` nodes on loopback, origin A on core 0 with
# vigil-bench's WHIP publisher, edge B on core 1 with N vigil-bench viewers;
# B finds A through the Redis stream directory (the lead's part of issue
# 17), so the script needs a redis-server and that directory in the build.
#
#   cargo build --release && cargo build --release --manifest-path bench/Cargo.toml
#   bench/relay.sh [VIEWERS] [extra vigil-bench flags...]
#
# Figures to compare: µs per forwarded packet at B (vigil-bench's server
# CPU, --server-pid B) against a single node's (docs/performance.md), and
# the viewers' latency p50/p99 at B against the same run with --whep at A.
set -euo pipefail
cd "$(dirname "$0")/.."
viewers=${1:-200}
shift || true

vigil=${VIGIL:-target/release/vigil}
bench=bench/target/release/vigil-bench
for bin in "$vigil" "$bench"; do
  [[ -x $bin ]] || { echo "$bin is missing: build it first (see the top of $0)" >&2; exit 2; }
done
command -v redis-server > /dev/null || { echo "redis-server is missing" >&2; exit 2; }

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

redis-server --port 16379 --save '' --appendonly no > "$work/redis.log" 2>&1 &
pids+=($!)
redis=redis://127.0.0.1:16379

node() { # name core http grpc media
  taskset -c "$2" "$vigil" --insecure-no-auth --data-dir "$work/$1" \
    --redis-url "$redis" --node-id "$1" --node-url "http://$3" --relay-ip 127.0.0.1 \
    --http-listen "$3" --grpc-listen "$4" --media-listen "$5" --media-threads 1 \
    --posts-per-second-per-address 0 --max-pending-per-address 0 \
    > "$work/$1.log" 2>&1 &
  pids+=($!)
}
node origin 0 127.0.0.1:18080 127.0.0.1:15051 127.0.0.1:18199
node edge 1 127.0.0.1:18090 127.0.0.1:15061 127.0.0.1:18299
edge_pid=${pids[-1]}
sleep 1 # TODO: wait for both nodes' readiness (/readyz) instead

# The publisher at A, the viewers at B. TODO: vigil-bench times latency
# only for payloads its own publisher sent, which holds here (its --whip
# goes to A); check it publishes without also playing at A.
taskset -c 1 "$bench" \
  --whip http://127.0.0.1:18080/whip/bench/cam \
  --whep http://127.0.0.1:18090/whep/bench/cam \
  --server-pid "$edge_pid" --viewers "$viewers" "$@"
