"""Durability of the state in Redis (issue 12): on a private stack (its own
Kafka and Redis, started by deploy/stack.sh with their own folder and
ports), a stream of deal and lead events flows through the real workers
while Redis is SIGKILLed and then started again on its append-only file.
Every derived event must be there, each under one id, and every final state
exactly what the stream implies; the workers wait the outage out.  Then a
clean restart of Redis alone (deploy/stack.sh restart redis) keeps the state
too."""
import os
import subprocess
import threading
import time
import unittest
import uuid

from harness import Env, PrivateStack, ev, at, main

DEALS = 600
LEADS = 150
STAGES = ["scoping", "proposal", "negotiation", "closing"]


def stream(tag):
    """Each deal created, then moved forward to closing; each lead created
    with a profile scoring 55 (mql) and then accepted (sal).  Returns the
    events in production order (entities interleaved), the derived event
    each one must cause, and the final states."""
    per_entity, derived, deals, leads = [], {}, {}, {}
    for i in range(DEALS):
        d = "DUR-%s-%d" % (tag, i)
        evs = [ev("deal.created", deal_id=d, amount=1000 + i,
                  expected_close_date="2031-03-01", occurred_at=at(i))]
        derived[evs[0]["event_id"]] = ("deal.stage_changed", "",
                                       "qualification")
        prev = "qualification"
        for k, stage in enumerate(STAGES):
            e = ev("deal.stage_requested", deal_id=d, to_stage=stage,
                   occurred_at=at(i + 10 * (k + 1)))
            derived[e["event_id"]] = ("deal.stage_changed", prev, stage)
            prev = stage
            evs.append(e)
        deals[d] = ("closing", 1000 + i, [e["event_id"] for e in evs])
        per_entity.append(evs)
    for i in range(LEADS):
        lead = "LDUR-%s-%d" % (tag, i)
        # banking 25 + employees 15 + ad spend 15 = 55 >= 50: mql
        created = ev("lead.created", lead_id=lead, company="Bank %d" % i,
                     industry="banking", employees=200,
                     monthly_ad_spend=1000, occurred_at=at(i))
        accepted = ev("lead.accepted", lead_id=lead, owner="ana",
                      occurred_at=at(i + 30))
        derived[created["event_id"]] = ("lead.status_changed", None, "mql")
        derived[accepted["event_id"]] = ("lead.status_changed", None, "sal")
        leads[lead] = ("sal", 55)
        per_entity.append([created, accepted])
    out = []
    while any(per_entity):
        for evs in per_entity:
            if evs:
                out.append(evs.pop(0))
    return out, derived, deals, leads


class RedisCrash(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.stack = PrivateStack("durability-%d" % os.getpid(), partitions=3)
        try:
            cls.stack.start()
            cls.env = Env("RedisCrash", partitions=3,
                          brokers=cls.stack.brokers, redis=cls.stack.redis)
        except Exception:
            cls.stack.destroy()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.env.close()
        finally:
            cls.stack.destroy()

    def redis_cli(self, *args):
        p = subprocess.run(["redis-cli", "-p", str(self.stack.redis_port)] +
                           list(args), capture_output=True, text=True,
                           timeout=30)
        return p.stdout.strip()

    def produce_in_background(self, events, chunks=60):
        """deal and lead events in order, in chunks, from a thread."""
        env = self.env
        size = max(1, len(events) // chunks)

        def run():
            for i in range(0, len(events), size):
                chunk = events[i:i + size]
                deals = [e for e in chunk if e["type"].startswith("deal.")]
                leads = [e for e in chunk if e["type"].startswith("lead.")]
                if deals:
                    env.produce("sales.deals", deals)
                if leads:
                    env.produce("sales.leads", leads)
                time.sleep(0.15)
        t = threading.Thread(target=run)
        t.start()
        return t

    def test_redis_sigkill_mid_stream_loses_nothing(self):
        env, stack = self.env, self.stack
        self.assertEqual(self.redis_cli("config", "get", "appendonly"),
                         "appendonly\nyes")
        self.assertEqual(self.redis_cli("config", "get", "appendfsync"),
                         "appendfsync\neverysec")
        tag = uuid.uuid4().hex[:6]
        events, derived, deals, leads = stream(tag)
        args = ["--set", "retry.backoff.max=1s"]
        deal_w = env.start_worker("deal_worker", args)
        lead_w = env.start_worker("lead_worker", args)
        producer = self.produce_in_background(events)

        # kill Redis once part of the stream is applied and published
        env.wait_for("sales.pipeline", lambda m: len(m) >= len(derived) // 8,
                     timeout=120)
        stack.kill("redis")
        self.assertTrue(producer.is_alive(), "killed too late to prove it")
        before = len(env.tail("sales.pipeline"))
        self.assertLess(before, len(derived))
        time.sleep(5)           # the stream keeps arriving meanwhile
        self.assertIsNone(deal_w.poll(), "the deal worker must wait")
        self.assertIsNone(lead_w.poll(), "the lead worker must wait")
        stack.start("redis")    # on its AOF
        producer.join()

        msgs = env.wait_for(
            "sales.pipeline",
            lambda m: {x["caused_by"] for x in m} >= set(derived),
            timeout=180)
        by_cause = {}
        for m in msgs:
            by_cause.setdefault(m["caused_by"], set()).add(
                (m["event_id"], m["type"], m.get("from_stage"),
                 m.get("to_stage") or m.get("to_status")))
        self.assertEqual(set(by_cause), set(derived),
                         "derived events for causes outside the stream")
        wrong = []
        for cause, (typ, frm, to) in derived.items():
            got = by_cause[cause]
            if len(got) != 1:
                wrong.append("%s derived under %d ids: %s" % (
                    cause, len(got), sorted(got)))
                continue
            _, gtyp, gfrm, gto = next(iter(got))
            if (gtyp, gto) != (typ, to) or (frm is not None and gfrm != frm):
                wrong.append("%s: expected %s %s->%s, got %s %s->%s" % (
                    cause, typ, frm, to, gtyp, gfrm, gto))
        self.assertEqual(wrong[:20], [], "%d derived events wrong" %
                         len(wrong))
        self.check_states(deals, leads)

        # a clean restart of Redis alone keeps everything too
        stack.restart("redis")
        self.check_states(deals, leads)
        self.assertIsNone(deal_w.poll(), "the deal worker must wait")
        self.assertIsNone(lead_w.poll(), "the lead worker must wait")

    def check_states(self, deals, leads):
        env = self.env
        wrong = []
        for d, (stage, amount, ids) in deals.items():
            st = env.deal(d)
            if st is None:
                wrong.append("deal %s lost" % d)
                continue
            hist = [h["event_id"] for h in st.get("history", [])]
            if st["stage"] != stage or float(st["amount"]) != amount or \
                    hist != ids:
                wrong.append("deal %s: stage %s amount %s history %s; "
                             "expected %s %s %s" % (
                                 d, st["stage"], st["amount"], hist, stage,
                                 amount, ids))
        for lead, (status, score) in leads.items():
            st = env.lead(lead)
            if st is None:
                wrong.append("lead %s lost" % lead)
            elif st["status"] != status or int(st["score"]) != score:
                wrong.append("lead %s: %s %s, expected %s %s" % (
                    lead, st["status"], st["score"], status, score))
        self.assertEqual(wrong[:20], [], "%d states wrong" % len(wrong))


if __name__ == "__main__":
    main()
