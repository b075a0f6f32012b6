#!/usr/bin/env bash
# Runs the codec benchmark and prints each line as a ratio to the raw-speedy baseline
# measured in the same run. Extra arguments go to criterion (e.g. a filter).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo bench --bench codec -- "$@" | tee target/bench-codec.log | grep -E "stored bytes|time:"

python3 - <<'PY'
import json, pathlib
root = pathlib.Path("target/criterion")
def mean_ns(group, name):
    path = root / group / name / "new" / "estimates.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())["mean"]["point_estimate"]
print()
print(f"{'benchmark':32} {'mean':>12} {'vs raw speedy':>14}")
for group in ("encode", "decode"):
    base = mean_ns(group, "raw_speedy")
    for name in ("raw_speedy", "envelope_speedy", "envelope_json", "envelope_only_speedy", "envelope_only_json"):
        value = mean_ns(group, name)
        if value is None or base is None:
            continue
        print(f"{group + '/' + name:32} {value / 1000:>9.3f} µs {value / base:>13.2f}x")
PY
