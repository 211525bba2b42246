"""The metrics endpoint (metrics.port) of a running worker, against the real
Kafka broker and Redis: /metrics is valid Prometheus text (checked by
promtool, which must be installed: Debian's `prometheus` package), its
counters and histograms move as events flow, the consumer lag appears, and
/healthz and /readyz answer as an operator's probes expect, including
while Redis is down.
"""
import re
import shutil
import subprocess
import time
import unittest
import urllib.error
import urllib.request
import uuid

from harness import (Env, PrivateRedis, ensure_stack, ev, at, free_port,
                     main)


def get(port, path, timeout=5):
    """(status, body) of GET http://127.0.0.1:port/path."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path),
                                    timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')


def parse(text):
    """{(name, frozenset(labels)): value} of every sample."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m:
            raise AssertionError("not a sample line: %r" % line)
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"',
                                      m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def value(samples, name, **labels):
    want = set(labels.items())
    vals = [v for (n, ls), v in samples.items()
            if n == name and want <= set(ls)]
    if len(vals) != 1:
        raise AssertionError("%s%s: %d samples" % (name, labels, len(vals)))
    return vals[0]


def promtool_check(test, text):
    promtool = shutil.which("promtool")
    test.assertIsNotNone(promtool, "promtool is missing: apt-get install "
                         "prometheus (the test needs it, it is not skipped)")
    p = subprocess.run([promtool, "check", "metrics"], input=text,
                       capture_output=True, text=True, timeout=60)
    # exit 0 is valid; lint findings print but still exit 0, hard errors 1
    test.assertEqual(p.returncode, 0, p.stdout + p.stderr)
    test.assertEqual((p.stdout + p.stderr).strip(), "",
                     "promtool lint findings:\n" + p.stdout + p.stderr)


def wait_until(what, fn, timeout=60, env=None):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        if env:
            env.check_workers()
        time.sleep(0.3)
    raise AssertionError("timed out waiting for %s (last: %r)" % (what, last))


def did():
    return "D-" + uuid.uuid4().hex[:10]


