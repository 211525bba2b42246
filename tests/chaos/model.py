"""A seeded stream of lead and deal events, and what the workers must make of
it, computed here from the contract's default rules (../shared/CONTRACT.md,
with the seconds-scale thresholds of deploy/rules/seconds.yaml): for every
input event the derived event it must cause (type and the fields that tell
the outcome), the final state of every lead and deal, each deal's stage
history, and the timers (stale, overdue, contract_not_sent) the deals can
have, so every alert can be checked against them.

The model is the contract, not the implementation: nothing here is read back
from the workers.

It also computes the pipeline analytics the stream must leave behind
(CONTRACT.md, "Pipeline analytics"): Stream.reports() returns the three
reports of `pipelinectl report forecast|stages|sources --json`, for all
owners or one, from the stage moves and final states recorded here.  The
options of Stream (more currencies, owners and close months, leads with no
source or a changed one, follow-up events that walk converted deals on)
default to what the chaos test has always used: its stream is unchanged.
"""
import calendar
import hashlib
import json
import math
import os
import random
import re
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
MORE_OWNERS = OWNERS + ["fay", "gus", "hana", "ivo", "jon", "kim", "lou",
                        "mo", "nia", "ola"]
# the currency of a deal that never had an amount (nor a currency): the
# contract's default currency
NO_CURRENCY = "USD"

SOURCE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
SECONDS_RULES = os.path.join(SOURCE_DIR, "deploy", "rules", "seconds.yaml")
DEFAULT_RULES = os.path.join(SOURCE_DIR, "deploy", "rules", "default.yaml")


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


def derived_id(type_, cause):
    """CONTRACT: a derived event's id, `<type>:` and the first 32 hex
    digits of SHA-256 over `<type>\n<caused_by>`."""
    return "%s:%s" % (type_, hashlib.sha256(
        ("%s\n%s" % (type_, cause)).encode()).hexdigest()[:32])


