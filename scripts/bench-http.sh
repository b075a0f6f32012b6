#!/usr/bin/env bash
# End-to-end HTTP benchmark, the cost per request of a session layer: the same axum
# app (benches/http) without sessions, with Tandem (sticky, non-sticky) and with
# tower-sessions (moka store, a memcached store, CachingSessionStore of the two),
# driven by wrk; or (--framework actix) the same handlers on actix-web without
# sessions, with Tandem and with actix-session. Checks the results against the
# performance targets.
#
#   scripts/bench-http.sh            full run: 1K and 100K live sessions, 3 rounds of
#                                    5 s per variant and workload
#   scripts/bench-http.sh --quick    smoke test: 1K sessions, 1 round of 3 s (a few minutes)
#   scripts/bench-http.sh --framework actix [--sessions "1000 100000"] [--rounds 3]
#                                    the same handlers on actix-web (2 workers for every
#                                    variant): none, Tandem sticky and non-sticky (on
#                                    memcached), actix-session over its RedisSessionStore
#                                    (on a local redis-server) and over its
#                                    CookieSessionStore; read-only and 20% writes; the
#                                    lost-update test for each; the targets against
#                                    actix-session's Redis store. Add --quick for a smoke run
#
# Options:
#   --quick                 the smoke test above
#   --duration SECS         length of each measured run
#   --rounds N              measured runs per variant and workload, interleaved: round
#                           1 runs every workload of every variant, then round 2, ...
#                           Ratios are taken within a round (the baseline measured
#                           minutes, not a quarter of an hour, apart) and reported as
#                           the median over the rounds, so that a slow spell of the
#                           shared machine hits every variant alike
#   --sessions "1000 100000"  live-session counts (a million fits this 24 GiB machine:
#                           --sessions 1000000 --variants "none tandem-sticky tandem-nonsticky"
#                           --workloads "0 20" --mem-sessions 1000000). Above
#                           200,000 sessions each wrk run walks a fresh random sample of
#                           200,000 of them
#   --workloads "0 20 100"  write percentages to run (default all three)
#   --mem-sessions N        sessions of the in-process memory measurement (default
#                           100000; 20000 with --quick)
#   --variants "none tandem-sticky ..."  which variants (default: all six; with
#                           --framework actix its five)
#   --framework axum|actix  the app's framework (default axum). actix: the variants
#                           none tandem-sticky tandem-nonsticky actix-session-redis
#                           actix-session-cookie, workloads "0 20", one redis-server,
#                           no in-process memory measurement
#   --actix-workers N       actix-web workers per app (default 2)
#   --memcached-idle N      idle memcached connections per node, for Tandem and the
#                           tower-sessions memcached store (default: Tandem's default, 64)
#   --read-exchanges N      Tandem's read exchanges per memcached node (default: Tandem's
#                           default); reads beyond them are pipelined together
#   --nodes N               memcached nodes (default 1). Tandem uses all of them (so
#                           non-sticky keeps its backup copy only with 2 or more); the
#                           tower-sessions memcached store uses the first
#   --redis                 also start one redis-server and add the Redis variants:
#                           tower-sessions with its published Redis store, and Tandem
#                           sticky and non-sticky on the same server (the remote
#                           tier's CPU column then counts memcached and Redis)
#   --out DIR               where raw figures and logs go (default bench-http/<time> in
#                           $CARGO_TARGET_DIR, or target/ without it)
# Needs root or sudo to install wrk, memcached and redis-server when they are missing.
#
# For each live-session count: every variant's app is started and its sessions created
# (POST /session), then in each round, for each workload (read-only, 20% writes, 100%
# writes), each variant gets a wrk warm-up and a measured run (32 connections, 2
# threads). Around the
# measured run it records requests/s, p50/p99 latency, memcached `stats` deltas and the
# CPU time of the app and of memcached. Then the lost-update test (32 clients
# incrementing one counter of one session) and the local memory per session
# (bench-http-mem, 100K sessions; axum only). Tables (markdown) go to stdout and to
# OUT/tables.md; raw figures to OUT/results.tsv, logs beside them.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
DURATION=""
ROUNDS=""
SESSIONS=""
VARIANTS="none tandem-sticky tandem-nonsticky tower-sessions-moka tower-sessions-memcached tower-sessions-caching"
OUT=""
MEMCACHED_IDLE=""
READ_EXCHANGES=""
NODES=1
REDIS=0
VARIANTS_GIVEN=0
WORKLOADS=""
FRAMEWORK=axum
ACTIX_WORKERS=2
MEM_SESSIONS_GIVEN=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1; shift ;;
        --duration) DURATION="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --sessions) SESSIONS="$2"; shift 2 ;;
        --variants) VARIANTS="$2"; VARIANTS_GIVEN=1; shift 2 ;;
        --redis) REDIS=1; shift ;;
        --out) OUT="$2"; shift 2 ;;
        --memcached-idle) MEMCACHED_IDLE="$2"; shift 2 ;;
        --read-exchanges) READ_EXCHANGES="$2"; shift 2 ;;
        --nodes) NODES="$2"; shift 2 ;;
        --workloads) WORKLOADS="$2"; shift 2 ;;
        --framework) FRAMEWORK="$2"; shift 2 ;;
        --actix-workers) ACTIX_WORKERS="$2"; shift 2 ;;
        --mem-sessions) MEM_SESSIONS_GIVEN="$2"; shift 2 ;;
        -h|--help) sed -n '2,68p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
