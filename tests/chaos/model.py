"""A seeded stream of lead and deal events, and what the workers must make of
it, computed here from the contract's default rules (../shared/CONTRACT.md,
with the seconds-scale thresholds of deploy/rules/seconds.yaml): for every
input event the derived event it must cause (type and the fields that tell
the outcome), the final state of every lead and deal, each deal's stage
history, and the timers (stale, overdue, contract_not_sent) the deals can
have, so every alert can be checked against them.

The model is the contract, not the implementation: nothing here is read back
from the workers.
"""
import calendar
import json
import random
import time
from decimal import Decimal

STAGES = ["qualification", "scoping", "proposal", "negotiation", "closing",
          "won", "lost"]
OPEN = {"qualification", "scoping", "proposal", "negotiation", "closing"}
STALE_S = {"qualification": 7, "scoping": 10, "proposal": 14,
           "negotiation": 10, "closing": 5}          # seconds.yaml
REQUIRES = {"proposal": ["amount"], "negotiation": ["amount", "ecd"],
            "closing": ["amount", "ecd"], "won": ["contract_signed"],
            "lost": ["reason"]}
TRANSITIONS = {"qualification": ["scoping", "lost"],
               "scoping": ["proposal", "lost"],
               "proposal": ["negotiation", "lost"],
               "negotiation": ["closing", "proposal", "lost"],
               "closing": ["won", "negotiation", "lost"],
               "lost": ["qualification"], "won": []}
CONTRACT_NOT_SENT_MS = 6000                           # seconds.yaml
ACTIVITIES = ["call", "email", "meeting", "demo", "proposal_sent",
              "contract_sent", "contract_signed", "note"]
DAY_MS = 86400000

INDUSTRIES = ["financial_services", "banking", "software", "retail",
              "healthcare", "manufacturing"]
TECHS = ["hubspot", "google_ads", "salesforce", "shopify", "wordpress"]
HIRING = ["marketing", "sales", "engineering", "finance"]
TITLES = ["HR Manager", "Senior hr manager", "CTO", "Head of Marketing",
          "Office Manager", "CEO"]
SOURCES = ["social_media", "content_marketing", "email_marketing",
           "cold_call", "cold_email", "event", "referral", "other"]
OWNERS = ["ana", "ben", "carla", "dev", "eve"]


