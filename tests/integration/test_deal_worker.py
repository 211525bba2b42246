"""The deal worker against a real Kafka broker and a real Redis.

Each case asserts what a user sees: the derived events on sales.pipeline,
the dead letters on sales.dlq and the deal's state in Redis.
"""
import signal
import time
import uuid

from harness import IntegrationCase, Env, ensure_stack, ev, at, avro_encode, main

STAGES = ["qualification", "scoping", "proposal", "negotiation", "closing",
          "won", "lost"]
PROB = {"qualification": 0.1, "scoping": 0.2, "proposal": 0.4,
        "negotiation": 0.6, "closing": 0.8, "won": 1.0, "lost": 0.0}


def did():
    return "D-" + uuid.uuid4().hex[:10]


def derived_of(msgs, caused_by):
    return [m for m in msgs if m.get("caused_by") == caused_by]


class WalkToWon(IntegrationCase):
    def test_deal_walks_every_stage_to_won(self):
        d = did()
        events = [ev("deal.created", deal_id=d, name="Acme", owner="ana",
                     amount=12000.5, currency="EUR",
                     expected_close_date="2026-12-31", occurred_at=at(0))]
        t = 100
        for stage in ["scoping", "proposal", "negotiation", "closing"]:
            events.append(ev("deal.stage_requested", deal_id=d,
                             to_stage=stage, occurred_at=at(t)))
            t += 100
        events.append(ev("deal.activity", deal_id=d,
                         activity="contract_signed", occurred_at=at(t)))
        events.append(ev("deal.stage_requested", deal_id=d, to_stage="won",
                         requested_by="ana", occurred_at=at(t + 50)))
        self.env.produce("sales.deals", events)

        msgs = self.env.wait_for(
            "sales.pipeline",
            lambda m: len([x for x in m if x.get("deal_id") == d]) >= 6)
        mine = [m for m in msgs if m["deal_id"] == d]
        self.assertEqual([m["type"] for m in mine],
                         ["deal.stage_changed"] * 6)
        self.assertEqual([(m["from_stage"], m["to_stage"]) for m in mine],
                         [("", "qualification"), ("qualification", "scoping"),
                          ("scoping", "proposal"), ("proposal", "negotiation"),
                          ("negotiation", "closing"), ("closing", "won")])
        for m in mine:
            self.assertEqual(m["probability"], PROB[m["to_stage"]])
            self.assertEqual(m["amount"], 12000.5)
            self.assertEqual(m["currency"], "EUR")
            self.assertEqual(m["owner"], "ana")
        # caused_by names the input, in order (the activity derives nothing)
        causes = [e["event_id"] for e in events if e["type"] != "deal.activity"]
        self.assertEqual([m["caused_by"] for m in mine], causes)
        self.assertEqual([m["seconds_in_previous_stage"] for m in mine],
                         [0, 100, 100, 100, 100, 150])
        self.assertEqual(len({m["event_id"] for m in mine}), 6)

        state = self.env.deal(d)
        self.assertEqual(state["stage"], "won")
        self.assertEqual(state["amount"], 12000.5)
        self.assertEqual(state["expected_close_date"], "2026-12-31")
        self.assertIn("contract_signed", state["activities"])
        self.assertEqual([h["to"] for h in state["history"]],
                         ["qualification", "scoping", "proposal",
                          "negotiation", "closing", "won"])


class BatchWaitGathers(IntegrationCase):
    """batch.wait.ms is how long a batch that has a message waits for more:
    the loop sleeps it out in short steps (main_loop's BATCH_NAP_MS), so
    events that come within it go in the same batch, however many steps
    that takes."""
    partitions = 1
    worker_args = ("--set", "batch.wait.ms=5000")

    def test_events_within_the_wait_make_one_batch(self):
        env, d = self.env, did()
        env.produce("sales.deals", [ev("deal.created", deal_id=d,
                                       name="Acme", owner="ana",
                                       occurred_at=at(0))])
        time.sleep(0.5)  # many naps of the loop, well within the wait
        env.produce("sales.deals", [
            ev("deal.stage_requested", deal_id=d, to_stage="scoping",
               occurred_at=at(100)),
            ev("deal.stage_requested", deal_id=d, to_stage="proposal",
               occurred_at=at(200))])
        msgs = env.wait_for(
            "sales.pipeline",
            lambda m: len([x for x in m if x.get("deal_id") == d]) >= 3)
        self.assertEqual([m["to_stage"] for m in msgs
                          if m.get("deal_id") == d],
                         ["qualification", "scoping", "proposal"])
        w = env.workers[0]
        env.stop_worker(w)
        stats = [line for line in open(w.log_path)
                 if "INFO deal_worker: stats: " in line]
        self.assertTrue(stats, "no stats line in " + w.log_path)
        self.assertIn(" consumed=3 ", stats[-1])
        self.assertIn(" batches=1 ", stats[-1])


