#!/usr/bin/env bash
# The full fault matrices, both backends; each prints its results tables. The short
# versions run in scripts/test.sh.
#
# - memcached (tests/faults.rs): 200 sessions per scenario, 2 s of load, a 5 s fault,
#   3 s of recovery; both modes, async and sync backup. The rows of logouts and
#   logins under attack end 50 sessions each over the fault phase.
# - Redis (tests/faults_redis.rs): one Tandem node that is a Sentinel group (master,
#   2 replicas, 3 Sentinels) or a Cluster (3 masters, 3 replicas); 100 sessions, 2 s
#   of load, the fault held 3 s past its failover, 3 s of recovery; both modes, with
#   and without the durable setting (WAIT).
#
# Arguments choose the matrices: `scripts/faults.sh faults_redis` runs Redis's only.
set -euo pipefail
cd "$(dirname "$0")/.."
matrices=("$@")
[ ${#matrices[@]} -gt 0 ] || matrices=(faults faults_redis)
for matrix in "${matrices[@]}"; do
    TANDEM_FAULTS=full cargo test --release --test "$matrix" -- --nocapture --test-threads 1
done
