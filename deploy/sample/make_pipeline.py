#!/usr/bin/env python3
"""Writes deploy/sample/pipeline-leads.jsonl and pipeline-deals.jsonl: a
seeded quarter of a sales team (autumn 2026), for the analytics part of
deploy/demo.sh.  80 leads from every source, about a third converted into
deals; 60 more deals created directly; deals walk the stages over days
(proposal is the slow one), some are lost, reopened, moved back or won.
Every event follows the default rules (deploy/rules/default.yaml), so all
of it is applied.  Run it again to regenerate (same seed, same files):

    python3 deploy/sample/make_pipeline.py
"""
import json
import os
import random
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 2026
DAY = 86400
T0 = 1788220800  # 2026-09-01T00:00:00Z
OWNERS = ["ana", "ben", "carla", "dev"]
CURRENCIES = ["USD", "USD", "EUR", "GBP"]
SOURCES = ["social_media", "content_marketing", "email_marketing",
           "cold_call", "cold_email", "event", "referral", "other"]
# days a deal typically spends in each stage (min, max)
DWELL = {"qualification": (1, 8), "scoping": (2, 10), "proposal": (4, 26),
         "negotiation": (2, 10), "closing": (1, 4)}
ORDER = ["qualification", "scoping", "proposal", "negotiation", "closing"]

rng = random.Random(SEED)
seq = [0]


def ts(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def day(t):
    return time.strftime("%Y-%m-%d", time.gmtime(t))


def ev(type_, t, **f):
    seq[0] += 1
    e = {"type": type_, "event_id": "sample-%05d" % seq[0],
         "occurred_at": ts(t)}
    e.update(f)
    return e


def walk(deal_id, t, out, first):
    """The stage requests of one deal from its creation at t."""
    stage = first
    i = ORDER.index(stage)
    reopened = False
    while True:
        lo, hi = DWELL[stage]
        t += int(rng.uniform(lo, hi) * DAY)
        r = rng.random()
        if r < 0.12:
            out.append(ev("deal.stage_requested", t, deal_id=deal_id,
                          to_stage="lost", reason="no budget"))
            if not reopened and rng.random() < 0.3:
                reopened = True
                t += int(rng.uniform(3, 10) * DAY)
                out.append(ev("deal.stage_requested", t, deal_id=deal_id,
                              to_stage="qualification"))
                stage, i = "qualification", 0
                continue
            return
        if r < 0.22:
            return  # still open in this stage
        if stage in ("negotiation", "closing") and rng.random() < 0.15:
            i -= 1  # back one stage
        elif stage == "closing":
            out.append(ev("deal.activity", t - 3600, deal_id=deal_id,
                          activity="contract_signed"))
            out.append(ev("deal.stage_requested", t, deal_id=deal_id,
                          to_stage="won"))
            return
        else:
            i += 1
        stage = ORDER[i]
        if stage == "closing" and rng.random() < 0.5:
            out.append(ev("deal.activity", t + 1800, deal_id=deal_id,
                          activity="contract_sent"))
        out.append(ev("deal.stage_requested", t, deal_id=deal_id,
                      to_stage=stage))
        if rng.random() < 0.1:  # the amount changes on the way
            out.append(ev("deal.updated", t + 7200, deal_id=deal_id,
                          amount=rng.randrange(20, 400) * 250))


def main():
    leads, deals = [], []
    for n in range(80):
        lead_id = "L-%03d" % (n + 1)
        t = T0 + rng.randrange(0, 45 * DAY)
        good = rng.random() < 0.6
        leads.append(ev(
            "lead.created", t, lead_id=lead_id,
            company="Company %d" % (n + 1),
            source=SOURCES[n % len(SOURCES)],
            industry="banking" if good else "retail",
            employees=rng.choice([5, 40, 250]) if not good else 120,
            monthly_ad_spend=rng.choice([0, 1500]),
            technologies=["hubspot"] if good else [],
            hiring_for=["marketing"] if rng.random() < 0.5 else []))
        if good and rng.random() < 0.75:
            t += int(rng.uniform(1, 5) * DAY)
            leads.append(ev("lead.accepted", t, lead_id=lead_id,
                            owner=rng.choice(OWNERS)))
            if rng.random() < 0.6:
                t += int(rng.uniform(1, 6) * DAY)
                leads.append(ev(
                    "lead.converted", t, lead_id=lead_id,
                    name="Company %d deal" % (n + 1),
                    amount=rng.randrange(20, 400) * 250,
                    currency=rng.choice(CURRENCIES),
                    expected_close_date=day(t + rng.randrange(40, 140) * DAY)))
                # the lead worker creates D-<lead id> in qualification
                walk("D-" + lead_id, t + 600, deals, "qualification")
            elif rng.random() < 0.3:
                t += int(rng.uniform(1, 6) * DAY)
                leads.append(ev("lead.rejected", t, lead_id=lead_id,
                                reason="not a fit"))
    for n in range(60):
        deal_id = "D-%03d" % (n + 1)
        t = T0 + rng.randrange(0, 60 * DAY)
        deals.append(ev(
            "deal.created", t, deal_id=deal_id,
            name="Direct deal %d" % (n + 1), owner=rng.choice(OWNERS),
            amount=rng.randrange(20, 400) * 250,
            currency=rng.choice(CURRENCIES),
            expected_close_date=day(t + rng.randrange(30, 150) * DAY)))
        walk(deal_id, t, deals, "qualification")
    # per-deal order is what matters; keep each file in time order
    leads.sort(key=lambda e: e["occurred_at"])
    deals.sort(key=lambda e: e["occurred_at"])
    for name, evs in (("pipeline-leads.jsonl", leads),
                      ("pipeline-deals.jsonl", deals)):
        with open(os.path.join(HERE, name), "w") as f:
            f.write("# Generated by deploy/sample/make_pipeline.py (seed %d):"
                    " the analytics sample of deploy/demo.sh.\n" % SEED)
            for e in evs:
                f.write(json.dumps(e) + "\n")
        print("%s: %d events" % (name, len(evs)))


if __name__ == "__main__":
    main()
