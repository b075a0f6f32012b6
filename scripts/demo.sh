#!/usr/bin/env bash
# Tandem in sticky mode, end to end: three memcached nodes, two shop servers (routes a1
# and a2) behind haproxy, which keeps each session on the server named by the route at
# the end of its cookie (`<random>-<node>.<route>`). The demo fills a cart, kills the
# app server serving it, then kills the memcached node holding its backup, and shows
# the cart after each failure.
#
#   scripts/demo.sh              (DEMO_PORT_BASE=18000 by default: ports 18080-18093)
#   scripts/demo.sh --redis      the same with three Redis servers (r1, r2, r3) as the
#                                remote tier instead of memcached
#   scripts/demo.sh --redis-cluster [--wait-replicas N]
#                                a local Redis Cluster (3 masters, 3 replicas, on free
#                                ports) as one node, under two non-sticky shop servers
#                                behind haproxy: fills carts, kills a master under
#                                traffic, waits for its replica to take over and checks
#                                every cart (exit 1 if one was lost). --wait-replicas N
#                                passes the durable setting to the shops: each write
#                                waits for N replica acknowledgements
#
# Installs haproxy and memcached (or redis-server) with apt-get when they are missing.
# Every process it starts is stopped when it exits, also on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    echo "usage: scripts/demo.sh [--redis | --redis-cluster [--wait-replicas N]]" >&2
    exit 2
}
tier=memcached
wait_replicas=""
while [ $# -gt 0 ]; do
    case "$1" in
        --redis) tier=redis ;;
        --redis-cluster) tier=cluster ;;
        --wait-replicas)
            [ $# -ge 2 ] || usage
            wait_replicas=$2
            shift
            ;;
        *) usage ;;
    esac
    shift
done
if [ -n "$wait_replicas" ]; then
    [ "$tier" = cluster ] || { echo "--wait-replicas goes with --redis-cluster" >&2; usage; }
    case "$wait_replicas" in ''|*[!0-9]*) usage ;; esac
fi

base=${DEMO_PORT_BASE:-18000}
lb_port=$((base + 80))
app_ports=($((base + 81)) $((base + 82)))
routes=(a1 a2)
mc_ports=($((base + 91)) $((base + 92)) $((base + 93)))
if [ "$tier" = cluster ]; then
    ids=()
    nodes="" # the cluster's URL, once it runs
elif [ "$tier" = redis ]; then
    ids=(r1 r2 r3)
    nodes="r1=redis://127.0.0.1:${mc_ports[0]},r2=redis://127.0.0.1:${mc_ports[1]},r3=redis://127.0.0.1:${mc_ports[2]}"
else
    ids=(n1 n2 n3)
    nodes="n1:127.0.0.1:${mc_ports[0]},n2:127.0.0.1:${mc_ports[1]},n3:127.0.0.1:${mc_ports[2]}"
fi

work=$(mktemp -d)
declare -A pids=() # name -> pid of every process this script started

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
note() { printf '   %s\n' "$*"; }

stop() {
    local name=$1 pid=${pids[$1]:-}
    [ -n "$pid" ] || return 0
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset "pids[$name]"
}

REDIS_PIDS=() # the cluster's servers (--redis-cluster)
cleanup() {
    trap - EXIT INT TERM
    for name in "${!pids[@]}"; do stop "$name"; done
    for pid in "${REDIS_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${REDIS_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'echo; echo "interrupted: stopping everything"; exit 130' INT TERM

install_missing() {
    local missing=()
    if [ "$tier" = redis ] || [ "$tier" = cluster ]; then
        command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
        command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
    else
        command -v memcached >/dev/null 2>&1 || missing+=(memcached)
    fi
    command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing ${missing[*]} with apt-get"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
        $sudo apt-get update -q >/dev/null
        $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    }
}

wait_for() { # url
    for _ in $(seq 100); do
        curl -fs -o /dev/null "$1" && return 0
        sleep 0.1
    done
    echo "no answer from $1" >&2
    return 1
}

# Requests through haproxy, with a cookie jar like a browser's.
jar="$work/cookies"
client() { # method path
    curl -fsS -b "$jar" -c "$jar" -X "$1" "http://127.0.0.1:$lb_port$2"
}
cookie() { awk '$6 == "tandem_session" { print $7 }' "$jar" 2>/dev/null | tail -1; }
node_of() { sed -E 's/^[^-]*-([^.]*).*/\1/' <<<"$1"; } # the node in a session id
field() { # json key: a string or null value of the shop's JSON
    sed -E "s/.*\"$2\":(\"([^\"]*)\"|null).*/\2/" <<<"$1"
}

expect_cart() { # items json
    grep -q "\"items\":{$1}" <<<"$2" || {
        echo "FAILED: the cart should hold {$1}: $2" >&2
        exit 1
    }
}

