"""The model's pipeline analytics (tests/chaos/model.py, Stream.reports()),
on tiny hand-written streams whose reports are computed here by hand from
the contract (CONTRACT.md, "Pipeline analytics"), so the integration test
(tests/integration/test_analytics.py) compares the workers with something
proven.  No services needed."""
import calendar
import os
import sys
import unittest
from decimal import Decimal

SOURCE = os.environ.get("PL_SOURCE_DIR") or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(SOURCE, "tests", "chaos"))

import model  # noqa: E402

# 2030-01-31T23:50:00Z: 10 minutes before a new month
T0 = calendar.timegm((2030, 1, 31, 23, 50, 0)) * 1000
D = Decimal


def at(s):
    return model.rfc3339(T0 + s * 1000)


_n = [0]


def ev(type_, t, **fields):
    _n[0] += 1
    e = {"type": type_, "event_id": "u-%d" % _n[0], "occurred_at": at(t)}
    e.update(fields)
    return e


def stage_req(deal, t, to, **more):
    return ev("deal.stage_requested", t, deal_id=deal, to_stage=to, **more)


def hand_stream():
    """Four deals, three leads (one converted, its deal walked to won)."""
    s = model.Stream.empty(rules_file=model.DEFAULT_RULES,
                           currencies=("USD", "EUR", "GBP"))
    evs = [
        # A: ana, 1000 EUR, closes 2030-03; owner ben from 500 s; won at
        # 2000 s, which is in February; updated after the win
        ev("deal.created", 0, deal_id="A", owner="ana", amount=1000,
           currency="EUR", expected_close_date="2030-03-15"),
        stage_req("A", 100, "scoping"),
        stage_req("A", 400, "proposal"),
        ev("deal.updated", 500, deal_id="A", owner="ben"),
        stage_req("A", 1000, "negotiation"),
        stage_req("A", 1600, "closing"),
        ev("deal.activity", 1700, deal_id="A", activity="contract_signed"),
        stage_req("A", 2000, "won"),
        ev("deal.updated", 2100, deal_id="A", amount=5000, owner="carla"),
        # B: no owner, no amount, no close date; created in scoping, lost,
        # reopened
        ev("deal.created", 10, deal_id="B", stage="scoping"),
        stage_req("B", 50, "lost", reason="budget"),
        stage_req("B", 60, "qualification"),
        # C: ana, 200.5 (USD by default), created in negotiation, back to
        # proposal, forward again by a request older than its last event
        ev("deal.created", 20, deal_id="C", owner="ana", amount=200.5,
           stage="negotiation", expected_close_date="2030-05-01"),
        stage_req("C", 80, "proposal"),
        ev("deal.activity", 200, deal_id="C", activity="call"),
        stage_req("C", 150, "negotiation"),   # counts as of 200 s
        stage_req("C", 260, "closing"),
        # D: ben, 50 GBP; a duplicate create and a refused request change
        # nothing
        ev("deal.created", 30, deal_id="D", owner="ben", amount=50,
           currency="GBP", expected_close_date="2030-05-20"),
        ev("deal.created", 35, deal_id="D", owner="eve", amount=9),
        stage_req("D", 40, "proposal"),        # not_allowed
        stage_req("D", 45, "scoping"),
        stage_req("Z", 46, "scoping"),         # unknown_deal
        # leads: L1 referral, mql -> sal -> sql, its deal won at 3600 s
        ev("lead.created", 0, lead_id="L1", source="referral",
           industry="banking", employees=200, monthly_ad_spend=1000),
        ev("lead.accepted", 10, lead_id="L1", owner="dana"),
        ev("lead.converted", 20, lead_id="L1", amount=700,
           expected_close_date="2030-06-10"),
        stage_req("D-L1", 30, "scoping"),
        stage_req("D-L1", 40, "proposal"),
        stage_req("D-L1", 50, "negotiation"),
        stage_req("D-L1", 60, "closing"),
        ev("deal.activity", 70, deal_id="D-L1", activity="contract_signed"),
        stage_req("D-L1", 3600, "won"),
        ev("lead.created", 30, lead_id="L1", source="event"),  # refused
        # L2: no source, too small: disqualified
        ev("lead.created", 0, lead_id="L2", employees=5),
        # L3: referral, nurture; updated to source event and mql; rejected
        ev("lead.created", 0, lead_id="L3", source="referral",
           industry="software", employees=50),
        ev("lead.updated", 10, lead_id="L3", source="event",
           industry="banking", monthly_ad_spend=10),
        ev("lead.rejected", 20, lead_id="L3", reason="spam"),
    ]
    for e in evs:
        s.apply(e)
    return s, evs


