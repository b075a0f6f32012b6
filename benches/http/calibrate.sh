#!/usr/bin/env bash
# Calibration for the HTTP benchmark (benches/RESULTS.md, "What a per-request cost is
# worth here"): the baseline app burning a known amount of CPU per request
# (`serve --baseline-extra-cpu-ns`), served beside Tandem sticky, in interleaved
# rounds. Prints, per round, each variant's requests/s as a ratio to the plain
# baseline of the same round, then the medians.
#
#   benches/http/calibrate.sh [--rounds 5] [--duration 4] [--extra "250 500 1000 2000"]
#
# 1,000 sessions, read-only, wrk with 2 threads and 32 connections as in
# scripts/bench-http.sh (which installs wrk and memcached; run it once first, or
# install them). About (2 + rounds * duration) seconds per variant.
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS=5
DURATION=4
EXTRA="250 500 1000 2000"
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --extra) EXTRA="$2"; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
for tool in wrk memcached; do
    command -v "$tool" >/dev/null || { echo "$tool is missing (scripts/bench-http.sh installs it)" >&2; exit 1; }
done

cargo build --release --locked -p tandem-bench-http >&2
APP="${CARGO_TARGET_DIR:-target}/release/bench-http-app"
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# free_port, wait_port
source benches/http/ports.sh

MC_PORT=$(free_port)
memcached -l 127.0.0.1 -p "$MC_PORT" -U 0 -m 1024 -t 2 -u "$(id -un)" >/dev/null 2>&1 &
PIDS+=("$!")
wait_port "$MC_PORT"

NAMES=(none)
for extra in $EXTRA; do NAMES+=("none+${extra}ns"); done
NAMES+=(tandem-sticky)
declare -A PORT
for name in "${NAMES[@]}"; do
    port=$(free_port)
    case "$name" in
        none) args=(--variant none) ;;
        none+*) extra=${name#none+}; args=(--variant none --baseline-extra-cpu-ns "${extra%ns}") ;;
        *) args=(--variant "$name" --memcached "n1:127.0.0.1:$MC_PORT") ;;
    esac
    "$APP" serve "${args[@]}" --listen "127.0.0.1:$port" >/dev/null 2>&1 &
    PIDS+=("$!")
    PORT[$name]=$port
    wait_port "$port"
    "$APP" populate --target "127.0.0.1:$port" --count 1000 --connections 32 \
        --out "$WORK/cookies-$port.txt" >/dev/null
done

rps() { # name seconds
    local port=${PORT[$1]}
    COOKIES="$WORK/cookies-$port.txt" WRITE_PCT=0 wrk -t2 -c32 -d"$2s" \
        -s benches/http/wrk/sessions.lua "http://127.0.0.1:$port/" 2>&1 |
        sed -n 's/.* rps=\([0-9.]*\).*/\1/p'
}

for name in "${NAMES[@]}"; do rps "$name" 1 >/dev/null; done
for round in $(seq 1 "$ROUNDS"); do
    line="round $round:"
    base=""
    for name in "${NAMES[@]}"; do
        value=$(rps "$name" "$DURATION")
        [ -n "$value" ] || { echo "wrk failed for $name" >&2; exit 1; }
        base=${base:-$value}
        line="$line $name=$(python3 -c "print(f'{$value / $base:.3f}')")"
    done
    echo "$line (none: $base req/s)"
done | tee "$WORK/rounds.txt"

python3 - "$WORK/rounds.txt" <<'PY'
import statistics, sys
ratios = {}
for line in open(sys.argv[1]):
    for field in line.split(":", 1)[1].split("(")[0].split():
        name, value = field.split("=")
        ratios.setdefault(name, []).append(float(value))
print("median ratio to none over the rounds:")
for name, values in ratios.items():
    print(f"  {name:24} {statistics.median(values):.2f}x")
PY
