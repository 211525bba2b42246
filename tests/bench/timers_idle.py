#!/usr/bin/env python3
"""The cost of timers when nothing is due (issue 8: at most 1 ms of Redis
time per second per worker): one idle deal worker, its Redis time per
second measured from INFO commandstats (the sum of every command's usec)
over --seconds, in three cases:

  1. no timers at all;
  2. --pending timers scheduled (due a day from now), spread over every
     slot's shard and in the due index, as applied deals leave them;
  3. the same, with the full scan every second (timers.scan.interval=1s):
     what the worker cost before the due index (every shard looked at once
     per timers.interval).

Prints one JSON object.  Uses its own topic and key prefix (deleted after);
the Redis must have nothing else running on it while it measures.

  timers_idle.py --build DIR --redis HOST:PORT --brokers LIST \\
      [--seconds 10] [--pending 100000]
"""
import argparse
import json
import os
import subprocess
import sys
import time
import uuid


def crc16(data):
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def slot_tags():
    """pl_slot_tag(): for each slot the first "t<n>" that hashes to it."""
    tags = [None] * 16384
    left, n = 16384, 0
    while left:
        c = "t%d" % n
        s = crc16(c.encode()) % 16384
        if tags[s] is None:
            tags[s] = c
            left -= 1
        n += 1
    return tags


def redis_usec(cli):
    out = subprocess.run(cli + ["INFO", "commandstats"], capture_output=True,
                         text=True, check=True).stdout
    total = 0
    for line in out.splitlines():
        if line.startswith("cmdstat_") and "usec=" in line:
            for part in line.split(":", 1)[1].split(","):
                k, _, v = part.partition("=")
                if k == "usec":
                    total += int(v)
    return total


def measure(cli, seconds):
    u0 = redis_usec(cli)
    t0 = time.time()
    time.sleep(seconds)
    u1 = redis_usec(cli)
    return (u1 - u0) / 1000.0 / (time.time() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--redis", required=True)
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--pending", type=int, default=100000)
    a = ap.parse_args()
    host, port = a.redis.rsplit(":", 1)
    cli = ["redis-cli", "-h", host, "-p", port]
    run = uuid.uuid4().hex[:8]
    tp, kp = "bench.timers-idle-%s." % run, "bench:timers-idle-%s:" % run
    ctl = [os.path.join(a.build, "pipelinectl"), "--brokers", a.brokers,
           "--redis", a.redis, "--topic-prefix", tp, "--key-prefix", kp]
    topics = ["sales.leads", "sales.deals", "sales.pipeline", "sales.alerts",
              "sales.dlq"]
    subprocess.run(ctl + ["topics", "create", "--partitions", "1"] + topics,
                   check=True, capture_output=True)
    worker = None
    out = {"seconds": a.seconds, "pending": a.pending}

    def start(extra=()):
        log = open(os.path.join(a.build, "timers-idle-worker.log"), "ab")
        p = subprocess.Popen(
            [os.path.join(a.build, "deal_worker"), "--set",
             "brokers=" + a.brokers, "--set", "redis=" + a.redis,
             "--set", "topic.prefix=" + tp, "--set", "key.prefix=" + kp]
            + list(extra), stdout=log, stderr=log)
        time.sleep(4)   # joined, and the quick first full scan is over
        return p

    def stop(p):
        p.terminate()
        p.wait(60)

    try:
        worker = start()
        out["no_timers_ms_per_s"] = round(measure(cli, a.seconds), 3)
        # the pending timers, as applies leave them: members in the shards,
        # each slot in the due index at its earliest due time
        tags = slot_tags()
        due = int(time.time() * 1000) + 86400000
        cmds = []
        per_slot = {}
        for i in range(a.pending):
            s = i % 16384
            cmds.append("ZADD %stimers:{%s} %d stale|%d|B-%d\n" % (
                kp, tags[s], due + i, due + i, i))
            per_slot.setdefault(s, due + i)
        for s, d in per_slot.items():
            cmds.append("ZADD %s{timers}:due LT %d %d\n" % (kp, d, s))
        subprocess.run(cli, input="".join(cmds).encode(), check=True,
                       capture_output=True)
        time.sleep(1)
        out["pending_ms_per_s"] = round(measure(cli, a.seconds), 3)
        stop(worker)
        worker = start(["--set", "timers.scan.interval=1s"])
        out["full_scan_every_interval_ms_per_s"] = round(
            measure(cli, a.seconds), 3)
        stop(worker)
        worker = None
    finally:
        if worker:
            stop(worker)
        subprocess.run(ctl + ["topics", "delete"] + topics,
                       capture_output=True)
        keys = subprocess.run(cli + ["--scan", "--pattern", kp + "*"],
                              capture_output=True, text=True).stdout.split()
        if keys:
            subprocess.run(cli, input="".join(
                "UNLINK %s\n" % k for k in keys).encode(),
                capture_output=True)
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