if [ "$QUICK" = 1 ]; then
    DURATION="${DURATION:-3}"; ROUNDS="${ROUNDS:-1}"; WARMUP=1; SESSIONS="${SESSIONS:-1000}"
    RACE_REQUESTS=30; MEM_SESSIONS=20000
else
    DURATION="${DURATION:-5}"; ROUNDS="${ROUNDS:-3}"; WARMUP=3; SESSIONS="${SESSIONS:-1000 100000}"
    RACE_REQUESTS=100; MEM_SESSIONS=100000
fi
MEM_SESSIONS="${MEM_SESSIONS_GIVEN:-$MEM_SESSIONS}"
# The lost-update runs, variant:concurrency (the Redis ones are added with --redis).
RACES="tandem-sticky:merge tandem-sticky:lock tandem-nonsticky:merge tandem-nonsticky:lock tandem-nonsticky:none tower-sessions-moka:merge tower-sessions-memcached:merge tower-sessions-caching:merge"
FRAMEWORK_ARGS=()
case "$FRAMEWORK" in
    axum) WORKLOADS="${WORKLOADS:-0 20 100}" ;;
    actix)
        # actix-session's Redis store needs a redis-server; Tandem stays on memcached.
        REDIS=1
        [ "$VARIANTS_GIVEN" = 1 ] ||
            VARIANTS="none tandem-sticky tandem-nonsticky actix-session-redis actix-session-cookie"
        WORKLOADS="${WORKLOADS:-0 20}"
        RACES="tandem-sticky:merge tandem-sticky:lock tandem-nonsticky:merge tandem-nonsticky:lock actix-session-redis:merge actix-session-cookie:merge"
        FRAMEWORK_ARGS=(--framework actix --workers "$ACTIX_WORKERS")
        ;;
    *) echo "--framework is axum or actix" >&2; exit 2 ;;
esac
case "$ROUNDS" in ''|*[!0-9]*|0) echo "--rounds must be a positive number" >&2; exit 2 ;; esac
CONNECTIONS=32
THREADS=2
SAMPLE=200000
OUT="${OUT:-${CARGO_TARGET_DIR:-target}/bench-http/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

