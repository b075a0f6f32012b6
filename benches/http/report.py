#!/usr/bin/env python3
"""Turns the raw figures of scripts/bench-http.sh (OUT/*.tsv) into markdown tables.

Usage: report.py OUT_DIR

With several rounds (`--rounds`), every ratio is taken within a round and the median
over the rounds is reported (with the lowest and highest when there are 3 or more);
absolute figures are medians over the rounds, and per-request figures (memcached
operations, CPU time) are totals over the rounds divided by their requests.
"""
import csv
import statistics
import sys
from pathlib import Path

WORKLOADS = [("0", "read-only"), ("20", "20% writes"), ("100", "100% writes")]
TOWER = ["tower-sessions-moka", "tower-sessions-memcached", "tower-sessions-caching",
         "tower-sessions-redis"]
# The other session layers Tandem is compared with: tower-sessions (axum) and
# actix-session (actix-web, `--framework actix`).
OTHERS = TOWER + ["actix-session-redis", "actix-session-cookie"]
# The actix-web targets: Tandem's requests/s against actix-session's Redis store.
ACTIX_TARGETS = [("tandem-sticky", 2.0), ("tandem-nonsticky", 1.2)]
P99_PAIRS = [("tandem-sticky", "tower-sessions-caching"), ("tandem-nonsticky", "tower-sessions-memcached"),
             ("tandem-sticky-redis", "tower-sessions-redis"), ("tandem-nonsticky-redis", "tower-sessions-redis")]
TANDEM = ["tandem-sticky", "tandem-nonsticky", "tandem-sticky-redis", "tandem-nonsticky-redis"]


def read_tsv(path):
    if not path.exists():
        return []
    with path.open() as f:
        return [row for row in csv.reader(f, delimiter="\t") if row]


def fields(text):
    """`KEY a=1 b=2` -> {"a": "1", "b": "2"}"""
    out = {}
    for part in text.split():
        if "=" in part:
            key, value = part.split("=", 1)
            out[key] = value
    return out


def ratio(value, base):
    if value is None or base in (None, 0):
        return "n/a"
    return f"{value / base:.2f}x"


def spread(ratios):
    """The median of per-round ratios, with their range when there are 3 or more."""
    if not ratios:
        return "n/a"
    text = f"{statistics.median(ratios):.2f}x"
    if len(ratios) >= 3:
        text += f" ({min(ratios):.2f}-{max(ratios):.2f})"
    return text