class OlderLayout(IntegrationCase):
    def test_a_hash_of_the_older_layout_is_read_and_renamed(self):
        """A state hash as a version before the short field names wrote
        it (long names, the deal_id) reads the same, and the first write
        over it leaves only the short names."""
        env, d = self.env, did()
        key = "%s{deal:%s}" % (env.key_prefix, d)
        t0 = 1793613600000
        env.redis_cli(
            "HSET", key, "deal_id", d, "lead_id", "L-9", "name", "Acme",
            "owner", "ana", "currency", "EUR", "stage", "proposal",
            "created_at", t0, "stage_entered_at", t0 + 60000,
            "last_event_at", t0 + 90000, "rev", "0" * 32,
            "amount", "12000.5", "expected_close_date", "2026-12-31",
            "activities", "demo")
        before = env.deal(d)
        self.assertEqual(before["stage"], "proposal")
        self.assertEqual(before["deal_id"], d)
        e = ev("deal.stage_requested", deal_id=d, to_stage="negotiation",
               occurred_at=at(160))
        env.produce("sales.deals", [e])
        msgs = env.wait_for("sales.pipeline",
                            lambda m: derived_of(m, e["event_id"]))
        m = derived_of(msgs, e["event_id"])[0]
        self.assertEqual((m["type"], m["from_stage"], m["to_stage"]),
                         ("deal.stage_changed", "proposal", "negotiation"))
        self.assertEqual(m["seconds_in_previous_stage"], 100)
        self.assertEqual((m["amount"], m["currency"], m["owner"]),
                         (12000.5, "EUR", "ana"))
        self.assertEqual(
            set(env.redis_cli("HKEYS", key).split()),
            {"l", "n", "o", "c", "s", "ca", "se", "le", "a", "cd", "ac",
             "rev"})
        after = env.deal(d)
        for k in ("deal_id", "lead_id", "name", "owner", "currency",
                  "created_at", "amount", "expected_close_date",
                  "activities"):
            self.assertEqual(after[k], before[k], k)
        self.assertEqual(after["stage"], "negotiation")
        self.assertEqual(after["stage_entered_at"], at(160))


