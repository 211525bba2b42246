#!/usr/bin/env python3
"""latency_tail.py - when were the latency run's slow events sent?

    python3 tests/bench/latency_tail.py [tests/bench/out/latency-events.txt]
        [--over MS] [--period MS]

Reads bench_latency's --dump (tests/bench/run.sh writes it for its latency
part): one line per event, "<ms since the first send> <latency ms>".
Prints the percentiles, then the slow events (over --over ms, default the
p99) as stalls: runs of slow events sent within 20 ms of each other, with
when each began, how long it lasted and its worst latency; then how the
stalls' starts fall in each --period (default 1000 ms): a stall that comes
once a second shows as one phase bucket holding most of them.
"""
import argparse
import math
import sys


def pct(sorted_v, p):
    """Nearest rank, as bench_latency's own figures."""
    if not sorted_v:
        return float("nan")
    i = min(len(sorted_v) - 1, max(0, math.ceil(p / 100 * len(sorted_v)) - 1))
    return sorted_v[i]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dump", nargs="?",
                    default="tests/bench/out/latency-events.txt")
    ap.add_argument("--over", type=float, default=None)
    ap.add_argument("--period", type=float, default=1000.0)
    a = ap.parse_args()
    ev = []
    with open(a.dump) as f:
        for line in f:
            t, lat = line.split()
            ev.append((float(t), float(lat)))
    lats = sorted(x for _, x in ev if x >= 0)
    missing = sum(1 for _, x in ev if x < 0)
    print(f"{len(ev)} events, {missing} missing; p50 {pct(lats, 50):.2f} "
          f"p90 {pct(lats, 90):.2f} p99 {pct(lats, 99):.2f} "
          f"p99.9 {pct(lats, 99.9):.2f} max {lats[-1]:.2f} ms")
    over = a.over if a.over is not None else pct(lats, 99)
    slow = [(t, x) for t, x in ev if x > over]
    stalls = []
    for t, x in slow:
        if stalls and t - stalls[-1]["end"] <= 20:
            s = stalls[-1]
            s["end"], s["n"], s["max"] = t, s["n"] + 1, max(s["max"], x)
        else:
            stalls.append({"start": t, "end": t, "n": 1, "max": x})
    print(f"{len(slow)} events over {over:.2f} ms in {len(stalls)} stalls:")
    for s in stalls:
        print(f"  at {s['start'] / 1000:8.3f} s  {s['end'] - s['start']:6.1f}"
              f" ms long  {s['n']:4d} events  worst {s['max']:7.2f} ms")
    buckets = [0] * 10
    for s in stalls:
        buckets[int((s["start"] % a.period) / a.period * 10)] += 1
    print(f"stall starts by phase of {a.period:.0f} ms (tenths): "
          + " ".join(str(b) for b in buckets))
    gaps = [b["start"] - s["start"] for s, b in zip(stalls, stalls[1:])]
    if gaps:
        gaps.sort()
        print(f"time between stalls: median {pct(gaps, 50):.0f} ms, "
              f"min {gaps[0]:.0f}, max {gaps[-1]:.0f}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # | head
        sys.exit(0)
