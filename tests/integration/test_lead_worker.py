"""The lead worker (with the deal worker) against a real Kafka broker and a
real Redis: scoring from the ideal customer profile, every status move and
rejection, conversion into exactly one deal (on the partition a Java
producer would pick, with kafka.producer.partitioner=murmur2_random), and
a SIGKILL mid-stream."""
import os
import signal
import time
import uuid

from harness import IntegrationCase, SOURCE, LOGS, ev, at, main

ICP = {  # a lead matching every default criterion: 100 points
    "industry": "banking", "employees": 250, "monthly_ad_spend": 1000,
    "technologies": ["hubspot"], "hiring_for": ["marketing"],
    "contact_title": "Senior HR Manager", "months_in_role": 3,
}


def lid():
    return "L-" + uuid.uuid4().hex[:10]


def of(msgs, caused_by):
    return [m for m in msgs if m.get("caused_by") == caused_by]


class LeadCase(IntegrationCase):
    programs = ("lead_worker", "deal_worker")

    def send(self, *events):
        self.env.produce("sales.leads", list(events))
        last = events[-1]["event_id"]
        msgs = self.env.wait_for("sales.pipeline", lambda m: of(m, last))
        return msgs

    def created(self, **profile):
        l = lid()
        e = ev("lead.created", lead_id=l, **profile)
        msgs = self.send(e)
        [m] = of(msgs, e["event_id"])
        return l, m


class Scoring(LeadCase):
    def test_each_default_criterion_on_and_off(self):
        points = {"industry": 25, "employees": 15, "monthly_ad_spend": 15,
                  "technologies": 15, "hiring_for": 10, "contact_title": 10,
                  "months_in_role": 10}
        off = {"industry": "retail", "employees": 10,
               "monthly_ad_spend": 0, "technologies": ["salesforce"],
               "hiring_for": ["engineering"], "contact_title": "CFO",
               "months_in_role": 12}
        for field, value in points.items():
            # the criterion alone on (employees must stay >= 10: present)
            profile = dict(off)
            profile[field] = ICP[field]
            l, m = self.created(**profile)
            expect = value + (15 if field != "employees" else 0)
            self.assertEqual(m["type"], "lead.status_changed")
            self.assertEqual(m["score"], expect, (field, m["reasons"]))
            self.assertEqual(len(m["reasons"]), 8, m["reasons"])  # 7 + disq.
        l, m = self.created(**off)
        self.assertEqual(m["score"], 15)  # employees 10 is >= 10
        self.assertEqual((m["from_status"], m["to_status"]),
                         ("new", "nurture"))

    def test_google_ads_counts_as_advertising(self):
        _, m = self.created(employees=50, technologies=["google_ads"])
        self.assertEqual(m["score"], 30)

    def test_missing_fields_are_explained(self):
        _, m = self.created()
        self.assertEqual(m["score"], 0)
        self.assertEqual(m["to_status"], "nurture")
        self.assertTrue(any("missing" in r for r in m["reasons"]),
                        m["reasons"])

    def test_full_profile_is_mql_and_stored(self):
        l, m = self.created(**ICP, company="Bank of Tests",
                            email="hr@bank.test", source="referral")
        self.assertEqual(m["score"], 100)
        self.assertEqual(m["to_status"], "mql")
        s = self.env.lead(l)
        self.assertEqual(s["status"], "mql")
        self.assertEqual(s["score"], 100)
        self.assertEqual(s["technologies"], ["hubspot"])
        self.assertEqual(s["company"], "Bank of Tests")

    def test_small_company_is_disqualified(self):
        l, m = self.created(**dict(ICP, employees=5))
        self.assertEqual(m["to_status"], "disqualified")
        self.assertTrue(any("disqualified" in r for r in m["reasons"]))

    def test_update_rescores_between_nurture_and_mql(self):
        l, m = self.created(industry="banking", employees=20)  # 40
        self.assertEqual(m["to_status"], "nurture")
        up = ev("lead.updated", lead_id=l, technologies=["hubspot"])  # 55
        [m2] = of(self.send(up), up["event_id"])
        self.assertEqual((m2["from_status"], m2["to_status"], m2["score"]),
                         ("nurture", "mql", 55))
        down = ev("lead.updated", lead_id=l, industry="retail")  # 30
        [m3] = of(self.send(down), down["event_id"])
        self.assertEqual((m3["from_status"], m3["to_status"]),
                         ("mql", "nurture"))
        s = self.env.lead(l)
        self.assertEqual((s["industry"], s["score"]), ("retail", 30))