class DealWorkerMetrics(unittest.TestCase):
    """One deal worker on the shared stack, with its own topics."""

    @classmethod
    def setUpClass(cls):
        ensure_stack()
        cls.env = Env(cls.__name__, partitions=3)
        cls.port = free_port()
        cls.worker = cls.env.start_worker("deal_worker", [
            "--set", "metrics.port=%d" % cls.port,
            "--set", "metrics.bind=127.0.0.1",
            "--set", "timers.interval=1s",
            "-X", "consumer.statistics.interval.ms=1000"])
        wait_until("/readyz 200",
                   lambda: get(cls.port, "/readyz")[0] == 200
                   if _listening(cls.port) else False, env=cls.env)

    @classmethod
    def tearDownClass(cls):
        cls.env.close()

    def scrape(self):
        status, text = get(self.port, "/metrics")
        self.assertEqual(status, 200)
        return text

    def test_1_page_is_valid_prometheus_text(self):
        text = self.scrape()
        promtool_check(self, text)
        self.assertIn("# TYPE pipeline_consumed_total counter", text)
        self.assertIn("# TYPE pipeline_redis_apply_seconds histogram", text)
        self.assertIn("# TYPE pipeline_inflight_batches gauge", text)
        for name, labels in parse(text):
            self.assertTrue(name.startswith("pipeline_"), name)
            self.assertIn(("worker", "deal"), labels, name)

    def test_2_counters_and_histograms_move_as_events_flow(self):
        before = parse(self.scrape())
        n = 12
        events = []
        for _ in range(n // 3):
            d = did()
            events.append(ev("deal.created", deal_id=d, name="Acme",
                             owner="ana", amount=1000, currency="EUR",
                             expected_close_date="2026-12-31",
                             occurred_at=at(0)))
            events.append(ev("deal.stage_requested", deal_id=d,
                             to_stage="scoping", occurred_at=at(10)))
            # not allowed from scoping: a rejection
            events.append(ev("deal.stage_requested", deal_id=d,
                             to_stage="won", occurred_at=at(20)))
        self.env.produce("sales.deals", events)
        self.env.produce_raw("sales.deals", [b"this is not an event"])

        def moved():
            s = parse(self.scrape())
            return s if value(s, "pipeline_consumed_total") - value(
                before, "pipeline_consumed_total") >= n + 1 and value(
                s, "pipeline_inflight_batches") == 0 and value(
                s, "pipeline_produce_delivery_seconds_count") > value(
                before, "pipeline_produce_delivery_seconds_count") else None
        after = wait_until("the counters to move", moved, env=self.env)

        def delta(name):
            return value(after, name) - value(before, name)
        self.assertEqual(delta("pipeline_consumed_total"), n + 1)
        self.assertEqual(delta("pipeline_applied_total"), 2 * n // 3)
        self.assertEqual(delta("pipeline_rejected_total"), n // 3)
        self.assertEqual(delta("pipeline_dead_letters_total"), 1)
        self.assertEqual(delta("pipeline_duplicates_total"), 0)
        self.assertEqual(delta("pipeline_redis_errors_total"), 0)
        self.assertGreater(delta("pipeline_batches_total"), 0)
        # every message is in exactly one batch
        self.assertEqual(delta("pipeline_batch_size_messages_sum"), n + 1)
        self.assertEqual(delta("pipeline_batch_size_messages_count"),
                         delta("pipeline_batches_total"))
        self.assertGreater(delta("pipeline_redis_apply_seconds_count"), 0)
        self.assertGreater(delta("pipeline_redis_apply_seconds_sum"), 0)
        self.assertGreater(delta("pipeline_produce_delivery_seconds_count"),
                           0)
        inf = value(after, "pipeline_redis_apply_seconds_bucket", le="+Inf")
        self.assertEqual(inf, value(after,
                                    "pipeline_redis_apply_seconds_count"))
        self.assertGreater(value(after, "pipeline_cache_entries"), 0)
        self.assertEqual(value(after, "pipeline_assigned_partitions"), 3)
        promtool_check(self, self.scrape())
        # the derived events did go out (the counters tell the truth)
        self.env.wait_for("sales.dlq", lambda m: len(m) >= 1)

        # the analytics figures as gauges (refreshed every 5 s): the 4
        # deals are open in scoping, closing in 2026-12, in EUR
        def analytics():
            s = parse(self.scrape())
            try:
                return s if value(s, "pipeline_stage_open_deals",
                                  stage="scoping") == n // 3 else None
            except AssertionError:
                return None
        s = wait_until("the analytics gauges", analytics, env=self.env)
        self.assertEqual(value(s, "pipeline_forecast_open_deals",
                               month="2026-12", currency="EUR"), n // 3)
        self.assertEqual(value(s, "pipeline_forecast_open_amount",
                               month="2026-12", currency="EUR"),
                         1000 * n // 3)
        # scoping's probability in the default rules: 0.2
        self.assertAlmostEqual(value(s, "pipeline_forecast_weighted_amount",
                                     month="2026-12", currency="EUR"),
                               0.2 * 1000 * n // 3)
        promtool_check(self, self.scrape())

    def test_3_consumer_lag_per_partition(self):
        topic = self.env.topic_prefix + "sales.deals"
        # librdkafka knows a partition's lag once it has a committed
        # offset: 30 deals put messages in each of the 3 partitions
        self.env.produce("sales.deals", [
            ev("deal.created", deal_id=did(), name="Lag", owner="ana",
               amount=1, currency="EUR", expected_close_date="2026-12-31",
               occurred_at=at(0)) for _ in range(30)])

        def caught_up():
            s = parse(self.scrape())
            parts = {dict(ls)["partition"]: v for (name, ls), v in s.items()
                     if name == "pipeline_consumer_lag"
                     and dict(ls).get("topic") == topic}
            return parts if len(parts) == 3 and not any(
                parts.values()) else None
        parts = wait_until("a consumer lag of 0 on 3 partitions", caught_up,
                           env=self.env)
        self.assertEqual(sorted(parts), ["0", "1", "2"])

    def test_4_timer_alerts_are_timed(self):
        # a deal closing tomorrow: its closing_soon@1d timer is due at once
        d = did()
        tomorrow = time.strftime("%Y-%m-%d",
                                 time.gmtime(time.time() + 86400))
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        before = parse(self.scrape())
        self.env.produce("sales.deals", [
            ev("deal.created", deal_id=d, name="Soon", owner="ana",
               amount=10, currency="EUR", expected_close_date=tomorrow,
               occurred_at=now)])
        self.env.wait_for("sales.alerts",
                          lambda m: any(x.get("deal_id") == d for x in m))
        after = wait_until(
            "the alert counted",
            lambda: (lambda s: s if value(s, "pipeline_alerts_total") >
                     value(before, "pipeline_alerts_total") else None)(
                parse(self.scrape())), env=self.env)
        self.assertGreater(
            value(after, "pipeline_timer_alert_delay_seconds_count"),
            value(before, "pipeline_timer_alert_delay_seconds_count"))
        self.assertIn("pipeline_pending_timers",
                      {n for n, _ in after})

    def test_5_probes(self):
        self.assertEqual(get(self.port, "/healthz"), (200, "ok\n"))
        status, body = get(self.port, "/readyz")
        self.assertEqual(status, 200, body)
        self.assertIn("3 partition(s) assigned", body)
        self.assertEqual(get(self.port, "/nothing-here")[0], 404)


def _listening(port):
    import socket
    s = socket.socket()
    try:
        s.settimeout(1)
        s.connect(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


class LeadWorkerMetrics(unittest.TestCase):
    """A lead worker labels its series worker="lead" and has no timer
    metrics."""

    def test_lead_worker(self):
        ensure_stack()
        env = Env(self.__class__.__name__, partitions=2)
        try:
            port = free_port()
            env.start_worker("lead_worker", [
                "--set", "metrics.port=%d" % port])
            wait_until("/readyz 200", lambda: _listening(port) and
                       get(port, "/readyz")[0] == 200, env=env)
            env.produce("sales.leads", [ev(
                "lead.created", lead_id="L-" + uuid.uuid4().hex[:8],
                email="a@example.com", company="Acme", industry="banking",
                employees=500, source="referral")])
            s = wait_until("a lead consumed", lambda: (
                lambda s: s if value(s, "pipeline_consumed_total") >= 1
                and value(s, "pipeline_produce_delivery_seconds_count") >= 1
                else None)(parse(get(port, "/metrics")[1])), env=env)
            text = get(port, "/metrics")[1]
            promtool_check(self, text)
            for name, labels in s:
                self.assertIn(("worker", "lead"), labels, name)
            names = {n for n, _ in s}
            self.assertNotIn("pipeline_alerts_total", names)
            self.assertNotIn("pipeline_pending_timers", names)
            self.assertEqual(value(s, "pipeline_applied_total") +
                             value(s, "pipeline_rejected_total") +
                             value(s, "pipeline_dead_letters_total"), 1)
        finally:
            env.close()


class IdleInTheGroup(unittest.TestCase):
    """More workers than partitions: the one the group gives nothing is
    still ready (it is legitimately idle), and says so."""

    def test_idle_worker_is_ready(self):
        ensure_stack()
        env = Env(self.__class__.__name__, partitions=1)
        try:
            ports = [free_port(), free_port()]
            while ports[1] == ports[0]:
                ports[1] = free_port()
            for port in ports:
                env.start_worker("deal_worker", [
                    "--set", "metrics.port=%d" % port,
                    "--set", "timers.interval=0"])
            bodies = wait_until(
                "both ready, one idle",
                lambda: (lambda r: r if all(s == 200 for s, _ in r) and
                         sorted("idle" in b for _, b in r) == [False, True]
                         else None)([get(p, "/readyz") for p in ports]
                                    if all(_listening(p) for p in ports)
                                    else [(0, "")]),
                env=env)
            assigned = sorted(value(parse(get(p, "/metrics")[1]),
                                    "pipeline_assigned_partitions")
                              for p in ports)
            self.assertEqual(assigned, [0, 1], bodies)
        finally:
            env.close()


class RedisDown(unittest.TestCase):
    """/readyz says 503 with the reason while the worker's Redis is down,
    /healthz stays 200 (the worker is waiting it out, not stuck), and both
    are 200 again once Redis is back."""

    def test_readiness_follows_redis(self):
        ensure_stack()
        redis = PrivateRedis("metrics")
        env = Env(self.__class__.__name__, partitions=2, redis=redis.address)
        try:
            port = free_port()
            env.start_worker("deal_worker", [
                "--set", "metrics.port=%d" % port,
                "--set", "timers.interval=1s"])
            wait_until("/readyz 200", lambda: _listening(port) and
                       get(port, "/readyz")[0] == 200, env=env)
            redis.kill()
            d = did()
            env.produce("sales.deals", [ev(
                "deal.created", deal_id=d, name="Down", owner="ana",
                amount=1, currency="EUR", expected_close_date="2026-12-31",
                occurred_at=at(0))])
            status, body = wait_until(
                "/readyz 503", lambda: (lambda r: r if r[0] == 503 else None)(
                    get(port, "/readyz")), env=env)
            self.assertIn("redis", body)
            self.assertEqual(get(port, "/healthz")[0], 200)
            # the event's apply meets the outage and waits it out
            wait_until("a Redis error counted", lambda: value(
                parse(get(port, "/metrics")[1]),
                "pipeline_redis_errors_total") > 0, env=env)
            self.assertEqual(get(port, "/healthz")[0], 200)
            self.assertEqual(get(port, "/readyz")[0], 503)
            redis.start()
            wait_until("/readyz 200 again",
                       lambda: get(port, "/readyz")[0] == 200, env=env)
            self.assertIsNotNone(env.deal(d) if wait_until(
                "the deal applied", lambda: env.deal(d) is not None,
                env=env) else None)
        finally:
            env.close()
            redis.close()


class BadPort(unittest.TestCase):
    """A metrics port that cannot be bound stops start-up, naming the
    key."""

    def test_port_in_use(self):
        import socket
        ensure_stack()
        env = Env(self.__class__.__name__, partitions=1)
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        try:
            p = env.start_worker("deal_worker", [
                "--set", "metrics.port=%d" % s.getsockname()[1],
                "--set", "metrics.bind=127.0.0.1"])
            env.workers.remove(p)
            self.assertNotEqual(p.wait(30), 0)
            log = open(p.log_path).read()
            self.assertIn("metrics.port", log)
            self.assertIn("in use", log)
        finally:
            s.close()
            env.close()


if __name__ == "__main__":
    main()
