#!/usr/bin/env bash
# Builds every fuzz target with libFuzzer's coverage instrumentation on
# stable Rust (no cargo-fuzz, no nightly) and runs each for SECONDS (default
# 60), two at a time, starting from the committed seeds in corpus/<target>/.
# New inputs go to a scratch copy, so the tree stays clean; a crash fails
# the run and its input is kept in fuzz/artifacts/<target>/.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# Reproduce a crash:  fuzz/target/x86_64-unknown-linux-gnu/release/TARGET fuzz/artifacts/TARGET/crash-...
# docs/operations.md ("Fuzzing") says more.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
shift || true
all=(sdp_offer sdpfrag token rtp_media rtcp_feedback stun_demux camera_h264)
targets=("${@:-${all[@]}}")
triple=$(rustc -vV | sed -n 's/^host: //p')

# SanitizerCoverage as libFuzzer wants it; `--target` keeps these flags off
# build scripts and proc macros. Debug assertions and overflow checks come
# from the release profile in Cargo.toml.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
cargo build --release --locked --target "$triple" $(printf -- '--bin %s ' "${targets[@]}")

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
run_one() {
    local target=$1
    mkdir -p "$scratch/$target" "artifacts/$target"
    cp corpus/"$target"/* "$scratch/$target/"
    if "target/$triple/release/$target" "$scratch/$target" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="artifacts/$target/" > "$scratch/$target.log" 2>&1; then
        echo "fuzz: $target ok: $(grep -E '^stat::number_of_executed_units' "$scratch/$target.log" | awk '{print $2}') runs, \
$(grep -oE 'cov: [0-9]+' "$scratch/$target.log" | tail -1) edges, $(ls "$scratch/$target" | wc -l) inputs"
    else
        echo "fuzz: $target FAILED; its log:" >&2
        tail -40 "$scratch/$target.log" >&2
        return 1
    fi
}
status=0
pids=()
for target in "${targets[@]}"; do
    run_one "$target" & pids+=($!)
    if ((${#pids[@]} == 2)); then
        wait "${pids[0]}" || status=1
        pids=("${pids[@]:1}")
    fi
done
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit $status