class Thresholds(LeadCase):
    """mql_score 50 at its edge, with weights that can sum to 49 and 50."""

    @classmethod
    def setUpClass(cls):
        text = open(os.path.join(SOURCE, "deploy", "rules",
                                 "default.yaml")).read()
        text = text[:text.index("\nlead:")] + """
lead:
  mql_score: 50
  criteria:
    - {name: big_one, field: industry, op: in, value: [banking], points: 49}
    - {name: small_one, field: technologies, op: contains, value: hubspot, points: 1}
  disqualify:
    - {name: too_small, field: employees, op: "<", value: 10}
"""
        os.makedirs(LOGS, exist_ok=True)
        path = os.path.join(LOGS, "rules-thresholds.yaml")
        open(path, "w").write(text)
        cls.worker_args = ("--set", "rules.file=" + path)
        super().setUpClass()

    def test_49_is_nurture_and_50_is_mql(self):
        _, m49 = self.created(industry="banking")
        _, m50 = self.created(industry="banking", technologies=["hubspot"])
        self.assertEqual((m49["score"], m49["to_status"]), (49, "nurture"))
        self.assertEqual((m50["score"], m50["to_status"]), (50, "mql"))


class Moves(LeadCase):
    def rejected(self, event, code, status, requested):
        [m] = of(self.send(event), event["event_id"])
        self.assertEqual(m["type"], "lead.transition_rejected")
        self.assertEqual((m["reason_code"], m["status"], m["requested"]),
                         (code, status, requested))
        return m

    def test_mql_sal_sql_and_the_deal(self):
        l, _ = self.created(**ICP, company="Convert Co")
        acc = ev("lead.accepted", lead_id=l, owner="ana")
        [m] = of(self.send(acc), acc["event_id"])
        self.assertEqual((m["from_status"], m["to_status"]), ("mql", "sal"))
        conv = ev("lead.converted", lead_id=l, amount=5000,
                  expected_close_date="2027-02-01")
        [m] = of(self.send(conv), conv["event_id"])
        self.assertEqual((m["from_status"], m["to_status"]), ("sal", "sql"))
        # deal.created reached sales.deals and the deal worker made the deal
        deals = self.env.wait_for(
            "sales.deals", lambda x: [d for d in x if d.get("lead_id") == l])
        [dc] = [d for d in deals if d.get("lead_id") == l]
        self.assertEqual(dc["deal_id"], "D-" + l)
        self.assertEqual(dc["name"], "Convert Co")
        self.assertEqual(dc["owner"], "ana")
        self.env.wait_for("sales.pipeline", lambda x: [
            d for d in x if d.get("deal_id") == "D-" + l])
        s = self.env.deal("D-" + l)
        self.assertEqual(s["stage"], "qualification")
        self.assertEqual(s["amount"], 5000)
        self.assertEqual(s["lead_id"], l)
        self.assertEqual(self.env.lead(l)["status"], "sql")
        self.assertEqual(self.env.lead(l)["deal_id"], "D-" + l)

    def test_conversion_with_its_own_deal_id(self):
        l, _ = self.created(**ICP)
        d = "D-own-" + uuid.uuid4().hex[:6]
        self.send(ev("lead.accepted", lead_id=l, owner="bo"),
                  ev("lead.converted", lead_id=l, deal_id=d, name="Own"))
        self.env.wait_for("sales.pipeline", lambda x: [
            m for m in x if m.get("deal_id") == d])
        self.assertEqual(self.env.deal(d)["name"], "Own")

    def test_conversion_twice_makes_one_deal(self):
        l, _ = self.created(**ICP)
        conv = ev("lead.converted", lead_id=l)
        again = ev("lead.converted", lead_id=l)  # another event_id
        self.send(ev("lead.accepted", lead_id=l, owner="cy"), conv, conv)
        self.rejected(again, "already_in_stage", "sql", "sql")
        mine = lambda msgs: [d for d in msgs if d.get("lead_id") == l]
        self.env.wait_for("sales.deals", mine)
        time.sleep(1)  # a second deal.created would show up by now
        deals = mine(self.env.tail("sales.deals"))
        self.assertEqual(len(deals), 1, deals)
        self.env.wait_for("sales.pipeline", lambda x: [
            m for m in x if m.get("deal_id") == "D-" + l])
        self.assertEqual(len(self.env.deal("D-" + l)["history"]), 1)

    def test_rejections(self):
        l, _ = self.created(industry="retail", employees=20)  # nurture
        self.rejected(ev("lead.accepted", lead_id=l, owner="x"),
                      "not_allowed", "nurture", "sal")
        self.rejected(ev("lead.converted", lead_id=l), "not_allowed",
                      "nurture", "sql")
        self.rejected(ev("lead.created", lead_id=l), "not_allowed",
                      "nurture", "new")
        m = self.rejected(ev("lead.updated", lead_id="L-nobody-" + l,
                             employees=5), "unknown_lead", "", "")
        self.assertIn("L-nobody-", m["message"])
        rej = ev("lead.rejected", lead_id=l, reason="no budget")
        [m] = of(self.send(rej), rej["event_id"])
        self.assertEqual((m["from_status"], m["to_status"]),
                         ("nurture", "disqualified"))
        self.rejected(ev("lead.rejected", lead_id=l, reason="again"),
                      "already_in_stage", "disqualified", "disqualified")
        self.rejected(ev("lead.accepted", lead_id=l, owner="x"), "terminal",
                      "disqualified", "sal")
        self.rejected(ev("lead.converted", lead_id=l), "terminal",
                      "disqualified", "sql")

    def test_sal_is_never_downgraded_and_sql_is_terminal(self):
        l, _ = self.created(**ICP)
        self.send(ev("lead.accepted", lead_id=l, owner="di"))
        self.rejected(ev("lead.accepted", lead_id=l, owner="di"),
                      "already_in_stage", "sal", "sal")
        up = ev("lead.updated", lead_id=l, industry="retail",
                technologies=[], hiring_for=[])  # score 45: below mql
        self.env.produce("sales.leads", [up])
        conv = ev("lead.converted", lead_id=l)
        [m] = of(self.send(conv), conv["event_id"])
        self.assertEqual((m["from_status"], m["to_status"]), ("sal", "sql"))
        self.assertEqual(of(self.env.tail("sales.pipeline"),
                            up["event_id"]), [])  # no status change
        self.rejected(ev("lead.rejected", lead_id=l, reason="late"),
                      "terminal", "sql", "disqualified")


