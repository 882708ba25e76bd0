#!/usr/bin/env bash
# Memory after bursts of sessions that never connect (docs/performance.md,
# "Memory after a burst"): starts BIN on loopback ports of its own, sends
# BURSTS bursts of COUNT WHIP POSTs (one static offer, 16 at a time, each to
# a stream of its own), and prints the server's RSS right after each burst
# and WAIT seconds later (after the connect timeout has reaped them).
#
#   bench/never-connecting-burst.sh target/release/vigil [COUNT] [BURSTS] [WAIT]
set -euo pipefail
bin=${1:?usage: $0 path/to/vigil [count] [bursts] [wait-secs]}
count=${2:-1000}
bursts=${3:-3}
wait=${4:-45}
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT

printf '%s\r\n' \
  'v=0' 'o=- 4611731400430051336 2 IN IP4 127.0.0.1' 's=-' 't=0 0' \
  'a=group:BUNDLE 0 1' \
  'm=audio 9 UDP/TLS/RTP/SAVPF 111' 'c=IN IP4 0.0.0.0' \
  'a=ice-ufrag:abcd' 'a=ice-pwd:abcdefghijklmnopqrstuvwx' \
  'a=fingerprint:sha-256 AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99' \
  'a=setup:actpass' 'a=mid:0' 'a=sendonly' 'a=rtcp-mux' \
  'a=rtpmap:111 opus/48000/2' 'a=ssrc:1111 cname:x' \
  'm=video 9 UDP/TLS/RTP/SAVPF 96' 'c=IN IP4 0.0.0.0' \
  'a=ice-ufrag:abcd' 'a=ice-pwd:abcdefghijklmnopqrstuvwx' \
  'a=fingerprint:sha-256 AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99' \
  'a=setup:actpass' 'a=mid:1' 'a=sendonly' 'a=rtcp-mux' \
  'a=rtpmap:96 H264/90000' 'a=rtcp-fb:96 nack' 'a=rtcp-fb:96 nack pli' \
  'a=fmtp:96 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f' \
  'a=ssrc:2222 cname:x' > "$work/offer.sdp"

"$bin" --insecure-no-auth --http-listen 127.0.0.1:18081 --grpc-listen 127.0.0.1:15052 \
  --posts-per-second-per-address 0 --max-pending-per-address 0 \
  --media-listen 127.0.0.1:18199 --media-threads 1 --data-dir "$work/data" \
  > "$work/server.log" 2>&1 &
pid=$!
sleep 1.5
rss() { awk '/VmRSS/ { printf "%.1f MB", $2 / 1024 }' "/proc/$pid/status"; }
echo "start: $(rss)"
for b in $(seq 1 "$bursts"); do
  codes=$(seq 1 "$count" | xargs -P 16 -I{} curl -s -o /dev/null -w '%{http_code}\n' \
    -X POST -H 'content-type: application/sdp' --data-binary @"$work/offer.sdp" \
    "http://127.0.0.1:18081/whip/burst$b/s{}" | sort | uniq -c | tr -s ' \n' ' ')
  echo "burst $b (status counts:$codes): $(rss)"
  sleep "$wait"
  echo "  ${wait} s later: $(rss)"
done
