"""Stale-deal alerts and close reminders against a real Kafka broker and a
real Redis, with a rules file whose durations are seconds.

Timers are measured from the events' occurred_at and fire on the worker's
clock, so these tests send events stamped with the current time."""
import datetime
import json
import os
import signal
import subprocess
import time
import uuid

from harness import IntegrationCase, SOURCE, LOGS, ev, main

T0 = time.time()


def iso(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc) \
        .strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def day(offset):
    d = datetime.datetime.now(datetime.timezone.utc).date() + \
        datetime.timedelta(days=offset)
    return d.isoformat()


def midnight(offset):
    d = datetime.datetime.now(datetime.timezone.utc).date() + \
        datetime.timedelta(days=offset)
    return datetime.datetime(d.year, d.month, d.day,
                             tzinfo=datetime.timezone.utc).timestamp()


# closing_soon and overdue are relative to (date-only) close dates; these
# offsets put their due times a few seconds after the rules are written
SOON_AT = T0 + 12
CLOSING_SOON = int(midnight(1) - SOON_AT)  # before tomorrow 00:00 UTC
OVERDUE_AT = T0 + 12
OVERDUE_AFTER = int(OVERDUE_AT - midnight(0))  # after yesterday ended


def redis_cli(env, *args):
    """One command on the test's Redis, through redis-cli (raw output)."""
    host, port = env.redis.rsplit(":", 1)
    p = subprocess.run(["redis-cli", "--raw", "-h", host, "-p", port] +
                       [str(a) for a in args], capture_output=True,
                       text=True, timeout=30, check=True)
    return p.stdout


def timer_shard_of(env, deal_id):
    """The timer shard (key) that holds a member of deal_id."""
    keys = redis_cli(env, "--scan", "--pattern",
                     env.key_prefix + "timers:*").split()
    for k in keys:
        members = redis_cli(env, "ZRANGE", k, 0, -1).split("\n")
        if any(m.endswith("|" + deal_id) for m in members):
            return k
    raise AssertionError("no timer shard holds a timer of %s" % deal_id)


def timer_members(env, deal_id, timer):
    """The members of deal_id's `timer` in its shard."""
    return sorted(m for m in redis_cli(env, "ZRANGE",
                                       timer_shard_of(env, deal_id), 0,
                                       -1).split("\n")
                  if m.startswith(timer + "|") and m.endswith("|" + deal_id))


def wait_applied(env, deal_id, event, timeout=15):
    """Wait until deal_id's state has event's occurred_at."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        e = env.entity("deal", deal_id)
        if e and e.get("last_event_at") == event["occurred_at"]:
            return
        time.sleep(0.05)
    raise AssertionError("%s: event not applied in %ds" % (deal_id, timeout))


def ms(iso_time):
    return round(datetime.datetime.strptime(
        iso_time, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=datetime.timezone.utc).timestamp() * 1000)


def rules_file(stale_repeat="0s"):
    text = open(os.path.join(SOURCE, "deploy", "rules", "default.yaml")).read()
    deal = text[:text.index("\nalerts:")]
    for stage, secs in [("qualification", 4), ("scoping", 6),
                        ("proposal", 30), ("negotiation", 30),
                        ("closing", 30)]:
        i = deal.index("name: " + stage)
        j = deal.index("stale_after:", i)
        k = deal.index("\n", j)
        deal = deal[:j] + "stale_after: %ds" % secs + deal[k:]
    lead = text[text.index("\nlead:"):]
    alerts = """
alerts:
  stale_repeat: %s
  closing_soon: [%ds]
  overdue_after: %ds
  contract_not_sent:
    stage: closing
    after: 3s
    unless: contract_sent