def murmur2(data):
    """The Java client's key hash (org.apache.kafka.common.utils.Utils)."""
    m, h = 0x5bd1e995, (0x9747b28c ^ len(data)) & 0xffffffff
    n4 = len(data) // 4
    for i in range(n4):
        k = int.from_bytes(data[4 * i:4 * i + 4], "little")
        k = (k * m) & 0xffffffff
        k ^= k >> 24
        k = (k * m) & 0xffffffff
        h = ((h * m) & 0xffffffff) ^ k
    rest = data[4 * n4:]
    if len(rest) == 3:
        h ^= rest[2] << 16
    if len(rest) >= 2:
        h ^= rest[1] << 8
    if rest:
        h = ((h ^ rest[0]) * m) & 0xffffffff
    h ^= h >> 13
    h = (h * m) & 0xffffffff
    return h ^ (h >> 15)


class JavaPartitioner(LeadCase):
    """kafka.producer.partitioner reaches the workers' producer: with
    murmur2_random (README, Scaling) the deal.created of a converted lead
    goes to the partition a Java producer picks for its deal_id, not to
    librdkafka's default (CRC32) one."""
    worker_args = ("--set", "kafka.producer.partitioner=murmur2_random")

    def test_deal_created_on_the_java_partition(self):
        import zlib
        n = self.partitions
        # Kafka's own test vectors (UtilsTest.testMurmur2), as unsigned
        self.assertEqual(murmur2(b"21"), -973932308 & 0xffffffff)
        self.assertEqual(murmur2(b"foobar"), -790332482 & 0xffffffff)
        deals = []
        while len(deals) < 3:  # ids the two partitioners place apart
            d = "D-j-" + uuid.uuid4().hex[:8]
            java = (murmur2(d.encode()) & 0x7fffffff) % n
            if java != zlib.crc32(d.encode()) % n:
                deals.append((d, java))
        for d, _ in deals:
            l, _ = self.created(**ICP)
            self.send(ev("lead.accepted", lead_id=l, owner="jo"),
                      ev("lead.converted", lead_id=l, deal_id=d))
        want = dict(deals)
        msgs = self.env.wait_for(
            "sales.deals", lambda x: len([
                m for m in x if m["value"].get("deal_id") in want]) == 3,
            meta=True)
        got = {m["value"]["deal_id"]: m["partition"] for m in msgs
               if m["value"].get("deal_id") in want}
        self.assertEqual(got, want)


