# shellcheck shell=bash disable=SC2034 # it sets variables for the scripts that source it
# Shell helpers that start local Redis deployments on free ports of 127.0.0.1, for
# scripts/bench-redis-ha.sh and scripts/demo.sh --redis-cluster (sourced, not run).
# Every process started is appended to REDIS_PIDS; the caller stops them (and
# removes the directories it gave) when it exits. Needs redis-server, redis-cli and
# python3.
#
#   start_redis_server DIR            one server without persistence:
#                                     sets SERVER_URL, SERVER_PIDS
#   start_sentinel_group DIR R S      a master, R replicas, S Sentinels (service
#                                     `tandem`): sets SENTINEL_URL, SENTINEL_PIDS,
#                                     SENTINEL_PORTS (servers), SENTINEL_SENTINEL_PORTS
#   start_redis_cluster DIR M R       M masters with R replicas each, created with
#                                     `redis-cli --cluster create`: sets CLUSTER_URL,
#                                     CLUSTER_PIDS, CLUSTER_PORTS
#   redis_restart PORT                starts a stopped server again, as before
#   redis_role PORT                   master, slave, or nothing if it does not answer
#
# REDIS_NODE_TIMEOUT_MS (default 5000) is the Cluster's node timeout and the Sentinels'
# down-after time: how long a master may not answer before its replica takes over.

REDIS_PIDS=()
# port -> how it was started, and its process
declare -gA REDIS_LAUNCH_DIR=() REDIS_LAUNCH_ARGS=() REDIS_PID_OF=()
REDIS_NODE_TIMEOUT_MS=${REDIS_NODE_TIMEOUT_MS:-5000}

# N distinct free TCP ports of 127.0.0.1, one a line (held open together while
# chosen, so that no two are the same).
free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
held = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    held.append(s)
print("\n".join(str(s.getsockname()[1]) for s in held))
EOF
}

# Waits up to 20 s until `redis-cli -p PORT ARGS...` prints a line matching PATTERN.
redis_wait_for() { # port pattern args...
    local port=$1 pattern=$2
    shift 2
    for _ in $(seq 1 200); do
        if redis-cli -p "$port" "$@" 2>/dev/null | tr -d '\r' | grep -Eq "$pattern"; then
            return 0
        fi
        sleep 0.1
    done
    echo "redis on port $port: no line matching $pattern from: $*" >&2
    return 1
}

# A server in the background, in DIR/PORT/, without persistence; its pid in
# REDIS_LAST_PID and REDIS_PID_OF[PORT].
redis_launch() { # dir port args...
    local dir="$1/$2" port=$2
    REDIS_LAUNCH_DIR[$port]=$1
    shift 2
    REDIS_LAUNCH_ARGS[$port]="$*"
    mkdir -p "$dir"
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
        --daemonize no "$@" >"$dir/redis.log" 2>&1 &
    REDIS_LAST_PID=$!
    REDIS_PIDS+=("$REDIS_LAST_PID")
    REDIS_PID_OF[$port]=$REDIS_LAST_PID
}

start_redis_server() { # dir
    local port
    port=$(free_ports 1)
    redis_launch "$1" "$port"
    SERVER_PIDS=("$REDIS_LAST_PID")
    redis_wait_for "$port" '^PONG$' ping
    SERVER_URL="redis://127.0.0.1:$port"
}

