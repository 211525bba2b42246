"""The chaos test: a seeded stream of leads and deals through the real
workers on a private stack (deploy/stack.sh with its own folder and ports),
while workers are SIGKILLed at random, the broker is stopped, Redis is
SIGKILLed and restarted on its AOF, and a worker is SIGSTOPped for longer
than its session timeout.  Then every derived event, alert, dead letter and
final state is checked against tests/chaos/model.py (the contract's rules,
computed independently of the workers).

Run it with tests/chaos/run.sh [--short] [--seed N].
"""
import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
sys.path.insert(0, HERE)

import harness  # noqa: E402
from harness import ClusterStack, Env, PrivateStack  # noqa: E402
import model  # noqa: E402

PROFILES = {
    # stream seconds, deals, leads, worker kills, broker stopped (s),
    # broker SIGKILLed (s down), worker SIGSTOPped (s); Redis is SIGKILLed
    # once
    "full": dict(duration=330, deals=700, leads=260, kills=24,
                 broker_stop=60, broker_kill=20, sigstop=15),
    "short": dict(duration=80, deals=150, leads=60, kills=6,
                  broker_stop=15, broker_kill=10, sigstop=10),
    # --cluster (tests/cluster/failover.sh): 3 brokers and a Redis Cluster;
    # one Redis master SIGKILLed (its replica takes over; the old master
    # comes back as a replica after redis_down s), one broker SIGKILLed
    # (down broker_kill s), worker kills; the workers WAIT for 1 replica
    "cluster": dict(duration=90, deals=150, leads=60, kills=4,
                    broker_kill=15, redis_down=10),
}
SESSION_TIMEOUT_MS = 6000


