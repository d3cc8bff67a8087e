#!/usr/bin/env python3
"""Summarizes a `meganet load --timeline` CSV: for each phase and kind of call, the calls, how many were accepted and
their latency (p50, p99, max, and the share over --slow), over the whole phase and after its first 2 s, as
`meganet load` reports them; with --window SECONDS, the same per window of completion time, each with its wall-clock
time (UTC) to line it up with the node's log or metrics. A p99 says how slow the slowest calls were; the windows say
when. Accepted calls only, as `meganet load` counts latency.
Usage: perf/timeline.py FILE [--window SECONDS] [--phase PHASE] [--slow MS]
Example: meganet load --mode mixed --timeline calls.csv ...; perf/timeline.py calls.csv --window 0.1 --phase mixed
"""
import argparse
import csv
import math
import sys
from datetime import datetime, timezone

HEADER = ["phase", "kind", "completed_unix_ms", "started_s", "latency_ms", "late_ms", "ok"]
WARM_UP_S = 2.0  # as LoadGenerator.WarmUpSeconds: calls started this long after a phase began are its steady state


def percentile(sorted_values, q):
    """The nearest-rank percentile (rank ceil(n * q)), as `meganet load` takes its percentiles; None for no values."""
    if not sorted_values:
        return None
    return sorted_values[max(0, min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1))]


def describe(latencies, slow_ms):
    values = sorted(latencies)
    if not values:
        return "no accepted calls"
    over = sum(1 for v in values if v > slow_ms)
    return (f"p50 {percentile(values, 0.5):8.2f} ms, p99 {percentile(values, 0.99):8.2f} ms, max {values[-1]:8.2f} ms, "
            f"{100.0 * over / len(values):5.1f} % over {slow_ms:g} ms")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\nUsage:")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", help="a CSV written by `meganet load --timeline FILE`")
    parser.add_argument("--window", type=float, default=0, help="also print each window of this many seconds of completion time (e.g. 0.1)")
    parser.add_argument("--phase", help="only this phase (stream, unary, floor or mixed)")
    parser.add_argument("--slow", type=float, default=10.0, help="the latency, in ms, whose share is reported (default 10, the unary target)")
    args = parser.parse_args()
    if args.window < 0 or args.slow <= 0:
        sys.exit("perf/timeline.py: --window must be 0 or more seconds and --slow above 0 ms")

    try:
        with open(args.file, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header != HEADER:
                sys.exit(f"perf/timeline.py: {args.file} is not a `meganet load --timeline` file: its first line should be "
                         f"{','.join(HEADER)}, not {','.join(header) if header else 'empty'}")
            rows = []
            for number, row in enumerate(reader, start=2):
                try:
                    rows.append((row[0], row[1], float(row[2]), float(row[3]), float(row[4]), row[6] == "1"))
                except (IndexError, ValueError):
                    sys.exit(f"perf/timeline.py: {args.file}, line {number}: not a row of seven comma-separated fields as the header says")
    except OSError as e:
        sys.exit(f"perf/timeline.py: cannot read {args.file}: {e.strerror}")

    groups = {}
    for phase, kind, completed, started, latency, ok in rows:
        if args.phase is None or phase == args.phase:
            groups.setdefault((phase, kind), []).append((completed, started, latency, ok))
    if not groups:
        sys.exit(f"perf/timeline.py: no calls{' of phase ' + args.phase if args.phase else ''} in {args.file}")

    for (phase, kind), calls in groups.items():
        accepted = [c for c in calls if c[3]]
        steady = [c[2] for c in accepted if c[1] >= WARM_UP_S]
        print(f"{phase} / {kind}: {len(calls):,} calls, {len(accepted):,} accepted")
        print(f"  all:                   {describe([c[2] for c in accepted], args.slow)}")
        print(f"  after the first {WARM_UP_S:g} s:   {describe(steady, args.slow) if len(steady) >= 1000 else 'fewer than 1,000 calls (no steady state)'}")
        if args.window > 0 and accepted:
            first = min(c[0] for c in accepted)
            windows = {}
            for c in accepted:
                windows.setdefault(int((c[0] - first) / 1000 / args.window), []).append(c[2])
            print(f"  by {args.window:g} s of completion time (from the first, UTC):")
            for index in sorted(windows):
                start = datetime.fromtimestamp((first / 1000) + index * args.window, tz=timezone.utc)
                print(f"    +{index * args.window:7.2f} s {start:%H:%M:%S}.{start.microsecond // 1000:03d}  {len(windows[index]):6,} calls  "
                      f"{describe(windows[index], args.slow)}")


if __name__ == "__main__":
    main()
