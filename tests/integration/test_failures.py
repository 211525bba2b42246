"""Failure behaviour of the deal worker: a Redis outage is waited out with
nothing skipped, and SIGTERM finishes the batch in hand, commits and leaves
the group, so a successor starts exactly where it stopped."""
import json
import signal
import time
import uuid

from harness import (IntegrationCase, PrivateRedis, ensure_stack, ev, at,
                     main)


def causes(msgs):
    return [m["caused_by"] for m in msgs]


def created_and_published(env, letter, n=300):
    """Start a worker and have it apply and publish n new deals
    "<letter>-<tag>-<i>"; returns (tag, events, worker)."""
    tag = uuid.uuid4().hex[:6]
    events = [ev("deal.created", deal_id="%s-%s-%d" % (letter, tag, i))
              for i in range(n)]
    w = env.start_worker()
    env.produce("sales.deals", events)
    env.wait_for("sales.pipeline", lambda m: len(m) >= len(events))
    return tag, events, w


class RedisOutage(IntegrationCase):
    workers = 0

    def test_outage_pauses_and_nothing_is_skipped(self):
        env = self.env
        redis = PrivateRedis("outage")
        self.addCleanup(redis.close)
        env.redis = redis.address
        w = env.start_worker("deal_worker",
                             ["--set", "retry.backoff.max=1s"])
        tag = uuid.uuid4().hex[:6]
        deals = ["O-%s-%d" % (tag, i) for i in range(40)]
        first = [ev("deal.created", deal_id=d, amount=100, occurred_at=at(0))
                 for d in deals]
        env.produce("sales.deals", first)
        env.wait_for("sales.pipeline", lambda m: len(m) >= len(first))

        redis.kill()
        second = [ev("deal.stage_requested", deal_id=d, to_stage="scoping",
                     occurred_at=at(10)) for d in deals]
        env.produce("sales.deals", second)
        # with Redis down nothing can be applied, so nothing is published
        time.sleep(4)
        self.assertEqual(len(env.tail("sales.pipeline")), len(first))
        self.assertIsNone(w.poll(), "the worker must wait, not exit")

        redis.start()
        msgs = env.wait_for("sales.pipeline",
                            lambda m: len(m) >= len(first) + len(second),
                            timeout=90)
        self.assertEqual(sorted(causes(msgs)),
                         sorted(e["event_id"] for e in first + second))
        for d in deals:
            self.assertEqual(env.deal(d)["stage"], "scoping")
        log = open(w.log_path).read()
        self.assertIn("redis unavailable", log)


class GracefulShutdown(IntegrationCase):
    workers = 0

    def test_sigterm_commits_and_a_successor_republishes_nothing(self):
        env = self.env
        tag = uuid.uuid4().hex[:6]
        events = []
        for i in range(100):
            d = "G-%s-%d" % (tag, i)
            events += [ev("deal.created", deal_id=d, amount=5),
                       ev("deal.stage_requested", deal_id=d,
                          to_stage="scoping")]
        # no periodic commits: only the commit on close can save offsets
        w = env.start_worker("deal_worker",
                             ["-X", "auto.commit.interval.ms=600000"])
        env.produce("sales.deals", events)
        env.wait_for("sales.pipeline", lambda m: len(m) >= len(events))
        t0 = time.time()
        env.stop_worker(w, signal.SIGTERM)  # asserts exit status 0
        self.assertLess(time.time() - t0, 30)
        self.assertIn("shutting down", open(w.log_path).read())

        # a successor in the same group starts after the committed offsets:
        # it republishes nothing and takes up new events
        env.start_worker()
        marker = ev("deal.created", deal_id="G-%s-marker" % tag)
        env.produce("sales.deals", [marker])
        msgs = env.wait_for("sales.pipeline",
                            lambda m: marker["event_id"] in causes(m))
        time.sleep(1)
        msgs = env.tail("sales.pipeline")
        self.assertEqual(len(msgs), len(events) + 1,
                         "derived events were published twice")


class CommitsWhileIdle(IntegrationCase):
    workers = 0

    def test_offsets_are_committed_without_a_shutdown(self):
        """Once a stream is applied and published, its offsets are committed
        even if the worker then sits idle and dies: a successor publishes
        nothing again."""
        env = self.env
        tag, events, w = created_and_published(env, "I")
        time.sleep(3)  # auto commit runs every second
        w.send_signal(signal.SIGKILL)
        w.wait()
        env.start_worker()
        marker = ev("deal.created", deal_id="I-%s-marker" % tag)
        env.produce("sales.deals", [marker])
        env.wait_for("sales.pipeline",
                     lambda m: marker["event_id"] in causes(m))
        time.sleep(1)
        self.assertEqual(len(env.tail("sales.pipeline")), len(events) + 1,
                         "derived events were published twice")


