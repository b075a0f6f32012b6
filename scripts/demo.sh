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
#
# Installs haproxy and memcached (or redis-server) with apt-get when they are missing.
# Every process it starts is stopped when it exits, also on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

tier=memcached
case "${1:-}" in
    --redis) tier=redis ;;
    "") ;;
    *) echo "usage: scripts/demo.sh [--redis]" >&2; exit 2 ;;
esac

base=${DEMO_PORT_BASE:-18000}
lb_port=$((base + 80))
app_ports=($((base + 81)) $((base + 82)))
routes=(a1 a2)
mc_ports=($((base + 91)) $((base + 92)) $((base + 93)))
if [ "$tier" = redis ]; then
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

cleanup() {
    trap - EXIT INT TERM
    for name in "${!pids[@]}"; do stop "$name"; done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'echo; echo "interrupted: stopping everything"; exit 130' INT TERM

install_missing() {
    local missing=()
    if [ "$tier" = redis ]; then
        command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
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

start_app() { # index
    local i=$1
    "$shop" --listen "127.0.0.1:${app_ports[$i]}" --route "${routes[$i]}" --"$tier" "$nodes" \
        >"$work/${routes[$i]}.log" 2>&1 &
    pids[${routes[$i]}]=$!
    wait_for "http://127.0.0.1:${app_ports[$i]}/healthz"
}

install_missing

say "building the shop example (release)"
cargo build --release --example shop --quiet
shop="${CARGO_TARGET_DIR:-target}/release/examples/shop"

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