install_missing() {
    local missing=()
    command -v wrk >/dev/null 2>&1 || missing+=(wrk)
    command -v memcached >/dev/null 2>&1 || missing+=(memcached)
    if [ "$REDIS" = 1 ]; then
        command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    fi
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
cargo build --release --locked -p tandem-bench-http >&2
BIN="${CARGO_TARGET_DIR:-target}/release"
APP="$BIN/bench-http-app"
MEM="$BIN/bench-http-mem"

# free_port, wait_port
source benches/http/ports.sh

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

# One memcached per node; Tandem gets them all (n1,n2,...), the tower-sessions
# memcached store the first.
MC_PORTS=()
MC_PIDS=()
NODESPEC=""
for node in $(seq 1 "$NODES"); do
    port=$(free_port)
    memcached -l 127.0.0.1 -p "$port" -U 0 -m 4096 -t 2 -c 4096 -u "$(id -un)" \
        >"$OUT/memcached-n$node.log" 2>&1 &
    MC_PIDS+=("$!")
    PIDS+=("$!")
    MC_PORTS+=("$port")
    NODESPEC="${NODESPEC:+$NODESPEC,}n$node:127.0.0.1:$port"
    wait_port "$port"
done

# One Redis server for every Redis variant, without persistence (as memcached keeps
# nothing on disk either).
REDIS_URL=""
REMOTE_PIDS=("${MC_PIDS[@]}")
if [ "$REDIS" = 1 ]; then
    port=$(free_port)
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
        --daemonize no >"$OUT/redis.log" 2>&1 &
    PIDS+=("$!")
    REMOTE_PIDS+=("$!")
    REDIS_URL="redis://127.0.0.1:$port"
    REDIS_PORT=$port
    wait_port "$port"
    if [ "$FRAMEWORK" = axum ]; then
        REDIS_VARIANTS="tandem-sticky-redis tandem-nonsticky-redis tower-sessions-redis"
        [ "$VARIANTS_GIVEN" = 1 ] || VARIANTS="$VARIANTS $REDIS_VARIANTS"
        RACES="$RACES tandem-sticky-redis:lock tandem-nonsticky-redis:merge tandem-nonsticky-redis:lock tower-sessions-redis:merge"
    fi
fi

# Commands the Redis server has processed (0 without --redis). The query is itself one
# command, which `redis_delta` takes off.
redis_commands() {
    if [ "$REDIS" = 1 ]; then
        redis-cli -p "$REDIS_PORT" info stats | tr -d '\r' |
            awk -F: '$1 == "total_commands_processed" { print $2 }'
    else
        echo 0
    fi
}

# memcached's counters as `name value` lines, summed over the nodes.
mc_stats() {
    for port in "${MC_PORTS[@]}"; do
        exec 3<>"/dev/tcp/127.0.0.1/$port"
        printf 'stats\r\nquit\r\n' >&3
        tr -d '\r' <&3 | awk '$1 == "STAT" { print $2, $3 }'
        exec 3<&-
    done | awk '$2 ~ /^[0-9]+$/ { sum[$1] += $2 } END { for (key in sum) print key, sum[key] }'
}

# CPU time (user + system) of processes in clock ticks, summed.
cpu_ticks() {
    local total=0 pid
    for pid in "$@"; do
        total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
    done
    echo "$total"
}

rss_kib() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

declare -A APP_PID APP_PORT
start_app() { # name variant [concurrency]
    local name=$1 variant=$2 concurrency=${3:-merge}
    local port
    port=$(free_port)
    local idle=()
    [ -z "$MEMCACHED_IDLE" ] || idle=(--memcached-idle "$MEMCACHED_IDLE")
    [ -z "$READ_EXCHANGES" ] || idle+=(--read-exchanges "$READ_EXCHANGES")
    [ -z "$REDIS_URL" ] || idle+=(--redis "$REDIS_URL")
    "$APP" serve --variant "$variant" --listen "127.0.0.1:$port" --memcached "$NODESPEC" \
        --concurrency "$concurrency" "${idle[@]}" "${FRAMEWORK_ARGS[@]}" >"$OUT/app-$name.log" 2>&1 &
    APP_PID[$name]=$!
    APP_PORT[$name]=$port
    PIDS+=("$!")
    wait_port "$port"
}
stop_app() {
    local name=$1
    kill "${APP_PID[$name]}" 2>/dev/null || true
    wait "${APP_PID[$name]}" 2>/dev/null || true
}

RESULTS="$OUT/results.tsv"
printf 'kind\tsessions\tvariant\tworkload\trps\tp50_us\tp99_us\tstatus_errors\tsocket_errors\trequests\tget\tset\ttouch\tdelete\tcas\tconnections\tapp_cpu_ticks\tmc_cpu_ticks\tround\tredis_cmds\n' >"$RESULTS"
TICK_HZ=$(getconf CLK_TCK)
echo -e "meta\tclk_tck\t$TICK_HZ" >"$OUT/meta.tsv"
{
    echo -e "meta\tduration\t$DURATION"
    echo -e "meta\tframework\t$FRAMEWORK"
    [ "$FRAMEWORK" = axum ] || echo -e "meta\tactix_workers\t$ACTIX_WORKERS"
    echo -e "meta\trounds\t$ROUNDS"
    echo -e "meta\tmemcached_idle\t${MEMCACHED_IDLE:-64 (default)}"
    echo -e "meta\tread_exchanges\t${READ_EXCHANGES:-default}"
    echo -e "meta\tnodes\t$NODES"
    echo -e "meta\tconnections\t$CONNECTIONS"
    echo -e "meta\tthreads\t$THREADS"
    echo -e "meta\tcpus\t$(nproc)"
    echo -e "meta\tcpu_model\t$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
    echo -e "meta\tmemcached\t$(memcached -V)"
    [ "$REDIS" = 0 ] || echo -e "meta\tredis\t$(redis-server --version)"
    echo -e "meta\twrk\t$(wrk -v 2>&1 | head -1)"
    echo -e "meta\trustc\t$(rustc -V)"
} >>"$OUT/meta.tsv"

stat_value() { # file name
    awk -v key="$2" '$1 == key { print $2 }' "$1"
}

run_wrk() { # name sessions workload round
    local name=$1 sessions=$2 workload=$3 round=$4 port=${APP_PORT[$1]} pid=${APP_PID[$1]}
    local cookies="$OUT/cookies-$name-$sessions.txt" log="$OUT/wrk-$name-$sessions-$workload-r$round.log"
    # The first round warms each app up from cold; later rounds only need the
    # connections re-established.
    local warmup=$WARMUP
    [ "$round" = 1 ] || warmup=1
    # wrk formats each thread's requests up front, one thread after the other while
    # the first already sends: with a million cookies that took longer than the run,
    # and inflated requests/s. Above SAMPLE sessions each run walks a fresh random
    # sample of SAMPLE of them (a 5 s run sends fewer requests than that anyway).
    if [ "$sessions" -gt "$SAMPLE" ]; then
        shuf -n "$SAMPLE" "$cookies" >"$OUT/.sample"
        cookies="$OUT/.sample"
    fi
    COOKIES="$cookies" WRITE_PCT="$workload" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${warmup}s" \
        -s benches/http/wrk/sessions.lua "http://127.0.0.1:$port/" >/dev/null 2>&1
    sleep 0.5
    mc_stats >"$OUT/.before"
    local redis0
    redis0=$(redis_commands)
    local app0 mc0
    app0=$(cpu_ticks "$pid"); mc0=$(cpu_ticks "${REMOTE_PIDS[@]}")
    COOKIES="$cookies" WRITE_PCT="$workload" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" \
        --latency -s benches/http/wrk/sessions.lua "http://127.0.0.1:$port/" >"$log" 2>&1
    local app1 mc1
    app1=$(cpu_ticks "$pid"); mc1=$(cpu_ticks "${REMOTE_PIDS[@]}")
    sleep 0.3
    mc_stats >"$OUT/.after"
    local redis_cmds=0
    [ "$REDIS" = 0 ] || redis_cmds=$(( $(redis_commands) - redis0 - 1 ))
    local line
    line=$(grep '^RESULT' "$log") || { echo "wrk failed for $name: $(cat "$log")" >&2; return 1; }
    field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" ${line#RESULT }"; }
    delta() { echo $(( $(stat_value "$OUT/.after" "$1") - $(stat_value "$OUT/.before" "$1") )); }
    local deletes=$(( $(delta delete_hits) + $(delta delete_misses) ))
    local cas=$(( $(delta cas_hits) + $(delta cas_badval) + $(delta cas_misses) ))
    printf 'http\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$sessions" "$name" "$workload" "$(field rps)" "$(field p50_us)" "$(field p99_us)" \
        "$(field status_errors)" "$(field socket_errors)" "$(field requests)" \
        "$(delta cmd_get)" "$(delta cmd_set)" "$(delta cmd_touch)" "$deletes" "$cas" \
        "$(delta total_connections)" "$((app1 - app0))" "$((mc1 - mc0))" "$round" \
        "$redis_cmds" >>"$RESULTS"
    printf '  round %s %-26s %5s%% writes  %10s req/s  p50 %6s us  p99 %7s us  non-2xx %s\n' \
        "$round" "$name" "$workload" "$(field rps)" "$(field p50_us)" "$(field p99_us)" "$(field status_errors)" >&2
}

