#!/usr/bin/env python3
"""Assemble the benchmark's parts into results.json and print the table.

usage: report.py PARTS_DIR RESULTS_JSON

PARTS_DIR holds what tests/bench/run.sh wrote: run.json, gen.json,
consume.json, redis.json (redis-wait0.json: the ceiling without WAIT;
redis-cpu.json: Redis's CPU seconds during it), workers-K.json
(workers-1-wait0.json: one worker without WAIT), memory-K.json (Redis
used_memory and CPU seconds around that run), latency.json,
timers.json, end.json, cpu.jsonl (the host's CPU ticks over each part:
busy, idle, steal) (any may be missing when a part was not run).
run.json's "mode" is "single" (one broker, one Redis) or "cluster" (3
brokers RF 3, Redis Cluster 3 masters + 3 replicas).  Targets (issue 5) are marked PASS
or MISS; a miss never fails this script.
"""
import json
import os
import platform
import re
import subprocess
import sys

# issue 8's targets
TARGET_FRACTION = 0.70  # of the lower ceiling
TARGET_RATE = 100000  # events/s, one worker
TARGET_CPU_S = 4.0  # worker CPU seconds per million events
TARGET_P99_MS = 10.0  # produce-to-derived at 2,000 events/s
TARGET_RSS_MB = 64.0  # one worker's peak RSS
TARGET_BYTES_PER_DEAL = 1024  # Redis used_memory per deal beyond its history
TARGET_TIMER_P99 = 1.1  # x timers.interval, timer due time -> alert
STEAL_NOTE_PCT = 10.0  # a part with more steal than this gets a note
CORES_SEEN = os.cpu_count() or 1  # /proc/stat's "cpu" line sums them

CORES_NOTE = ("on this {cores}-core machine Kafka, Redis and the workers share "
              "the cores, so more workers show the overhead of coordination, "
              "not horizontal scaling")
OVERLAP_NOTE = ("{k} workers beat one only because one worker waits on its "
                "serial round trips (Redis, then delivery) most of the time "
                "and more workers overlap those waits")


