"""`pipelinectl lag` against the real broker and a real deal worker.

What an operator sees: N deal events waiting with no worker is a lag of N
(nothing committed yet, so counted from the low watermark); once a worker
has applied them and stopped cleanly (SIGTERM commits) the lag is 0 and the
committed offset is the end of every partition; events produced after that
are counted from the committed offset.  The lead group, which has seen
nothing, shows no commit and no lag; --group/--topic asks for any group;
the table has one aligned row per partition.
"""
import signal
import uuid

from harness import Env, ensure_stack, ev, at, main
import unittest

N = 25
M = 7
PARTITIONS = 3


def did():
    return "D-" + uuid.uuid4().hex[:10]


class Lag(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        ensure_stack()
        cls.env = Env(cls.__name__, partitions=PARTITIONS)
        cls.deal_group = cls.env.topic_prefix + "pipeline-deal-worker"
        cls.lead_group = cls.env.topic_prefix + "pipeline-lead-worker"
        cls.deals = cls.env.topic_prefix + "sales.deals"

    @classmethod
    def tearDownClass(cls):
        cls.env.close()

    def lag_json(self, *args):
        import json
        p = self.env.ctl("lag", "--json", *args)
        self.assertEqual(p.returncode, 0)
        return [json.loads(l) for l in p.stdout.decode().splitlines()]

    def rows_of(self, rows, group):
        mine = [r for r in rows if r["group"] == group]
        self.assertEqual(sorted(r["partition"] for r in mine),
                         list(range(PARTITIONS)))
        return mine

    def test_lag_before_and_after_a_worker(self):
        env = self.env
        events = [ev("deal.created", deal_id=did(), name="Lag %d" % i,
                     amount=100 + i, occurred_at=at(i)) for i in range(N)]
        env.produce("sales.deals", events)

        # 1. no worker yet: nothing committed, everything is lag
        rows = self.lag_json()
        self.assertEqual(len(rows), 2 * PARTITIONS)
        deal = self.rows_of(rows, self.deal_group)
        for r in deal:
            self.assertEqual(r["topic"], self.deals)
            self.assertIsNone(r["committed"])
            self.assertEqual(r["lag"], r["end"] - r["low"])
        self.assertEqual(sum(r["lag"] for r in deal), N)
        self.assertEqual(sum(r["end"] for r in deal), N)
        for r in self.rows_of(rows, self.lead_group):
            self.assertEqual(r["topic"], env.topic_prefix + "sales.leads")
            self.assertIsNone(r["committed"])
            self.assertEqual(r["lag"], 0)

        # the table: a header and one aligned row per partition and group
        table = env.ctl("lag").stdout.decode().splitlines()
        self.assertEqual(table[0].split(),
                         ["GROUP", "TOPIC", "PARTITION", "COMMITTED", "END",
                          "LAG"])
        self.assertEqual(len(table), 1 + 2 * PARTITIONS)
        self.assertEqual(len({len(l) for l in table}), 1, table)
        lags = [int(l.split()[5]) for l in table[1:]
                if l.split()[0] == self.deal_group]
        self.assertEqual(sum(lags), N)
        self.assertTrue(all(l.split()[3] == "-" for l in table[1:]))

        # 2. a worker applies them; SIGTERM stores and commits the offsets
        w = env.start_worker("deal_worker")
        env.wait_for("sales.pipeline", lambda m: len(
            [x for x in m if x["type"] == "deal.stage_changed"]) >= N)
        env.stop_worker(w, signal.SIGTERM)
        deal = self.rows_of(self.lag_json(), self.deal_group)
        self.assertEqual(sum(r["lag"] for r in deal), 0, deal)
        for r in deal:
            # a partition that got no event has no commit either
            if r["end"] > 0:
                self.assertEqual(r["committed"], r["end"], deal)

        # 3. new events while no worker runs: lag from the committed offset
        env.produce("sales.deals", [
            ev("deal.created", deal_id=did(), occurred_at=at(100 + i))
            for i in range(M)])
        deal = self.rows_of(self.lag_json(), self.deal_group)
        self.assertEqual(sum(r["lag"] for r in deal), M, deal)
        self.assertEqual(sum(r["end"] for r in deal), N + M)

        # --group/--topic: the same group asked for by name (no prefix is
        # added to the group; the topic gets the topic prefix)
        mine = self.lag_json("--group", self.deal_group,
                             "--topic", "sales.deals")
        self.assertEqual(len(mine), PARTITIONS)
        self.assertEqual(sum(r["lag"] for r in mine), M)
        other = self.lag_json("--group", "nobody-" + uuid.uuid4().hex[:6],
                              "--topic", "sales.deals")
        self.assertEqual(sum(r["lag"] for r in other), N + M)
        self.assertTrue(all(r["committed"] is None for r in other))

    def test_usage_errors(self):
        p = self.env.ctl("lag", "--group", "g", check=False)
        self.assertEqual(p.returncode, 2)
        p = self.env.ctl("lag", "--group", "g", "--topic", "no-such-topic",
                         check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn(b"no-such-topic", p.stderr)
        p = self.env.ctl("tail", "--json", "sales.deals", check=False)
        self.assertEqual(p.returncode, 2)


if __name__ == "__main__":
    main()