class ReasonCodes(IntegrationCase):
    def expect_rejection(self, events, code, from_stage, to_stage, words):
        self.env.produce("sales.deals", events)
        last = events[-1]["event_id"]
        msgs = self.env.wait_for("sales.pipeline",
                                 lambda m: derived_of(m, last))
        r = derived_of(msgs, last)
        self.assertEqual(len(r), 1, r)
        r = r[0]
        self.assertEqual(r["type"], "deal.transition_rejected")
        self.assertEqual(r["reason_code"], code)
        self.assertEqual(r["from_stage"], from_stage)
        self.assertEqual(r["to_stage"], to_stage)
        self.assertIn(words, r["message"])
        return r

    def test_unknown_deal(self):
        d = did()
        self.expect_rejection([ev("deal.stage_requested", deal_id=d,
                                  to_stage="scoping")],
                              "unknown_deal", "", "scoping", d)
        self.assertIsNone(self.env.deal(d))

    def test_unknown_stage(self):
        d = did()
        self.expect_rejection([ev("deal.created", deal_id=d),
                               ev("deal.stage_requested", deal_id=d,
                                  to_stage="celebration")],
                              "unknown_stage", "qualification", "celebration",
                              "celebration")

    def test_not_allowed_skipping_a_stage(self):
        d = did()
        self.expect_rejection([ev("deal.created", deal_id=d, amount=10),
                               ev("deal.stage_requested", deal_id=d,
                                  to_stage="proposal")],
                              "not_allowed", "qualification", "proposal", "")
        self.assertEqual(self.env.deal(d)["stage"], "qualification")

    def test_terminal_from_won(self):
        d = did()
        self.expect_rejection(
            [ev("deal.created", deal_id=d, amount=5, stage="closing",
                expected_close_date="2027-01-01"),
             ev("deal.activity", deal_id=d, activity="contract_signed"),
             ev("deal.stage_requested", deal_id=d, to_stage="won"),
             ev("deal.stage_requested", deal_id=d, to_stage="lost",
                reason="changed mind")],
            "terminal", "won", "lost", "")
        self.assertEqual(self.env.deal(d)["stage"], "won")

    def test_missing_field_amount(self):
        d = did()
        self.expect_rejection([ev("deal.created", deal_id=d, stage="scoping"),
                               ev("deal.stage_requested", deal_id=d,
                                  to_stage="proposal")],
                              "missing_field", "scoping", "proposal", "amount")

    def test_missing_field_close_date(self):
        d = did()
        self.expect_rejection([ev("deal.created", deal_id=d, stage="proposal",
                                  amount=100),
                               ev("deal.stage_requested", deal_id=d,
                                  to_stage="negotiation")],
                              "missing_field", "proposal", "negotiation",
                              "expected_close_date")

    def test_missing_field_lost_reason(self):
        d = did()
        self.expect_rejection([ev("deal.created", deal_id=d),
                               ev("deal.stage_requested", deal_id=d,
                                  to_stage="lost")],
                              "missing_field", "qualification", "lost",
                              "reason")

    def test_missing_field_contract_signed(self):
        d = did()
        self.expect_rejection([ev("deal.created", deal_id=d, stage="closing",
                                  amount=100,
                                  expected_close_date="2027-01-01"),
                               ev("deal.stage_requested", deal_id=d,
                                  to_stage="won")],
                              "missing_field", "closing", "won",
                              "contract_signed")

    def test_duplicate_deal(self):
        d = did()
        self.expect_rejection([ev("deal.created", deal_id=d, name="first"),
                               ev("deal.created", deal_id=d, name="second")],
                              "duplicate_deal", "qualification",
                              "qualification", "")
        self.assertEqual(self.env.deal(d)["name"], "first")

    def test_already_in_stage(self):
        d = did()
        self.expect_rejection([ev("deal.created", deal_id=d),
                               ev("deal.stage_requested", deal_id=d,
                                  to_stage="qualification")],
                              "already_in_stage", "qualification",
                              "qualification", "")

    def test_back_one_stage_and_reopen(self):
        d = did()
        events = [ev("deal.created", deal_id=d, stage="negotiation",
                     amount=1, expected_close_date="2027-01-01"),
                  ev("deal.stage_requested", deal_id=d, to_stage="proposal"),
                  ev("deal.stage_requested", deal_id=d, to_stage="lost",
                     reason="budget"),
                  ev("deal.stage_requested", deal_id=d,
                     to_stage="qualification")]
        self.env.produce("sales.deals", events)
        last = events[-1]["event_id"]
        msgs = self.env.wait_for("sales.pipeline",
                                 lambda m: derived_of(m, last))
        mine = [(m["from_stage"], m["to_stage"]) for m in msgs
                if m["deal_id"] == d]
        self.assertEqual(mine, [("", "negotiation"),
                                ("negotiation", "proposal"),
                                ("proposal", "lost"),
                                ("lost", "qualification")])