""" % (stale_repeat, CLOSING_SOON, OVERDUE_AFTER)
    os.makedirs(LOGS, exist_ok=True)
    path = os.path.join(LOGS, "rules-timers-%d-%s.yaml" % (os.getpid(),
                                                          stale_repeat))
    open(path, "w").write(deal + "\n" + alerts + lead)
    return path


def rules_file_alerts(name, alerts):
    """The rules of rules_file() with another alerts: section."""
    text = open(rules_file()).read()
    i = text.index("\nalerts:")
    j = text.index("\nlead:")
    path = os.path.join(LOGS, "rules-timers-%d-%s.yaml" % (os.getpid(), name))
    open(path, "w").write(text[:i] + "\n" + alerts + text[j:])
    return path


def did():
    return "TD-" + uuid.uuid4().hex[:10]


def alerts_for(msgs, deal_id, type_=None, kind=None):
    return [m for m in msgs if m["deal_id"] == deal_id and
            (type_ is None or m["type"] == type_) and
            (kind is None or m.get("kind") == kind)]


class TimerCase(IntegrationCase):
    timer_args = ("--set", "timers.interval=200ms")
    stale_repeat = "0s"

    @classmethod
    def setUpClass(cls):
        cls.rules = rules_file(cls.stale_repeat)
        cls.worker_args = ("--set", "rules.file=" + cls.rules) + \
            cls.timer_args
        super().setUpClass()

    def now_event(self, type_, **fields):
        return ev(type_, occurred_at=iso(time.time()), **fields)


class Alerts(TimerCase):
    def test_stale_fires_after_its_threshold_and_not_before_and_once(self):
        d = did()
        created = self.now_event("deal.created", deal_id=d)
        t = time.time()
        self.env.produce("sales.deals", [created])
        time.sleep(max(0, t + 2.5 - time.time()))
        self.assertEqual(alerts_for(self.env.tail("sales.alerts"), d), [])
        msgs = self.env.wait_for("sales.alerts",
                                 lambda m: alerts_for(m, d), timeout=30)
        [a] = alerts_for(msgs, d)
        self.assertEqual(a["type"], "deal.stale")
        self.assertEqual(a["stage"], "qualification")
        self.assertEqual(a["threshold_seconds"], 4)
        self.assertEqual(a["idle_since"], created["occurred_at"])
        self.assertGreaterEqual(a["idle_seconds"], 4)
        # one alert per idle period: still idle, no second alert
        time.sleep(5)
        self.assertEqual(len(alerts_for(self.env.tail("sales.alerts"), d)), 1)

    def test_activity_postpones_stale(self):
        d = did()
        created = self.now_event("deal.created", deal_id=d)
        self.env.produce("sales.deals", [created])
        time.sleep(2.5)
        act = self.now_event("deal.activity", deal_id=d, activity="call")
        self.env.produce("sales.deals", [act])
        wait_applied(self.env, d, act)
        # timers.stale.lazy (the default): the activity only postponed the
        # stale timer, so the member scheduled at creation stays (the timer
        # pass moves it when it comes due: the alert below, at the new due
        # time, is the proof; the first member alone would not fire it)
        first = ms(created["occurred_at"]) + 4000
        members = timer_members(self.env, d, "stale")
        if time.time() * 1000 < first - 300:  # not due yet
            self.assertEqual(members, ["stale|%d|%s" % (first, d)])
        time.sleep(max(0, first / 1000 + 1 - time.time()))
        # past the first due time, before the new one
        self.assertEqual(alerts_for(self.env.tail("sales.alerts"), d), [])
        msgs = self.env.wait_for("sales.alerts",
                                 lambda m: alerts_for(m, d), timeout=30)
        [a] = alerts_for(msgs, d)
        self.assertEqual(a["idle_since"], act["occurred_at"])
        time.sleep(1)
        self.assertEqual(len(alerts_for(self.env.tail("sales.alerts"), d)), 1)


class SlowScan(TimerCase):
    """The slow full scan (timers.scan.interval) indexes a timer the due
    index lacks (scheduled before the index existed, or its index update
    lost), so that it still fires; the scan only indexes (plain commands),
    the due path claims."""
    timer_args = ("--set", "timers.interval=200ms",
                  "--set", "timers.scan.interval=2s")

    def test_a_timer_the_index_lacks_fires(self):
        env = self.env
        d = did()
        slot = str(crc16(("deal:" + d).encode()) % 16384)
        index = env.key_prefix + "{timers}:due"
        created = self.now_event("deal.created", deal_id=d)
        t = time.time()
        env.produce("sales.deals", [created])
        deadline = time.time() + 30
        while time.time() < deadline and \
                not redis_cli(env, "ZSCORE", index, slot).strip():
            time.sleep(0.05)
        self.assertTrue(redis_cli(env, "ZSCORE", index, slot).strip(),
                        "the deal's slot was never indexed")
        # the index loses the slot before the stale timer (4 s) is due;
        # the timer itself stays in its shard
        redis_cli(env, "ZREM", index, slot)
        self.assertLess(time.time() - t, 3.5, "too slow to lose the index "
                        "entry before the timer is due")
        self.assertEqual(alerts_for(env.tail("sales.alerts"), d), [])
        self.assertTrue(timer_members(env, d, "stale"))
        msgs = env.wait_for("sales.alerts", lambda m: alerts_for(m, d),
                            timeout=30)
        [a] = alerts_for(msgs, d)
        self.assertEqual(a["type"], "deal.stale")


class StaleNotLazy(TimerCase):
    timer_args = TimerCase.timer_args + ("--set", "timers.stale.lazy=0")

    def test_activity_moves_the_member_at_once(self):
        d = did()
        self.env.produce("sales.deals", [self.now_event("deal.created",
                                                        deal_id=d)])
        time.sleep(1)
        act = self.now_event("deal.activity", deal_id=d, activity="call")
        self.env.produce("sales.deals", [act])
        wait_applied(self.env, d, act)
        self.assertEqual(timer_members(self.env, d, "stale"),
                         ["stale|%d|%s" % (ms(act["occurred_at"]) + 4000, d)])
        msgs = self.env.wait_for("sales.alerts",
                                 lambda m: alerts_for(m, d), timeout=30)
        [a] = alerts_for(msgs, d)
        self.assertEqual(a["idle_since"], act["occurred_at"])

    def test_stage_change_rearms_with_the_new_threshold(self):
        d = did()
        self.env.produce("sales.deals", [
            self.now_event("deal.created", deal_id=d),
            self.now_event("deal.stage_requested", deal_id=d,
                           to_stage="scoping")])
        msgs = self.env.wait_for("sales.alerts",
                                 lambda m: alerts_for(m, d), timeout=30)
        [a] = alerts_for(msgs, d)
        self.assertEqual((a["stage"], a["threshold_seconds"]), ("scoping", 6))

    def test_a_refused_request_is_activity_too(self):
        d = did()
        self.env.produce("sales.deals", [self.now_event("deal.created",
                                                        deal_id=d)])
        time.sleep(2.5)
        bad = self.now_event("deal.stage_requested", deal_id=d,
                             to_stage="won")  # not_allowed
        self.env.produce("sales.deals", [bad])
        msgs = self.env.wait_for("sales.alerts",
                                 lambda m: alerts_for(m, d), timeout=30)
        self.assertEqual(alerts_for(msgs, d)[0]["idle_since"],
                         bad["occurred_at"])

    def test_closing_soon_fires_once_when_due(self):
        d = did()
        self.env.produce("sales.deals", [self.now_event(
            "deal.created", deal_id=d, amount=100,
            expected_close_date=day(1), stage="scoping")])
        if time.time() < SOON_AT - 1.5:
            time.sleep(max(0, SOON_AT - 1.5 - time.time()))
            self.assertEqual(alerts_for(self.env.tail("sales.alerts"), d,
                                        kind="closing_soon"), [])
        msgs = self.env.wait_for(
            "sales.alerts", lambda m: alerts_for(m, d, kind="closing_soon"),
            timeout=60)
        [a] = alerts_for(msgs, d, kind="closing_soon")
        self.assertEqual(a["expected_close_date"], day(1))
        self.assertEqual(a["due_at"], iso(midnight(1) - CLOSING_SOON))
        time.sleep(2)
        self.assertEqual(len(alerts_for(self.env.tail("sales.alerts"), d,
                                        kind="closing_soon")), 1)

    def test_overdue_fires_once_when_due(self):
        d = did()
        self.env.produce("sales.deals", [self.now_event(
            "deal.created", deal_id=d, amount=100,
            expected_close_date=day(-1), stage="scoping")])
        if time.time() < OVERDUE_AT - 1.5:
            time.sleep(max(0, OVERDUE_AT - 1.5 - time.time()))
            self.assertEqual(alerts_for(self.env.tail("sales.alerts"), d,
                                        kind="overdue"), [])
        msgs = self.env.wait_for(
            "sales.alerts", lambda m: alerts_for(m, d, kind="overdue"),
            timeout=60)
        [a] = alerts_for(msgs, d, kind="overdue")
        self.assertEqual(a["due_at"], iso(midnight(0) + OVERDUE_AFTER))
        time.sleep(2)
        self.assertEqual(len(alerts_for(self.env.tail("sales.alerts"), d,
                                        kind="overdue")), 1)

    def test_contract_not_sent(self):
        d, sent = did(), did()
        for deal in (d, sent):
            self.env.produce("sales.deals", [self.now_event(
                "deal.created", deal_id=deal, amount=100,
                expected_close_date=day(30), stage="closing")])
        self.env.produce("sales.deals", [self.now_event(
            "deal.activity", deal_id=sent, activity="contract_sent")])
        msgs = self.env.wait_for(
            "sales.alerts",
            lambda m: alerts_for(m, d, kind="contract_not_sent"), timeout=30)
        [a] = alerts_for(msgs, d, kind="contract_not_sent")
        self.assertEqual(a["stage"], "closing")
        time.sleep(4)
        msgs = self.env.tail("sales.alerts")
        self.assertEqual(len(alerts_for(msgs, d, kind="contract_not_sent")), 1)
        self.assertEqual(alerts_for(msgs, sent, kind="contract_not_sent"), [])

    def test_a_closed_deal_fires_nothing(self):
        d = did()
        self.env.produce("sales.deals", [
            self.now_event("deal.created", deal_id=d, amount=100,
                           expected_close_date=day(-1)),
            self.now_event("deal.stage_requested", deal_id=d,
                           to_stage="lost", reason="gone")])
        time.sleep(max(6, OVERDUE_AT + 2 - time.time()))
        self.assertEqual(alerts_for(self.env.tail("sales.alerts"), d), [])
        self.assertEqual(self.env.deal(d)["timers"], [])


class StaleRepeat(TimerCase):
    stale_repeat = "3s"

    def test_stale_repeats_while_idle_until_activity(self):
        d = did()
        created = self.now_event("deal.created", deal_id=d)
        self.env.produce("sales.deals", [created])
        msgs = self.env.wait_for(
            "sales.alerts", lambda m: len(alerts_for(m, d)) >= 3, timeout=40)
        stale = alerts_for(msgs, d, "deal.stale")[:3]
        self.assertEqual(len({a["event_id"] for a in stale}), 3)
        dues = [datetime.datetime.fromisoformat(
            a["occurred_at"].replace("Z", "+00:00")).timestamp()
            for a in stale]
        self.assertEqual([round(b - a) for a, b in zip(dues, dues[1:])],
                         [3, 3])
        act = self.now_event("deal.activity", deal_id=d, activity="email")
        self.env.produce("sales.deals", [act])
        time.sleep(1)
        before = len(alerts_for(self.env.tail("sales.alerts"), d))
        time.sleep(2)  # within the new idle period's threshold (4s)
        self.assertEqual(len(alerts_for(self.env.tail("sales.alerts"), d)),
                         before)
        msgs = self.env.wait_for(
            "sales.alerts", lambda m: [a for a in alerts_for(m, d)
                                       if a["idle_since"] ==
                                       act["occurred_at"]], timeout=30)


def old_deals(n, tag):
    """n deals idle for an hour: each is stale at once, and only stale."""
    t = iso(time.time() - 3600)
    return ["TM-%s-%d" % (tag, i) for i in range(n)], [
        ev("deal.created", deal_id="TM-%s-%d" % (tag, i), occurred_at=t)
        for i in range(n)]


class FourWorkers(TimerCase):
    """1,000 deals with due timers: every alert exactly once, with 4 workers
    on the same timers (and, below, with 1 and 2)."""
    workers = 4

    def test_each_alert_exactly_once(self):
        deals, events = old_deals(1000, uuid.uuid4().hex[:6])
        self.env.produce("sales.deals", events)
        msgs = self.env.wait_for("sales.alerts",
                                 lambda m: len(m) >= len(deals), timeout=120)
        time.sleep(3)  # anything extra would show up now
        msgs = self.env.tail("sales.alerts")
        self.assertEqual(sorted(m["deal_id"] for m in msgs), sorted(deals))
        self.assertTrue(all(m["type"] == "deal.stale" for m in msgs))
        self.assertEqual(len({m["event_id"] for m in msgs}), len(deals))
        self.assertEqual(self.env.ctl("timers").stdout.strip(), b"")


class OneWorker(FourWorkers):
    workers = 1


class TwoWorkers(FourWorkers):
    workers = 2


def crc16(data):
    """CRC16/XMODEM, as Redis Cluster hashes keys to slots."""
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


assert crc16(b"123456789") == 0x31C3


def same_slice_deals(n, tag):
    """n deal ids whose keys (hash tag {deal:ID}) fall in one slice of the
    timer shards (the worker scans a sixteenth of the 16384 slots per
    tick), so one claim takes all their timers."""
    ids, want = [], None
    i = 0
    while len(ids) < n:
        d = "TL-%s-%d" % (tag, i)
        i += 1
        part = crc16(("deal:" + d).encode()) % 16384 // 1024
        if want is None:
            want = part
        if part == want:
            ids.append(d)
    return ids


class KilledWhileHoldingLeases(TimerCase):
    workers = 0
    timer_args = ("--set", "timers.interval=200ms",
                  "--set", "timers.lease=3s")

    def claimed(self):
        return [t for t in (json.loads(l) for l in self.env.ctl(
            "timers").stdout.decode().splitlines()) if "claimed_until" in t]

    def test_no_alert_is_lost(self):
        # 1000 idle deals in one slice of the timer shards, applied by a
        # worker that fires nothing, so that one claim takes them all
        deals = same_slice_deals(1000, uuid.uuid4().hex[:6])
        idle = iso(time.time() - 3600)
        self.env.produce("sales.deals", [ev("deal.created", deal_id=d,
                                            occurred_at=idle) for d in deals])
        c = self.env.start_worker("deal_worker", (
            "--set", "rules.file=" + self.rules, "--set", "timers.interval=0"))
        deadline = time.time() + 60
        while time.time() < deadline and len(
                self.env.ctl("timers").stdout.splitlines()) < len(deals):
            time.sleep(0.3)
        self.env.stop_worker(c)
        # Worker A claims the due timers but cannot deliver their alerts
        # (its alerts topic does not exist), so it holds the leases,
        # extending them while it waits...
        a = self.env.start_worker("deal_worker", self.worker_args + (
            "--set", "topic.alerts=sales.alerts-missing"))
        deadline = time.time() + 60
        while len(self.claimed()) < len(deals) and time.time() < deadline:
            time.sleep(0.3)
        self.assertEqual(len(self.claimed()), len(deals))
        # ...when it is killed.
        a.send_signal(signal.SIGKILL)
        a.wait()
        self.assertEqual(self.env.tail("sales.alerts"), [])
        # Once the leases run out, worker B fires every one of them.
        self.env.start_worker("deal_worker", self.worker_args)
        msgs = self.env.wait_for(
            "sales.alerts", lambda m: {x["deal_id"] for x in m} >= set(deals),
            timeout=120)
        self.assertEqual(sorted(m["deal_id"] for m in msgs), sorted(deals))
        self.assertEqual(len({m["event_id"] for m in msgs}), len(deals))
        deadline = time.time() + 30
        while self.env.ctl("timers").stdout.strip() and time.time() < deadline:
            time.sleep(0.5)
        self.assertEqual(self.env.ctl("timers").stdout.strip(), b"")


class AlertThatCannotBeEncoded(TimerCase):
    """A timer whose alert cannot be encoded (a close date of 0000-01-01
    puts closing_soon@7d in the year -1, which no RFC 3339 timestamp can
    carry) is completed with a warning; the worker goes on firing the
    others.  Before, it exited 1 ("out of memory"), the claim expired, and
    every deal worker after it died the same way."""

    @classmethod
    def setUpClass(cls):
        cls.rules = rules_file_alerts("no-overdue", """