class FoldBeforeCommit(IntegrationCase):
    workers = 0

    def test_offsets_wait_for_the_fold(self):
        """A batch's offsets are never stored before its analytics fold,
        even once it is delivered and past offsets.store.delay: the fold
        of several batches is done at once (fold.batches, fold.delay),
        so batches are delivered while it waits.  Stretched here (a fold
        every 30 s, no store delay): nothing may be committed meanwhile;
        a successor gets the events again and counts every one."""
        env = self.env
        stats = env.key_prefix + "{stats}"
        tag = uuid.uuid4().hex[:6]
        events = [ev("deal.created", deal_id="F-%s-%d" % (tag, i),
                     owner="fold-%s" % tag)
                  for i in range(50)]
        w = env.start_worker("deal_worker",
                             ["--set", "offsets.store.delay=0",
                              "--set", "batch.size=10",
                              "--set", "fold.batches=1000",
                              "--set", "fold.delay=30s"])
        env.produce("sales.deals", events)
        env.wait_for("sales.pipeline", lambda m: len(m) >= len(events))
        time.sleep(3)  # auto commit runs every second
        rows = [json.loads(l) for l in
                env.ctl("lag", "--json").stdout.decode().splitlines()]
        deal = [r for r in rows
                if r["group"].endswith("pipeline-deal-worker")]
        self.assertTrue(deal, rows)
        self.assertEqual([r["committed"] for r in deal if r["committed"]],
                         [], "offsets committed before their fold")
        self.assertIsNone(env.redis_cli("HGET", stats, "s|fold-%s|"
                                        "qualification|open" % tag).strip()
                          or None, "folded before fold.delay")
        w.send_signal(signal.SIGKILL)
        w.wait()
        env.start_worker()
        deadline = time.time() + 60
        while True:
            open_ = env.redis_cli("HGET", stats, "s|fold-%s|qualification|"
                                  "open" % tag).strip()
            if open_ == str(len(events)) or time.time() > deadline:
                break
            time.sleep(0.5)
        self.assertEqual(open_, str(len(events)))


class FoldUndoneAtShutdown(IntegrationCase):
    workers = 0

    def test_fold_undone_at_shutdown_is_not_a_clean_exit(self):
        """A worker stopped while Redis is down cannot do the fold its last
        batches wait for: it exits 1 and says so (exit 0 is for a stop
        that committed its work), and commits none of those offsets."""
        env = self.env
        redis = PrivateRedis("fold-at-stop")
        self.addCleanup(redis.close)
        env.redis = redis.address
        tag = uuid.uuid4().hex[:6]
        events = [ev("deal.created", deal_id="G-%s-%d" % (tag, i))
                  for i in range(20)]
        w = env.start_worker("deal_worker",
                             ["--set", "offsets.store.delay=0",
                              "--set", "batch.size=10",
                              "--set", "fold.batches=1000",
                              "--set", "fold.delay=30s",
                              "--set", "shutdown.grace=2s",
                              "--set", "timers.interval=0"])
        env.produce("sales.deals", events)
        env.wait_for("sales.pipeline", lambda m: len(m) >= len(events))
        redis.kill()
        w.send_signal(signal.SIGTERM)
        w.wait(30)
        env.workers.remove(w)  # its exit 1 is the expected one
        log = open(w.log_path).read()
        self.assertEqual(w.returncode, 1, log[-2000:])
        self.assertIn("analytics fold of the last batches undone", log)
        rows = [json.loads(l) for l in
                env.ctl("lag", "--json").stdout.decode().splitlines()]
        deal = [r for r in rows
                if r["group"].endswith("pipeline-deal-worker")]
        self.assertTrue(deal, rows)
        self.assertEqual([r["committed"] for r in deal if r["committed"]],
                         [], "offsets committed without their fold")


class OutcomesDroppedOnceCommitted(IntegrationCase):
    workers = 0

    def out_keys(self, tag):
        env = self.env
        return env.redis_cli("--scan", "--pattern",
                             env.key_prefix + "{deal:O-%s-*}:out:*" % tag
                             ).split()

    def test_outcomes_are_dropped_in_small_steps_then_at_shutdown(self):
        """The derived events kept for a redelivery (:out:<event_id>) are
        dropped once their input offsets are committed: while the worker
        runs, a little with each later batch (a second's worth of drops
        never rides with one small batch whole), and the rest by a clean
        shutdown.  The :applied records (dedupe) stay."""
        env = self.env
        tag, _, w = created_and_published(env, "O")
        self.assertGreater(len(self.out_keys(tag)), 0)
        time.sleep(3)  # auto commit runs every second
        # One event a batch: each carries at most 2 + 64 drops, so the 300
        # take several batches, and all of them are gone after 20.
        seen = []
        for i in range(20):
            marker = ev("deal.created", deal_id="M-%s-%d" % (tag, i))
            env.produce("sales.deals", [marker])
            env.wait_for("sales.pipeline",
                         lambda m: marker["event_id"] in causes(m))
            seen.append(len(self.out_keys(tag)))
            if not seen[-1]:
                break
        self.assertEqual(seen[-1], 0, "outcomes kept: %s" % seen)
        self.assertGreater(len(seen), 2,
                           "all dropped with one small batch: %s" % seen)
        self.assertTrue(all(a >= b for a, b in zip(seen, seen[1:])), seen)
        self.assertEqual(int(env.redis_cli(
            "EXISTS", env.key_prefix + "{deal:O-%s-7}:applied" % tag)), 1)
        # the markers' own outcomes: dropped by the shutdown's flush
        env.stop_worker(w)
        left = env.redis_cli("--scan", "--pattern",
                             env.key_prefix + "{deal:M-%s-*}:out:*" % tag)
        self.assertEqual(left.split(), [])


if __name__ == "__main__":
    main()