def month_of_ms(ms):
    return time.strftime("%Y-%m", time.gmtime(ms // 1000))


def parse_duration_s(text):
    """A rules-file duration (90s, 15m, 1h30m, 7d) -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip()
    parts = re.findall(r"(\d+)([smhd])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError("bad duration %r" % text)
    return sum(int(n) * units[u] for n, u in parts)


class Rules:
    """The deal stages of a rules file (deploy/rules/*.yaml): the order,
    probability, stale threshold and kind of each stage.  A small reader
    for the subset those files use (no YAML library needed):

    stages      [name] in rule order
    prob        {name: Decimal}
    stale_s     {name: seconds or None}
    open        [name] the open stages, in rule order
    terminal    set of stages with no way out (won)
    closed      set of closed stages (won, lost)
    """

    def __init__(self, path=None):
        self.path = path or SECONDS_RULES
        self.stages, self.prob, self.stale_s = [], {}, {}
        closed, froms = set(), set()
        section = sub = None
        cur = None
        with open(self.path) as f:
            lines = f.read().splitlines()
        for raw in lines:
            line = raw.split("#", 1)[0].rstrip()
            if not line.strip():
                continue
            indent = len(line) - len(line.lstrip())
            text = line.strip()
            if indent == 0:
                section, sub = text.rstrip(":"), None
                continue
            if section != "deal":
                continue
            if indent == 2:
                sub = text.rstrip(":")
                continue
            if sub == "stages":
                m = re.match(r"(- )?(\w+):\s*(.*)$", text)
                if not m:
                    continue
                key, value = m.group(2), m.group(3).strip()
                if m.group(1) and key == "name":
                    cur = value
                    self.stages.append(cur)
                    self.stale_s[cur] = None
                elif key == "probability":
                    self.prob[cur] = Decimal(value)
                elif key == "stale_after":
                    self.stale_s[cur] = parse_duration_s(value)
                elif key == "closed" and value == "true":
                    closed.add(cur)
            elif sub == "transitions":
                m = re.search(r"from:\s*(\w+)", text)
                if m:
                    froms.add(m.group(1))
        self.terminal = {s for s in self.stages if s not in froms}
        self.closed = closed | self.terminal
        self.open = [s for s in self.stages if s not in self.closed]


def percentile(values, p):
    """Nearest rank: the smallest value with at least p of the values at
    or below it; None for no values."""
    if not values:
        return None
    v = sorted(values)
    k = max(1, int(math.ceil(p * len(v))))
    return v[k - 1]


PROFILE_FIELDS = ("industry", "employees", "monthly_ad_spend", "technologies",
                  "hiring_for", "contact_title", "months_in_role")


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
               (with follow-ups: their state after the follow-ups)
    timers     {deal_id: set((timer, due_ms))} every timer a deal ever had
    invalid    [bytes] values that must reach the dead-letter topic
    moves      [dict] every stage change (deal_id, from, to, owner, seconds,
               at, amount, currency, lead_id), for the analytics
    followups  [(planned offset s, "json", event)] with followups=True: a
               second phase, to produce once the conversions are applied
               (their deal.created comes from the lead worker): events that
               walk some converted deals on, to won or lost

    Options (the defaults are the chaos test's stream, unchanged):
    currencies   the currencies of amounts; the first is the one of an
                 amount given without a currency
    owners       the deal owners to choose from
    close_years  years of the (future) expected close dates; None: 2031
    p_no_owner   the share of deals created without an owner
    p_no_source  the share of leads created without a source
    source_updates  the share of lead.updated that change the source
    step_scale   stream seconds per step unit (1: steps of 0.3-25 s)
    followups    generate the follow-up phase for converted deals
    varied_conversions  lead.converted with other currencies and close
                 dates (default: USD, 2031-06-30)
    rules_file   the rules the reports use (probabilities, stale
                 thresholds); default deploy/rules/seconds.yaml.  (The
                 stream itself follows the default rules' transitions and
                 requirements, which every shipped rules file shares.)
    """

    def __init__(self, seed, n_deals, n_leads, duration_s, t0_ms, tag,
                 currencies=("USD", "EUR"), owners=None, close_years=None,
                 p_no_owner=0.0, p_no_source=0.0, source_updates=0.0,
                 step_scale=1, followups=False, varied_conversions=False,
                 rules_file=None):
        self.r = random.Random(seed)
        self.tag = tag
        self.t0 = t0_ms
        self.duration = duration_s
        self.currencies = list(currencies)
        self.owners = list(owners or OWNERS)
        self.close_years = list(close_years) if close_years else None
        self.p_no_owner = p_no_owner
        self.p_no_source = p_no_source
        self.source_updates = source_updates
        self.step_scale = step_scale
        self.varied_conversions = varied_conversions
        self.rules = Rules(rules_file)
        self.seq = 0
        self.items = []
        self.expect = {}
        self.deals = {}
        self.histories = {}
        self.leads = {}
        self.conversions = {}
        self.timers = {}
        self.invalid = []
        self.moves = []
        self.live_deals = {}   # deal_id -> state, converted deals too
        self.followups = []
        self.followup_causes = set()
        self.conversion_causes = {}   # lead.converted event_id -> deal_id
        self.counts = {"events": 0, "producer_duplicates": 0, "invalid": 0}
        if n_deals is None:   # Stream.empty(): events come from apply()
            return
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
        if followups:
            main_items = self.items
            self.items = []
            for lead_id in sorted(self.conversions,
                                  key=lambda l: self.conversions[l][1]
                                  ["converted_at"]):
                self._followup(lead_id)
            self.items.sort(key=lambda x: (x[0], x[3]))
            self.followups = [(t, kind, payload)
                              for t, kind, payload, _ in self.items]
            self.followup_causes = {p["event_id"] for _, _, p in
                                    self.followups}
            self.items = main_items

    @classmethod
    def empty(cls, **options):
        """A stream with no generated events: feed it hand-written input
        events with apply() (the unit tests of the model)."""
        return cls(0, None, None, 0, 0, "hand", **options)

    def apply(self, e):
        """Apply one hand-written input event (JSON form) to the model."""
        if e["type"].startswith("deal."):
            return self.apply_deal(e)
        return self.apply_lead(e)

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
            return t + self.r.uniform(8, 25) * self.step_scale
        return t + self.r.uniform(0.3, 5) * self.step_scale

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
        year = 2031 if not self.close_years else self.r.choice(
            self.close_years)
        return "%d-%02d-%02d" % (year, self.r.randint(1, 12),
                                 self.r.randint(1, 28))

    def _other_currency(self):
        """A currency given explicitly, not the default one."""
        others = self.currencies[1:] or self.currencies
        return others[0] if len(others) == 1 else self.r.choice(others)

    def _move(self, deal_id, d, frm, to, seconds, at):
        """Record a stage change for the analytics (d: the state at the
        move, before or after the stage field changes, it is not read)."""
        self.moves.append({"deal_id": deal_id, "from": frm, "to": to,
                           "owner": d["owner"], "seconds": seconds,
                           "at": at, "amount": d["amount"],
                           "currency": d["currency"],
                           "lead_id": d.get("lead_id")})

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
                e["owner"] = r.choice(self.owners)
                if self.p_no_owner and r.random() < self.p_no_owner:
                    del e["owner"]
                if r.random() < 0.8:
                    e["amount"] = round(r.uniform(100, 90000), 2)
                    if r.random() < 0.3:
                        e["currency"] = self._other_currency()
                if r.random() < 0.6:
                    e["expected_close_date"] = self._close_date()
                if r.random() < 0.1:
                    e["stage"] = r.choice(["scoping", "proposal"])
                d = self.apply_deal(e, at)
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
                    e["requested_by"] = r.choice(self.owners)
                self.apply_deal(e, at)
                if to == "won" and d["stage"] == "won":
                    n_steps = min(n_steps, 1)
            elif roll < 0.65:
                e.update(type="deal.activity",
                         activity=r.choice(ACTIVITIES))
                if d["stage"] in ("negotiation", "closing") and \
                        r.random() < 0.5:
                    e["activity"] = r.choice(["contract_sent",
                                              "contract_signed"])
                self.apply_deal(e, at)
            elif roll < 0.92:
                e["type"] = "deal.updated"
                if r.random() < 0.7:
                    e["amount"] = round(r.uniform(100, 90000), 2)
                    # an amount without a currency is USD
                    e["currency"] = r.choice(self.currencies + [None])
                    if e["currency"] is None:
                        del e["currency"]
                if r.random() < 0.4:
                    e["expected_close_date"] = self._close_date()
                if r.random() < 0.3 or len(e) == 4:
                    e["owner"] = r.choice(self.owners)
                self.apply_deal(e, at)
            else:
                # a create for a deal that exists
                e.update(type="deal.created", name="again",
                         owner=r.choice(self.owners))
                self.apply_deal(e, at)
            self._emit(t, e)
            t = self._next_time(t)

    def apply_deal(self, e, at=None):
        """Apply one deal input event (its JSON form) to the model, as the
        contract says the deal worker must: the derived event it must
        cause (expect), the deal's state, history, stage moves and timers.
        at: its occurred_at in ms (parsed when not given).  Returns the
        deal's state (None while it does not exist)."""
        if at is None:
            at = parse_ms(e["occurred_at"])
        deal_id, typ = e["deal_id"], e["type"]
        d = self.live_deals.get(deal_id)
        if d is None and typ != "deal.created":
            self.expect[e["event_id"]] = ("deal.transition_rejected",
                                          {"reason_code": "unknown_deal"})
            return None
        if typ == "deal.created" and d is not None:
            self.expect[e["event_id"]] = ("deal.transition_rejected",
                                          {"reason_code": "duplicate_deal"})
            self._touch(deal_id, d, at)
        elif typ == "deal.created":
            new = {"stage": e.get("stage", STAGES[0]),
                   "amount": Decimal(str(e["amount"]))
                   if "amount" in e else None,
                   # an amount without a currency is in the default one
                   "currency": e.get("currency", self.currencies[0]
                                     if "amount" in e else None),
                   "expected_close_date": e.get("expected_close_date"),
                   "owner": e.get("owner"), "name": e.get("name"),
                   "activities": set(), "last_event_at": at,
                   "stage_entered_at": at, "lead_id": e.get("lead_id")}
            if new["stage"] not in STAGES:
                self.expect[e["event_id"]] = (
                    "deal.transition_rejected",
                    {"reason_code": "unknown_stage",
                     "to_stage": new["stage"]})
            elif self._missing(new, new["stage"], None):
                self.expect[e["event_id"]] = (
                    "deal.transition_rejected",
                    {"reason_code": "missing_field",
                     "to_stage": new["stage"]})
            else:
                d = new
                self.deals[deal_id] = d
                self.live_deals[deal_id] = d
                self.histories[deal_id] = [("", d["stage"], e["event_id"])]
                self.expect[e["event_id"]] = (
                    "deal.stage_changed",
                    {"from_stage": "", "to_stage": d["stage"]})
                self._move(deal_id, d, "", d["stage"], 0, at)
                self._touch(deal_id, d, at)
        elif typ == "deal.stage_requested":
            self._stage_request(deal_id, d, e, at)
        elif typ == "deal.activity":
            d["activities"].add(e["activity"])
            self._touch(deal_id, d, at)
        elif typ == "deal.updated":
            if "amount" in e:
                d["amount"] = Decimal(str(e["amount"]))
                d["currency"] = e.get("currency", self.currencies[0])
            elif "currency" in e:
                d["currency"] = e["currency"]
            for f in ("expected_close_date", "owner", "name"):
                if f in e:
                    d[f] = e[f]
            self._touch(deal_id, d, at)
        else:
            raise ValueError("not a deal input event: %s" % typ)
        return d

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
            # CONTRACT: the time of the change is the later of occurred_at
            # and the deal's last event; no duration is negative
            when = max(at, d["last_event_at"])
            # ...but a win counts in the month of the occurred_at of the
            # event that made it (CONTRACT, "Pipeline analytics")
            self._move(deal_id, d, cur, to,
                       max(0, (when - d["stage_entered_at"]) // 1000), at)
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
                if self.p_no_source and r.random() < self.p_no_source:
                    del e["source"]
                L = self.apply_lead(e, at)
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
                if self.source_updates and r.random() < self.source_updates:
                    e["source"] = r.choice(SOURCES)
                e.update(upd)
            elif kind == "lead.accepted":
                e["owner"] = r.choice(self.owners)
            elif kind == "lead.rejected":
                e["reason"] = r.choice(["no budget", "spam", "student"])
            else:
                if r.random() < 0.5:
                    e["amount"] = round(r.uniform(1000, 50000), 2)
                    if self.varied_conversions and r.random() < 0.5:
                        e["currency"] = self._other_currency()
                if r.random() < 0.5:
                    e["expected_close_date"] = self._close_date() \
                        if self.varied_conversions else "2031-06-30"
                if r.random() < 0.3:
                    e["deal_id"] = "D-%s-custom" % lead_id
            self.apply_lead(e, at)
            self._emit(t, e)
            t = self._next_time(t)

    def apply_lead(self, e, at=None):
        """Apply one lead input event (its JSON form) to the model, as the
        lead worker must: the derived event, the lead's state (status,
        score, the statuses it ever reached, source) and, for a
        conversion, the deal the lead worker creates (conversions,
        live_deals and its stage move).  Returns the lead (None while it
        does not exist)."""
        if at is None:
            at = parse_ms(e["occurred_at"])
        lead_id, kind = e["lead_id"], e["type"]
        L = self.leads.get(lead_id)
        if L is None and kind != "lead.created":
            self.expect[e["event_id"]] = ("lead.transition_rejected",
                                          {"reason_code": "unknown_lead"})
            return None
        status = L["status"] if L else None
        upd = {k: e[k] for k in PROFILE_FIELDS if k in e}
        if kind == "lead.created" and L is not None:
            self.expect[e["event_id"]] = ("lead.transition_rejected",
                                          {"reason_code": "not_allowed"})
        elif kind == "lead.created":
            L = {"profile": upd, "score": lead_score(upd),
                 "score_known": True, "deal_id": None,
                 "owner": e.get("owner"), "company": e.get("company")}
            L["status"] = "disqualified" if lead_disqualified(upd) \
                else ("mql" if L["score"] >= 50 else "nurture")
            L["source"] = e.get("source")
            L["reached"] = {L["status"]}
            self.leads[lead_id] = L
            self.expect[e["event_id"]] = ("lead.status_changed",
                                          {"to_status": L["status"]})
        elif kind == "lead.updated":
            if "source" in e:
                L["source"] = e["source"]
            if "owner" in e:
                L["owner"] = e["owner"]
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
                L["reached"].add(new)
        elif kind == "lead.accepted":
            code = {"mql": None, "sal": "already_in_stage",
                    "new": "not_allowed", "nurture": "not_allowed",
                    "sql": "terminal",
                    "disqualified": "terminal"}[status]
            self._lead_move(L, e, code, "sal")
            if not code:
                L["owner"] = e["owner"]
        elif kind == "lead.rejected":
            code = {"sql": "terminal",
                    "disqualified": "already_in_stage"}.get(status)
            self._lead_move(L, e, code, "disqualified")
        elif kind == "lead.converted":
            code = {"sal": None, "sql": "already_in_stage",
                    "disqualified": "terminal"}.get(status, "not_allowed")
            self._lead_move(L, e, code, "sql")
            if not code:
                self._convert(L, lead_id, e, at)
        else:
            raise ValueError("not a lead input event: %s" % kind)
        return L

    def _convert(self, L, lead_id, e, at):
        """The deal.created the lead worker publishes for a conversion:
        fields from the event, the owner from the lead (lead.accepted),
        applied by the deal worker as a new deal."""
        deal_id = e.get("deal_id") or "D-" + lead_id
        L["deal_id"] = deal_id
        c = {"stage": STAGES[0], "lead_id": lead_id,
             "amount": Decimal(str(e["amount"])) if "amount" in e else None,
             "currency": e.get("currency", self.currencies[0])
             if "amount" in e else None,
             "expected_close_date": e.get("expected_close_date"),
             "converted_at": at, "owner": e.get("owner", L["owner"]),
             "name": e.get("name", L["company"]),
             "converted_by": e["event_id"],
             "activities": set(), "last_event_at": at,
             "stage_entered_at": at}
        self.conversions[lead_id] = (deal_id, c)
        self.conversion_causes[e["event_id"]] = deal_id
        self.live_deals[deal_id] = c
        self.histories[deal_id] = [
            ("", c["stage"], derived_id("deal.created", e["event_id"]))]
        self._move(deal_id, c, "", c["stage"], 0, at)

    def _lead_move(self, L, e, code, to):
        if code:
            self.expect[e["event_id"]] = ("lead.transition_rejected",
                                          {"reason_code": code})
        else:
            self.expect[e["event_id"]] = ("lead.status_changed",
                                          {"to_status": to})
            L["status"] = to
            L["reached"].add(to)

    # ---------------------------------------------------------- follow-ups
    def _followup(self, lead_id):
        """Events for a converted deal (created by the lead worker): mostly
        forward, with what each stage needs supplied first; some moves
        back, losses, reopens and owner changes on the way."""
        r = self.r
        deal_id, d = self.conversions[lead_id]
        t = (d["converted_at"] - self.t0) / 1000.0
        for _ in range(r.randint(4, 16)):
            if d["stage"] == "won":
                break
            t = self._next_time(t)
            at = self._ms(t)
            e = {"event_id": self._eid(deal_id), "occurred_at": rfc3339(at),
                 "deal_id": deal_id}
            stage = d["stage"]
            roll = r.random()
            if stage == "lost":
                if roll >= 0.6:
                    break
                e.update(type="deal.stage_requested", to_stage="qualification")
                self.apply_deal(e, at)
                self._emit(t, e)
                continue
            nxt = STAGES[STAGES.index(stage) + 1]   # closing -> won
            miss = self._missing(d, nxt, None)
            if miss == "amount" and roll < 0.85:
                e.update(type="deal.updated",
                         amount=round(r.uniform(500, 60000), 2))
                if r.random() < 0.5:
                    e["currency"] = r.choice(self.currencies)
            elif miss == "expected_close_date" and roll < 0.85:
                e.update(type="deal.updated",
                         expected_close_date=self._close_date())
            elif miss == "contract_signed" and roll < 0.75:
                e.update(type="deal.activity", activity="contract_signed")
            elif roll < 0.06:
                e.update(type="deal.updated", owner=r.choice(self.owners))
            elif roll < 0.14:
                e.update(type="deal.stage_requested", to_stage="lost",
                         reason="budget")
            elif roll < 0.24 and stage in ("negotiation", "closing"):
                e.update(type="deal.stage_requested",
                         to_stage=STAGES[STAGES.index(stage) - 1])
            else:
                e.update(type="deal.stage_requested", to_stage=nxt)
            self.apply_deal(e, at)
            self._emit(t, e)

    # ---------------------------------------------------------- analytics
    def all_deals(self):
        """{deal_id: final state} of every deal, converted ones too."""
        out = dict(self.deals)
        for deal_id, c in self.conversions.values():
            out[deal_id] = c
        return out

    def conversion_derived_ids(self):
        """{id of the deal.created the lead worker publishes: deal_id}; each
        causes a deal.stage_changed (-> qualification)."""
        return {derived_id("deal.created", cause): deal_id
                for cause, deal_id in self.conversion_causes.items()}

    @staticmethod
    def _owned(who, owner):
        """Does a deal of owner `who` (None: none) count in a report for
        --owner `owner` (None: every owner)?  The reports name a deal
        without an owner "none"."""
        return owner is None or (who or "none") == owner

    def forecast(self, owner=None):
        """`report forecast --json` (amounts as Decimal)."""
        rules = self.rules
        rows = {}

        def row(month, currency):
            key = (month, currency or NO_CURRENCY)
            if key not in rows:
                rows[key] = {"month": key[0], "currency": key[1],
                             "open_count": 0, "open_amount": Decimal(0),
                             "weighted_amount": Decimal(0),
                             "best_case_amount": Decimal(0),
                             "commit_amount": Decimal(0), "won_count": 0,
                             "won_amount": Decimal(0)}
            return rows[key]
        for d in self.all_deals().values():
            if d["stage"] not in rules.open or \
                    not self._owned(d["owner"], owner):
                continue
            ecd = d["expected_close_date"]
            x = row(ecd[:7] if ecd else "none", d["currency"])
            amount = d["amount"] or Decimal(0)
            p = rules.prob[d["stage"]]
            x["open_count"] += 1
            x["open_amount"] += amount
            x["weighted_amount"] += amount * p
            if p >= Decimal("0.6"):
                x["best_case_amount"] += amount
            if p >= Decimal("0.8"):
                x["commit_amount"] += amount
        for m in self.moves:
            if m["to"] in rules.terminal and self._owned(m["owner"], owner):
                x = row(month_of_ms(m["at"]), m["currency"])
                x["won_count"] += 1
                x["won_amount"] += m["amount"] or Decimal(0)
        out = [rows[k] for k in sorted(rows)
               if any(v for f, v in rows[k].items()
                      if f not in ("month", "currency"))]
        return {"months": out}

    def stage_figures(self, owner=None):
        """{stage: {counters..., "seconds": [seconds of each move out]}}
        for the open stages."""
        rules = self.rules
        st = {s: {"open_count": 0, "entered": 0, "advanced": 0,
                  "moved_back": 0, "lost": 0, "won": 0, "seconds": []}
              for s in rules.open}
        for d in self.all_deals().values():
            if d["stage"] in st and self._owned(d["owner"], owner):
                st[d["stage"]]["open_count"] += 1
        order = rules.stages
        for m in self.moves:
            if not self._owned(m["owner"], owner):
                continue
            to, frm = m["to"], m["from"]
            if to in st:
                st[to]["entered"] += 1
            if frm not in st:
                continue
            if to in rules.terminal:
                how = "won"
            elif to in rules.closed:
                how = "lost"
            elif order.index(to) == order.index(frm) + 1:
                how = "advanced"
            elif order.index(to) == order.index(frm) - 1:
                how = "moved_back"
            else:
                how = None
            if how:
                st[frm][how] += 1
            st[frm]["seconds"].append(m["seconds"])
        return st

    def stages(self, owner=None):
        """`report stages --json` (conversion a float, percentiles exact
        nearest-rank seconds: the workers may estimate them within 10%)."""
        rules = self.rules
        rows = []
        for s, f in self.stage_figures(owner).items():
            good = f["advanced"] + f["won"]
            left = good + f["moved_back"] + f["lost"]
            rows.append({"stage": s, "open_count": f["open_count"],
                         "entered": f["entered"], "advanced": f["advanced"],
                         "moved_back": f["moved_back"], "lost": f["lost"],
                         "won": f["won"],
                         "conversion": good / left if left else None,
                         "p50_seconds": percentile(f["seconds"], 0.5),
                         "p90_seconds": percentile(f["seconds"], 0.9),
                         "stale_after_seconds": rules.stale_s[s]})
        return {"stages": rows, "bottleneck": self.bottleneck(rows, owner)}

    def bottleneck(self, rows, owner=None):
        """Among the stages with at least 10 moves out, the highest
        p50 / stale_after; ties to the lower conversion; None if none."""
        figures = self.stage_figures(owner)
        best = None
        for x in rows:
            if len(figures[x["stage"]]["seconds"]) < 10 or \
                    not x["stale_after_seconds"]:
                continue
            key = (x["p50_seconds"] / x["stale_after_seconds"],
                   -(x["conversion"] or 0))
            if best is None or key > best[0]:
                best = (key, x["stage"])
        return best[1] if best else None

    def sources(self):
        """`report sources --json`."""
        won_leads = {m["lead_id"] for m in self.moves
                     if m["to"] in self.rules.terminal and m["lead_id"]}
        rows = {}
        for lead_id, L in self.leads.items():
            src = L.get("source") or "none"
            x = rows.setdefault(src, {"source": src, "leads": 0, "mql": 0,
                                      "sal": 0, "sql": 0, "disqualified": 0,
                                      "won": 0})
            x["leads"] += 1
            for status in ("mql", "sal", "sql", "disqualified"):
                if status in L["reached"]:
                    x[status] += 1
            if lead_id in won_leads:
                x["won"] += 1
        return {"sources": [rows[k] for k in sorted(rows)
                            if any(v for f, v in rows[k].items()
                                   if f != "source")]}

    def reports(self, owner=None):
        """{"forecast": ..., "stages": ..., "sources": ...}: what
        `pipelinectl report X --json [--owner owner]` must print (sources
        has no owner filter here: it is the same for every owner)."""
        return {"forecast": self.forecast(owner), "stages": self.stages(owner),
                "sources": self.sources()}

    def owner_names(self):
        """Every owner a deal had at a move or has now, by number of moves
        (most first)."""
        n = {}
        for m in self.moves:
            n[m["owner"]] = n.get(m["owner"], 0) + 1
        for d in self.all_deals().values():
            n.setdefault(d["owner"], 0)
        return sorted((o for o in n if o), key=lambda o: (-n[o], o))

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