# Tandem's manager counters (the others answer {}), kept in the logs.
curl_stats() {
    local port=$1
    exec 4<>"/dev/tcp/127.0.0.1/$port"
    printf 'GET /admin/stats HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n' >&4
    tail -n 1 <&4
    exec 4<&-
}

for sessions in $SESSIONS; do
    echo "== $sessions live sessions" >&2
    for variant in $VARIANTS; do
        start_app "$variant" "$variant"
        pid=${APP_PID[$variant]}
        rss0=$(rss_kib "$pid")
        mc_stats >"$OUT/.before"
        started=$(date +%s.%N)
        "$APP" populate --target "127.0.0.1:${APP_PORT[$variant]}" --count "$sessions" \
            --connections "$CONNECTIONS" --out "$OUT/cookies-$variant-$sessions.txt" >/dev/null
        took=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
        sleep 1
        rss1=$(rss_kib "$pid")
        mc_stats >"$OUT/.after"
        mc_bytes=$(( $(stat_value "$OUT/.after" bytes) - $(stat_value "$OUT/.before" bytes) ))
        mc_items=$(( $(stat_value "$OUT/.after" curr_items) - $(stat_value "$OUT/.before" curr_items) ))
        evictions=$(stat_value "$OUT/.after" evictions)
        printf 'rss\t%s\t%s\t-\t%s\t%s\n' "$sessions" "$variant" "$rss0" "$rss1" >>"$OUT/rss.tsv"
        printf 'populate\t%s\t%s\t%s\t%s\t%s\t%s\n' "$sessions" "$variant" "$took" "$mc_bytes" \
            "$mc_items" "$evictions" >>"$OUT/populate.tsv"
        echo "  $variant: $sessions sessions created in ${took} s (RSS ${rss0} -> ${rss1} KiB;" \
            "memcached +$mc_bytes bytes in +$mc_items items, $evictions evictions in all)" >&2
    done
    for round in $(seq 1 "$ROUNDS"); do
        for workload in $WORKLOADS; do
            for variant in $VARIANTS; do
                run_wrk "$variant" "$sessions" "$workload" "$round"
                echo -e "$sessions\t$variant\t$workload\t$round\t$(curl_stats "${APP_PORT[$variant]}")" >>"$OUT/tandem-stats.tsv"
            done
        done
    done
    for variant in $VARIANTS; do stop_app "$variant"; done