start_app() { # index [more shop options]
    local i=$1
    shift
    local tier_flag=--$tier
    [ "$tier" != cluster ] || tier_flag=--redis
    "$shop" --listen "127.0.0.1:${app_ports[$i]}" --route "${routes[$i]}" "$tier_flag" "$nodes" \
        "$@" >"$work/${routes[$i]}.log" 2>&1 &
    pids[${routes[$i]}]=$!
    wait_for "http://127.0.0.1:${app_ports[$i]}/healthz"
}

# --redis-cluster: the shops over a Redis Cluster; a master dies under traffic.
cluster_demo() {
    local carts=20 clients=2 i port
    # shellcheck source=scripts/redis-deployments.sh
    source scripts/redis-deployments.sh
    # A master that does not answer for 2 s is failed over (the default is 15 s).
    REDIS_NODE_TIMEOUT_MS=2000
    say "starting a Redis Cluster: 3 masters with a replica each, on free ports"
    mkdir -p "$work/cluster"
    start_redis_cluster "$work/cluster" 3 1
    nodes=$CLUSTER_URL
    for port in "${CLUSTER_PORTS[@]}"; do
        note "127.0.0.1:$port $(redis_role "$port")"
    done
    local durable=() described="writes do not wait for replicas"
    if [ -n "$wait_replicas" ] && [ "$wait_replicas" != 0 ]; then
        durable=(--wait-replicas "$wait_replicas")
        described="durable: each write waits for $wait_replicas replica acknowledgement(s)"
    fi
    say "starting shop servers a1 and a2, non-sticky (every cart lives in the cluster; $described)"
    note "--redis $nodes"
    start_app 0 --mode non-sticky "${durable[@]}"
    start_app 1 --mode non-sticky "${durable[@]}"
    cat >"$work/haproxy.cfg" <<CFG
defaults
    mode http
    timeout connect 1s
    timeout client 10s
    timeout server 10s

frontend shop
    bind 127.0.0.1:$lb_port
    default_backend shops

backend shops
    balance roundrobin
    server a1 127.0.0.1:${app_ports[0]}
    server a2 127.0.0.1:${app_ports[1]}
CFG
    haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
    pids[haproxy]=$!
    wait_for "http://127.0.0.1:$lb_port/healthz"
    note "haproxy on port $lb_port, round robin: any server serves any cart"

    # One cookie jar per cart; reads use it without changing it.
    shop_call() { # method path jar [write the jar]
        local jar_args=(-b "$3")
        [ -z "${4:-}" ] || jar_args+=(-c "$3")
        curl -s -o "$work/last" -w '%{http_code}' --max-time 5 "${jar_args[@]}" \
            -X "$1" "http://127.0.0.1:$lb_port$2" || true
    }
    expected() { echo "\"items\":{\"apple\":$1,\"pear\":$(($1 % 3 + 1))}"; }

    say "1. filling $carts carts"
    for i in $(seq 1 "$carts"); do
        local status
        status=$(shop_call POST "/cart/items?sku=apple&qty=$i" "$work/cart-$i" write)
        [ "$status" = 200 ] || { echo "FAILED: filling cart $i answered $status" >&2; exit 1; }
        status=$(shop_call POST "/cart/items?sku=pear&qty=$((i % 3 + 1))" "$work/cart-$i" write)
        [ "$status" = 200 ] || { echo "FAILED: filling cart $i answered $status" >&2; exit 1; }
    done
    local first
    first=$(awk '$6 == "tandem_session" { print $7 }' "$work/cart-1")
    shop_call GET /cart "$work/cart-1" >/dev/null
    note "before: cart 1 = $(cat "$work/last")"
    note "before: $carts carts filled"
    # The master that holds cart 1, and its replica.
    local victim="" heir=""
    for port in "${CLUSTER_PORTS[@]}"; do
        [ "$(redis_role "$port")" = master ] || continue
        note "master 127.0.0.1:$port holds $(redis-cli -p "$port" dbsize | tr -d '\r') sessions"
        if redis-cli -p "$port" --scan --pattern "*${first%%-*}*" | grep -q .; then
            victim=$port
        fi
    done
    [ -n "$victim" ] || { echo "FAILED: no master holds cart 1" >&2; exit 1; }
    for port in "${CLUSTER_PORTS[@]}"; do
        if redis-cli -p "$port" info replication | tr -d '\r' | grep -q "^master_port:$victim\$"; then
            heir=$port
        fi
    done
    # Replication is asynchronous (without --wait-replicas): give it a moment.
    sleep 0.5

    say "2. traffic: $clients clients adding to carts of their own and reading the $carts carts"
    local stop_file="$work/stop-traffic"
    traffic() { # index
        local k=$1 n=0 status
        while [ ! -e "$stop_file" ]; do
            n=$((n + 1))
            status=$(shop_call POST "/cart/items?sku=tick&qty=1" "$work/traffic-$k" write)
            echo "write $status" >>"$work/traffic-$k.log"
            status=$(shop_call GET /cart "$work/cart-$((n % carts + 1))")
            echo "read $status" >>"$work/traffic-$k.log"
        done
    }
    for i in $(seq 1 "$clients"); do
        traffic "$i" &
        pids[traffic-$i]=$!
    done
    sleep 2

    say "3. killing master 127.0.0.1:$victim (it holds cart 1; its replica is 127.0.0.1:$heir)"
    { kill -9 "${REDIS_PID_OF[$victim]}" && wait "${REDIS_PID_OF[$victim]}"; } 2>/dev/null || true
    local killed_at=$SECONDS
    say "4. waiting for the failover"
    for _ in $(seq 1 300); do
        if [ "$(redis_role "$heir")" = master ]; then break; fi
        sleep 0.1
    done
    [ "$(redis_role "$heir")" = master ] ||
        { echo "FAILED: 127.0.0.1:$heir did not take over" >&2; exit 1; }
    note "127.0.0.1:$heir is master after $((SECONDS - killed_at)) s"
    redis_wait_for "$heir" '^cluster_state:ok$' cluster info
    for _ in $(seq 1 100); do
        if [ "$(shop_call GET /cart "$work/cart-1")" = 200 ]; then break; fi
        sleep 0.1
    done
    note "the shops serve cart 1 again $((SECONDS - killed_at)) s after the kill"
    sleep 2
    touch "$stop_file"
    for i in $(seq 1 "$clients"); do
        wait "${pids[traffic-$i]}" 2>/dev/null || true
        unset "pids[traffic-$i]"
    done

    say "5. after the failover (traffic stopped)"
    # A read answers 503 while the shops count the cluster down (they probe it every
    # second): each cart is read until it is served, for up to 15 s.
    read_cart() { # jar: the cart's JSON in $work/last; fails if never served
        local status
        for _ in $(seq 1 75); do
            status=$(shop_call GET /cart "$1")
            [ "$status" != 200 ] || return 0
            sleep 0.2
        done
        return 1
    }
    local intact=0 lost=() failed=0
    for i in $(seq 1 "$carts"); do
        if read_cart "$work/cart-$i" && grep -q "$(expected "$i")" "$work/last"; then
            intact=$((intact + 1))
        else
            lost+=("cart $i: $(cat "$work/last")")
        fi
    done
    read_cart "$work/cart-1" || true
    note "after:  cart 1 = $(cat "$work/last")"
    note "after:  $intact of $carts carts intact"
    local lost_writes=0
    for i in $(seq 1 "$clients"); do
        local acked failed_writes reads_failed ticks
        acked=$(grep -c '^write 200$' "$work/traffic-$i.log" || true)
        failed_writes=$(grep -c '^write [^2]' "$work/traffic-$i.log" || true)
        reads_failed=$(grep -c '^read [^2]' "$work/traffic-$i.log" || true)
        if ! read_cart "$work/traffic-$i"; then
            echo "FAILED: client $i's cart is not served: $(cat "$work/last")" >&2
            failed=1
            continue
        fi
        ticks=$(sed -nE 's/.*"tick":([0-9]+).*/\1/p' "$work/last")
        ticks=${ticks:-0}
        note "client $i: $acked writes acknowledged, $failed_writes failed (503 or no answer), $reads_failed reads failed; its cart counts $ticks"
        if [ "$ticks" -lt "$acked" ]; then lost_writes=$((lost_writes + acked - ticks)); fi
    done
    note "nodes:  $(curl -fsS "http://127.0.0.1:$lb_port/admin/nodes")"
    if [ "$lost_writes" -gt 0 ]; then
        if [ ${#durable[@]} -gt 0 ]; then
            echo "FAILED: $lost_writes acknowledged writes lost despite --wait-replicas" >&2
            failed=1
        else
            note "$lost_writes acknowledged writes were lost: replication is asynchronous;"
            note "--wait-replicas 1 acknowledges only what a replica has"
        fi
    else
        note "no acknowledged write was lost"
    fi

    say "6. restarting the old master: it rejoins as a replica of 127.0.0.1:$heir"
    redis_restart "$victim"
    redis_wait_for "$victim" '^master_link_status:up$' info replication
    note "127.0.0.1:$victim is a $(redis_role "$victim" | sed 's/^slave$/replica/') again"
    local status
    status=$(shop_call POST "/cart/items?sku=fig&qty=1" "$work/cart-1" write)
    note "add fig to cart 1: $status $(cat "$work/last")"
    if [ "$status" != 200 ]; then failed=1; fi

    if [ ${#lost[@]} -gt 0 ]; then
        printf 'FAILED: lost %s\n' "${lost[@]}" >&2
        failed=1
    fi
    if [ "$failed" = 0 ]; then
        say "every cart survived the loss of a master; stopping everything"
    fi
    exit "$failed"
}

install_missing

say "building the shop example (release)"
cargo build --release --example shop --quiet
shop="${CARGO_TARGET_DIR:-target}/release/examples/shop"

if [ "$tier" = cluster ]; then
    cluster_demo # exits: 0 when every cart survived
fi

say "starting $tier ${ids[*]} on ports ${mc_ports[*]}"
for i in 0 1 2; do
    if [ "$tier" = redis ]; then
        redis-server --port "${mc_ports[$i]}" --bind 127.0.0.1 --save "" --appendonly no \
            --dir "$work" >"$work/${ids[$i]}.log" 2>&1 &
    else
        memcached -l 127.0.0.1 -p "${mc_ports[$i]}" -U 0 -m 64 -u "$(id -un)" &
    fi
    pids[${ids[$i]}]=$!
done
for i in 0 1 2; do
    for _ in $(seq 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/${mc_ports[$i]}") 2>/dev/null && break
        sleep 0.1
    done
done

say "starting shop servers a1 (port ${app_ports[0]}) and a2 (port ${app_ports[1]}), sticky mode"
start_app 0
start_app 1

say "starting haproxy on port $lb_port: sticky by the route in the session cookie"
cat >"$work/haproxy.cfg" <<EOF
defaults
    mode http
    timeout connect 1s
    timeout client 10s
    timeout server 10s
    retries 2
    option redispatch

frontend shop
    bind 127.0.0.1:$lb_port
    default_backend shops

backend shops
    balance roundrobin
    option httpchk GET /healthz
    # tandem_session=<random>-<node>.<route>: the route picks the server while it is up.
    use-server a1 if { req.cook(tandem_session),field(2,.) -m str a1 }
    use-server a2 if { req.cook(tandem_session),field(2,.) -m str a2 }
    server a1 127.0.0.1:${app_ports[0]} check inter 300 fall 1 rise 2
    server a2 127.0.0.1:${app_ports[1]} check inter 300 fall 1 rise 2
EOF
haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
pids[haproxy]=$!
wait_for "http://127.0.0.1:$lb_port/healthz"

say "1. filling a cart"
client POST "/cart/items?sku=apple&qty=3" >/dev/null
client POST "/cart/items?sku=pear&qty=2" >/dev/null
cart=$(client POST "/cart/items?sku=plum&qty=1")
note "cart:    $cart"
session=$(cookie)
serving=$(field "$cart" served_by)
note "cookie:  tandem_session=$session"
note "served by app server $serving; its backup lives on $tier node $(node_of "$session")"
cart=$(client GET /cart)
note "again:   served by $(field "$cart" served_by) (stickiness by route)"

say "2. killing app server $serving (the one serving the session)"
stop "$serving"
sleep 1 # haproxy's health check notices
cart=$(client GET /cart)
note "cart:    $cart"
now=$(field "$cart" served_by)
note "served by $now, which took the session over from $tier; new cookie route: $(cookie)"
expect_cart '"apple":3,"pear":2,"plum":1' "$cart"

session=$(cookie)
node=$(node_of "$session")
say "3. killing $tier node $node (it holds the session's backup)"
stop "$node"
cart=$(client GET /cart)
note "cart:    $cart"
note "read from $now's local tier: no $tier call for a locally held session"
cart=$(client POST "/cart/items?sku=fig&qty=1")
note "add fig: $cart"
note "(the backup to $node fails, and $node is marked down)"
sleep 0.5
cart=$(client GET /cart)
note "cart:    $cart"
note "cookie:  tandem_session=$(cookie)"
note "the session moved to live node $(node_of "$(cookie)") under a new id (counted as relocated)"
expect_cart '"apple":3,"fig":1,"pear":2,"plum":1' "$cart"
note "nodes:   $(curl -fsS "http://127.0.0.1:$lb_port/admin/nodes")"

say "4. restarting $serving, then killing $now: the cart now comes from its new $tier node"
for i in 0 1; do
    if [ "${routes[$i]}" = "$serving" ]; then start_app "$i"; fi
done
sleep 1
stop "$now"
sleep 1
cart=$(client GET /cart)
note "cart:    $cart"
expect_cart '"apple":3,"fig":1,"pear":2,"plum":1' "$cart"
note "served by $(field "$cart" served_by); counters there:"
curl -fsS "http://127.0.0.1:$lb_port/metrics" |
    grep -E '^tandem_(sessions_created|loaded_remote|taken_over|relocated)_total' | sed 's/^/     /'

say "the cart survived an app server and a $tier node failing; stopping everything"