def main():
    global WORKLOADS
    out = Path(sys.argv[1])
    meta = {row[1]: row[2] for row in read_tsv(out / "meta.tsv") if len(row) >= 3}
    hz = float(meta.get("clk_tck", "100"))
    # (sessions, variant, workload) -> {round: row}; runs from before rounds existed
    # have no round column and count as round 1.
    http = {}
    with (out / "results.tsv").open() as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if row["kind"] != "http":
                continue
            key = (row["sessions"], row["variant"], row["workload"])
            http.setdefault(key, {})[row.get("round") or "1"] = row
    sessions_list = sorted({key[0] for key in http}, key=int)
    # Only the workloads the run measured (`--workloads`).
    WORKLOADS = [(w, label) for w, label in WORKLOADS if any(key[2] == w for key in http)]
    actix = meta.get("framework") == "actix"
    variants = []
    for key in http:
        if key[1] not in variants:
            variants.append(key[1])

    def column_values(sessions, variant, workload, column):
        """{round: value} of one column."""
        rows = http.get((sessions, variant, workload), {})
        return {r: float(row[column]) for r, row in rows.items() if row.get(column) not in ("", None)}

    def num(sessions, variant, workload, column):
        found = column_values(sessions, variant, workload, column)
        return statistics.median(found.values()) if found else None

    def per_request(sessions, variant, workload, column):
        found = column_values(sessions, variant, workload, column)
        requests = column_values(sessions, variant, workload, "requests")
        total = sum(requests.get(r, 0) for r in found)
        if not found or not total:
            return None
        return sum(found.values()) / total

    def round_ratios(sessions, a, b, workload, column):
        """a / b for each round that measured both."""
        x, y = column_values(sessions, a, workload, column), column_values(sessions, b, workload, column)
        return [x[r] / y[r] for r in x if r in y and y[r]]

    def median_ratio(sessions, a, b, workload, column="rps"):
        ratios = round_ratios(sessions, a, b, workload, column)
        return statistics.median(ratios) if ratios else None

    def cpu_us(sessions, variant, workload, column):
        ticks = per_request(sessions, variant, workload, column)
        return None if ticks is None else ticks / hz * 1e6

    print("# HTTP session benchmark" + (" on actix-web" if actix else ""))
    print()
    print(
        (f"actix-web app, {meta.get('actix_workers', '?')} workers per variant; " if actix else "")
        + f"{meta.get('cpus', '?')} CPUs ({meta.get('cpu_model', '?')}), "
        f"{meta.get('memcached', 'memcached ?')}, "
        + (f"{meta['redis']}, " if "redis" in meta else "")
        + f"{meta.get('wrk', 'wrk ?')}, {meta.get('rustc', '')}; "
        f"wrk {meta.get('threads', '?')} threads, {meta.get('connections', '?')} connections, "
        f"{meta.get('duration', '?')} s per measured run, {meta.get('rounds', '1')} round(s) "
        f"interleaved; idle memcached connections per node: "
        f"{meta.get('memcached_idle', '8 (default)')}; memcached nodes: {meta.get('nodes', '1')}."
    )
    for sessions in sessions_list:
        print()
        print(f"## {int(sessions):,} live sessions")
        print()
        print("Requests/s and latency as a ratio to `none` (no sessions) in the same round, "
              "median over the rounds (with the range over 3 or more rounds); `none`'s own "
              "figures are medians (requests/s: higher is better; latency: lower is better). "
              "non-2xx: answers other than 200 (409 conflicts when two connections hit one session).")
        print()
        header = "| variant |"
        rule = "|---|"
        for _, label in WORKLOADS:
            header += f" {label} req/s | p50 | p99 |"
            rule += "---:|---:|---:|"
        print(header + " non-2xx |")
        print(rule + "---:|")
        base = {w: (num(sessions, "none", w, "rps"), num(sessions, "none", w, "p50_us"),
                    num(sessions, "none", w, "p99_us")) for w, _ in WORKLOADS}
        line = "| none (absolute) |"
        for w, _ in WORKLOADS:
            rps, p50, p99 = base[w]
            line += (f" {rps:,.0f} | {p50 / 1000:.2f} ms | {p99 / 1000:.2f} ms |"
                     if rps is not None else " n/a | n/a | n/a |")
        print(line + " |")
        for variant in variants:
            if variant == "none":
                continue
            line = f"| {variant} |"
            errors = 0
            for w, _ in WORKLOADS:
                cells = [spread(round_ratios(sessions, variant, "none", w, column))
                         for column in ("rps", "p50_us", "p99_us")]
                line += " " + " | ".join(cells) + " |"
                errors += int(sum(column_values(sessions, variant, w, "status_errors").values()))
            print(line + f" {errors} |")

        print()
        print("memcached operations per request (`stats` deltas around the measured run: "
              "get / set (incl. add, cas) / touch (incl. get-and-touch) / delete), "
              "and new memcached connections per 1,000 requests:")
        print()
        header = "| variant |"
        rule = "|---|"
        for _, label in WORKLOADS:
            header += f" {label} g/s/t/d | total | conns/1K |"
            rule += "---|---:|---:|"
        print(header)
        print(rule)
        for variant in variants:
            line = f"| {variant} |"
            for w, _ in WORKLOADS:
                parts = [per_request(sessions, variant, w, c) for c in ("get", "set", "touch", "delete")]
                conns = per_request(sessions, variant, w, "connections")
                if None in parts:
                    line += " n/a | n/a | n/a |"
                    continue
                line += (" " + "/".join(f"{p:.2f}" for p in parts) + f" | {sum(parts):.2f} |"
                         f" {conns * 1000:.1f} |")
            print(line)

        print()
        remote = "memcached + Redis" if "redis" in meta else "memcached"
        print(f"CPU time per request in µs (app process + {remote} processes), from /proc "
              "around the measured run; the app's figure as a ratio to `none`'s:")
        print()
        header = "| variant |"
        rule = "|---|"
        for _, label in WORKLOADS:
            header += f" {label} app µs | {remote} µs | app vs none |"
            rule += "---:|---:|---:|"
        print(header)
        print(rule)
        for variant in variants:
            line = f"| {variant} |"
            for w, _ in WORKLOADS:
                app = cpu_us(sessions, variant, w, "app_cpu_ticks")
                mc = cpu_us(sessions, variant, w, "mc_cpu_ticks")
                base_app = cpu_us(sessions, "none", w, "app_cpu_ticks")
                line += (f" {app:.1f} | {mc:.1f} | {ratio(app, base_app)} |"
                         if app is not None else " n/a | n/a | n/a |")
            print(line)

        print()
        print("Tandem's requests/s as a ratio to each other session layer's (higher: Tandem faster):")
        print()
        print("| Tandem | vs | " + " | ".join(label for _, label in WORKLOADS) + " |")
        print("|---|---|" + "---:|" * len(WORKLOADS))
        for tandem in TANDEM:
            if tandem not in variants:
                continue
            for tower in OTHERS:
                if tower not in variants:
                    continue
                cells = [spread(round_ratios(sessions, tandem, tower, w, "rps"))
                         for w, _ in WORKLOADS]
                print(f"| {tandem} | {tower} | " + " | ".join(cells) + " |")

    # The performance targets: Tandem against no sessions and against tower-sessions.
    mem = {}
    for row in read_tsv(out / "mem.tsv"):
        values = fields(row[1])
        mem[values.get("variant")] = values
    print()
    print("## Targets")
    print()
    print("| target | measured | met |")
    print("|---|---|---|")

    def target(name, value, threshold, fmt="{:.2f}x"):
        if value is None:
            print(f"| {name} | n/a | n/a |")
            return
        print(f"| {name} | {fmt.format(value)} | {'yes' if value >= threshold else '**no**'} |")

    races = read_tsv(out / "race.tsv")
    for sessions in sessions_list if actix else []:
        n = f"{int(sessions):,}"
        for tandem, threshold in ACTIX_TARGETS:
            for w, label in WORKLOADS:
                target(f"{tandem} >= {threshold:g}x actix-session Redis store, {label} ({n})",
                       median_ratio(sessions, tandem, "actix-session-redis", w), threshold)
        # Reported, not targets: p99 against the Redis store's (lower: Tandem's is
        # shorter), and the Redis store's commands per request.
        for tandem, _ in ACTIX_TARGETS:
            for w, label in WORKLOADS:
                p99_ratio = median_ratio(sessions, tandem, "actix-session-redis", w, "p99_us")
                if p99_ratio is not None:
                    print(f"| {tandem} p99 / actix-session Redis store p99, {label} ({n}) | "
                          f"{p99_ratio:.2f}x | - |")
        for w, label in WORKLOADS:
            commands = per_request(sessions, "actix-session-redis", w, "redis_cmds")
            if commands is not None:
                print(f"| actix-session Redis store: Redis commands/request, {label} ({n}) | "
                      f"{commands:.2f} | - |")
    for row in races if actix else []:
        if row[1] == "tandem-nonsticky" and row[2] == "lock":
            lost = int(fields(row[3])["lost"])
            print(f"| no lost update, tandem-nonsticky in lock mode | {lost} lost | "
                  f"{'yes' if lost == 0 else '**no**'} |")
    for sessions in [] if actix else sessions_list:
        n = f"{int(sessions):,}"

        def rps_ratio(a, b, w):
            return median_ratio(sessions, a, b, w)

        target(f"sticky read-only >= 0.85x baseline ({n})", rps_ratio("tandem-sticky", "none", "0"), 0.85)
        ops = [per_request(sessions, "tandem-sticky", "0", c) for c in ("get", "set", "touch", "delete")]
        if None not in ops:
            total = sum(ops)
            print(f"| sticky read-only: 0 memcached ops/request ({n}) | {total:.4f} | "
                  f"{'yes' if total < 0.001 else '**no**'} |")
        target(f"sticky 20% writes >= 0.80x baseline ({n})", rps_ratio("tandem-sticky", "none", "20"), 0.80)
        target(f"sticky 100% writes >= 0.70x baseline ({n})", rps_ratio("tandem-sticky", "none", "100"), 0.70)
        for w, label in WORKLOADS:
            target(f"non-sticky >= 1.3x tower-sessions memcached, {label} ({n})",
                   rps_ratio("tandem-nonsticky", "tower-sessions-memcached", w), 1.3)
        ops = [per_request(sessions, "tandem-nonsticky", "0", c) for c in ("get", "set", "touch", "delete")]
        if None not in ops:
            total = sum(ops)
            print(f"| non-sticky read-only: <= 1.1 memcached ops/request ({n}) | {total:.2f} | "
                  f"{'yes' if total <= 1.1 else '**no**'} |")
        # p99 latency: each Tandem variant against the tower-sessions variant that keeps
        # sessions where it does (lower is better).
        for tandem, tower in P99_PAIRS:
            if tandem not in variants or tower not in variants:
                continue
            for w, label in WORKLOADS:
                p99_ratio = median_ratio(sessions, tandem, tower, w, "p99_us")
                if p99_ratio is not None:
                    print(f"| {tandem} p99 <= {tower} p99, {label} ({n}) | {p99_ratio:.2f}x | "
                          f"{'yes' if p99_ratio <= 1.0 else '**no**'} |")
        # On Redis (`--redis`): against tower-sessions' Redis store, and against Tandem
        # on memcached.
        if "tower-sessions-redis" in variants or "tandem-nonsticky-redis" in variants:
            for w, label in WORKLOADS[:2]:
                target(f"non-sticky on Redis >= 1.3x tower-sessions Redis store, {label} ({n})",
                       rps_ratio("tandem-nonsticky-redis", "tower-sessions-redis", w), 1.3)
            for w, label in WORKLOADS:
                target(f"non-sticky on Redis >= 0.85x non-sticky on memcached, {label} ({n})",
                       rps_ratio("tandem-nonsticky-redis", "tandem-nonsticky", w), 0.85)
            target(f"sticky read-only on Redis >= 0.95x sticky on memcached ({n})",
                   rps_ratio("tandem-sticky-redis", "tandem-sticky", "0"), 0.95)
            commands = per_request(sessions, "tandem-sticky-redis", "0", "redis_cmds")
            if commands is not None:
                print(f"| sticky read-only on Redis: 0 Redis commands/request ({n}) | {commands:.4f} | "
                      f"{'yes' if commands < 0.001 else '**no**'} |")
            for variant in ("tandem-nonsticky-redis", "tower-sessions-redis"):
                for w, label in WORKLOADS:
                    commands = per_request(sessions, variant, w, "redis_cmds")
                    if commands is not None:
                        print(f"| {variant}: Redis commands/request, {label} ({n}) | {commands:.2f} | - |")
    sticky_mem = mem.get("tandem-sticky")
    moka = read_tsv(out / "moka.tsv")
    floor = None
    for row in moka:
        values = fields(row[1])
        if values.get("config") == "lru+weigher+per_entry_expiry+listener":
            floor = float(values["bytes_per_entry"])
    if sticky_mem and floor is not None:
        overhead = float(sticky_mem["overhead"])
        print(f"| sticky local overhead <= moka's {floor:.0f} B per entry + 128 B "
              f"({int(sticky_mem['sessions']):,} sessions) | {overhead:.0f} B | "
              f"{'yes' if overhead <= floor + 128 else '**no**'} |")

    if races:
        print()
        print("## Lost updates")
        print()
        print("32 concurrent clients increment one counter attribute of one session "
              "(read, +1, write); `accepted` = answers 200, `409` = conflicts reported to the client, "
              "`lost` = accepted increments missing from the final value.")
        print()
        print("| variant | concurrency | sent | accepted | 409 | other errors | final value | lost | lost % of accepted | requests/s | p99 |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for row in races:
            variant, concurrency, values = row[1], row[2], fields(row[3])
            if variant.startswith("tower-sessions") or variant.startswith("actix-session"):
                concurrency = "(none: last writer wins)"
            elif concurrency == "none":
                concurrency = "last writer wins"
            accepted = int(values["accepted"])
            lost = int(values["lost"])
            share = f"{100 * lost / accepted:.0f}%" if accepted else "n/a"
            rps = f"{float(values['rps']):,.0f}" if "rps" in values else "n/a"
            p99 = f"{int(values['p99_us']) / 1000:.1f} ms" if "p99_us" in values else "n/a"
            print(f"| {variant} | {concurrency} | {values['sent']} | {accepted} | {values['conflicts']} |"
                  f" {values['errors']} | {values['final']} | {lost} | {share} | {rps} | {p99} |")
        if any(row[1] == "actix-session-cookie" for row in races):
            print()
            print("actix-session's cookie store keeps the state in the cookie: each answer's new "
                  "state goes back to its own client only, and the test's clients (like tabs "
                  "sharing a cookie jar that one overwrites) keep sending the first cookie, "
                  "so no increment reaches the counter the last read sees.")

    if mem:
        print()
        print("## Local memory per resident session")
        print()
        print("Heap held per session (counting allocator, in process, through the same router), "
              "the payload (attribute name + value bytes in the variant's own encoding: speedy "
              "for Tandem, JSON for tower-sessions; 0 where no session is kept locally) and what is "
              "beyond it. The RSS delta includes the allocator's own overhead.")
        print()
        print("| variant | sessions | heap B/session | allocations/session | payload B | beyond payload B | RSS delta B/session |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for variant, values in mem.items():
            print(f"| {variant} | {int(values['sessions']):,} | {values['bytes_per_session']} |"
                  f" {values['allocs_per_session']} | {values['payload']} | {values['overhead']} |"
                  f" {values['rss_per_session']} |")

    rss = read_tsv(out / "rss.tsv")
    if rss:
        print()
        print("App RSS growth while its live sessions were created over HTTP (KiB before -> after, "
              "bytes per session; includes connection buffers and allocator slack):")
        print()
        print("| variant | sessions | RSS before KiB | RSS after KiB | B/session |")
        print("|---|---:|---:|---:|---:|")
        for row in rss:
            sessions, variant, before, after = row[1], row[2], int(row[4]), int(row[5])
            print(f"| {variant} | {int(sessions):,} | {before:,} | {after:,} |"
                  f" {(after - before) * 1024 / int(sessions):.0f} |")

    populated = read_tsv(out / "populate.tsv")
    if populated:
        print()
        print("Creating the live sessions (POST /session over 32 connections): how long it took, and "
              "what memcached holds for them (bytes and items added, summed over the nodes; "
              "evictions: memcached's total so far, which must stay 0):")
        print()
        print("| variant | sessions | seconds | sessions/s | memcached MiB | items | B/session | evictions |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for row in populated:
            sessions, variant, took = int(row[1]), row[2], float(row[3])
            mc_bytes, items, evictions = int(row[4]), int(row[5]), int(row[6])
            print(f"| {variant} | {sessions:,} | {took:.1f} | {sessions / max(took, 0.001):,.0f} |"
                  f" {mc_bytes / 2**20:,.0f} | {items:,} | {mc_bytes / sessions:.0f} | {evictions} |")


if __name__ == "__main__":
    main()
