#!/usr/bin/env bash
# The cost of replicated Redis deployments under Tandem, end to end over HTTP: one
# Redis server against a Sentinel group (a master, 2 replicas, 3 Sentinels) and a
# Cluster (3 masters, a replica each), each one Tandem node, in sticky and
# non-sticky mode, read-only and with 20% writes, and with the durable setting (each
# write waits for 1 replica acknowledgement, WAIT) on the Sentinel group and the
# Cluster; all as ratios to the same app without sessions, measured in one run, and
# the cost of WAIT per write. The app is benches/http's (`bench-http-app`), driven
# by wrk as in scripts/bench-http.sh.
#
#   scripts/bench-redis-ha.sh            full run: 10K live sessions, 3 rounds of 4 s
#                                        per variant and workload (about 8 minutes on
#                                        2 cores)
#   scripts/bench-redis-ha.sh --quick    smoke test: 1K sessions, 1 round of 2 s (about
#                                        2 minutes)
#
# Options:
#   --quick              the smoke test above
#   --duration SECS      length of each measured run
#   --rounds N           measured runs per variant and workload, interleaved: round 1
#                        runs every workload of every variant, then round 2, ... Ratios
#                        are taken within a round and reported as the median over the
#                        rounds, so that a slow spell of the machine hits every variant
#                        alike
#   --sessions N         live sessions per variant
#   --out DIR            where raw figures and logs go (default bench-redis-ha/<time>
#                        in $CARGO_TARGET_DIR, or target/ without it)
# Needs root or sudo to install wrk and redis-server when they are missing.
#
# Variants: `none` (no sessions: the baseline), then `<mode>-<deployment>[-wait1]`
# with mode sticky or nonsticky (bench-http-app's tandem-sticky-redis and
# tandem-nonsticky-redis) and deployment single, sentinel or cluster; `-wait1` adds
# `--wait-replicas 1`. Each variant's app is started and its sessions created
# (POST /session) first; then in each round, for each workload (read-only, 20%
# writes), each variant gets a wrk warm-up and a measured run (32 connections, 2
# threads) recording requests/s, p50/p99 latency and the CPU time of the app and of
# the deployment's processes. Tables (markdown) go to stdout and OUT/tables.md, raw
# figures to OUT/results.tsv, logs beside them.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
DURATION=""
ROUNDS=""
SESSIONS=""
OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1; shift ;;
        --duration) DURATION="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --sessions) SESSIONS="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        -h|--help) sed -n '2,38p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
if [ "$QUICK" = 1 ]; then
    DURATION="${DURATION:-2}"; ROUNDS="${ROUNDS:-1}"; WARMUP=1; SESSIONS="${SESSIONS:-1000}"
else
    DURATION="${DURATION:-4}"; ROUNDS="${ROUNDS:-3}"; WARMUP=2; SESSIONS="${SESSIONS:-10000}"
fi
case "$ROUNDS" in ''|*[!0-9]*|0) echo "--rounds must be a positive number" >&2; exit 2 ;; esac
case "$SESSIONS" in ''|*[!0-9]*|0) echo "--sessions must be a positive number" >&2; exit 2 ;; esac
CONNECTIONS=32
THREADS=2
WORKLOADS="0 20"
OUT="${OUT:-${CARGO_TARGET_DIR:-target}/bench-redis-ha/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