def frow(month, currency, open_count=0, open_amount="0", weighted="0",
         best="0", commit="0", won_count=0, won_amount="0"):
    return {"month": month, "currency": currency, "open_count": open_count,
            "open_amount": D(open_amount), "weighted_amount": D(weighted),
            "best_case_amount": D(best), "commit_amount": D(commit),
            "won_count": won_count, "won_amount": D(won_amount)}


def srow(stage, open_count, entered, advanced, moved_back, lost, won,
         conversion, p50, p90, stale):
    return {"stage": stage, "open_count": open_count, "entered": entered,
            "advanced": advanced, "moved_back": moved_back, "lost": lost,
            "won": won, "conversion": conversion, "p50_seconds": p50,
            "p90_seconds": p90, "stale_after_seconds": stale}


DAY = 86400


class HandStream(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.s, cls.evs = hand_stream()

    def test_outcomes(self):
        s = self.s
        by_id = {e["event_id"]: e for e in self.evs}
        codes = {by_id[k]["deal_id"] + ">" + by_id[k].get("to_stage", "*"):
                 v[1].get("reason_code") for k, v in s.expect.items()
                 if k in by_id and "deal_id" in by_id[k] and
                 v[0] == "deal.transition_rejected"}
        self.assertEqual(codes, {"D>*": "duplicate_deal",
                                 "D>proposal": "not_allowed",
                                 "Z>scoping": "unknown_deal"})
        self.assertEqual(s.all_deals()["A"]["stage"], "won")
        self.assertEqual(s.all_deals()["A"]["owner"], "carla")
        self.assertEqual(s.all_deals()["D-L1"]["owner"], "dana")
        self.assertEqual(list(s.conversion_derived_ids().values()), ["D-L1"])
        self.assertEqual(s.leads["L3"]["reached"],
                         {"nurture", "mql", "disqualified"})

    def test_seconds_in_previous_stage(self):
        got = [(m["deal_id"], m["from"], m["to"], m["seconds"])
               for m in self.s.moves if m["deal_id"] in ("A", "C")]
        self.assertEqual(got, [
            ("A", "", "qualification", 0),
            ("A", "qualification", "scoping", 100),
            ("A", "scoping", "proposal", 300),
            ("A", "proposal", "negotiation", 600),
            ("A", "negotiation", "closing", 600),
            ("A", "closing", "won", 400),
            ("C", "", "negotiation", 0),
            ("C", "negotiation", "proposal", 60),
            ("C", "proposal", "negotiation", 120),   # 200 - 80, not 150 - 80
            ("C", "negotiation", "closing", 60)])    # from 200, not 150

    def test_forecast(self):
        self.assertEqual(self.s.forecast(), {"months": [
            frow("2030-02", "EUR", won_count=1, won_amount="1000"),
            frow("2030-02", "USD", won_count=1, won_amount="700"),
            frow("2030-05", "GBP", 1, "50", "10.0"),
            frow("2030-05", "USD", 1, "200.5", "160.40", "200.5", "200.5"),
            frow("none", "USD", 1)]})

    def test_forecast_per_owner(self):
        s = self.s
        self.assertEqual(s.forecast("ana"), {"months": [
            frow("2030-05", "USD", 1, "200.5", "160.40", "200.5", "200.5")]})
        # A was won under ben; its later owner carla has nothing
        self.assertEqual(s.forecast("ben"), {"months": [
            frow("2030-02", "EUR", won_count=1, won_amount="1000"),
            frow("2030-05", "GBP", 1, "50", "10.0")]})
        self.assertEqual(s.forecast("carla"), {"months": []})
        self.assertEqual(s.forecast("dana"), {"months": [
            frow("2030-02", "USD", won_count=1, won_amount="700")]})
        self.assertEqual(s.forecast("none"), {"months": [
            frow("none", "USD", 1)]})

    def test_stages(self):
        self.assertEqual(self.s.stages(), {"stages": [
            srow("qualification", 1, 4, 3, 0, 0, 0, 1.0, 15, 100, 7 * DAY),
            srow("scoping", 1, 4, 2, 0, 1, 0, 2 / 3, 40, 300, 10 * DAY),
            srow("proposal", 0, 3, 3, 0, 0, 0, 1.0, 120, 600, 14 * DAY),
            srow("negotiation", 0, 4, 3, 1, 0, 0, 0.75, 60, 600, 10 * DAY),
            srow("closing", 1, 3, 0, 0, 0, 2, 1.0, 400, 3540, 1 * DAY)],
            "bottleneck": None})

    def test_stages_per_owner(self):
        self.assertEqual(self.s.stages("ben"), {"stages": [
            srow("qualification", 0, 1, 1, 0, 0, 0, 1.0, 15, 15, 7 * DAY),
            srow("scoping", 1, 1, 0, 0, 0, 0, None, None, None, 10 * DAY),
            srow("proposal", 0, 0, 1, 0, 0, 0, 1.0, 600, 600, 14 * DAY),
            srow("negotiation", 0, 1, 1, 0, 0, 0, 1.0, 600, 600, 10 * DAY),
            srow("closing", 0, 1, 0, 0, 0, 1, 1.0, 400, 400, 1 * DAY)],
            "bottleneck": None})
        carla = self.s.stages("carla")
        self.assertEqual([r["entered"] + r["open_count"] for r in
                          carla["stages"]], [0] * 5)
        self.assertIsNone(carla["bottleneck"])

    def test_sources(self):
        self.assertEqual(self.s.sources(), {"sources": [
            {"source": "event", "leads": 1, "mql": 1, "sal": 0, "sql": 0,
             "disqualified": 1, "won": 0},
            {"source": "none", "leads": 1, "mql": 0, "sal": 0, "sql": 0,
             "disqualified": 1, "won": 0},
            {"source": "referral", "leads": 1, "mql": 1, "sal": 1, "sql": 1,
             "disqualified": 0, "won": 1}]})


def walk(s, n, first, second, t1, t2, lose_first=0, lose_second=0):
    """n deals (with an amount): qualification for t1 s, then scoping for
    t2 s; the first lose_first of them are lost from qualification, the
    next lose_second from scoping."""
    for i in range(n):
        d = "W%d" % i
        s.apply(ev("deal.created", 0, deal_id=d, owner="ana", amount=10))
        if i < lose_first:
            s.apply(stage_req(d, t1, "lost", reason="x"))
            continue
        s.apply(stage_req(d, t1, first))
        if i < lose_first + lose_second:
            s.apply(stage_req(d, t1 + t2, "lost", reason="x"))
        else:
            s.apply(stage_req(d, t1 + t2, second))


class Bottleneck(unittest.TestCase):
    def stages(self, **kw):
        s = model.Stream.empty(rules_file=model.DEFAULT_RULES)
        walk(s, **kw)
        return s.stages()

    def test_highest_p50_over_stale_after(self):
        # qualification 1 d / 7 d = 0.14; scoping 2 d / 10 d = 0.2
        r = self.stages(n=10, first="scoping", second="proposal",
                        t1=DAY, t2=2 * DAY)
        self.assertEqual(r["bottleneck"], "scoping")
        self.assertEqual([x["p50_seconds"] for x in r["stages"][:2]],
                         [DAY, 2 * DAY])

    def test_fewer_than_ten_moves_out_do_not_count(self):
        r = self.stages(n=9, first="scoping", second="proposal",
                        t1=DAY, t2=2 * DAY)
        self.assertIsNone(r["bottleneck"])

    def test_tie_goes_to_the_lower_conversion(self):
        # both 0.2: qualification 1.4 d / 7 d, scoping 2 d / 10 d
        r = self.stages(n=10, first="scoping", second="proposal",
                        t1=120960, t2=2 * DAY, lose_second=1)
        self.assertEqual([x["conversion"] for x in r["stages"][:2]],
                         [1.0, 0.9])
        self.assertEqual(r["bottleneck"], "scoping")
        r = self.stages(n=11, first="scoping", second="proposal",
                        t1=120960, t2=2 * DAY, lose_first=1)
        self.assertEqual(r["stages"][0]["conversion"], 10 / 11)
        self.assertEqual(r["bottleneck"], "qualification")


class Percentile(unittest.TestCase):
    def test_nearest_rank(self):
        self.assertIsNone(model.percentile([], 0.5))
        self.assertEqual(model.percentile([7], 0.9), 7)
        self.assertEqual(model.percentile([3, 1, 2, 4], 0.5), 2)
        self.assertEqual(model.percentile(list(range(1, 11)), 0.9), 9)
        self.assertEqual(model.percentile(list(range(1, 12)), 0.9), 10)
        self.assertEqual(model.percentile(list(range(1, 101)), 0.5), 50)


class Rules(unittest.TestCase):
    def test_rules_files(self):
        for path, stale in ((model.DEFAULT_RULES, [7 * DAY, 10 * DAY,
                                                   14 * DAY, 10 * DAY, DAY]),
                            (model.SECONDS_RULES, [7, 10, 14, 10, 5])):
            r = model.Rules(path)
            self.assertEqual(r.stages, model.STAGES)
            self.assertEqual(r.open, model.STAGES[:5])
            self.assertEqual(r.terminal, {"won"})
            self.assertEqual(r.closed, {"won", "lost"})
            self.assertEqual([r.prob[x] for x in r.stages],
                             [D("0.10"), D("0.20"), D("0.40"), D("0.60"),
                              D("0.80"), D("1.0"), D("0.0")])
            self.assertEqual([r.stale_s[x] for x in r.open], stale)
        self.assertEqual(model.parse_duration_s("1h30m"), 5400)
        self.assertEqual(model.STALE_S, {
            k: v for k, v in model.Rules(model.SECONDS_RULES).stale_s.items()
            if v is not None})


class GeneratedStream(unittest.TestCase):
    """The reports of a generated stream agree with each other: per-owner
    figures add up to the totals, stage and forecast counts match."""

    @classmethod
    def setUpClass(cls):
        cls.s = model.Stream(
            5, 120, 60, 90 * DAY, T0, "u", currencies=("USD", "EUR", "GBP"),
            owners=model.MORE_OWNERS, close_years=(2030, 2031),
            p_no_owner=0.1, p_no_source=0.1, source_updates=0.2,
            step_scale=6 * 3600, followups=True, varied_conversions=True,
            rules_file=model.DEFAULT_RULES)

    def test_owners_add_up(self):
        s = self.s
        owners = s.owner_names() + ["none"]
        total = s.stages()["stages"]
        for i, row in enumerate(total):
            for f in ("open_count", "entered", "advanced", "moved_back",
                      "lost", "won"):
                self.assertEqual(
                    row[f], sum(s.stages(o)["stages"][i][f] for o in owners),
                    (row["stage"], f))
        fc = {(x["month"], x["currency"]): x for x in
              s.forecast()["months"]}
        sums = {}
        for o in owners:
            for x in s.forecast(o)["months"]:
                y = sums.setdefault((x["month"], x["currency"]), {})
                for f, v in x.items():
                    if f not in ("month", "currency"):
                        y[f] = y.get(f, 0) + v
        self.assertEqual(set(sums), set(fc))
        for k, y in sums.items():
            for f, v in y.items():
                self.assertEqual(v, fc[k][f], (k, f))

    def test_counts_agree(self):
        s = self.s
        st = s.stages()["stages"]
        fc = s.forecast()["months"]
        self.assertEqual(sum(x["open_count"] for x in st),
                         sum(x["open_count"] for x in fc))
        self.assertEqual(st[-1]["won"], sum(x["won_count"] for x in fc))
        self.assertEqual(sum(x["won"] for x in s.sources()["sources"]),
                         len({m["lead_id"] for m in s.moves
                              if m["to"] == "won" and m["lead_id"]}))
        self.assertEqual(sum(x["leads"] for x in s.sources()["sources"]),
                         len(s.leads))
        # every deal entered its stages as often as it left them (or is
        # still there)
        for x in st:
            out = x["advanced"] + x["moved_back"] + x["lost"] + x["won"]
            self.assertEqual(x["entered"], out + x["open_count"], x["stage"])

    def test_the_stream_has_what_the_reports_need(self):
        s = self.s
        fc = s.forecast()["months"]
        self.assertGreaterEqual(len({x["currency"] for x in fc}), 3)
        self.assertGreaterEqual(len({x["month"] for x in fc}), 12)
        self.assertGreaterEqual(len({x["month"] for x in fc
                                     if x["won_count"]}), 2)
        kinds = {(m["from"], m["to"]) for m in s.moves}
        for k in (("closing", "won"), ("lost", "qualification"),
                  ("negotiation", "proposal"), ("closing", "negotiation"),
                  ("scoping", "lost")):
            self.assertIn(k, kinds)
        self.assertTrue(s.followups)


if __name__ == "__main__":
    unittest.main(verbosity=2)