alerts:
  stale_repeat: 0s
  closing_soon: [7d]
  overdue_after:
  contract_not_sent:
""")
        cls.worker_args = ("--set", "rules.file=" + cls.rules) + \
            cls.timer_args
        IntegrationCase.setUpClass.__func__(cls)

    def test_completed_logged_and_the_worker_goes_on(self):
        env = self.env
        bad, ok = did(), did()
        env.produce("sales.deals", [self.now_event(
            "deal.created", deal_id=bad, amount=100,
            expected_close_date=day(300), stage="proposal")])
        deadline = time.time() + 30
        while time.time() < deadline and not (
                env.deal(bad) and env.deal(bad)["timers"]):
            time.sleep(0.2)
        # The deal as an older release (or a hand edit) may have stored it:
        # closing on 0000-01-01 (field "cd"), its closing_soon@7d due in
        # the year -1.
        state_key = "%s{deal:%s}" % (env.key_prefix, bad)
        redis_cli(env, "HSET", state_key, "cd", "0000-01-01")
        due = -62167219200000 - 7 * 86400000
        member = "closing_soon@7d|%d|%s" % (due, bad)
        shard = timer_shard_of(env, bad)
        redis_cli(env, "ZADD", shard, due, member)

        # the worker completes it, and stays up ...  The planted member is
        # not in the due index: the worker finds it when the slot's index
        # comes due, with the deal's own stale timer (proposal: 30 s after
        # its creation, about when the ZADD above happened), so a 30 s wait
        # raced with it; 60 s leaves room on a loaded machine.
        deadline = time.time() + 60
        while time.time() < deadline and \
                redis_cli(env, "ZSCORE", shard, member).strip():
            env.check_workers()
            time.sleep(0.2)
        self.assertEqual(redis_cli(env, "ZSCORE", shard, member).strip(), "")
        time.sleep(1)
        env.check_workers()
        self.assertIsNone(env.workers[0].poll(), "the worker must go on")
        log = open(env.workers[0].log_path).read()
        self.assertIn("timer '%s': its alert cannot be published" % member,
                      log)
        # ... and still fires timers that are fine
        env.produce("sales.deals", [self.now_event("deal.created",
                                                   deal_id=ok)])
        msgs = env.wait_for("sales.alerts", lambda m: alerts_for(m, ok),
                            timeout=30)
        self.assertEqual([a["type"] for a in alerts_for(msgs, ok)],
                         ["deal.stale"])
        self.assertEqual(alerts_for(msgs, bad, kind="closing_soon"), [])
        self.assertIsNone(env.workers[0].poll())


class LeaseHeldWhileDelivering(TimerCase):
    """A slow delivery holds its timers: worker A claims them but cannot
    deliver their alerts for four leases (its alerts topic does not exist
    yet), so it keeps extending its leases; worker B, sweeping every shard
    meanwhile, must not claim and publish them too.  Before, A's leases ran
    out after timers.lease, B claimed them, and both published every
    alert."""
    workers = 0
    timer_args = ("--set", "timers.interval=200ms",
                  "--set", "timers.lease=2s")

    def claimed(self):
        return [t for t in (json.loads(l) for l in self.env.ctl(
            "timers").stdout.decode().splitlines()) if "claimed_until" in t]

    def test_one_alert_per_timer(self):
        env = self.env
        late = ("--set", "topic.alerts=sales.alerts-late")
        deals = same_slice_deals(20, uuid.uuid4().hex[:6])
        idle = iso(time.time() - 3600)  # stale at once, and only stale
        env.produce("sales.deals", [ev("deal.created", deal_id=d,
                                       occurred_at=idle) for d in deals])
        # applied by a worker that fires nothing (timers.interval=0)...
        c = env.start_worker("deal_worker", ("--set", "rules.file=" +
                                             self.rules, "--set",
                                             "timers.interval=0"))
        deadline = time.time() + 60
        while time.time() < deadline and \
                len(env.ctl("timers").stdout.splitlines()) < len(deals):
            time.sleep(0.3)
        env.stop_worker(c)
        # ... then claimed, all at once, by A, which cannot deliver yet
        a = env.start_worker("deal_worker", self.worker_args + late)
        deadline = time.time() + 60
        while len(self.claimed()) < len(deals) and time.time() < deadline:
            time.sleep(0.2)
        self.assertEqual(len(self.claimed()), len(deals))
        b = env.start_worker("deal_worker", self.worker_args + late)
        time.sleep(8)  # four leases: every first claim has run out
        self.assertIsNone(a.poll())
        self.assertIsNone(b.poll())
        env.ctl("topics", "create", "--partitions", "3", "sales.alerts-late")
        env.extra_topics.append("sales.alerts-late")
        msgs = env.wait_for(
            "sales.alerts-late",
            lambda m: {x["deal_id"] for x in m} >= set(deals), timeout=120)
        time.sleep(3)  # a second publication would show up now
        msgs = env.tail("sales.alerts-late")
        self.assertEqual(sorted(m["deal_id"] for m in msgs), sorted(deals))
        self.assertEqual(len({m["event_id"] for m in msgs}), len(deals))
        deadline = time.time() + 30
        while env.ctl("timers").stdout.strip() and time.time() < deadline:
            time.sleep(0.5)
        self.assertEqual(env.ctl("timers").stdout.strip(), b"")
        self.assertIsNone(a.poll())


if __name__ == "__main__":
    main()
