#!/usr/bin/env bash
# Runs the manager benchmark (benches/manager.rs, starts its own memcached) and prints
# each figure as a ratio to its baseline measured in the same run
# (benches/tools/manager_report.py). Extra arguments go to criterion (e.g. a group
# such as `residents`, or --measurement-time 3). Output goes under $CARGO_TARGET_DIR
# (target/ without it).
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target"
log="$target/bench-manager.log"

cargo bench --bench manager -- "$@" | tee "$log" | grep -E "stored session|async manager|round trips|time:"

python3 benches/tools/manager_report.py "$target/criterion"
