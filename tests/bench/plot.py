#!/usr/bin/env python3
"""Draw tests/bench/out/bench.png (run.sh --cluster: out/cluster/bench.png)
from results.json.

usage: plot.py RESULTS_JSON PNG

Left: produce-to-derived latency percentiles at the steady rate, with the
20 ms p99 target.  Right: events/s of the deal worker runs (1, 2 and 4; in
cluster mode 1, 2, 3 and one worker without WAIT) against the ceilings
(librdkafka consuming alone; Redis running the apply script, with the
workers' WAIT and without).
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        res = json.load(f)
    m = res["machine"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    cluster = res.get("mode") == "cluster"
    fig.suptitle("Sales pipeline benchmark - %s, %s cores, Kafka %s + Redis %s "
                 "on the same host%s" % (
                     m["cpu"], m["cores"], m["kafka"], m["redis"],
                     "\ncluster: 3 brokers (RF 3, min ISR 2), Redis 3 masters "
                     "+ 3 replicas, workers WAIT %d" % res.get("wait_replicas",
                                                            0)
                     if cluster else ""), fontsize=10)

    lat = res.get("latency")
    if lat:
        names = ["p50", "p90", "p99", "p99.9", "max"]
        vals = [lat["p50_ms"], lat["p90_ms"], lat["p99_ms"], lat["p999_ms"],
                lat["max_ms"]]
        bars = ax1.bar(names, vals, color=["#4c72b0"] * 3 + ["#8172b2"] * 2)
        for b, v in zip(bars, vals):
            ax1.annotate("%.1f" % v, (b.get_x() + b.get_width() / 2, v),
                         ha="center", va="bottom", fontsize=8)
        ax1.axhline(20, color="#c44e52", ls="--", lw=1)
        ax1.text(-0.4, 20, " p99 target 20 ms", color="#c44e52",
                 va="bottom", fontsize=8)
        ax1.set_ylabel("ms")
        ax1.set_title("produce -> derived event, %d events/s for %g s"
                      % (lat["rate_target"], lat["duration_s"]), fontsize=10)
        if max(vals) > 10 * max(vals[0], 1):
            ax1.set_yscale("log")
            ax1.set_ylim(bottom=1)
    else:
        ax1.text(0.5, 0.5, "latency not run", ha="center",
                 transform=ax1.transAxes)
    t = res.get("timer_latency")
    if t is None:
        ax1.set_xlabel("timer due -> alert: not measured", fontsize=8,
                       color="gray")
    else:
        ax1.set_xlabel("timer due -> alert (timers.interval %s): p50 %.0f ms,"
                       " p99 %.0f ms, p99.9 %.0f ms"
                       % (t["timers_interval"], t["p50_ms"], t["p99_ms"],
                          t["p999_ms"]), fontsize=8)

    ws = res.get("workers") or []
    if ws:
        xs = ["%d worker%s%s" % (w["workers"], "s" if w["workers"] > 1 else "",
                                 "\nno WAIT" if w.get("wait_replicas", 0)
                                 != res.get("wait_replicas", 0) else "")
              for w in ws]
        ys = [w["events_per_s"] for w in ws]
        ok = [w.get("consistent", True) and w.get("done", True) for w in ws]
        bars = ax2.bar(xs, ys, color=["#55a868" if g else "#c44e52"
                                      for g in ok],
                       hatch=None)
        for b, v, g in zip(bars, ys, ok):
            if not g:
                b.set_hatch("//")
            ax2.annotate("%.0f%s" % (v, "" if g else "\nwrong result"),
                         (b.get_x() + b.get_width() / 2, v),
                         ha="center", va="bottom", fontsize=8)
    c = res.get("ceilings", {})
    styles = {"kafka_consume": ("librdkafka consume (no processing)",
                                "#dd8452"),
              "redis_apply": ("Redis apply script, pipelined%s"
                              % (", WAIT %d" % res["wait_replicas"]
                                 if res.get("wait_replicas") else ""),
                              "#c44e52"),
              "redis_apply_no_wait": ("Redis apply script, no WAIT",
                                      "#937860")}
    for key, (label, color) in styles.items():
        if key in c:
            v = c[key]["events_per_s"]
            ax2.axhline(v, color=color, ls="--", lw=1.2,
                        label="%s: %.0f/s" % (label, v))
    ax2.axhline(50000, color="gray", ls=":", lw=1,
                label="target: 50,000/s and 50% of the lower ceiling")
    if "lower" in c:
        ax2.axhline(c["lower"]["events_per_s"] / 2, color="gray", ls=":",
                    lw=1)
    ax2.set_yscale("log")
    ax2.set_ylim(bottom=1000)
    ax2.set_ylabel("events/s (log)")
    ax2.set_title("throughput vs ceilings (%d events); on %s cores: "
                  "overhead, not speed-up" % (
                      (res.get("generator") or {}).get("events", 0),
                      m["cores"]), fontsize=10)
    ax2.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08),
               ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)


if __name__ == "__main__":
    main()
