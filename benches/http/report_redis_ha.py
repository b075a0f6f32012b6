#!/usr/bin/env python3
"""Turns the raw figures of scripts/bench-redis-ha.sh (OUT/*.tsv) into markdown tables.

Usage: report_redis_ha.py OUT_DIR

Every ratio is taken within a round and the median over the rounds is reported (with
the lowest and highest when there are 3 or more); absolute figures are medians over
the rounds, per-request CPU figures totals over the rounds divided by their requests.

The cost of WAIT per write comes from the 20%-write runs of the same mode and
deployment with and without the durable setting. wrk keeps every connection busy, so
the mean time a request takes is connections / requests per second (Little's law);
the difference between the two runs, divided by the share of writes, is what waiting
for a replica added to each write request, on this machine and load.
"""
import csv
import statistics
import sys
from pathlib import Path

WORKLOADS = [("0", "read-only"), ("20", "20% writes")]
WRITE_SHARE = 0.20


def read_rows(path):
    with path.open() as f:
        return list(csv.DictReader(f, delimiter="\t"))


def spread(ratios, fmt="{:.2f}x"):
    if not ratios:
        return "n/a"
    text = fmt.format(statistics.median(ratios))
    if len(ratios) >= 3:
        text += f" ({fmt.format(min(ratios))} to {fmt.format(max(ratios))})"
    return text


def main():
    out = Path(sys.argv[1])
    meta = {}
    with (out / "meta.tsv").open() as f:
        for row in csv.reader(f, delimiter="\t"):
            if len(row) >= 3:
                meta[row[1]] = row[2]
    hz = float(meta.get("clk_tck", "100"))
    connections = float(meta.get("connections", "32"))
    # (variant, workload) -> {round: row}
    runs = {}
    variants = []
    for row in read_rows(out / "results.tsv"):
        runs.setdefault((row["variant"], row["workload"]), {})[row["round"]] = row
        if row["variant"] not in variants:
            variants.append(row["variant"])

    def values(variant, workload, column):
        return {r: float(row[column]) for r, row in runs.get((variant, workload), {}).items()
                if row.get(column) not in ("", None)}

    def ratios(a, b, workload, column="rps"):
        x, y = values(a, workload, column), values(b, workload, column)
        return [x[r] / y[r] for r in x if r in y and y[r]]

    def median(variant, workload, column):
        found = values(variant, workload, column)
        return statistics.median(found.values()) if found else None

    def per_request_us(variant, workload, column):
        ticks, requests = values(variant, workload, column), values(variant, workload, "requests")
        total = sum(requests.get(r, 0) for r in ticks)
        return sum(ticks.values()) / total / hz * 1e6 if ticks and total else None

    print("# Tandem on replicated Redis deployments")
    print()
    print(f"{meta.get('cpus', '?')} CPUs ({meta.get('cpu_model', '?')}), {meta.get('redis', '')}, "
          f"{meta.get('wrk', '')}, {meta.get('rustc', '')}; wrk {meta.get('threads', '?')} threads, "
          f"{meta.get('connections', '?')} connections, {meta.get('duration', '?')} s per measured run, "
          f"{meta.get('rounds', '?')} round(s) interleaved, {int(meta.get('sessions', '0')):,} live "
          "sessions per variant. Deployments: single = one server; sentinel = a master, 2 replicas, "
          "3 Sentinels; cluster = 3 masters with a replica each; each is one Tandem node. "
          "`-wait1`: `--wait-replicas 1` (each write waits for one replica's acknowledgement).")
    print()
    print("Requests/s and latency as a ratio to `none` (no sessions) in the same round, median "
          "over the rounds (range with 3 or more); `none`'s own figures are medians. "
          "CPU: µs per request of the app and of the deployment's processes (all servers and "
          "Sentinels). non-2xx: answers other than 200 (503: a write not acknowledged in time).")
    print()
    header, rule = "| variant |", "|---|"
    for _, label in WORKLOADS:
        header += f" {label} req/s | p50 | p99 | app µs | Redis µs |"
        rule += "---:|---:|---:|---:|---:|"
    print(header + " non-2xx |")
    print(rule + "---:|")
    line = "| none (absolute) |"
    for w, _ in WORKLOADS:
        rps, p50, p99 = (median("none", w, c) for c in ("rps", "p50_us", "p99_us"))
        app = per_request_us("none", w, "app_cpu_ticks")
        line += (f" {rps:,.0f} | {p50 / 1000:.2f} ms | {p99 / 1000:.2f} ms | {app:.1f} | - |"
                 if rps is not None else " n/a | n/a | n/a | n/a | - |")
    print(line + " |")
    for variant in variants:
        if variant == "none":
            continue
        line = f"| {variant} |"
        errors = 0
        for w, _ in WORKLOADS:
            cells = [spread(ratios(variant, "none", w, c)) for c in ("rps", "p50_us", "p99_us")]
            app = per_request_us(variant, w, "app_cpu_ticks")
            remote = per_request_us(variant, w, "remote_cpu_ticks")
            cells += [f"{app:.1f}" if app is not None else "n/a",
                      f"{remote:.1f}" if remote is not None else "n/a"]
            line += " " + " | ".join(cells) + " |"
            errors += int(sum(values(variant, w, "status_errors").values()))
        print(line + f" {errors} |")

    print()
    print("Each deployment against one server, same mode (requests/s ratio, higher: faster):")
    print()
    print("| variant | vs | " + " | ".join(label for _, label in WORKLOADS) + " |")
    print("|---|---|" + "---:|" * len(WORKLOADS))
    for variant in variants:
        parts = variant.split("-")
        if len(parts) < 2 or parts[1] == "single":
            continue
        single = f"{parts[0]}-single"
        if single not in variants:
            continue
        cells = [spread(ratios(variant, single, w)) for w, _ in WORKLOADS]
        print(f"| {variant} | {single} | " + " | ".join(cells) + " |")

    print()
    print("The cost of WAIT (`--wait-replicas 1`), from the 20%-write runs with and without it: "
          "requests/s ratio, and the time added per write request "
          f"((connections / req/s with WAIT - connections / req/s without) / {WRITE_SHARE:.0%} "
          "writes, per round, median), with the app's and the deployment's extra CPU per write:")
    print()
    print("| variant | vs | req/s ratio | p99 ratio | added per write | app CPU per write | Redis CPU per write |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for variant in variants:
        if not variant.endswith("-wait1"):
            continue
        plain = variant[: -len("-wait1")]
        if plain not in variants:
            continue
        w = "20"
        with_wait, without = values(variant, w, "rps"), values(plain, w, "rps")
        added = [(connections / with_wait[r] - connections / without[r]) * 1e6 / WRITE_SHARE
                 for r in with_wait if r in without and with_wait[r] and without[r]]

        def cpu_delta(column):
            a, b = per_request_us(variant, w, column), per_request_us(plain, w, column)
            return "n/a" if a is None or b is None else f"{(a - b) / WRITE_SHARE:+.1f} µs"

        print(f"| {variant} | {plain} | {spread(ratios(variant, plain, w))} |"
              f" {spread(ratios(variant, plain, w, 'p99_us'))} |"
              f" {spread(added, '{:+.0f} µs')} | {cpu_delta('app_cpu_ticks')} |"
              f" {cpu_delta('remote_cpu_ticks')} |")
    print()
    print("Sticky mode writes its backups after the response, so WAIT shows there as CPU and "
          "connections, not as request time; non-sticky waits inside the request.")


if __name__ == "__main__":
    main()
