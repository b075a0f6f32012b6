#!/usr/bin/env python3
"""Prints the manager benchmark's figures (benches/manager.rs), for
scripts/bench-manager.sh: each mean as a ratio to its baseline measured in the
same run.

    manager_report.py CRITERION_DIR

CRITERION_DIR is the target directory's `criterion`.
"""

import json
import pathlib
import sys

if len(sys.argv) != 2:
    sys.exit("usage: manager_report.py CRITERION_DIR")
root = pathlib.Path(sys.argv[1])


def mean_ns(group, name):
    path = root / group / name / "new" / "estimates.json"
    return json.loads(path.read_text())["mean"]["point_estimate"] if path.exists() else None


rows = [
    ("local", "bare_moka_get_insert", ("local", "bare_moka_get_insert")),
    ("local", "load_commit_unchanged", ("local", "bare_moka_get_insert")),
    ("local", "load_commit_changed_async", ("local", "bare_moka_get_insert")),
    ("memcached", "raw_set", ("memcached", "raw_set")),
    ("memcached", "load_commit_changed_sync", ("memcached", "raw_set")),
    ("nonsticky", "raw_get_set", ("nonsticky", "raw_get_set")),
    ("nonsticky", "load_commit_changed", ("nonsticky", "raw_get_set")),
    ("nonsticky", "load_commit_unchanged", ("nonsticky", "raw_get_set")),
    ("threads", "bare_moka_get_1", ("threads", "bare_moka_get_1")),
    ("threads", "bare_moka_get_2", ("threads", "bare_moka_get_2")),
    ("threads", "load_commit_unchanged_1", ("threads", "bare_moka_get_1")),
    ("threads", "load_commit_unchanged_2", ("threads", "bare_moka_get_2")),
    ("residents", "hashmap_get_1000", ("residents", "hashmap_get_1000")),
    ("residents", "bare_moka_get_1000", ("residents", "hashmap_get_1000")),
    ("residents", "load_commit_unchanged_1000", ("residents", "bare_moka_get_1000")),
    ("residents", "hashmap_get_100000", ("residents", "hashmap_get_100000")),
    ("residents", "bare_moka_get_100000", ("residents", "hashmap_get_100000")),
    ("residents", "load_commit_unchanged_100000", ("residents", "bare_moka_get_100000")),
]
print()
print(f"{'benchmark':36} {'mean':>11}  ratio to baseline")
for group, name, (bgroup, bname) in rows:
    value, base = mean_ns(group, name), mean_ns(bgroup, bname)
    if value is None or base is None:
        continue
    print(f"{group + '/' + name:36} {value / 1000:>8.3f} µs  {value / base:.2f}x {bgroup}/{bname}")
