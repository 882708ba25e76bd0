#!/usr/bin/env bash
# Runs Vigil's whole test suite: `./test.sh` (extra arguments go to
# `cargo test`, e.g. `./test.sh --test interop_aiortc`).
#
# First it installs, when missing, what the interop and browser tests drive:
# Debian packages (Chromium, GStreamer, iproute2), pinned PyPI packages
# (aiortc) and pinned npm packages (playwright-core, node-datachannel). A
# second run finds them all and goes straight to the tests.
#
# The interop and browser tests build private network namespaces
# (tests/src/netns.rs), which needs CAP_NET_ADMIN. As root everything just
# runs. As another user, installing needs root once (`sudo ./test.sh`), and
# afterwards the suite re-runs itself under `unshare -rn` (a user and
# network namespace of its own, loopback up), which needs no privilege.
set -euo pipefail
cd "$(dirname "$0")"

say() { printf 'test.sh: %s\n' "$*" >&2; }

is_root() { [[ $(id -u) == 0 ]]; }

# Runs a command as root: directly, through sudo, or not at all (then it
# says what to run).
as_root() {
    if is_root; then
        "$@"
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo "$@"
    else
        say "installing needs root: run \`sudo ./test.sh\` once (or: sudo $*)"
        exit 1
    fi
}

# Debian packages: headless Chromium, GStreamer's webrtcbin with the
# simple-whip-client, iproute2 for the tests' private networks, nftables
# to block UDP in one of them (ICE over TCP), prometheus for
# `promtool check metrics` (tests/tests/metrics_prometheus.rs; its server
# is not started by the tests), GStreamer's RTSP server with its Python
# bindings for the test cameras (tests/rtsp/server.py, run by Debian's
# /usr/bin/python3; x265enc and voaacenc come from plugins-bad, avenc_aac
# from libav), and ffmpeg, whose ffprobe checks those cameras
# independently (tests/tests/rtsp_server.rs), and redis-server, which the
# cluster tests start on loopback ports of their own (tests/src/redis.rs).
debs=(chromium simple-whip-client gstreamer1.0-tools gstreamer1.0-nice
      gstreamer1.0-plugins-base gstreamer1.0-plugins-good
      gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav
      iproute2 nftables prometheus
      gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 python3-gi ffmpeg
      redis-server)
missing=()
for deb in "${debs[@]}"; do
    dpkg-query -W -f='${Status}' "$deb" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$deb")
done
if ((${#missing[@]})); then
    say "installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# aiortc (PyPI), pinned. pip makes no request when the pins are satisfied.
if ! python3 -m pip install --quiet --disable-pip-version-check --no-input \
        --dry-run --report - -r tests/interop/requirements.txt 2>/dev/null \
        | grep -q '"install": \[\]'; then
    say "installing PyPI packages from tests/interop/requirements.txt"
    python3 -m pip install --quiet --disable-pip-version-check -r tests/interop/requirements.txt
fi

# npm packages, pinned by each package-lock.json. `npm ci` reinstalls from
# scratch, so it runs only when the lock file changed since the last install.
for dir in tests/browser tests/interop/libdatachannel; do
    stamp="$dir/node_modules/.installed-lock"
    if ! cmp -s "$dir/package-lock.json" "$stamp"; then
        say "installing npm packages in $dir"
        npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
        cp "$dir/package-lock.json" "$stamp"
    fi
done

if is_root; then
    # Inside `unshare -rn` (below) loopback starts down.
    if ! ip -o link show lo | grep -q 'UP'; then
        ip link set lo up
    fi
    exec cargo test --workspace "$@"
fi

# Not root: fetch crates while the network is there, then run the suite in
# a namespace of its own where this user may build the tests' networks.
if ! unshare -rn true 2>/dev/null; then
    say "the interop tests need CAP_NET_ADMIN: run as root, or enable"
    say "unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1)"
    exit 1
fi
cargo fetch --locked
exec unshare -rn env CARGO_NET_OFFLINE=true "$0" "$@"