done

echo "== lost updates: 32 clients x $RACE_REQUESTS increments of one counter" >&2
for race in $RACES; do
    variant=${race%%:*}
    concurrency=${race##*:}
    name="race-$variant-$concurrency"
    start_app "$name" "$variant" "$concurrency"
    line=$("$APP" race --target "127.0.0.1:${APP_PORT[$name]}" --clients 32 --requests "$RACE_REQUESTS")
    stop_app "$name"
    echo -e "race\t$variant\t$concurrency\t$line" >>"$OUT/race.tsv"
    echo "  $variant ($concurrency): ${line#RACE }" >&2
done

if [ "$FRAMEWORK" = axum ]; then
    echo "== local memory per session ($MEM_SESSIONS sessions, in process)" >&2
    for variant in tandem-sticky tower-sessions-moka tower-sessions-caching tandem-nonsticky tower-sessions-memcached; do
        # Only the variants this run measures (tower-sessions' moka store holds about 11 KB
        # per session: a million of them would need 11 GB).
        case " $VARIANTS " in *" $variant "*) ;; *) continue ;; esac
        line=$("$MEM" --variant "$variant" --sessions "$MEM_SESSIONS" --memcached "$NODESPEC")
        echo -e "mem\t$line" >>"$OUT/mem.tsv"
        echo "  ${line#MEM }" >&2
    done

    echo "== moka's own heap per entry (the floor of the local tier)" >&2
    "$BIN/bench-moka-floor" | while read -r line; do
        echo -e "moka\t$line" >>"$OUT/moka.tsv"
        echo "  ${line#MOKA }" >&2
    done
fi

python3 benches/http/report.py "$OUT" | tee "$OUT/tables.md"
echo "raw figures and logs: $OUT" >&2