def log(msg):
    sys.stdout.write("chaos %s  %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stdout.flush()


class Chaos:
    def __init__(self, args):
        self.args = args
        self.p = PROFILES["cluster" if args.cluster else
                          "short" if args.short else "full"]
        self.rng = random.Random(args.seed * 7919 + 1)
        if args.cluster:
            self.stack = ClusterStack("chaos-%d" % os.getpid(), partitions=6)
        else:
            self.stack = PrivateStack("chaos-%d" % os.getpid(),
                                      partitions=6)
        self.env = None
        self.workers = {}        # slot name -> Popen
        self.expected_exit = set()   # pids we killed or stopped ourselves
        self.stopped = set()     # slot names currently SIGSTOPped
        self.lock = threading.RLock()
        self.unexpected = []     # (slot, pid, rc, log tail)
        self.figures = {"worker_kills": 0, "broker_stops": 0,
                        "broker_stop_s": 0, "broker_kills": 0,
                        "broker_kill_s": 0, "redis_kills": 0,
                        "sigstops": 0, "sigstop_s": 0,
                        "redis_master_kills": 0, "redis_failover_s": 0,
                        "produce_retries": 0, "worker_restarts": 0}
        self.fault_log = []
        self.producer_done = threading.Event()
        self.faults_done = threading.Event()
        self.errors = []
        self.closing = False     # set once the run ends: start nothing more

    # ------------------------------------------------------------ workers
    def worker_args(self, program):
        args = ["--set", "retry.backoff.max=2s",
                "--set", "batch.size=100",
                "--set", "rules.file=" + os.path.join(
                    harness.SOURCE, "deploy", "rules", "seconds.yaml"),
                "--set", "kafka.consumer.session.timeout.ms=%d"
                % SESSION_TIMEOUT_MS,
                "--set", "kafka.consumer.heartbeat.interval.ms=1000"]
        if program == "deal_worker":
            args += ["--set", "timers.interval=1s",
                     "--set", "timers.lease=10s"]
        if self.args.cluster:
            args += ["--set", "redis.wait.replicas=1"]
        return args

    def start_slot(self, slot):
        if self.closing:
            return None
        program = slot.rsplit("-", 1)[0]
        p = self.env.start_worker(program, self.worker_args(program))
        p.slot = slot
        with self.lock:
            self.workers[slot] = p
        return p

    def check_workers(self):
        """A worker that exits without being told to is a failure (the
        README: exit 0 only for a requested shutdown); it is recorded and
        started again so the rest of the run still tells us something."""
        with self.lock:
            if self.closing:
                return
            for slot, p in list(self.workers.items()):
                if p.poll() is None or p.pid in self.expected_exit:
                    continue
                tail = open(p.log_path, errors="replace").read()[-2500:]
                self.unexpected.append((slot, p.pid, p.returncode,
                                        p.log_path, tail))
                log("UNEXPECTED EXIT of %s (pid %d) with status %d; log %s"
                    % (slot, p.pid, p.returncode, p.log_path))
                self.start_slot(slot)
                self.figures["worker_restarts"] += 1

    def kill_worker(self):
        with self.lock:
            if self.closing:
                return
            slots = [s for s, p in self.workers.items()
                     if p.poll() is None and s not in self.stopped]
            if not slots:
                return
            slot = self.rng.choice(slots)
            p = self.workers[slot]
            self.expected_exit.add(p.pid)
            p.send_signal(signal.SIGKILL)
        p.wait()
        self.figures["worker_kills"] += 1
        self.fault_log.append("%s SIGKILL %s pid %d" % (
            time.strftime("%H:%M:%S"), slot, p.pid))
        time.sleep(self.rng.uniform(0.2, 3))
        with self.lock:
            self.start_slot(slot)
            self.figures["worker_restarts"] += 1

    # ------------------------------------------------------------ faults
    def sleep_until(self, t):
        while time.time() < t:
            self.check_workers()
            time.sleep(min(0.5, max(0, t - time.time())))

    def fault_plan(self):
        d = self.p["duration"]
        plan = []
        k = self.p["kills"]
        for i in range(k):
            # spread over the stream, jittered
            at = d * 0.05 + (d * 0.9) * (i + self.rng.uniform(0.1, 0.9)) / k
            plan.append((at, "kill_worker"))
        if self.args.cluster:
            plan.append((d * 0.25, "redis_master_kill"))
            plan.append((d * 0.6, "broker_kill"))
        else:
            plan.append((d * 0.22, "redis_kill"))
            plan.append((d * 0.38, "sigstop"))
            plan.append((d * 0.55, "broker_stop"))
            plan.append((d * 0.85, "broker_kill"))
        plan.sort()
        return plan

    def run_faults(self, t_start):
        """Worker kills in this thread; the long faults (Redis down, a
        SIGSTOP, the broker down) each in a thread of its own, so kills
        go on during them."""
        threads = []

        def one(what):
            try:
                log("fault: %s" % what)
                getattr(self, "fault_" + what)()
            except Exception:
                self.errors.append("fault %s: %s" % (
                    what, traceback.format_exc()))
        try:
            for at, what in self.fault_plan():
                self.sleep_until(t_start + at)
                if what == "kill_worker":
                    one(what)
                else:
                    t = threading.Thread(target=one, args=(what,),
                                         daemon=True)
                    t.start()
                    threads.append(t)
            for t in threads:
                t.join()
        except Exception:
            self.errors.append("fault thread: " + traceback.format_exc())
        finally:
            self.faults_done.set()

    def fault_kill_worker(self):
        self.kill_worker()

    def fault_redis_kill(self):
        self.stack.kill("redis")
        self.figures["redis_kills"] += 1
        self.fault_log.append("%s SIGKILL redis" % time.strftime("%H:%M:%S"))
        self.sleep_until(time.time() + 5)
        self.stack.start("redis")
        self.fault_log.append("%s redis restarted on its AOF"
                              % time.strftime("%H:%M:%S"))

    def fault_sigstop(self):
        with self.lock:
            slots = [s for s, p in self.workers.items()
                     if p.poll() is None and s.startswith("deal")]
            slot = self.rng.choice(slots)
            p = self.workers[slot]
            self.stopped.add(slot)
            p.send_signal(signal.SIGSTOP)
        t0 = time.time()
        self.fault_log.append("%s SIGSTOP %s pid %d" % (
            time.strftime("%H:%M:%S"), slot, p.pid))
        self.sleep_until(t0 + self.p["sigstop"])
        p.send_signal(signal.SIGCONT)
        with self.lock:
            self.stopped.discard(slot)
        self.figures["sigstops"] += 1
        self.figures["sigstop_s"] += round(time.time() - t0)
        self.fault_log.append("%s SIGCONT %s after %d s" % (
            time.strftime("%H:%M:%S"), slot, time.time() - t0))

    def fault_broker_stop(self):
        t0 = time.time()
        self.stack.stop("kafka")
        self.fault_log.append("%s broker stopped" % time.strftime("%H:%M:%S"))
        self.sleep_until(t0 + self.p["broker_stop"])
        self.stack.start("kafka")
        self.figures["broker_stops"] += 1
        self.figures["broker_stop_s"] += round(time.time() - t0)
        self.fault_log.append("%s broker started again (%d s down)" % (
            time.strftime("%H:%M:%S"), time.time() - t0))

    def fault_redis_master_kill(self):
        """SIGKILL a Redis master that serves slots; its replica is
        promoted (cluster-node-timeout 2 s) and the workers must follow
        without a restart.  The old master comes back (as a replica) after
        redis_down s: until then the new master has no replica, and the
        workers' WAIT for one replica holds their batches back."""
        masters = self.stack.redis_masters()
        if not masters:
            raise AssertionError("no Redis master found")
        port = self.rng.choice(masters)
        t0 = time.time()
        self.stack.kill("redis", str(port))
        self.figures["redis_master_kills"] += 1
        self.fault_log.append("%s SIGKILL redis master %d" % (
            time.strftime("%H:%M:%S"), port))
        # failed over: 3 masters serve slots again, the killed one not
        # among them
        while time.time() < t0 + 30:
            now = self.stack.redis_masters()
            if len(now) == 3 and port not in now:
                break
            time.sleep(0.2)
        self.figures["redis_failover_s"] = round(time.time() - t0, 1)
        self.fault_log.append("%s masters now %s (%.1f s after the kill)" % (
            time.strftime("%H:%M:%S"), self.stack.redis_masters(),
            time.time() - t0))
        self.sleep_until(t0 + self.p["redis_down"])
        self.stack.start("redis")
        self.fault_log.append("%s redis %d back, as a replica" % (
            time.strftime("%H:%M:%S"), port))

    def fault_broker_kill(self):
        t0 = time.time()
        which = ("kafka",)
        if self.args.cluster:
            which = ("kafka", str(self.rng.choice([1, 2, 3])))
        self.stack.kill(*which)
        self.fault_log.append("%s broker %s SIGKILLed" % (
            time.strftime("%H:%M:%S"), which[-1]))
        self.sleep_until(t0 + self.p["broker_kill"])
        self.stack.start(*which)
        self.figures["broker_kills"] += 1
        self.figures["broker_kill_s"] += round(time.time() - t0)
        self.fault_log.append("%s broker started again (%d s down)" % (
            time.strftime("%H:%M:%S"), time.time() - t0))

    # ------------------------------------------------------------ producer
    def run_producer(self, t_start):
        """Produce the stream in its order, each chunk at its planned time
        (occurred_at follows the same clock).  A failed chunk (broker down)
        is produced again whole: what had got through becomes a producer
        duplicate, which must change nothing."""
        try:
            items = self.stream.items
            i = 0
            while i < len(items):
                t = items[i][0]
                self.sleep_until(t_start + t)
                j = i
                while j < len(items) and items[j][0] <= time.time() - t_start \
                        and j - i < 200 and items[j][1] == items[i][1]:
                    j += 1
                j = max(j, i + 1)
                chunk = items[i:j]
                while True:
                    try:
                        if chunk[0][1] == "json":
                            topic = "sales.deals" if chunk[0][2]["type"] \
                                .startswith("deal.") else None
                            deals = [c[2] for c in chunk
                                     if c[2]["type"].startswith("deal.")]
                            leads = [c[2] for c in chunk
                                     if c[2]["type"].startswith("lead.")]
                            del topic
                            if deals:
                                self.env.ctl("produce", "sales.deals",
                                             input="".join(
                                                 json.dumps(e) + "\n"
                                                 for e in deals).encode(),
                                             timeout=60)
                            if leads:
                                self.env.ctl("produce", "sales.leads",
                                             input="".join(
                                                 json.dumps(e) + "\n"
                                                 for e in leads).encode(),
                                             timeout=60)
                        else:
                            for _, _, (key, v) in chunk:
                                self.env.ctl("produce", "--raw", "--key", key,
                                             "sales.deals", input=v + b"\n",
                                             timeout=60)
                        break
                    except (AssertionError, subprocess.TimeoutExpired) as e:
                        self.figures["produce_retries"] += 1
                        log("produce failed (will retry): %s" %
                            str(e).strip().splitlines()[0][:200])
                        self.sleep_until(time.time() + 1)
                i = j
        except Exception:
            self.errors.append("producer: " + traceback.format_exc())
        finally:
            self.producer_done.set()

    # ------------------------------------------------------------ main
    def run(self):
        t_setup = time.time()
        log("private stack in %s (kafka %s, redis %s)" % (
            self.stack.dir, self.stack.brokers, self.stack.redis))
        self.stack.start()
        self.env = Env("chaos", partitions=6, brokers=self.stack.brokers,
                       redis=self.stack.redis,
                       replication=3 if self.args.cluster else 1)
        tag = "%d-%s" % (self.args.seed, self.env.topic_prefix.split("-")[-1]
                         .rstrip("."))
        t_start = time.time() + 3
        self.stream = model.Stream(self.args.seed, self.p["deals"],
                                   self.p["leads"], self.p["duration"],
                                   int(t_start * 1000), tag)
        c = self.stream.counts
        log("stream: %d events (%d producer duplicates, %d invalid), "
            "%d deals, %d leads, %d conversions; profile %s, seed %d" % (
                c["events"] + c["producer_duplicates"] + c["invalid"],
                c["producer_duplicates"], c["invalid"],
                len(self.stream.deals), len(self.stream.leads),
                len(self.stream.conversions),
                "cluster" if self.args.cluster else
                "short" if self.args.short else "full", self.args.seed))
        for i in range(self.args.workers):
            self.start_slot("deal_worker-%d" % i)
            self.start_slot("lead_worker-%d" % i)
        producer = threading.Thread(target=self.run_producer,
                                    args=(t_start,), daemon=True)
        faults = threading.Thread(target=self.run_faults, args=(t_start,),
                                  daemon=True)
        producer.start()
        if not self.args.no_faults:
            faults.start()
        else:
            self.faults_done.set()
        while not (self.producer_done.is_set() and self.faults_done.is_set()):
            self.check_workers()
            time.sleep(0.5)
        log("stream produced and faults over; waiting for the workers "
            "to drain")
        self.drain()
        summary, problems = self.check()
        summary["run_s"] = round(time.time() - t_setup)
        return summary, problems

    def drain(self):
        """Wait until every expected derived event and final alert is
        there (or a deadline passes), then a little longer, so late
        duplicates show up too."""
        s = self.stream
        want = set(s.expect)
        deadline = time.time() + (240 if not self.args.short else 90)
        last_due = s.last_due_ms(int((time.time() + 60) * 1000)) / 1000.0
        t0 = time.time()
        last_note = 0
        while time.time() < deadline:
            self.check_workers()
            causes = {m.get("caused_by") for m in self.env.tail(
                "sales.pipeline")}
            alerts = self.env.tail("sales.alerts")
            have = {(a["deal_id"], alert_timer(a),
                     model.parse_ms(a["occurred_at"])) for a in alerts}
            lacking = s.final_alerts(int(time.time() * 1000)) - have
            if want <= causes and time.time() > last_due + 2 and \
                    not lacking:
                break
            if time.time() - last_note >= 10:
                last_note = time.time()
                log("draining: %d derived events and %d final alerts still "
                    "to come%s" % (len(want - causes), len(lacking),
                                   " (last timer due in %d s)" %
                                   (last_due - time.time())
                                   if last_due > time.time() else ""))
            time.sleep(2)
        log("drained in %d s" % (time.time() - t0))
        self.sleep_until(time.time() + 5)
        self.check_workers()

    # ------------------------------------------------------------ checks
    def check(self):
        s, env = self.stream, self.env
        problems = []

        def bad(section, text):
            problems.append("[%s] %s" % (section, text))

        pipeline = env.tail("sales.pipeline")
        alerts = env.tail("sales.alerts")
        deals_topic = env.tail("sales.deals")
        dlq = env.tail("sales.dlq", meta=True)

        # --- derived events: every cause once, one id per cause, right
        # outcome; nothing for causes that must publish nothing
        by_cause = {}
        by_id = {}
        for m in pipeline:
            by_cause.setdefault(m.get("caused_by"), []).append(m)
            by_id.setdefault(m["event_id"], []).append(m)
        conv_ids = {}   # deal.created published by the lead worker
        for m in deals_topic:
            if m.get("type") == "deal.created" and \
                    m["event_id"].startswith("deal.created:"):
                conv_ids.setdefault(m["deal_id"], set()).add(m["event_id"])
        conv_deals = {d: lead for lead, (d, _) in s.conversions.items()}
        expect = dict(s.expect)
        for deal_id, ids in conv_ids.items():
            if deal_id not in conv_deals:
                bad("conversion", "deal.created for %s, which no conversion "
                    "made: %s" % (deal_id, sorted(ids)))
            if len(ids) != 1:
                bad("duplicate", "conversion into %s published under %d ids:"
                    " %s" % (deal_id, len(ids), sorted(ids)))
            for i in ids:
                expect[i] = ("deal.stage_changed",
                             {"from_stage": "", "to_stage": "qualification"})
        for deal_id in conv_deals:
            if deal_id not in conv_ids:
                bad("missing", "no deal.created on sales.deals for the "
                    "conversion of %s into %s" % (conv_deals[deal_id],
                                                   deal_id))
        missing = [c for c in expect if c not in by_cause]
        for c in missing[:30]:
            bad("missing", "no derived event for %s (expected %s %s)" % (
                c, expect[c][0], expect[c][1]))
        if len(missing) > 30:
            bad("missing", "... and %d more" % (len(missing) - 30))
        dup_causes = 0
        republished = 0
        for cause, msgs in by_cause.items():
            ids = {m["event_id"] for m in msgs}
            if len(ids) > 1:
                dup_causes += 1
                bad("duplicate", "%s derived under %d ids: %s" % (
                    cause, len(ids), sorted(ids)))
            republished += len(msgs) - len(ids)
            if cause not in expect:
                bad("unexpected", "%s published for %s, which must publish "
                    "nothing: %s" % (msgs[0]["type"], cause,
                                     json.dumps(msgs[0])))
                continue
            typ, fields = expect[cause]
            m = msgs[0]
            got = {k: m.get(k) for k in fields}
            if m["type"] != typ or got != fields:
                bad("outcome", "%s: expected %s %s, got %s %s" % (
                    cause, typ, fields, m["type"], got))
        for i, msgs in by_id.items():
            texts = {json.dumps(m, sort_keys=True) for m in msgs}
            if len(texts) > 1:
                bad("duplicate", "event id %s published with different "
                    "payloads: %s" % (i, sorted(texts)))

        # --- alerts: one id per (deal, timer, due); each one a timer the
        # deal really had; every final timer fired
        alert_keys = {}
        alert_copies = 0
        possible = {d: set(t) for d, t in s.timers.items()}
        for lead, (deal_id, c) in s.conversions.items():
            possible.setdefault(deal_id, set()).add(
                ("stale", c["converted_at"] +
                 model.STALE_S["qualification"] * 1000))
        for a in alerts:
            key = (a["deal_id"], alert_timer(a),
                   model.parse_ms(a["occurred_at"]))
            alert_keys.setdefault(key, []).append(a["event_id"])
            if (key[1], key[2]) not in possible.get(a["deal_id"], ()):
                bad("alert", "alert for a timer the deal never had: %s" %
                    json.dumps(a))
        dup_alerts = 0
        for key, ids in alert_keys.items():
            alert_copies += len(ids) - len(set(ids))
            if len(set(ids)) > 1:
                dup_alerts += 1
                bad("duplicate", "alert %s published under %d ids: %s" % (
                    key, len(set(ids)), sorted(set(ids))))
        final_alerts = s.final_alerts(int(time.time() * 1000) - 3000)
        for key in sorted(final_alerts - set(alert_keys))[:30]:
            bad("missing", "alert never fired: deal %s timer %s due %s" % (
                key[0], key[1], model.rfc3339(key[2])))

        # --- dead letters: every invalid message, unchanged
        dlq_texts = [json.dumps(m) for m in dlq]
        for v in s.invalid:
            text = v.decode()
            needle = json.dumps(text)[1:-1]
            if not any(needle in x for x in dlq_texts):
                bad("missing", "invalid message not in the dead-letter "
                    "topic: %r" % text[:120])

        # --- final states and histories
        def fetch(kind_id):
            kind, id_ = kind_id
            return kind_id, env.entity(kind, id_)
        wanted = [("deal", d) for d in s.deals] + \
            [("lead", l) for l in s.leads] + \
            [("deal", d) for d, _ in s.conversions.values()]
        with ThreadPoolExecutor(8) as ex:
            states = dict(ex.map(fetch, wanted))
        state_mismatch = 0
        for deal_id, d in s.deals.items():
            st = states[("deal", deal_id)]
            diffs = diff_deal(d, st)
            hist = [(h.get("from", ""), h.get("to"), h.get("event_id"))
                    for h in (st or {}).get("history", [])]
            if st is not None and hist != s.histories[deal_id]:
                diffs.append("history %s, expected %s" % (
                    hist, s.histories[deal_id]))
            if diffs:
                state_mismatch += 1
                bad("state", "deal %s: %s" % (deal_id, "; ".join(diffs)))
        for lead_id, (deal_id, c) in s.conversions.items():
            st = states[("deal", deal_id)]
            diffs = diff_deal(c, st, fields=("stage", "amount",
                                             "expected_close_date",
                                             "lead_id"))
            if diffs:
                state_mismatch += 1
                bad("state", "deal %s (converted from %s): %s" % (
                    deal_id, lead_id, "; ".join(diffs)))
        for lead_id, L in s.leads.items():
            st = states[("lead", lead_id)]
            diffs = diff_lead(L, st)
            if diffs:
                state_mismatch += 1
                bad("state", "lead %s: %s" % (lead_id, "; ".join(diffs)))

        c = s.counts
        summary = dict(self.figures)
        summary.update(
            events=c["events"] + c["producer_duplicates"] + c["invalid"],
            producer_duplicates=c["producer_duplicates"],
            invalid=c["invalid"], deals=len(s.deals) + len(s.conversions),
            leads=len(s.leads), derived_expected=len(expect),
            derived_messages=len(pipeline), republished_same_id=republished,
            alerts=len(alert_keys), alert_messages=len(alerts),
            alert_copies_same_id=alert_copies,
            final_alerts_expected=len(final_alerts),
            dead_letters=len(dlq),
            losses=len(missing) + len(final_alerts - set(alert_keys)),
            duplicates=dup_causes + dup_alerts,
            state_mismatches=state_mismatch,
            unexpected_worker_exits=len(self.unexpected))
        for slot, pid, rc, path, tail in self.unexpected:
            bad("worker", "%s (pid %d) exited with status %d unasked; "
                "log %s; last lines:\n%s" % (slot, pid, rc, path,
                                             indent(tail[-1500:])))
        for e in self.errors:
            bad("harness", e)
        return summary, problems

    def close(self):
        """SIGTERM every worker (each must exit 0), then the stack."""
        errors = []
        with self.lock:
            self.closing = True
        if self.env:
            with self.lock:
                for p in self.workers.values():
                    if p.poll() is None:
                        try:
                            p.send_signal(signal.SIGCONT)
                            self.env.stop_worker(p, timeout=60)
                        except AssertionError as e:
                            errors.append(str(e)[:2000])
        if not self.args.keep:
            self.stack.destroy()
        return errors


def alert_timer(a):
    if a["type"] == "deal.stale":
        return "stale"
    return a.get("kind")


def indent(text):
    return "\n".join("      " + l for l in text.splitlines())


def diff_deal(d, st, fields=("stage", "amount", "currency",
                             "expected_close_date", "owner", "activities",
                             "last_event_at", "lead_id")):
    if st is None:
        return ["not in Redis"]
    out = []
    for f in fields:
        want = d.get(f)
        got = st.get(f)
        if f == "amount":
            got = Decimal(str(got)) if got not in (None, "") else None
        elif f == "activities":
            if isinstance(got, str):
                got = set(x for x in got.split(",") if x)
            else:
                got = set(got or [])
        elif f == "last_event_at":
            got = to_ms(got)
        if f == "lead_id" and not want and not got:
            continue
        if f == "currency" and want is None:
            continue
        if (want or None) != (got or None):
            out.append("%s %r, expected %r" % (f, got, want))
    return out


def to_ms(v):
    if v in (None, ""):
        return None
    if isinstance(v, (int, float)):
        return int(v)
    if isinstance(v, str) and v.isdigit():
        return int(v)
    return model.parse_ms(v)


def diff_lead(L, st):
    if st is None:
        return ["not in Redis"]
    out = []
    if st.get("status") != L["status"]:
        out.append("status %r, expected %r" % (st.get("status"), L["status"]))
    if L["score_known"] and str(st.get("score")) != str(L["score"]):
        out.append("score %r, expected %r" % (st.get("score"), L["score"]))
    if L["deal_id"] and st.get("deal_id") != L["deal_id"]:
        out.append("deal_id %r, expected %r" % (st.get("deal_id"),
                                                L["deal_id"]))
    if L["owner"] and st.get("owner") != L["owner"]:
        out.append("owner %r, expected %r" % (st.get("owner"), L["owner"]))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--short", action="store_true",
                    help="the CI variant (under ~4 minutes)")
    ap.add_argument("--seed", type=int, default=int(os.environ.get(
        "PL_CHAOS_SEED", "12")))
    ap.add_argument("--no-faults", action="store_true",
                    help="the same stream with no faults (checks the model)")
    ap.add_argument("--keep", action="store_true",
                    help="leave the private stack's data in place")
    ap.add_argument("--cluster", action="store_true",
                    help="3 brokers and a Redis Cluster (deploy/stack.sh "
                    "cluster); faults: a Redis master and a broker "
                    "SIGKILLed, worker kills")
    ap.add_argument("--workers", type=int, default=2,
                    help="deal workers and lead workers, each (default 2)")
    args = ap.parse_args()

    def on_term(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)
    chaos = Chaos(args)
    problems = []
    summary = {}
    try:
        summary, problems = chaos.run()
    except Exception:
        problems.append("[harness] " + traceback.format_exc())
    finally:
        for e in chaos.close():
            problems.append("[worker] " + e)
    print()
    print("== faults")
    for f in chaos.fault_log:
        print("   " + f)
    print("== summary (%s run, seed %d, %d+%d workers)" % (
        "cluster" if args.cluster else "short" if args.short else "full",
        args.seed, args.workers, args.workers))
    for k in ("worker_kills", "worker_restarts", "redis_kills",
              "broker_stops", "broker_stop_s", "broker_kills",
              "broker_kill_s", "sigstops", "sigstop_s",
              "redis_master_kills", "redis_failover_s",
              "events", "producer_duplicates", "invalid", "deals", "leads",
              "derived_expected", "derived_messages", "republished_same_id",
              "alerts", "alert_messages", "alert_copies_same_id",
              "final_alerts_expected", "dead_letters", "produce_retries",
              "unexpected_worker_exits", "state_mismatches", "losses",
              "duplicates", "run_s"):
        if k in summary:
            print("   %-26s %s" % (k, summary[k]))
    os.makedirs(harness.LOGS, exist_ok=True)
    with open(os.path.join(harness.LOGS, "chaos-summary.json"), "w") as f:
        json.dump({"summary": summary, "faults": chaos.fault_log,
                   "problems": problems}, f, indent=1)
    if problems:
        print("== %d discrepancies (worker logs in %s)" % (
            len(problems), harness.LOGS))
        for p in problems[:200]:
            print(" - " + p)
        if len(problems) > 200:
            print(" ... %d more in %s" % (len(problems) - 200, os.path.join(
                harness.LOGS, "chaos-summary.json")))
        print("CHAOS: FAILED")
        return 1
    print("CHAOS: PASSED (losses=0 duplicates=0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