install_missing() {
    local missing=()
    command -v wrk >/dev/null 2>&1 || missing+=(wrk)
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
    [ ${#missing[@]} -eq 0 ] && return
    echo "installing ${missing[*]} with apt-get" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
        $sudo apt-get update -q >/dev/null
        $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    }
}
install_missing

echo "== building benches/http (release)" >&2
cargo build --release --locked -p tandem-bench-http --bin bench-http-app >&2
APP="${CARGO_TARGET_DIR:-target}/release/bench-http-app"

# free_port, wait_port; start_redis_server, start_sentinel_group, start_redis_cluster
# shellcheck source=benches/http/ports.sh
source benches/http/ports.sh
# shellcheck source=scripts/redis-deployments.sh
source scripts/redis-deployments.sh

APP_PIDS=()
cleanup() {
    for pid in "${APP_PIDS[@]}" "${REDIS_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

echo "== starting the deployments: one server, a Sentinel group (master, 2 replicas, 3 Sentinels), a Cluster (3 masters, 1 replica each)" >&2
mkdir -p "$OUT/redis"
start_redis_server "$OUT/redis"
start_sentinel_group "$OUT/redis" 2 3
start_redis_cluster "$OUT/redis" 3 1
declare -A URL REMOTE
URL[single]=$SERVER_URL
URL[sentinel]=$SENTINEL_URL
URL[cluster]=$CLUSTER_URL
REMOTE[single]="${SERVER_PIDS[*]}"
REMOTE[sentinel]="${SENTINEL_PIDS[*]}"
REMOTE[cluster]="${CLUSTER_PIDS[*]}"
echo "   single   ${URL[single]}" >&2
echo "   sentinel ${URL[sentinel]}" >&2
echo "   cluster  ${URL[cluster]}" >&2

VARIANTS="none"
for deployment in single sentinel cluster; do
    for mode in sticky nonsticky; do VARIANTS="$VARIANTS $mode-$deployment"; done
done
for deployment in sentinel cluster; do
    for mode in sticky nonsticky; do VARIANTS="$VARIANTS $mode-$deployment-wait1"; done
done

# CPU time (user + system) of processes in clock ticks, summed.
cpu_ticks() {
    local total=0 pid
    for pid in "$@"; do
        total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
    done
    echo "$total"
}

declare -A APP_PID APP_PORT DEPLOYMENT
start_app() { # name
    local name=$1 port args=()
    port=$(free_port)
    if [ "$name" = none ]; then
        args=(--variant none)
    else
        local mode=${name%%-*} rest=${name#*-}
        local deployment=${rest%%-*}
        DEPLOYMENT[$name]=$deployment
        args=(--variant "tandem-$mode-redis" --redis "${URL[$deployment]}")
        [[ "$name" != *-wait1 ]] || args+=(--wait-replicas 1)
    fi
    "$APP" serve "${args[@]}" --listen "127.0.0.1:$port" >"$OUT/app-$name.log" 2>&1 &
    APP_PID[$name]=$!
    APP_PORT[$name]=$port
    APP_PIDS+=("$!")
    wait_port "$port"
}

RESULTS="$OUT/results.tsv"
printf 'variant\tdeployment\tworkload\tround\trps\tp50_us\tp99_us\tstatus_errors\tsocket_errors\trequests\tapp_cpu_ticks\tremote_cpu_ticks\n' >"$RESULTS"
{
    echo -e "meta\tclk_tck\t$(getconf CLK_TCK)"
    echo -e "meta\tduration\t$DURATION"
    echo -e "meta\trounds\t$ROUNDS"
    echo -e "meta\tsessions\t$SESSIONS"
    echo -e "meta\tconnections\t$CONNECTIONS"
    echo -e "meta\tthreads\t$THREADS"
    echo -e "meta\tcpus\t$(nproc)"
    echo -e "meta\tcpu_model\t$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
    echo -e "meta\tredis\t$(redis-server --version)"
    echo -e "meta\twrk\t$(wrk -v 2>&1 | head -1)"
    echo -e "meta\trustc\t$(rustc -V)"
} >"$OUT/meta.tsv"

run_wrk() { # name workload round
    local name=$1 workload=$2 round=$3 port=${APP_PORT[$1]} pid=${APP_PID[$1]}
    local deployment=${DEPLOYMENT[$1]:-}
    local remote=()
    [ -z "$deployment" ] || read -ra remote <<<"${REMOTE[$deployment]}"
    local cookies="$OUT/cookies-$name.txt" log="$OUT/wrk-$name-$workload-r$round.log"
    local warmup=$WARMUP
    [ "$round" = 1 ] || warmup=1
    COOKIES="$cookies" WRITE_PCT="$workload" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${warmup}s" \
        -s benches/http/wrk/sessions.lua "http://127.0.0.1:$port/" >/dev/null 2>&1
    sleep 0.3
    local app0 app1 remote0=0 remote1=0
    app0=$(cpu_ticks "$pid")
    [ ${#remote[@]} -eq 0 ] || remote0=$(cpu_ticks "${remote[@]}")
    COOKIES="$cookies" WRITE_PCT="$workload" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" \
        --latency -s benches/http/wrk/sessions.lua "http://127.0.0.1:$port/" >"$log" 2>&1
    app1=$(cpu_ticks "$pid")
    [ ${#remote[@]} -eq 0 ] || remote1=$(cpu_ticks "${remote[@]}")
    local line
    line=$(grep '^RESULT' "$log") || { echo "wrk failed for $name: $(cat "$log")" >&2; return 1; }
    field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" ${line#RESULT }"; }
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$name" "${deployment:--}" "$workload" "$round" "$(field rps)" "$(field p50_us)" \
        "$(field p99_us)" "$(field status_errors)" "$(field socket_errors)" \
        "$(field requests)" "$((app1 - app0))" "$((remote1 - remote0))" >>"$RESULTS"
    printf '  round %s %-24s %3s%% writes  %9s req/s  p50 %6s us  p99 %7s us  non-2xx %s\n' \
        "$round" "$name" "$workload" "$(field rps)" "$(field p50_us)" "$(field p99_us)" \
        "$(field status_errors)" >&2
}

echo "== $SESSIONS live sessions per variant" >&2
for name in $VARIANTS; do
    start_app "$name"
    "$APP" populate --target "127.0.0.1:${APP_PORT[$name]}" --count "$SESSIONS" \
        --connections "$CONNECTIONS" --out "$OUT/cookies-$name.txt" >/dev/null
    echo "  $name: $SESSIONS sessions created" >&2
done
for round in $(seq 1 "$ROUNDS"); do
    for workload in $WORKLOADS; do
        for name in $VARIANTS; do
            run_wrk "$name" "$workload" "$round"
        done
    done
done

python3 benches/http/report_redis_ha.py "$OUT" | tee "$OUT/tables.md"
echo "raw figures and logs: $OUT" >&2