class Duplicates(IntegrationCase):
    def test_duplicate_event_id_changes_nothing(self):
        d = did()
        create = ev("deal.created", deal_id=d, amount=50)
        move = ev("deal.stage_requested", deal_id=d, to_stage="scoping")
        # the same event_id again, even with other content, is ignored
        again = dict(move, to_stage="lost", reason="x")
        update_dup = ev("deal.updated", deal_id=d, amount=99,
                        event_id=create["event_id"])
        marker = ev("deal.activity", deal_id=d, activity="note")
        probe = ev("deal.stage_requested", deal_id=d, to_stage="scoping")
        self.env.produce("sales.deals",
                         [create, move, move, again, update_dup, marker, probe])
        msgs = self.env.wait_for(
            "sales.pipeline", lambda m: derived_of(m, probe["event_id"]))
        mine = [m for m in msgs if m["deal_id"] == d]
        self.assertEqual([m["caused_by"] for m in mine],
                         [create["event_id"], move["event_id"],
                          probe["event_id"]])
        self.assertEqual(mine[-1]["reason_code"], "already_in_stage")
        state = self.env.deal(d)
        self.assertEqual(state["stage"], "scoping")
        self.assertEqual(state["amount"], 50)
        self.assertEqual(len(state["history"]), 2)


class DeadLetters(IntegrationCase):
    partitions = 1  # one partition: "the events after them" is well defined

    def test_poison_goes_to_dlq_and_the_stream_goes_on(self):
        d = did()
        garbage = b"\x00\x00\x00\x00\x08\xff\xfe garbage"
        no_magic = b"not an event at all"
        json_bad = ('{"type":"deal.activity","event_id":"j-%s",'
                    '"occurred_at":"2026-11-02T09:00:00Z","deal_id":"%s",'
                    '"activity":"dance"}' % (uuid.uuid4().hex, d)).encode()
        # schema-valid Avro whose content breaks the contract: an event_id
        # longer than 128 bytes, and an unknown activity
        avro_long_id = avro_encode("deal_activity.avsc", {
            "event_id": "x" * 200, "occurred_at": 1793613600000,
            "deal_id": d, "activity": "call"})
        avro_bad_act = avro_encode("deal_activity.avsc", {
            "event_id": "a-" + uuid.uuid4().hex, "occurred_at": 1793613600000,
            "deal_id": d, "activity": "dance"})
        self.env.produce_raw("sales.deals", [garbage, no_magic, json_bad,
                                             avro_long_id, avro_bad_act],
                             key=d)
        after = ev("deal.created", deal_id=d, name="after the poison")
        self.env.produce("sales.deals", [after])

        dlq = self.env.wait_for("sales.dlq", lambda m: len(m) >= 5, meta=True)
        self.assertEqual(len(dlq), 5)
        reasons = [m["headers"]["dlq.reason"] for m in dlq]
        for m in dlq:
            h = m["headers"]
            self.assertEqual(h["dlq.source.topic"],
                             self.env.topic_prefix + "sales.deals")
            self.assertEqual(h["dlq.source.partition"], "0")
            self.assertEqual(m["key"], d)
        self.assertEqual([int(m["headers"]["dlq.source.offset"]) for m in dlq],
                         [0, 1, 2, 3, 4])
        # the original bytes, unchanged
        self.assertEqual(dlq[1]["raw"], no_magic.decode())
        self.assertEqual(dlq[2]["raw"], json_bad.decode())
        self.assertIn("activity", reasons[2])
        self.assertIn("event_id", reasons[3])
        self.assertIn("activity", reasons[4])

        msgs = self.env.wait_for(
            "sales.pipeline", lambda m: derived_of(m, after["event_id"]))
        self.assertEqual(derived_of(msgs, after["event_id"])[0]["to_stage"],
                         "qualification")
        self.assertEqual(self.env.deal(d)["name"], "after the poison")


