#!/usr/bin/env bash
# The CPU cost of one RTSP camera (issue 16): RTSP in, N WHEP viewers out,
# beside the WHIP figures of docs/performance.md. Starts the test camera
# (tests/rtsp/server.py: the H264 fixture and PCMU, GStreamer's RTSP
# server), a release `vigil` pinned to core 0 on loopback ports of its own,
# adds the camera to room `bench` as stream `cam` (`vigil ctl camera add`),
# waits until Vigil publishes it, then runs vigil-bench without --whip (the
# viewers play the camera's stream, the tool publishes nothing) on core 1.
#
#   cargo build --release && cargo build --release --manifest-path bench/Cargo.toml
#   bench/camera.sh [VIEWERS] [extra vigil-bench flags...]
#
# VIGIL=path/to/vigil picks another build of the server.
#
# VIEWERS defaults to 200; 0 measures the server's CPU for pulling the
# camera(s) with nobody watching (CAMERAS=N pulls N). The figures: server CPU %, µs per forwarded
# packet, ms per Mbit, RSS. No forwarding latency: the tool can only time
# payloads its own publisher sent. CPU per camera-second is the CPU % over
# 100 (one camera).
set -euo pipefail
cd "$(dirname "$0")/.."
viewers=${1:-200}
shift || true

vigil=${VIGIL:-target/release/vigil}
bench=bench/target/release/vigil-bench
for bin in "$vigil" "$bench"; do
  [[ -x $bin ]] || { echo "$bin is missing: build it first (see the top of $0)" >&2; exit 2; }
done

http=127.0.0.1:18080
grpc=127.0.0.1:15051
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# The camera, on a port the kernel picks; its URL is on its first line.
/usr/bin/python3 tests/rtsp/server.py --video h264 --audio pcmu --port 0 \
  > "$work/camera.out" 2> "$work/camera.log" &
pids+=($!)
for _ in $(seq 100); do
  grep -q '^READY ' "$work/camera.out" && break
  sleep 0.1
done
camera=$(awk '/^READY /{print $2; exit}' "$work/camera.out")
[[ -n $camera ]] || { echo "the camera did not start:" >&2; cat "$work/camera.log" >&2; exit 1; }
echo "camera: $camera" >&2

taskset -c 0 "$vigil" --insecure-no-auth --data-dir "$work/data" \
  --http-listen "$http" --grpc-listen "$grpc" --media-listen 127.0.0.1:18199 \
  --media-threads 1 --posts-per-second-per-address 0 --max-pending-per-address 0 \
  > "$work/vigil.log" 2>&1 &
vigil_pid=$!
pids+=("$vigil_pid")

ctl() { "$vigil" ctl --server "http://$grpc" --data-dir "$work/data" "$@"; }
# The server is up when its gRPC answers.
for _ in $(seq 100); do
  ctl room list > /dev/null 2>&1 && break
  sleep 0.1
done
ctl camera add bench cam "$camera"
# CAMERAS=N: N-1 more cameras pulled beside it (the same test camera), for
# the cost of pulling many.
for i in $(seq 2 "${CAMERAS:-1}"); do
  ctl camera add bench "cam$i" "$camera" > /dev/null
done

# Live when the stream's statistics show video frames coming in: Vigil pulls
# the camera and publishes it as bench/cam.
live=
for _ in $(seq 150); do
  if ctl --json stats bench cam 2> /dev/null | grep -Eq '"frames_per_second":[1-9]'; then
    live=1
    break
  fi
  sleep 0.2
done
[[ -n $live ]] || { echo "bench/cam did not go live in 30 s; vigil's log:" >&2; tail -30 "$work/vigil.log" >&2; exit 1; }

if [[ $viewers == 0 ]]; then
  # Nobody watches: the server's CPU for pulling the cameras alone, over
  # 20 s after 5 s more of warm-up (utime + stime from /proc).
  sleep 5
  cpu() { awk '{print $14 + $15}' "/proc/$vigil_pid/stat"; }
  t0=$(cpu); s0=$(date +%s%N)
  sleep 20
  t1=$(cpu); s1=$(date +%s%N)
  ticks=$(getconf CLK_TCK)
  awk -v t="$((t1 - t0))" -v hz="$ticks" -v ns="$((s1 - s0))" -v n="${CAMERAS:-1}" \
    -v rss="$(awk '/VmRSS/{print $2}' "/proc/$vigil_pid/status")" \
    'BEGIN { printf "cameras=%d viewers=0 srv CPU %%=%.2f RSS MB=%.1f\n", n, 100 * t / hz / (ns / 1e9), rss / 1024 }'
  exit 0
fi
taskset -c 1 "$bench" --whep "http://$http/whep/bench/cam" \
  --server-pid "$vigil_pid" --viewers "$viewers" "$@"
