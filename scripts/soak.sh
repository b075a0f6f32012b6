#!/usr/bin/env bash
# The soak (tests/faults.rs, `soak`): ten minutes of mixed load on two sticky app
# servers with a fault every 30 s; prints progress, resident memory at the start
# and end, and fails on any lost update or failed request. TANDEM_SOAK_SECS changes
# the duration.
set -euo pipefail
cd "$(dirname "$0")/.."
export TANDEM_SOAK_SECS="${TANDEM_SOAK_SECS:-600}"
cargo test --release --test faults soak -- --ignored --nocapture