start_sentinel_group() { # dir replicas sentinels
    local dir=$1 replicas=$2 sentinels=$3 port
    local ports=()
    mapfile -t ports < <(free_ports $((1 + replicas + sentinels)))
    local master=${ports[0]}
    SENTINEL_PIDS=()
    SENTINEL_PORTS=("${ports[@]:0:$((1 + replicas))}")
    SENTINEL_SENTINEL_PORTS=("${ports[@]:$((1 + replicas))}")
    redis_launch "$dir" "$master"
    SENTINEL_PIDS+=("$REDIS_LAST_PID")
    for port in "${SENTINEL_PORTS[@]:1}"; do
        redis_launch "$dir" "$port" --replicaof 127.0.0.1 "$master"
        SENTINEL_PIDS+=("$REDIS_LAST_PID")
    done
    for port in "${SENTINEL_PORTS[@]:1}"; do
        redis_wait_for "$port" '^master_link_status:up$' info replication
    done
    local quorum=$((sentinels / 2 + 1)) urls=()
    for port in "${SENTINEL_SENTINEL_PORTS[@]}"; do
        mkdir -p "$dir/$port"
        # A Sentinel rewrites its configuration file: one of its own, in its directory.
        cat >"$dir/$port/sentinel.conf" <<EOF
port $port
bind 127.0.0.1
dir $dir/$port
sentinel monitor tandem 127.0.0.1 $master $quorum
sentinel down-after-milliseconds tandem $REDIS_NODE_TIMEOUT_MS
sentinel failover-timeout tandem $((REDIS_NODE_TIMEOUT_MS * 2))
EOF
        redis-server "$dir/$port/sentinel.conf" --sentinel >"$dir/$port/sentinel.log" 2>&1 &
        REDIS_PIDS+=("$!")
        SENTINEL_PIDS+=("$!")
        urls+=("127.0.0.1:$port")
    done
    for port in "${SENTINEL_SENTINEL_PORTS[@]}"; do
        redis_wait_for "$port" "^$master\$" sentinel get-master-addr-by-name tandem
    done
    SENTINEL_URL="redis+sentinel://$(IFS=,; echo "${urls[*]}")/tandem"
}

start_redis_cluster() { # dir masters replicas
    local dir=$1 masters=$2 replicas=$3 count i
    count=$((masters * (1 + replicas)))
    local ports=()
    # A data port and a cluster bus port per node.
    mapfile -t ports < <(free_ports $((2 * count)))
    CLUSTER_PORTS=("${ports[@]:0:$count}")
    CLUSTER_PIDS=()
    local addrs=()
    for i in $(seq 0 $((count - 1))); do
        redis_launch "$dir" "${ports[$i]}" --cluster-enabled yes \
            --cluster-port "${ports[$((count + i))]}" --cluster-config-file nodes.conf \
            --cluster-node-timeout "$REDIS_NODE_TIMEOUT_MS"
        CLUSTER_PIDS+=("$REDIS_LAST_PID")
        addrs+=("127.0.0.1:${ports[$i]}")
    done
    for port in "${CLUSTER_PORTS[@]}"; do redis_wait_for "$port" '^PONG$' ping; done
    redis-cli --cluster create "${addrs[@]}" --cluster-replicas "$replicas" --cluster-yes \
        >"$dir/cluster-create.log" 2>&1 || {
        echo "redis-cli --cluster create failed:" >&2
        cat "$dir/cluster-create.log" >&2
        return 1
    }
    for port in "${CLUSTER_PORTS[@]}"; do
        redis_wait_for "$port" '^cluster_state:ok$' cluster info
    done
    # Every replica in sync with its master.
    for _ in $(seq 1 200); do
        local synced=0
        for port in "${CLUSTER_PORTS[@]}"; do
            redis-cli -p "$port" info replication | tr -d '\r' |
                grep -q '^master_link_status:up$' && synced=$((synced + 1))
        done
        [ "$synced" -lt $((masters * replicas)) ] || break
        sleep 0.1
    done
    CLUSTER_URL="redis+cluster://$(IFS=,; echo "${addrs[*]}")"
}

# Starts the server of PORT again, as it was first started (a Cluster node keeps
# its nodes.conf, so it rejoins: as a replica once its replica took over).
redis_restart() { # port
    local port=$1
    # shellcheck disable=SC2086 # the arguments as recorded, split on spaces
    redis_launch "${REDIS_LAUNCH_DIR[$port]}" "$port" ${REDIS_LAUNCH_ARGS[$port]}
}

# The role of the server on PORT: master, slave, or nothing when it does not answer.
redis_role() { # port
    redis-cli -p "$1" role 2>/dev/null | head -1 | tr -d '\r'
}