def model_stream(n_deals, seed_tag):
    """A stream with a known outcome: every deal walks to won with a few
    rejected requests on the way.  Returns (events, expected final stage per
    deal, expected {caused_by: derived type})."""
    events, final, derived = [], {}, {}
    for i in range(n_deals):
        d = "K-%s-%03d" % (seed_tag, i)
        t = i
        def add(e, kind):
            events.append(e)
            if kind:
                derived[e["event_id"]] = kind
        add(ev("deal.created", deal_id=d, amount=1000 + i,
               expected_close_date="2027-03-01", occurred_at=at(t)),
            "deal.stage_changed")
        add(ev("deal.stage_requested", deal_id=d, to_stage="proposal",
               occurred_at=at(t + 1)), "deal.transition_rejected")
        for k, stage in enumerate(["scoping", "proposal", "negotiation",
                                   "closing"]):
            add(ev("deal.stage_requested", deal_id=d, to_stage=stage,
                   occurred_at=at(t + 10 + k)), "deal.stage_changed")
        add(ev("deal.activity", deal_id=d, activity="contract_sent",
               occurred_at=at(t + 20)), None)
        add(ev("deal.updated", deal_id=d, amount=2000 + i,
               occurred_at=at(t + 21)), None)
        add(ev("deal.activity", deal_id=d, activity="contract_signed",
               occurred_at=at(t + 22)), None)
        add(ev("deal.stage_requested", deal_id=d, to_stage="won",
               occurred_at=at(t + 23)), "deal.stage_changed")
        add(ev("deal.stage_requested", deal_id=d, to_stage="lost",
               reason="late", occurred_at=at(t + 24)),
            "deal.transition_rejected")
        final[d] = ("won", 2000 + i)
    return events, final, derived


class KillAndRestart(IntegrationCase):
    workers = 0  # started by the test

    def test_sigkill_mid_stream_loses_nothing_and_applies_nothing_twice(self):
        env = self.env
        events, final, derived = model_stream(1000, uuid.uuid4().hex[:6])
        stream = interleave(events)
        w = env.start_worker("deal_worker")
        # the stream is still arriving when the worker is killed
        producer = env.produce_in_background("sales.deals", stream)
        env.wait_for("sales.pipeline", lambda m: len(m) >= 1, timeout=90)
        w.send_signal(signal.SIGKILL)
        w.wait()
        self.assertTrue(producer.is_alive(), "killed too late to prove it")
        partial = len(env.tail("sales.pipeline"))
        self.assertLess(partial, len(derived))

        env.start_worker("deal_worker")
        producer.join()
        check_model(self, env, final, derived)


class Rebalances(IntegrationCase):
    workers = 0
    partitions = 6

    def test_workers_joining_and_leaving_mid_stream_lose_nothing(self):
        env = self.env
        events, final, derived = model_stream(800, uuid.uuid4().hex[:6])
        first = env.start_worker("deal_worker", ["--set", "batch.size=50"])
        producer = env.produce_in_background("sales.deals",
                                             interleave(events), chunks=150)
        env.wait_for("sales.pipeline", lambda m: len(m) >= 1, timeout=90)
        env.start_worker("deal_worker", ["--set", "batch.size=50"])
        time.sleep(1)
        env.start_worker("deal_worker", ["--set", "batch.size=50"])
        time.sleep(1)
        # leaves the group mid-stream (a clean stop takes a few seconds:
        # the last offsets wait out offsets.store.delay)
        self.assertTrue(producer.is_alive(), "the stream ended too soon")
        env.stop_worker(first)
        producer.join()
        check_model(self, env, final, derived)


def interleave(events):
    """Each deal's events in order, the deals interleaved."""
    by_deal = {}
    for e in events:
        by_deal.setdefault(e["deal_id"], []).append(e)
    stream, lists = [], list(by_deal.values())
    while any(lists):
        for l in lists:
            if l:
                stream.append(l.pop(0))
    return stream


def check_model(case, env, final, derived):
    """Every derived event the stream implies, each with one stable id, and
    the state exactly as the stream implies: nothing lost, nothing applied
    twice."""
    msgs = env.wait_for(
        "sales.pipeline",
        lambda m: {x["caused_by"] for x in m} >= set(derived),
        timeout=120)
    by_cause = {}
    for m in msgs:
        by_cause.setdefault(m["caused_by"], set()).add(
            (m["event_id"], m["type"]))
    case.assertEqual(set(by_cause), set(derived))
    for cause, kind in derived.items():
        case.assertEqual(len(by_cause[cause]), 1,
                         "%s derived twice differently" % cause)
        case.assertEqual(next(iter(by_cause[cause]))[1], kind)
    for d, (stage, amount) in final.items():
        st = env.deal(d)
        case.assertEqual(st["stage"], stage, d)
        case.assertEqual(st["amount"], amount, d)
        case.assertEqual(len(st["history"]), 6, d)  # nothing applied twice


if __name__ == "__main__":
    main()
