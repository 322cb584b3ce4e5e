#!/usr/bin/env python3
"""Renders the JSON lines written by `cargo bench --bench pollgate -- --json FILE`
as one markdown table: every target's figure per scenario, and the ratio
pollgate / best peer (the best peer of the same instance count, "-2x", when
the names carry one; below 1 is better for "lower" figures, above 1 for "higher").

When a target ran a scenario more than once (compare.sh's ROUNDS), a cell is the
median with the range in brackets, and the ratio is taken between medians."""
import json
import statistics
import sys

# (scenario, field, label, better: "lower", "higher", or None for no ratio)
FIGURES = [
    ("a", "kib_per_poll", "(a) RSS per held poll, KiB", "lower"),
    ("a", "errors", "(a) errors while holding", "lower"),
    ("b", "p99_ms", "(b) fan-out p99, ms", "lower"),
    ("b", "completion_ms_mean", "(b) fan-out completion (mean of reps), ms", "lower"),
    ("b", "cpu_ms_per_rep", "(b) server CPU per rep, ms", "lower"),
    ("b", "cpu_us_per_delivery", "(b) server CPU per delivery, µs", "lower"),
    ("b", "user_cpu_us_per_delivery", "(b) server user-space CPU per delivery, µs", "lower"),
    ("b", "kernel_cpu_us_per_delivery", "(b) server kernel CPU per delivery, µs", "lower"),
    # No ratio: the tool reads every answer on one thread, so its CPU per rep
    # is the shortest completion it can measure, whatever the server.
    ("b", "load_tool_cpu_ms_per_rep", "(b) the load tool's own CPU per rep, ms", None),
    ("b", "redis_cpu_s", "(b) Redis CPU over the scenario, s", "lower"),
    ("b", "redis_commands_per_publish", "(b) Redis commands per publish", "lower"),
    ("c", "lost", "(c) messages lost", "lower"),
    ("c", "p99_ms", "(c) p99, ms", "lower"),
    ("c", "server_cpu_s", "(c) server CPU, s", "lower"),
    ("c", "server_user_cpu_s", "(c) server user-space CPU, s", "lower"),
    ("c", "server_kernel_cpu_s", "(c) server kernel CPU, s", "lower"),
    ("c", "user_cpu_us_per_delivery", "(c) server user-space CPU per delivery, µs", "lower"),
    ("c", "redis_cpu_s", "(c) Redis CPU over the scenario, s", "lower"),
    ("c", "redis_commands_per_publish", "(c) Redis commands per publish", "lower"),
    ("e", "waiters", "(e) scale-out: polls held over all instances", None),
    ("e", "lost", "(e) scale-out: answers missing", "lower"),
    ("e", "p99_ms", "(e) scale-out p99, ms", "lower"),
    ("e", "completion_ms_mean", "(e) scale-out completion (mean of reps), ms", "lower"),
    ("e", "cpu_us_per_delivery", "(e) server CPU per delivery (all instances), µs", "lower"),
    ("e", "user_cpu_us_per_delivery", "(e) server user-space CPU per delivery, µs", "lower"),
    ("e", "load_tool_cpu_ms_per_rep", "(e) the load tool's CPU per rep, all holders, ms", None),
    ("e", "redis_cpu_s", "(e) Redis CPU over the scenario, s", "lower"),
    ("e", "redis_commands_per_publish",
     "(e) Redis commands over the scenario (first polls included) / publishes", "lower"),
] + [
    row
    for conns in (64, 512)
    for size, name in ((0, "empty"), (10240, "10 KB"), (102400, "100 KB"))
    for row in (
        ("d", f"rps_c{conns}_b{size}", f"(d) proxied GET, {conns} conns, {name}: requests/s", "higher"),
        ("d", f"p99_ms_c{conns}_b{size}", f"(d) proxied GET, {conns} conns, {name}: p99, ms", "lower"),
        ("d", f"user_cpu_us_per_request_c{conns}_b{size}",
         f"(d) proxied GET, {conns} conns, {name}: user-space CPU per request, µs", "lower"),
        ("d", f"errors_c{conns}_b{size}", f"(d) proxied GET, {conns} conns, {name}: failed answers", None),
    )
] + [
    ("d", "direct_rps", "(d) backend direct (64 conns, empty), requests/s", "higher"),
]


def main(path):
    rows = {}
    targets = []
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if r["target"] not in targets:
                targets.append(r["target"])
            rows.setdefault((r["target"], r["scenario"]), []).append(r)
    ours = [t for t in targets if "pollgate" in t]
    peers = [t for t in targets if t not in ours]
    print("| figure | " + " | ".join(targets) + " | "
          + " | ".join(f"{t} / best peer" for t in ours) + " |")
    print("|---|" + "---|" * (len(targets) + len(ours)))
    for scenario, field, label, better in FIGURES:
        runs = {t: [r[field] for r in rows.get((t, scenario), []) if field in r]
                for t in targets}
        values = {t: statistics.median(v) if v else None for t, v in runs.items()}
        if all(v is None for v in values.values()):
            continue
        cells = [cell(runs[t]) for t in targets]
        ratios = []
        for t in ours:
            known = [values[p] for p in same_size(t, peers) if values[p] is not None]
            ratio = "-"
            if better and known and values[t] is not None:
                best = min(known) if better == "lower" else max(known)
                ratio = f"{values[t] / best:.2f}" if best else "-"
            ratios.append(ratio)
        print(f"| {label} | " + " | ".join(cells + ratios) + " |")


def same_size(target, peers):
    """The peers a target is compared with: when its name carries an
    instance count ("-3x"), those of the same count, or none, so three
    instances are never measured against one."""
    size = target.rsplit("-", 1)[-1]
    if size.endswith("x") and size[:-1].isdigit():
        return [p for p in peers if p.endswith("-" + size)]
    return peers


def cell(values):
    if not values:
        return "-"
    median = f"{statistics.median(values):,.1f}"
    if len(values) == 1:
        return median
    return f"{median} ({min(values):,.1f}–{max(values):,.1f})"


if __name__ == "__main__":
    main(sys.argv[1])
