"""Redis errors by class, against a real Redis: a per-key error (a key of
the wrong type) fails only its own event, which goes to the dead-letter
topic with Redis's text, and the partition goes on; refused credentials
are fatal.

The store's own tests (common/store.c: claims on Redis's clock, lease
extension and loss, per-key errors that write nothing, the bounds on
:history and :applied, AUTH with ACL users) are the "store (Redis)" group
of tests/unit/test_timers.c; StoreScripts runs that program against the
local stack's Redis and a private Redis with ACL users."""
import os
import subprocess
import time
import uuid

from harness import (BUILD, LOGS, IntegrationCase, ensure_stack, ev,
                     free_port, main)
import unittest

STORE_TESTS = ["test_claim_uses_redis_time", "test_extend_and_lose_claims",
               "test_apply_per_key_errors",
               "test_history_and_applied_bounds", "test_ttl_override",
               "test_fold_out_of_order", "test_fold_sum",
               "test_connect_errors", "test_acl_users"]


def redis_cli(address, *args):
    host, port = address.rsplit(":", 1)
    p = subprocess.run(["redis-cli", "--raw", "-h", host, "-p", port] +
                       [str(a) for a in args], capture_output=True,
                       text=True, timeout=30, check=True)
    return p.stdout


class AclRedis:
    """A redis-server of the test's own with ACL users: the default user
    off, "app" (every right, password app-pass) and "reader" (read
    commands only, password reader-pass)."""

    def __init__(self):
        self.port = free_port()
        os.makedirs(LOGS, exist_ok=True)
        self.log = open(os.path.join(LOGS, "redis-acl-%d.log" % self.port),
                        "ab")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no",
             "--user", "default", "off",
             "--user", "app", "on", ">app-pass", "~*", "&*", "+@all",
             "--user", "reader", "on", ">reader-pass", "~*", "+@read"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while time.time() < deadline:
            p = subprocess.run(["redis-cli", "-p", str(self.port), "--user",
                                "app", "--pass", "app-pass", "ping"],
                               capture_output=True, text=True)
            if p.stdout.strip() == "PONG":
                return
            time.sleep(0.1)
        self.close()
        raise AssertionError("redis with ACL users did not start")

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class StoreScripts(unittest.TestCase):
    def test_store_group_of_test_timers(self):
        ensure_stack()
        acl = AclRedis()
        self.addCleanup(acl.close)
        env = dict(os.environ, PL_TEST_REDIS=os.environ.get(
            "PL_REDIS", "127.0.0.1:16379"), PL_TEST_REDIS_ACL=acl.address)
        p = subprocess.run([os.path.join(BUILD, "test_timers")], env=env,
                           capture_output=True, text=True, timeout=300)
        out = p.stdout + p.stderr
        self.assertEqual(p.returncode, 0, out[-4000:])
        for name in STORE_TESTS:  # each ran, none skipped
            self.assertIn("[       OK ] %s\n" % name, out)
        self.assertNotIn("SKIPPED", out)


class WrongTypeKeys(IntegrationCase):
    """Two deals whose keys someone overwrote with another type: their
    events go to the dead-letter topic with Redis's error, and the events
    behind them in the same partition are applied.  Before, the worker
    took WRONGTYPE for "Redis down": it paused every partition and retried
    for ever."""
    partitions = 1

    def test_the_partition_goes_on(self):
        env = self.env
        tag = uuid.uuid4().hex[:6]
        bad_history, bad_state = "WT-%s-h" % tag, "WT-%s-s" % tag
        good = ["WT-%s-ok%d" % (tag, i) for i in range(3)]
        redis_cli(env.redis, "SET", "%s{deal:%s}:history" % (
            env.key_prefix, bad_history), "not a list")
        redis_cli(env.redis, "SET", "%s{deal:%s}" % (
            env.key_prefix, bad_state), "not a hash")
        events = [ev("deal.created", deal_id=bad_history, amount=10),
                  ev("deal.created", deal_id=good[0], amount=10),
                  ev("deal.created", deal_id=bad_state, amount=10),
                  ev("deal.created", deal_id=good[1], amount=10),
                  ev("deal.stage_requested", deal_id=good[1],
                     to_stage="scoping"),
                  ev("deal.created", deal_id=good[2], amount=10)]
        env.produce("sales.deals", events)
        dlq = env.wait_for("sales.dlq", lambda m: len(m) >= 2, meta=True,
                           timeout=60)
        self.assertEqual(len(dlq), 2)
        reasons = [" ".join("%s=%s" % kv for kv in m["headers"].items())
                   for m in dlq]
        self.assertIn("WRONGTYPE", reasons[0])
        self.assertIn("{deal:%s}:history is a string" % bad_history,
                      reasons[0])
        self.assertIn("WRONGTYPE", reasons[1])
        self.assertIn("{deal:%s} is a string" % bad_state, reasons[1])
        env.wait_for("sales.pipeline",
                     lambda m: {x.get("caused_by") for x in m} >=
                     {events[i]["event_id"] for i in (1, 3, 4, 5)},
                     timeout=60)
        for d in good:
            self.assertIsNotNone(env.deal(d))
        self.assertEqual(env.deal(good[1])["stage"], "scoping")
        # nothing was written for the two: their keys are as they were
        self.assertEqual(redis_cli(env.redis, "GET", "%s{deal:%s}:history" % (
            env.key_prefix, bad_history)).strip(), "not a list")
        self.assertEqual(redis_cli(env.redis, "EXISTS", "%s{deal:%s}" % (
            env.key_prefix, bad_history)).strip(), "0")
        self.assertEqual(redis_cli(env.redis, "GET", "%s{deal:%s}" % (
            env.key_prefix, bad_state)).strip(), "not a hash")
        env.check_workers()
        self.assertIsNone(env.workers[0].poll())


class RefusedCredentials(IntegrationCase):
    """A password Redis refuses is fatal: the worker exits non-zero with
    Redis's text, and the password appears nowhere in its output."""
    workers = 0

    def test_worker_exits_with_redis_text(self):
        env = self.env
        secret = "pw-%s" % uuid.uuid4().hex
        w = env.start_worker("deal_worker", ["--set",
                                             "redis.password=" + secret])
        try:
            w.wait(30)
        except subprocess.TimeoutExpired:
            w.kill()
            w.wait()
            self.fail("the worker kept retrying refused credentials")
        env.workers.remove(w)
        log = open(w.log_path).read()
        self.assertNotEqual(w.returncode, 0)
        self.assertIn("AUTH", log)
        self.assertNotIn(secret, log)


if __name__ == "__main__":
    main()
