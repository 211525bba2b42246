#!/usr/bin/env python3
"""Timer due time -> alert latency, for tests/bench/run.sh.

Starts one deal worker with the seconds-scale rules (deploy/rules/
seconds.yaml: a deal in qualification is stale after 7 s), creates N deals
whose stale timers come due spread over a few seconds, and measures, for
each deal.stale alert, its Kafka timestamp (when the worker produced it)
minus its due time (the alert's occurred_at).  Prints one JSON object for
results.json ("timer_latency").
"""
import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import time

STALE_S = 7  # qualification's stale_after in deploy/rules/seconds.yaml


def iso(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc) \
        .strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def ms_of(s):
    return int(datetime.datetime.fromisoformat(
        s.replace("Z", "+00:00")).timestamp() * 1000)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--topic-prefix", required=True)
    ap.add_argument("--key-prefix", required=True)
    ap.add_argument("--deals", type=int, default=2000)
    ap.add_argument("--spread", type=float, default=10.0)
    ap.add_argument("--interval", default="1s")
    ap.add_argument("--log", required=True)
    a = ap.parse_args()

    ctl = [os.path.join(a.build, "pipelinectl"), "--topic-prefix",
           a.topic_prefix, "--key-prefix", a.key_prefix]
    subprocess.run(ctl + ["topics", "create", "--partitions", "6",
                          "sales.deals", "sales.pipeline", "sales.alerts",
                          "sales.dlq"], check=True, capture_output=True)
    log = open(a.log, "wb")
    worker = subprocess.Popen(
        [os.path.join(a.build, "deal_worker"),
         "--set", "topic.prefix=" + a.topic_prefix,
         "--set", "key.prefix=" + a.key_prefix,
         "--set", "rules.file=" + os.path.join(a.source, "deploy", "rules",
                                               "seconds.yaml"),
         "--set", "timers.interval=" + a.interval],
        stdout=log, stderr=log)
    try:
        deadline = time.time() + 30
        while b"assigned" not in open(a.log, "rb").read():
            if time.time() > deadline or worker.poll() is not None:
                sys.exit("timer latency: the worker did not start")
            time.sleep(0.1)
        first_due = time.time() + 3
        lines = []
        for i in range(a.deals):
            due = first_due + a.spread * i / a.deals
            lines.append(json.dumps({
                "type": "deal.created", "event_id": "tl-%d" % i,
                "occurred_at": iso(due - STALE_S),
                "deal_id": "TL-%d" % i}))
        subprocess.run(ctl + ["produce", "sales.deals"],
                       input="\n".join(lines).encode(), check=True,
                       capture_output=True)
        deadline = time.time() + a.spread + 60
        alerts = []
        while time.time() < deadline:
            p = subprocess.run(ctl + ["tail", "--from-beginning",
                                      "--until-end", "--meta",
                                      "sales.alerts"],
                               capture_output=True, check=True)
            alerts = [json.loads(l) for l in p.stdout.decode().splitlines()
                      if l.strip()]
            if len(alerts) >= a.deals:
                break
            time.sleep(1)
        lat = [m["timestamp"] - ms_of(m["value"]["occurred_at"])
               for m in alerts if m["value"]["type"] == "deal.stale"]
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
        subprocess.run(ctl + ["topics", "delete", "sales.deals",
                              "sales.pipeline", "sales.alerts", "sales.dlq"],
                       capture_output=True)
    if not lat:
        sys.exit("timer latency: no alerts arrived")
    print(json.dumps({"timer_latency": {
        "alerts": len(lat), "expected": a.deals,
        "timers_interval": a.interval,
        "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
        "p999_ms": pct(lat, 99.9), "max_ms": max(lat), "min_ms": min(lat)},
        "note": "due time -> the alert's produce time; the due index is "
                "looked at sixteen times per timers.interval (%s)"
                % a.interval}))


if __name__ == "__main__":
    main()
