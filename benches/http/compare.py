#!/usr/bin/env python3
"""Compares several kept runs of scripts/bench-http.sh: the headline ratios (Tandem
against no sessions and against tower-sessions) per run and their median, so that
one noisy run does not decide a figure.

    benches/http/compare.py target/bench-http/RUN1 target/bench-http/RUN2 ...

Every ratio is taken within one run (a variant against `none`, or against a
tower-sessions variant, measured minutes apart on the same machine); only then are
the runs combined, by the median. A run of several rounds (`--rounds`) gives the
median of its per-round ratios.
"""

import statistics
import sys
from pathlib import Path

WORKLOADS = [("0", "read-only"), ("20", "20% writes"), ("100", "100% writes")]
PAIRS = [
    ("tandem-sticky", "none"),
    ("tandem-nonsticky", "none"),
    ("tandem-sticky", "tower-sessions-moka"),
    ("tandem-sticky", "tower-sessions-caching"),
    ("tandem-nonsticky", "tower-sessions-memcached"),
]


def read_runs(directory):
    """(sessions, variant, workload) -> {round: (requests/s, app CPU ticks per request)}."""
    runs = {}
    lines = (Path(directory) / "results.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    for line in lines[1:]:
        row = dict(zip(header, line.split("\t")))
        if row.get("kind") != "http":
            continue
        requests = float(row["requests"]) or 1.0
        key = (row["sessions"], row["variant"], row["workload"])
        figures = (float(row["rps"]), float(row["app_cpu_ticks"]) / requests)
        runs.setdefault(key, {})[row.get("round") or "1"] = figures
    return runs


def run_ratio(run, key, base_key, index):
    """The run's ratio of figure `index` of `key` to that of `base_key`: the median
    over the rounds that measured both, or None."""
    value, reference = run.get(key, {}), run.get(base_key, {})
    ratios = [value[r][index] / reference[r][index]
              for r in value if r in reference and reference[r][index] > 0]
    return statistics.median(ratios) if ratios else None


def main():
    directories = sys.argv[1:]
    if not directories:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    runs = [read_runs(directory) for directory in directories]
    sessions = sorted({key[0] for run in runs for key in run}, key=int)
    print(f"Runs: {', '.join(Path(d).name for d in directories)}")
    for count in sessions:
        print()
        print(f"### {int(count):,} live sessions: requests/s ratios, per run and median")
        print()
        print("| ratio | workload | " + " | ".join(f"run {i + 1}" for i in range(len(runs))) + " | median |")
        print("|---|---|" + "---:|" * (len(runs) + 1))
        for variant, base in PAIRS:
            for workload, label in WORKLOADS:
                ratios = [r for run in runs
                          if (r := run_ratio(run, (count, variant, workload), (count, base, workload), 0))
                          is not None]
                if not ratios:
                    continue
                cells = " | ".join(f"{r:.2f}x" for r in ratios)
                print(f"| {variant} vs {base} | {label} | {cells} | **{statistics.median(ratios):.2f}x** |")
        print()
        print(f"App CPU per request as a ratio to `none` ({int(count):,} sessions), per run and median:")
        print()
        print("| variant | workload | " + " | ".join(f"run {i + 1}" for i in range(len(runs))) + " | median |")
        print("|---|---|" + "---:|" * (len(runs) + 1))
        for variant in ("tandem-sticky", "tandem-nonsticky"):
            for workload, label in WORKLOADS:
                ratios = [r for run in runs
                          if (r := run_ratio(run, (count, variant, workload), (count, "none", workload), 1))
                          is not None]
                if ratios:
                    cells = " | ".join(f"{r:.2f}x" for r in ratios)
                    print(f"| {variant} | {label} | {cells} | **{statistics.median(ratios):.2f}x** |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
