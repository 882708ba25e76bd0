#!/usr/bin/env bash
# What a relay costs (issue 17, docs/cluster-relay.md "Measured"): a
# deployment of release `vigil` nodes on loopback sharing one redis-server,
# vigil-bench's WHIP publisher at the origin A, its N WHEP viewers at one
# or more edges (B, C), which each pull the stream once from A (a relay)
# through the Redis stream directory.
#
#   cargo build --release -p vigil-gateway --bin vigil
#   cargo build --release --manifest-path bench/Cargo.toml
#   bench/relay.sh [VIEWERS] [extra vigil-bench flags...]
#
# EDGES (default 1) picks the layout:
#   EDGES=0  the baseline: A alone (still in the deployment), viewers at A.
#   EDGES=1  A and B, viewers at B (one hop).
#   EDGES=2  A, B and C, viewers split round-robin over B and C.
# VIGIL=path/to/vigil picks another build of the server.
#
# Pinning (2 cores): A on core 0 with the tool, every edge on core 1.
# The edges do the fan-out (39–49 % of a core at N = 200), so they get a
# core the tool does not share; A only receives one publisher and sends
# one copy per relay (≈ 2 % of a core) and shares core 0 with the tool
# (35–55 % at N = 200, up to 96 % at N = 400). With EDGES=2 the two edges
# share core 1: each node's µs per packet and the sum are measured, not
# what two machines would carry. EDGES=0 puts A on core 1 and the tool on
# core 0, as docs/performance.md pins a single server. CPU per packet
# comes from each process's own /proc CPU time, so sharing a core mostly
# shows in the latency; PIN=0 turns pinning off. `EDGES=0 bench/relay.sh 0`
# measures A with its publisher alone.
#
# Nodes: --insecure-no-auth --media-threads 1 and the per-address limits
# off (--posts-per-second-per-address 0 --max-pending-per-address 0
# --max-connections-per-address 0: the last is needed past 256 viewers at
# one node, all from 127.0.0.1). Ports: A 18080/15051/18199, B
# 18090/15061/18299, C 18100/15071/18399 (HTTP/gRPC/media), Redis 16379.
# KEEP_LOGS=DIR keeps the nodes' logs.
#
# vigil-bench gets --server-pid for each node, edges first (the i-th pid
# serves the i-th --whep endpoint's viewers, the last, A, none): the main
# tables' "server" is the first edge (A with EDGES=0), and a per-process
# table gives each node's CPU %, µs per packet of all viewers (these add
# up to the deployment's cost per delivered packet) and per packet of its
# own viewers. Latency is publisher write to viewer socket, through A and
# the relay: the hop's added latency is the difference from EDGES=0.
#
# Measured at a1dae8f (2.5 Mbit/s, N = 200, two runs each; all figures in
# docs/cluster-relay.md "Measured"): A alone 3.9–4.6 µs/pkt, p50/p99
# 3.3/10–15 ms; via one edge 5.7–7.2 µs/pkt at the edge (its fan-out makes
# one sendmsg per packet, no GSO batching), A 1.6–2.3 % of a core for the
# relay (≈ one viewer), p50/p99 6–7/22–25 ms; split over two edges
# 5.7–6.7 µs/pkt each, ≈ 20–23 % of a core each. Viewers that start a
# relay wait for the publisher's next keyframe (1.5 s here). Three nodes
# and the tool on 2 cores: the latency tails are the machine's.
set -euo pipefail
cd "$(dirname "$0")/.."
viewers=${1:-200}
shift || true
edges=${EDGES:-1}
[[ $edges =~ ^[012]$ ]] || { echo "EDGES is 0, 1 or 2" >&2; exit 2; }

vigil=${VIGIL:-target/release/vigil}
bench=bench/target/release/vigil-bench
for bin in "$vigil" "$bench"; do
  [[ -x $bin ]] || { echo "$bin is missing: build it first (see the top of $0)" >&2; exit 2; }
done
command -v redis-server > /dev/null || { echo "redis-server is missing" >&2; exit 2; }

# taskset execs its command, so $! of a pinned node is the node's own pid
# (a shell function run with & would be a subshell's).
pinned() { # core: the command prefix that pins to it
  if [[ ${PIN:-1} == 0 ]]; then prefix=(); else prefix=(taskset -c "$1"); fi
}

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

