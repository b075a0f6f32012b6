#!/usr/bin/env bash
# The full fault matrix (tests/faults.rs): 200 sessions per scenario, 2 s of load, a
# 5 s fault, 3 s of recovery; both modes, async and sync backup. The rows of logouts
# and logins under attack end 50 sessions each over the fault phase. Prints the
# results tables. The short version runs in scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
TANDEM_FAULTS=full cargo test --release --test faults -- --nocapture --test-threads 1