class KillAndRestart(IntegrationCase):
    programs = ()

    def test_sigkill_mid_stream_loses_nothing(self):
        env = self.env
        tag = uuid.uuid4().hex[:6]
        events, expect = [], {}
        for i in range(600):
            l = "LK-%s-%d" % (tag, i)
            events.append(ev("lead.created", lead_id=l, occurred_at=at(i),
                             **ICP))
            events.append(ev("lead.accepted", lead_id=l, owner="o",
                             occurred_at=at(i + 1)))
            events.append(ev("lead.converted", lead_id=l,
                             occurred_at=at(i + 2)))
            expect[l] = [e["event_id"] for e in events[-3:]]
        w = env.start_worker("lead_worker")
        # the stream is still arriving when the worker is killed
        producer = env.produce_in_background("sales.leads", events)
        env.wait_for("sales.pipeline", lambda m: len(m) >= 1)
        w.send_signal(signal.SIGKILL)
        w.wait()
        self.assertTrue(producer.is_alive(), "killed too late to prove it")
        self.assertLess(len(env.tail("sales.pipeline")), len(events))
        env.start_worker("lead_worker")
        producer.join()
        want = {c for cs in expect.values() for c in cs}
        msgs = env.wait_for(
            "sales.pipeline", lambda m: {x["caused_by"] for x in m} >= want,
            timeout=120)
        ids = {}
        for m in msgs:
            ids.setdefault(m["caused_by"], set()).add(m["event_id"])
        self.assertTrue(all(len(v) == 1 for v in ids.values()))
        deals = env.tail("sales.deals")
        by_lead = {}
        for d in deals:
            by_lead.setdefault(d["lead_id"], set()).add(d["event_id"])
        self.assertEqual(set(by_lead), set(expect))  # one deal per lead...
        self.assertTrue(all(len(v) == 1 for v in by_lead.values()))
        for l in list(expect)[::37]:
            s = env.lead(l)
            self.assertEqual(s["status"], "sql")
            self.assertEqual(len(s["history"]), 3)  # nothing applied twice


if __name__ == "__main__":
    main()