redis_port=16379
redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
  > "$work/redis.log" 2>&1 &
pids+=($!)
redis=redis://127.0.0.1:$redis_port
for _ in $(seq 50); do
  redis-cli -p "$redis_port" ping 2> /dev/null | grep -q PONG && break
  sleep 0.1
done

declare -A pid_of http_of
node() { # name core http grpc media
  pinned "$2"
  "${prefix[@]}" "$vigil" --insecure-no-auth --data-dir "$work/$1" \
    --redis-url "$redis" --node-id "$1" --node-url "http://$3" --relay-ip 127.0.0.1 \
    --http-listen "$3" --grpc-listen "$4" --media-listen "$5" --media-threads 1 \
    --posts-per-second-per-address 0 --max-pending-per-address 0 --max-connections-per-address 0 \
    > "$work/$1.log" 2>&1 &
  pids+=($!)
  pid_of[$1]=$!
  http_of[$1]=$3
}
if [[ $edges == 0 ]]; then
  node origin 1 127.0.0.1:18080 127.0.0.1:15051 127.0.0.1:18199
  tool_core=0
else
  node origin 0 127.0.0.1:18080 127.0.0.1:15051 127.0.0.1:18199
  node edge-b 1 127.0.0.1:18090 127.0.0.1:15061 127.0.0.1:18299
  [[ $edges == 2 ]] && node edge-c 1 127.0.0.1:18100 127.0.0.1:15071 127.0.0.1:18399
  tool_core=0
fi
nodes=(origin)
[[ $edges -ge 1 ]] && nodes+=(edge-b)
[[ $edges -ge 2 ]] && nodes+=(edge-c)

# Ready: every node answers /readyz and heartbeats into the deployment.
# A node that exited (its port taken, say) must not pass for another
# process answering on that port.
ready=
for _ in $(seq 150); do
  ok=1
  for n in "${nodes[@]}"; do
    kill -0 "${pid_of[$n]}" 2> /dev/null || {
      echo "$n exited:" >&2
      tail -5 "$work/$n.log" >&2
      exit 1
    }
    curl -sf "http://${http_of[$n]}/readyz" > /dev/null 2>&1 || ok=
  done
  members=$(redis-cli -p "$redis_port" SMEMBERS vigil:nodes 2> /dev/null || true)
  for n in "${nodes[@]}"; do grep -qx "$n" <<< "$members" || ok=; done
  [[ -n $ok ]] && { ready=1; break; }
  sleep 0.2
done
[[ -n $ready ]] || {
  echo "the nodes did not join in 30 s:" >&2
  for n in "${nodes[@]}"; do echo "== $n" >&2; tail -20 "$work/$n.log" >&2; done
  exit 1
}
for n in "${nodes[@]}"; do echo "$n: pid ${pid_of[$n]}, http://${http_of[$n]}" >&2; done

# The publisher at A; the viewers at the edges (at A for EDGES=0).
args=(--whip "http://${http_of[origin]}/whip/bench/cam" --viewers "$viewers")
if [[ $edges == 0 ]]; then
  args+=(--whep "http://${http_of[origin]}/whep/bench/cam" --server-pid "${pid_of[origin]}")
else
  for n in "${nodes[@]:1}"; do args+=(--whep "http://${http_of[$n]}/whep/bench/cam"); done
  for n in "${nodes[@]:1}"; do args+=(--server-pid "${pid_of[$n]}"); done
  args+=(--server-pid "${pid_of[origin]}")
fi
status=0
pinned "$tool_core"
"${prefix[@]}" "$bench" "${args[@]}" "$@" || status=$?

# The relays each edge ran, from the logs (one start per edge expected,
# no origin lost).
for n in "${nodes[@]:1}"; do
  echo "$n: relays started $(grep -c 'relay started' "$work/$n.log" || true)," \
    "origin lost $(grep -c 'relay lost its origin' "$work/$n.log" || true)" >&2
done
[[ -n ${KEEP_LOGS:-} ]] && cp -r "$work" "$KEEP_LOGS"
exit "$status"