def rfc3339(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + \
        ".%03dZ" % (ms % 1000)


def parse_ms(text):
    """RFC 3339 UTC ('...Z', optional fraction) -> epoch ms."""
    base, _, frac = text.rstrip("Z").partition(".")
    t = calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
    return t * 1000 + int((frac + "000")[:3] or 0)


def date_ms(d):
    return calendar.timegm(time.strptime(d, "%Y-%m-%d")) * 1000


def lead_score(p):
    s = 0
    if p.get("industry") in ("financial_services", "banking"):
        s += 25
    if p.get("employees") is not None and p["employees"] >= 10:
        s += 15
    if (p.get("monthly_ad_spend") or 0) > 0 or \
            "google_ads" in (p.get("technologies") or []):
        s += 15
    if "hubspot" in (p.get("technologies") or []):
        s += 15
    if "marketing" in (p.get("hiring_for") or []):
        s += 10
    if "hr manager" in (p.get("contact_title") or "").lower():
        s += 10
    if p.get("months_in_role") is not None and p["months_in_role"] < 12:
        s += 10
    return s


def lead_disqualified(p):
    return p.get("employees") is not None and p["employees"] < 10


class Stream:
    """Build with Stream(seed, deals, leads, duration_s, t0_ms).  Then:

    items      [(planned offset s, kind, payload)] in production order;
               kind "json" (payload: an event dict) or "raw" (payload:
               (key, bytes)), for the invalid messages
    expect     {input event_id: (derived type, {field: value})}
    deals      {deal_id: final state dict} (existing deals only)
    histories  {deal_id: [(from, to, caused_by)]}
    leads      {lead_id: final state dict}
    conversions {lead_id: (deal_id, state)} deals the lead worker creates
    timers     {deal_id: set((timer, due_ms))} every timer a deal ever had
    invalid    [bytes] values that must reach the dead-letter topic
    """

    def __init__(self, seed, n_deals, n_leads, duration_s, t0_ms, tag):
        self.r = random.Random(seed)
        self.tag = tag
        self.t0 = t0_ms
        self.duration = duration_s
        self.seq = 0
        self.items = []
        self.expect = {}
        self.deals = {}
        self.histories = {}
        self.leads = {}
        self.conversions = {}
        self.timers = {}
        self.invalid = []
        self.counts = {"events": 0, "producer_duplicates": 0, "invalid": 0}
        for i in range(n_deals):
            self._deal("C-%s-%d" % (tag, i))
        for i in range(n_leads):
            self._lead("CL-%s-%d" % (tag, i))
        for i in range(max(3, n_deals // 50)):
            self._ghosts(i)
        for i in range(max(4, n_deals // 40)):
            self._invalid(i)
        self.items.sort(key=lambda x: (x[0], x[3]))
        self.items = [(t, kind, payload) for t, kind, payload, _ in self.items]

    # ---------------------------------------------------------- helpers
    def _eid(self, entity):
        self.seq += 1
        return "ev-%s-%d-%s" % (entity, self.seq, "%06x" % self.r.getrandbits(24))

    def _emit(self, t, event, dup_ok=True):
        self.seq += 1
        self.items.append((t, "json", event, self.seq))
        self.counts["events"] += 1
        if dup_ok and self.r.random() < 0.04:   # a producer's duplicate
            self.seq += 1
            self.items.append((t + self.r.uniform(0.05, 20), "json",
                               dict(event), self.seq))
            self.counts["producer_duplicates"] += 1

    def _start_time(self):
        return self.r.uniform(0, self.duration * 0.6)

    def _over(self, t):
        return t > self.duration

    def _next_time(self, t):
        # mostly quick steps, some idle gaps long enough for stale alerts
        if self.r.random() < 0.15:
            return t + self.r.uniform(8, 25)
        return t + self.r.uniform(0.3, 5)

    def _ms(self, t):
        return self.t0 + int(t * 1000)

    # ---------------------------------------------------------- deals
    def _deal_timers(self, d):
        out = set()
        if d["stage"] not in OPEN:
            return out
        out.add(("stale", d["last_event_at"] + STALE_S[d["stage"]] * 1000))
        if d["expected_close_date"]:
            close = date_ms(d["expected_close_date"])
            out.add(("overdue", close + DAY_MS))
            out.add(("closing_soon@1d", close - DAY_MS))
            out.add(("closing_soon@7d", close - 7 * DAY_MS))
        if d["stage"] == "closing" and "contract_sent" not in d["activities"]:
            out.add(("contract_not_sent",
                     d["stage_entered_at"] + CONTRACT_NOT_SENT_MS))
        return out

    def _touch(self, deal_id, d, at):
        d["last_event_at"] = max(d["last_event_at"], at)
        self.timers.setdefault(deal_id, set()).update(self._deal_timers(d))

    def _missing(self, d, stage, reason):
        for need in REQUIRES.get(stage, []):
            if need == "amount" and not (d["amount"] and d["amount"] > 0):
                return "amount"
            if need == "ecd" and not d["expected_close_date"]:
                return "expected_close_date"
            if need == "reason" and not reason:
                return "reason"
            if need == "contract_signed" and \
                    "contract_signed" not in d["activities"]:
                return "contract_signed"
        return None

    def _close_date(self):
        if self.r.random() < 0.2:   # already past: an overdue alert is due
            return "2026-%02d-%02d" % (self.r.randint(1, 9),
                                       self.r.randint(1, 28))
        return "2031-%02d-%02d" % (self.r.randint(1, 12),
                                   self.r.randint(1, 28))

    def _deal(self, deal_id):
        r = self.r
        t = self._start_time()
        d = None        # model state, None while the deal does not exist
        n_steps = r.randint(4, 14)
        first = True
        while n_steps > 0 and not (d is not None and self._over(t)):
            n_steps -= 1
            at = self._ms(t)
            e = {"event_id": self._eid(deal_id), "occurred_at": rfc3339(at),
                 "deal_id": deal_id}
            if first or d is None:
                first = False
                e["type"] = "deal.created"
                e["name"] = "Deal %s" % deal_id
                e["owner"] = r.choice(OWNERS)
                if r.random() < 0.8:
                    e["amount"] = round(r.uniform(100, 90000), 2)
                    if r.random() < 0.3:
                        e["currency"] = "EUR"
                if r.random() < 0.6:
                    e["expected_close_date"] = self._close_date()
                if r.random() < 0.1:
                    e["stage"] = r.choice(["scoping", "proposal"])
                new = {"stage": e.get("stage", "qualification"),
                       "amount": Decimal(str(e["amount"]))
                       if "amount" in e else None,
                       "currency": e.get("currency", "USD" if "amount" in e
                                         else None),
                       "expected_close_date": e.get("expected_close_date"),
                       "owner": e["owner"], "name": e["name"],
                       "activities": set(), "last_event_at": at,
                       "stage_entered_at": at, "lead_id": None}
                miss = self._missing(new, new["stage"], None)
                if miss:
                    self.expect[e["event_id"]] = (
                        "deal.transition_rejected",
                        {"reason_code": "missing_field",
                         "to_stage": new["stage"]})
                else:
                    d = new
                    self.deals[deal_id] = d
                    self.histories[deal_id] = [("", d["stage"],
                                                e["event_id"])]
                    self.expect[e["event_id"]] = (
                        "deal.stage_changed",
                        {"from_stage": "", "to_stage": d["stage"]})
                    self._touch(deal_id, d, at)
                self._emit(t, e)
                t = self._next_time(t)
                continue

            roll = r.random()
            if roll < 0.45:
                # mostly the next stage forward, sometimes anything
                nexts = TRANSITIONS[d["stage"]]
                if nexts and r.random() < 0.75:
                    fwd = [s for s in nexts if s != "lost"]
                    to = fwd[0] if fwd and r.random() < 0.85 else r.choice(nexts)
                else:
                    to = r.choice(STAGES + ["archived"])
                e.update(type="deal.stage_requested", to_stage=to)
                if to == "lost" and r.random() < 0.8:
                    e["reason"] = r.choice(["budget", "timing", "competitor"])
                if r.random() < 0.5:
                    e["requested_by"] = r.choice(OWNERS)
                self._stage_request(deal_id, d, e, at)
                if to == "won" and d["stage"] == "won":
                    n_steps = min(n_steps, 1)
            elif roll < 0.65:
                e.update(type="deal.activity",
                         activity=r.choice(ACTIVITIES))
                if d["stage"] in ("negotiation", "closing") and \
                        r.random() < 0.5:
                    e["activity"] = r.choice(["contract_sent",
                                              "contract_signed"])
                d["activities"].add(e["activity"])
                self._touch(deal_id, d, at)
            elif roll < 0.92:
                e["type"] = "deal.updated"
                if r.random() < 0.7:
                    e["amount"] = round(r.uniform(100, 90000), 2)
                    d["amount"] = Decimal(str(e["amount"]))
                    # an amount without a currency is USD
                    e["currency"] = r.choice(["USD", "EUR", None])
                    if e["currency"] is None:
                        del e["currency"]
                    d["currency"] = e.get("currency", "USD")
                if r.random() < 0.4:
                    e["expected_close_date"] = self._close_date()
                    d["expected_close_date"] = e["expected_close_date"]
                if r.random() < 0.3 or len(e) == 4:
                    e["owner"] = r.choice(OWNERS)
                    d["owner"] = e["owner"]
                self._touch(deal_id, d, at)
            else:
                # a create for a deal that exists
                e.update(type="deal.created", name="again",
                         owner=r.choice(OWNERS))
                self.expect[e["event_id"]] = (
                    "deal.transition_rejected",
                    {"reason_code": "duplicate_deal"})
                self._touch(deal_id, d, at)
            self._emit(t, e)
            t = self._next_time(t)

    def _stage_request(self, deal_id, d, e, at):
        to, cur = e["to_stage"], d["stage"]
        if to not in STAGES:
            code = "unknown_stage"
        elif to == cur:
            code = "already_in_stage"
        elif not TRANSITIONS[cur]:
            code = "terminal"
        elif to not in TRANSITIONS[cur]:
            code = "not_allowed"
        else:
            code = self._missing(d, to, e.get("reason")) and "missing_field"
        if code:
            self.expect[e["event_id"]] = (
                "deal.transition_rejected",
                {"reason_code": code, "from_stage": cur, "to_stage": to})
        else:
            self.expect[e["event_id"]] = (
                "deal.stage_changed", {"from_stage": cur, "to_stage": to})
            self.histories[deal_id].append((cur, to, e["event_id"]))
            d["stage"] = to
            d["stage_entered_at"] = max(at, d["last_event_at"])
        self._touch(deal_id, d, at)

    def _ghosts(self, i):
        """Events for a deal and a lead nobody created."""
        t = self._start_time()
        deal_id = "C-%s-ghost-%d" % (self.tag, i)
        for e in ({"type": "deal.stage_requested", "to_stage": "scoping"},
                  {"type": "deal.activity", "activity": "call"},
                  {"type": "deal.updated", "amount": 5}):
            e.update(event_id=self._eid(deal_id), deal_id=deal_id,
                     occurred_at=rfc3339(self._ms(t)))
            self.expect[e["event_id"]] = ("deal.transition_rejected",
                                          {"reason_code": "unknown_deal"})
            self._emit(t, e)
            t += 1
        lead_id = "CL-%s-ghost-%d" % (self.tag, i)
        for e in ({"type": "lead.accepted", "owner": "ana"},
                  {"type": "lead.updated", "employees": 50}):
            e.update(event_id=self._eid(lead_id), lead_id=lead_id,
                     occurred_at=rfc3339(self._ms(t)))
            self.expect[e["event_id"]] = ("lead.transition_rejected",
                                          {"reason_code": "unknown_lead"})
            self._emit(t, e)
            t += 1

    def _invalid(self, i):
        t = self._start_time()
        key = "junk-%s-%d" % (self.tag, i)
        deal_id = "C-%s-bad-%d" % (self.tag, i)
        kinds = [
            b"this is not an event %d" % i,
            json.dumps({"type": "deal.created", "deal_id": deal_id}).encode(),
            json.dumps({"type": "deal.activity", "event_id": "bad-%s-%d-a"
                        % (self.tag, i), "occurred_at": rfc3339(self._ms(t)),
                        "deal_id": deal_id, "activity": "dance"}).encode(),
            json.dumps({"type": "deal.created", "event_id": "bad-%s-%d-c"
                        % (self.tag, i), "occurred_at": rfc3339(self._ms(t)),
                        "deal_id": deal_id, "colour": "red"}).encode(),
        ]
        v = kinds[i % len(kinds)]
        self.seq += 1
        self.items.append((t, "raw", (key, v), self.seq))
        self.invalid.append(v)
        self.counts["invalid"] += 1

    # ---------------------------------------------------------- leads
    def _profile(self):
        r = self.r
        p = {}
        if r.random() < 0.9:
            p["industry"] = r.choice(INDUSTRIES)
        if r.random() < 0.85:
            p["employees"] = r.choice([3, 8, 12, 40, 250, 1200, 5000])
        if r.random() < 0.5:
            p["monthly_ad_spend"] = r.choice([0, 500, 2500])
        if r.random() < 0.7:
            p["technologies"] = r.sample(TECHS, r.randint(0, 3))
        if r.random() < 0.5:
            p["hiring_for"] = r.sample(HIRING, r.randint(0, 2))
        if r.random() < 0.6:
            p["contact_title"] = r.choice(TITLES)
        if r.random() < 0.6:
            p["months_in_role"] = r.randint(0, 40)
        return p

    def _lead(self, lead_id):
        r = self.r
        t = self._start_time()
        L = None
        for step in range(r.randint(2, 7)):
            if L is not None and self._over(t):
                break
            at = self._ms(t)
            e = {"event_id": self._eid(lead_id), "occurred_at": rfc3339(at),
                 "lead_id": lead_id}
            status = L["status"] if L else None
            if L is None or (step > 0 and r.random() < 0.05):
                p = self._profile()
                e.update(type="lead.created",
                         email="%s@example.com" % lead_id.lower(),
                         company="Co %s" % lead_id,
                         source=r.choice(SOURCES), **p)
                if L is not None:
                    self.expect[e["event_id"]] = (
                        "lead.transition_rejected",
                        {"reason_code": "not_allowed"})
                else:
                    L = {"profile": p, "score": lead_score(p),
                         "score_known": True, "deal_id": None,
                         "owner": None, "company": e["company"]}
                    L["status"] = "disqualified" if lead_disqualified(p) \
                        else ("mql" if L["score"] >= 50 else "nurture")
                    self.leads[lead_id] = L
                    self.expect[e["event_id"]] = (
                        "lead.status_changed", {"to_status": L["status"]})
                self._emit(t, e)
                t = self._next_time(t)
                continue
            want = r.random()
            if status == "mql" and want < 0.6:
                kind = "lead.accepted"
            elif status == "sal" and want < 0.6:
                kind = "lead.converted"
            else:
                kind = r.choice(["lead.updated", "lead.updated",
                                 "lead.accepted", "lead.rejected",
                                 "lead.converted"])
            e["type"] = kind
            if kind == "lead.updated":
                upd = {k: v for k, v in self._profile().items()
                       if r.random() < 0.5}
                if not upd:
                    upd = {"employees": r.choice([12, 40, 250])}
                e.update(upd)
                L["profile"].update(upd)
                score = lead_score(L["profile"])
                if status in ("new", "nurture", "mql"):
                    new = "disqualified" if lead_disqualified(L["profile"]) \
                        else ("mql" if score >= 50 else "nurture")
                elif status == "sal":
                    new = "disqualified" if lead_disqualified(L["profile"]) \
                        else "sal"
                else:
                    new = status
                    L["score_known"] = False   # contract silent on terminal
                L["score"] = score
                if new != status:
                    self.expect[e["event_id"]] = (
                        "lead.status_changed", {"to_status": new})
                    L["status"] = new
            elif kind == "lead.accepted":
                e["owner"] = r.choice(OWNERS)
                code = {"mql": None, "sal": "already_in_stage",
                        "new": "not_allowed", "nurture": "not_allowed",
                        "sql": "terminal",
                        "disqualified": "terminal"}[status]
                self._lead_move(L, e, code, "sal")
                if not code:
                    L["owner"] = e["owner"]
            elif kind == "lead.rejected":
                e["reason"] = r.choice(["no budget", "spam", "student"])
                code = {"sql": "terminal",
                        "disqualified": "already_in_stage"}.get(status)
                self._lead_move(L, e, code, "disqualified")
            else:
                if r.random() < 0.5:
                    e["amount"] = round(r.uniform(1000, 50000), 2)
                if r.random() < 0.5:
                    e["expected_close_date"] = "2031-06-30"
                if r.random() < 0.3:
                    e["deal_id"] = "D-%s-custom" % lead_id
                code = {"sal": None, "sql": "already_in_stage",
                        "disqualified": "terminal"}.get(status,
                                                        "not_allowed")
                self._lead_move(L, e, code, "sql")
                if not code:
                    deal_id = e.get("deal_id") or "D-" + lead_id
                    L["deal_id"] = deal_id
                    self.conversions[lead_id] = (deal_id, {
                        "stage": "qualification", "lead_id": lead_id,
                        "amount": Decimal(str(e["amount"]))
                        if "amount" in e else None,
                        "expected_close_date": e.get("expected_close_date"),
                        "converted_at": at})
            self._emit(t, e)
            t = self._next_time(t)

    def _lead_move(self, L, e, code, to):
        if code:
            self.expect[e["event_id"]] = ("lead.transition_rejected",
                                          {"reason_code": code})
        else:
            self.expect[e["event_id"]] = ("lead.status_changed",
                                          {"to_status": to})
            L["status"] = to

    # ---------------------------------------------------------- alerts
    def final_alerts(self, now_ms):
        """{(deal_id, timer, due_ms)} that must have fired once the run is
        over: the timers of each open deal's final state that are due."""
        out = set()
        for deal_id, d in self.deals.items():
            for timer, due in self._deal_timers(d):
                if timer.startswith("closing_soon"):
                    continue   # superseded by overdue (past) or not due
                if due <= now_ms:
                    out.add((deal_id, timer, due))
        for lead_id, (deal_id, c) in self.conversions.items():
            out.add((deal_id, "stale", c["converted_at"] +
                     STALE_S["qualification"] * 1000))
        return out

    def last_due_ms(self, horizon_ms):
        """The latest due time of the final timers due before horizon_ms
        (close dates years ahead are not waited for)."""
        return max([due for _, _, due in self.final_alerts(horizon_ms)] +
                   [0])