def load(parts, name):
    path = os.path.join(parts, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        text = f.read().strip()
    return json.loads(text) if text else None


def load_cpu(parts):
    """The host's CPU over each part (run.sh's cpu.jsonl): its share busy
    and stolen (steal: the hypervisor ran other machines on this VM's
    cores), in percent of both cores' time."""
    path = os.path.join(parts, "cpu.jsonl")
    out = []
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            c = json.loads(line)
            total = c["busy"] + c["idle"] + c["steal"]
            if total <= 0:
                continue
            out.append({"part": c["part"],
                        "seconds": round(total / c["hz"] / CORES_SEEN, 1),
                        "busy_pct": round(100.0 * c["busy"] / total, 1),
                        "steal_pct": round(100.0 * c["steal"] / total, 1)})
    return out


def cmd(args):
    try:
        return subprocess.run(args, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


MODES = {
    "single": "single node: one KRaft broker (topics RF 1), one Redis",
    "cluster": "cluster: 3 KRaft brokers (topics RF 3, min.insync.replicas "
               "2), Redis Cluster 3 masters + 3 replicas",
}


def machine(repo, mode):
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            mem_kb = int(f.readline().split()[1])
    except OSError:
        mem_kb = 0
    kafka = ""
    try:
        with open(os.path.join(repo, "deploy/kafka/pom.xml")) as f:
            m = re.search(r"<kafka.version>(.*?)</kafka.version>", f.read())
            kafka = m.group(1) if m else ""
    except OSError:
        pass
    redis = ""
    seed = os.environ.get("PL_REDIS", "127.0.0.1:16379").split(",")[0]
    host, _, port = seed.strip().rpartition(":")
    info = cmd(["redis-cli", "-h", host, "-p", port, "INFO", "server"])
    m = re.search(r"redis_version:(\S+)", info)
    if m:
        redis = m.group(1)
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1048576, 1),
        "kernel": platform.release(),
        "os": cmd(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "kafka": kafka,
        "redis": redis,
        "librdkafka": cmd(["pkg-config", "--modversion", "rdkafka"]),
        "services": "Kafka (single KRaft broker, 512 MB heap) and Redis on "
                    "the same host as the workers" if mode != "cluster" else
                    "Kafka (3 KRaft brokers, 256 MB heap each) and the Redis "
                    "Cluster (6 redis-server) on the same host as the "
                    "workers",
    }


def stats_sum(w):
    tot = {}
    for pw in w.get("per_worker", []):
        for kv in pw.get("stats", "").split():
            k, _, v = kv.partition("=")
            if v.isdigit():
                tot[k] = tot.get(k, 0) + int(v)
    return tot


def check_consistency(w, gen):
    """Did the workers apply exactly what the generator's model says?  The
    worker logs its counters on shutdown; applied + rejected must equal
    the generator's, and the pipeline must hold exactly the expected derived
    events.  Anything else means events were lost or applied twice."""
    tot = stats_sum(w)
    w["worker_counters"] = tot
    if not gen:
        return
    problems = []
    if tot.get("applied") != gen["applied"] or \
            tot.get("rejected") != gen["rejected"]:
        missing = gen["applied"] + gen["rejected"] - \
            tot.get("applied", 0) - tot.get("rejected", 0)
        problems.append(
            "workers applied %s and rejected %s, the model %d and %d "
            "(%d events never decided)" % (
                tot.get("applied"), tot.get("rejected"), gen["applied"],
                gen["rejected"], missing))
    if w["derived"] != w["expected_derived"]:
        problems.append("%d derived events published, %d expected"
                        % (w["derived"], w["expected_derived"]))
    w["consistent"] = not problems
    w["problems"] = problems


FAILED_MARK = "NOT JUDGED (the run failed)"


def mark(ok):
    return "PASS" if ok else "MISS"


def with_redis_cpu(d, cpu, events):
    """d with the Redis CPU seconds of its run (run.sh's redis_cpu_json
    members), the same per million events, and the share of the run's
    seconds (d's "seconds") its main thread was busy, when known."""
    if not cpu or not events or "redis_cpu_main_s" not in cpu:
        return d
    d = dict(d)
    d["redis_cpu"] = {k: cpu[k] for k in ("redis_cpu_main_s", "redis_cpu_s",
                                          "redis_cpu_children_s")}
    for k in ("redis_cpu_main_s", "redis_cpu_s", "redis_cpu_children_s"):
        d["redis_cpu"][k + "_per_million"] = round(cpu[k] / events * 1e6, 2)
    if d.get("seconds"):
        d["redis_cpu"]["main_busy_fraction"] = round(
            cpu["redis_cpu_main_s"] / d["seconds"], 3)
    return d


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    parts, out = sys.argv[1], sys.argv[2]
    repo = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
    run = load(parts, "run.json") or {}
    run.update(load(parts, "end.json") or {})
    gen = load(parts, "gen.json")
    consume = load(parts, "consume.json")
    redis = load(parts, "redis.json")
    redis0 = load(parts, "redis-wait0.json")
    redis1 = load(parts, "redis-percall.json")
    redis_nd = load(parts, "redis-nodrops.json")
    lat = load(parts, "latency.json")
    timers = load(parts, "timers.json") or {}
    timers_idle = load(parts, "timers-idle.json")
    report_read = load(parts, "report-read.json")
    mode = run.get("mode", "single")
    wait = run.get("wait_replicas", 0)
    workers = {}  # (K, WAIT) -> workers-*.json
    memory = {}
    for name in sorted(os.listdir(parts)):
        m = re.fullmatch(r"(workers|memory)-(\d+)(-wait0)?\.json", name)
        if m:
            key = (int(m.group(2)), 0 if m.group(3) else wait)
            (workers if m.group(1) == "workers" else memory)[key] = \
                (load(parts, name), m.group(2) + (m.group(3) or ""))

    res = {"run": run, "mode": mode, "mode_text": MODES.get(mode, mode),
           "wait_replicas": wait, "machine": machine(repo, mode),
           "generator": gen,
           "ceilings": {}, "workers": [], "worker": None, "latency": lat,
           "timer_latency": timers.get("timer_latency"),
           "timer_latency_note": timers.get("note"),
           "timers_idle": timers_idle, "report_read": report_read,
           "host_cpu": load_cpu(parts),
           "targets": [],
           "notes": []}
    cores = res["machine"]["cores"]

    ceilings = []
    if consume:
        res["ceilings"]["kafka_consume"] = consume
        ceilings.append(("kafka consume", consume["events_per_s"]))
    if redis:
        redis = with_redis_cpu(redis, load(parts, "redis-cpu.json"),
                               redis.get("events"))
        res["ceilings"]["redis_apply"] = redis
        ceilings.append(("redis apply script", redis["events_per_s"]))
    if redis0:  # not a ceiling of these workers (they WAIT): for comparison
        res["ceilings"]["redis_apply_no_wait"] = redis0
    if redis1:  # the old shape (a call per event): for comparison
        res["ceilings"]["redis_apply_per_event"] = redis1
    if redis_nd:  # the ops as measured before 2026-12-01 c: for comparison
        res["ceilings"]["redis_apply_no_drops"] = redis_nd
    lower = min(ceilings, key=lambda c: c[1]) if ceilings else None
    if lower:
        res["ceilings"]["lower"] = {"name": lower[0], "events_per_s": lower[1]}

    # by worker count; the no-WAIT baseline after the run with the WAIT
    for key in sorted(workers, key=lambda kw: (kw[0], kw[1] != wait)):
        w, label = workers[key]
        if w is None:
            continue
        w = dict(w)
        w["wait_replicas"] = key[1]
        w["label"] = label
        check_consistency(w, gen)
        mem = memory.get(key, (None, None))[0]
        if mem:
            delta = mem["used_memory_after"] - mem["used_memory_before"]
            mem = dict(mem, used_memory_delta=delta)
            if gen and gen.get("deals"):
                mem["bytes_per_deal"] = round(delta / gen["deals"])
                if mem.get("history_bytes") is not None:
                    h = mem["history_bytes"] / gen["deals"]
                    mem["history_bytes_per_deal"] = round(h)
                    mem["bytes_per_deal_beyond_history"] = round(
                        delta / gen["deals"] - h)
            if mem.get("keys"):
                mem["bytes_per_key"] = round(delta / mem["keys"])
            w["redis_memory"] = mem
            if "redis_cpu_main_s" in mem:
                w = with_redis_cpu(w, mem, w["events"])
        if key != (1, wait):
            w.pop("timeline", None)
        low = lower
        if key[1] != wait and redis0:  # the baseline: the no-WAIT ceiling
            low = min([c for c in ceilings if c[0] != "redis apply script"]
                      + [("redis apply script", redis0["events_per_s"])],
                      key=lambda c: c[1])
        if low:
            w["fraction_of_lower_ceiling"] = round(
                w["events_per_s"] / low[1], 3)
        res["workers"].append(w)
    main_runs = [w for w in res["workers"] if w["wait_replicas"] == wait]
    one = next((w for w in main_runs if w["workers"] == 1), None)
    res["worker"] = one
    if len(main_runs) > 1:
        res["notes"].append(CORES_NOTE.format(cores=cores))
    best = max(main_runs, key=lambda w: w["events_per_s"], default=None)
    if one and best and best is not one and \
            best["events_per_s"] > 1.2 * one["events_per_s"]:
        res["notes"].append(OVERLAP_NOTE.format(k=best["workers"]))
    for w in res["workers"]:
        bad = [pw["exit"] for pw in w.get("per_worker", []) if pw["exit"]]
        if bad:
            res["notes"].append(
                "%d workers: exit status %s after SIGTERM (137: did not exit "
                "within 30 s and was killed)" % (w["workers"], bad))
    for w in res["workers"]:
        if not w.get("consistent", True):
            res["notes"].append(
                "%d workers: WRONG RESULT (%s); a worker log says 'batch of "
                "N abandoned (rebalance)' when a rebalance drops a batch "
                "without rewinding" % (w["workers"], "; ".join(w["problems"])))
    if wait:
        res["notes"].append(
            "the workers ran with redis.wait.replicas=%d: after each apply "
            "batch a WAIT for %d replica(s) of each master written to"
            % (wait, wait))
    if any("redis_memory" in w for w in res["workers"]):
        res["notes"].append(
            "Redis memory: used_memory (summed over the masters of a "
            "cluster, replicas not counted) after the run's workers stopped "
            "minus before they started, over the deals; it includes the "
            "per-event keys still alive then (dedupe, outbox, timers) and "
            "whatever other clients of a shared Redis wrote meanwhile")
    res["notes"].append(
        "throughput is timed from the workers' start (group join included) "
        "until the group's committed offsets cover every event and the "
        "pipeline topic holds every expected derived event; the workers run "
        "with kafka.auto.commit.interval.ms=100 so the commit shows within "
        "0.1 s, otherwise their defaults")
    stolen = [c for c in res["host_cpu"] if c["steal_pct"] > STEAL_NOTE_PCT]
    if stolen:
        res["notes"].append(
            "the hypervisor took more than %g%% of this machine's CPU time "
            "(steal) during %s: those figures measure a contended host as "
            "much as the code" % (STEAL_NOTE_PCT, ", ".join(
                "%s (%.0f%%)" % (c["part"], c["steal_pct"]) for c in stolen)))
    if lat:
        res["notes"].append(
            "latency: arrival at a consumer of the pipeline topic minus the "
            "input's rd_kafka_producev call, same process clock; the bench "
            "producer uses linger.ms=%d, the worker its defaults "
            "(batch.wait.ms=2, producer linger.ms=1)"
            % lat.get("producer_linger_ms", 0))

    t = res["targets"]
    if one and lower:
        f = one["events_per_s"] / lower[1]
        t.append({"name": "one worker / lower ceiling", "value": round(f, 3),
                  "target": ">= %.2f" % TARGET_FRACTION,
                  "pass": f >= TARGET_FRACTION})
    if one:
        t.append({"name": "one worker events/s",
                  "value": round(one["events_per_s"]),
                  "target": ">= %d" % TARGET_RATE,
                  "pass": one["events_per_s"] >= TARGET_RATE and one["done"]
                  and one.get("consistent", True)})
        t.append({"name": "one worker peak RSS (MB)",
                  "value": one["peak_rss_mb_max"],
                  "target": "<= %g" % TARGET_RSS_MB,
                  "pass": 0 < one["peak_rss_mb_max"] <= TARGET_RSS_MB})
    if lat:
        t.append({"name": "p99 produce-to-derived (ms)",
                  "value": lat["p99_ms"], "target": "<= %g" % TARGET_P99_MS,
                  "pass": 0 <= lat["p99_ms"] <= TARGET_P99_MS
                  and lat["missing"] == 0})

    with open(out, "w") as f:
        json.dump(res, f, indent=2)
        f.write("\n")
    print_table(res, lower)


def run_name(w, res):
    k = w["workers"]
    name = "%d deal worker%s" % (k, "s" if k > 1 else "")
    if w.get("wait_replicas", 0) != res.get("wait_replicas", 0):
        name += ", no WAIT" if not w["wait_replicas"] else \
            ", WAIT %d" % w["wait_replicas"]
    elif res.get("wait_replicas"):
        name += ", WAIT %d" % w["wait_replicas"]
    return name


def print_table(res, lower):
    m = res["machine"]
    gen = res["generator"]
    tgt = {x["name"]: x for x in res["targets"]}
    p = print
    p()
    p("Sales pipeline benchmark  (run %s)" % res["run"].get("run_id", "?"))
    p("mode: %s; workers' redis.wait.replicas=%d"
      % (res.get("mode_text", "single node"), res.get("wait_replicas", 0)))
    la = res["run"].get("loadavg_at_start")
    if la:
        p("load average (1, 5, 15 min): %s at start, %s at the end"
          % (la, res["run"].get("loadavg_at_end", "?")))
    p("machine: %s, %s cores, %.1f GB; Kafka %s, Redis %s, librdkafka %s"
      % (m["cpu"], m["cores"], m["memory_gb"], m["kafka"], m["redis"],
         m["librdkafka"]))
    if gen:
        bt = gen["by_type"]
        p("load: %d events over %d deals (seed %d): %d created, %d updated, "
          "%d stage requests, %d activities; %d rejected; %d derived "
          "expected" % (gen["events"], gen["deals"], gen["seed"],
                        bt["deal.created"], bt["deal.updated"],
                        bt["deal.stage_requested"], bt["deal.activity"],
                        gen["rejected"], gen["expected_derived"]))
    fmt = "  %-50s %14s  %s"
    if res.get("host_cpu"):
        p()
        p("Host CPU during each part (both cores; steal: taken by the "
          "hypervisor for other machines)")
        for c in res["host_cpu"]:
            p(fmt % (c["part"], "%.0f s" % c["seconds"],
                     "busy %4.1f%%, steal %4.1f%%%s" % (
                         c["busy_pct"], c["steal_pct"],
                         "  CONTENDED" if c["steal_pct"] > STEAL_NOTE_PCT
                         else "")))
    p()
    p("Throughput")
    c = res["ceilings"]
    if "kafka_consume" in c:
        p(fmt % ("ceiling: librdkafka consume, no processing",
                 "%.0f ev/s" % c["kafka_consume"]["events_per_s"], ""))
    if "redis_apply" in c:
        r = c["redis_apply"]
        wr = " + WAIT %d" % r["wait_replicas"] \
            if r.get("wait_replicas") else ""
        p(fmt % ("ceiling: Redis apply script, x%d a call, by %d%s"
                 % (r.get("call_ops", 1), r["batch"], wr),
                 "%.0f ev/s" % r["events_per_s"],
                 "(conflicts %d)" % r["conflicts"] if r["conflicts"] else ""))
    if "redis_apply_no_wait" in c:
        r = c["redis_apply_no_wait"]
        p(fmt % ("  (the same without WAIT)", "%.0f ev/s" % r["events_per_s"],
                 "(conflicts %d)" % r["conflicts"] if r["conflicts"] else ""))
    if "redis_apply_per_event" in c:
        r = c["redis_apply_per_event"]
        p(fmt % ("  (one call per event, as before batching)",
                 "%.0f ev/s" % r["events_per_s"],
                 "(conflicts %d)" % r["conflicts"] if r["conflicts"] else ""))
    if "redis_apply_no_drops" in c:
        r = c["redis_apply_no_drops"]
        p(fmt % ("  (an outcome stored by every op, none dropped,",
                 "%.0f ev/s" % r["events_per_s"],
                 "(conflicts %d)" % r["conflicts"] if r["conflicts"] else ""))
        p("     as measured before 2026-12-01 c)")
    for w in res["workers"]:
        k = w["workers"]
        name = run_name(w, res)
        extra = ""
        if not w.get("consistent", True):
            extra = "WRONG RESULT: " + "; ".join(w["problems"])
        if not w["done"] and not extra:
            extra = "DID NOT FINISH%s (derived %d/%d, committed %d/%d)" % (
                ", stalled" if w.get("stalled") else "",
                w["derived"], w["expected_derived"], w["committed"],
                w["events"])
        p(fmt % (name,
                 "%.0f ev/s" % w["events_per_s"],
                 extra or "%.1f s, %s of lower ceiling, CPU %.2f s/M ev, "
                 "RSS %.1f MB%s" % (
                     w["seconds"],
                     "%.0f%%" % (100 * w["fraction_of_lower_ceiling"])
                     if "fraction_of_lower_ceiling" in w else "?",
                     w["cpu_s_per_million"], w["peak_rss_mb_max"],
                     "/worker" if k > 1 else "")))
    if len([w for w in res["workers"]
            if w.get("wait_replicas", 0) == res.get("wait_replicas", 0)]) > 1:
        p("  note: " + CORES_NOTE.format(cores=m["cores"]))
    for n in res["notes"]:
        if "overlap those waits" in n or "after SIGTERM" in n:
            p("        " + n)
    cpus = [("ceiling: Redis apply script", c["redis_apply"]["redis_cpu"])
            ] if "redis_cpu" in c.get("redis_apply", {}) else []
    cpus += [(run_name(w, res), w["redis_cpu"]) for w in res["workers"]
             if "redis_cpu" in w]
    if cpus:
        p()
        p("Redis CPU per million events (its main thread, which runs the "
          "scripts%s)" % (", summed over the masters"
                         if res.get("mode") == "cluster" else ""))
        for name, r in cpus:
            busy = r.get("main_busy_fraction")
            p(fmt % (name, "%.2f s" % r["redis_cpu_main_s_per_million"],
                     "whole process %.2f s, AOF rewrites %.2f s%s" % (
                         r["redis_cpu_s_per_million"],
                         r["redis_cpu_children_s_per_million"],
                         "; main thread busy %.0f%% of the run" % (100 * busy)
                         if busy is not None else "")))
    mems = [w for w in res["workers"] if "redis_memory" in w]
    if mems:
        p()
        p("Redis memory left by each run (used_memory delta%s)"
          % (", summed over the masters" if res.get("mode") == "cluster"
             else ""))
        for w in mems:
            r = w["redis_memory"]
            p(fmt % (run_name(w, res),
                     "%s B/deal" % r.get("bytes_per_deal", "?"),
                     "%.1f MB, %d keys, %s B/key" % (
                         r["used_memory_delta"] / 1048576, r["keys"],
                         r.get("bytes_per_key", "?"))))
    one = res["worker"]
    if one:
        p()
        p("One worker vs targets")
        x = tgt.get("one worker events/s")
        p(fmt % ("events/s", "%.0f" % one["events_per_s"],
                 "%s (target %s)" % (mark(x["pass"]), x["target"])))
        x = tgt.get("one worker / lower ceiling")
        if x:
            p(fmt % ("fraction of the lower ceiling (%s)" % lower[0],
                     "%.0f%%" % (100 * x["value"]),
                     "%s (target >= %.0f%%)" % (mark(x["pass"]),
                                                100 * TARGET_FRACTION)))
        valid = one["done"] and one.get("consistent", True)
        p(fmt % ("CPU seconds per million events",
                 "%.2f" % one["cpu_s_per_million"],
                 "%s (target <= %g)" % (
                     mark(one["cpu_s_per_million"] <= TARGET_CPU_S)
                     if valid else FAILED_MARK, TARGET_CPU_S)))
        mem = [w.get("redis_memory") for w in res["workers"]
               if w.get("redis_memory")]
        if mem and mem[0].get("bytes_per_deal") and not valid:
            p(fmt % ("Redis bytes per deal", "%d B" % mem[0]["bytes_per_deal"],
                     FAILED_MARK))
        elif mem and mem[0].get("bytes_per_deal"):
            b = mem[0]["bytes_per_deal"]
            beyond = mem[0].get("bytes_per_deal_beyond_history")
            if beyond is None:  # histories not measured: judged with them
                p(fmt % ("Redis bytes per deal (history included)",
                         "%d B" % b, "%s (target <= %d B beyond the history)"
                         % (mark(b <= TARGET_BYTES_PER_DEAL),
                            TARGET_BYTES_PER_DEAL)))
            else:
                p(fmt % ("Redis bytes per deal beyond its history",
                         "%d B" % beyond, "%s (target <= %d B; %d B with "
                         "the history's %d)" % (
                             mark(beyond <= TARGET_BYTES_PER_DEAL),
                             TARGET_BYTES_PER_DEAL, b,
                             mem[0]["history_bytes_per_deal"])))
        x = tgt.get("one worker peak RSS (MB)")
        p(fmt % ("peak RSS (VmHWM)", "%.1f MB" % one["peak_rss_mb_max"],
                 "%s (target %s MB)" % (mark(x["pass"]), x["target"])))
    lat = res["latency"]
    if lat:
        p()
        p("Latency, produce -> derived event at a consumer, %d ev/s for %g s"
          " (achieved %.0f ev/s; %d measured, %d missing)"
          % (lat["rate_target"], lat["duration_s"], lat["rate_achieved"],
             lat["counted"], lat["missing"]))
        x = tgt.get("p99 produce-to-derived (ms)")
        p(fmt % ("p50", "%.2f ms" % lat["p50_ms"], ""))
        p(fmt % ("p99", "%.2f ms" % lat["p99_ms"],
                 "%s (target %s ms)" % (mark(x["pass"]), x["target"])))
        p(fmt % ("p99.9", "%.2f ms" % lat["p999_ms"], ""))
        p(fmt % ("max", "%.2f ms" % lat["max_ms"], ""))
    p()
    t = res["timer_latency"]
    if t is not None:
        p("Timer due time -> alert (%d of %d stale timers, timers.interval "
          "%s):" % (t["alerts"], t["expected"], t["timers_interval"]))
        p(fmt % ("p50", "%.0f ms" % t["p50_ms"], ""))
        iv = str(t.get("timers_interval", "1s"))
        iv_ms = float(iv[:-2]) if iv.endswith("ms") else \
            float(iv[:-1]) * 1000 if iv.endswith("s") else 1000.0
        p(fmt % ("p99", "%.0f ms" % t["p99_ms"],
                 "%s (target <= %.1f x timers.interval)" % (
                     mark(t["p99_ms"] <= TARGET_TIMER_P99 * iv_ms),
                     TARGET_TIMER_P99)))
        p(fmt % ("p99.9", "%.0f ms" % t["p999_ms"], ""))
        p(fmt % ("max", "%.0f ms" % t["max_ms"], ""))
        p("  (%s)" % res["timer_latency_note"])
    else:
        p("Timer due time -> alert: null (%s)" % res["timer_latency_note"])
    p()
    ti = res.get("timers_idle")
    if ti and "no_timers_ms_per_s" in ti:
        p("Timers when nothing is due: Redis time per second, one idle "
          "worker (target <= 1 ms/s)")
        p(fmt % ("no timers", "%.3f ms/s" % ti["no_timers_ms_per_s"],
                 mark(ti["no_timers_ms_per_s"] <= 1.0)))
        p(fmt % ("%d timers pending" % ti["pending"],
                 "%.3f ms/s" % ti["pending_ms_per_s"],
                 mark(ti["pending_ms_per_s"] <= 1.0)))
        p(fmt % ("full scan each interval (before the index)",
                 "%.3f ms/s" % ti["full_scan_every_interval_ms_per_s"], ""))
    elif ti:
        p("Timers when nothing is due: %s" % ti.get("note"))
    rr = res.get("report_read")
    if rr and "read_ms_median" in rr:
        p("Analytics at %d deals (%d figure fields):" % (
            rr["deals"], rr["figure_fields"]))
        p(fmt % ("read the figures (median of 20)",
                 "%.1f ms" % rr["read_ms_median"], ""))
        p(fmt % ("read + the three reports (median)",
                 "%.1f ms" % rr["three_reports_ms_median"], ""))
    elif rr:
        p("Analytics read: %s" % rr.get("note"))
    p()


if __name__ == "__main__":
    main()
