"""The pipeline analytics (CONTRACT.md, "Pipeline analytics") against a real
Kafka broker and a real Redis: `pipelinectl report forecast|stages|sources
--json [--owner NAME]` after a seeded stream of a few thousand lead and deal
events, compared field by field with what tests/chaos/model.py computes from
the same stream (the contract's rules, independently of the workers).

  - live: 2 deal workers and 1 lead worker apply the stream; the reports
    must match the model (amounts exactly, percentiles within the
    documented 10%);
  - crash: the same stream, a deal worker and the lead worker SIGKILLed
    mid-stream (and started again), and every event delivered twice: the
    same reports (each event counted once);
  - rebuild: `pipelinectl report rebuild` (workers stopped) recomputes
    the figures from the stored states: the reports are identical to the
    live ones;
  - table: without --json each report prints a header and one line per row.

The stream does not depend on wall-clock pacing: it is produced at once, in
order, with the model's occurred_at values (January to May 2030, so no
stale timer comes due while the test runs).  Its second phase walks
converted deals on (their deal.created comes from the lead worker), so it is
produced once the first phase is applied.
"""
import calendar
import json
import os
import signal
import sys
import time
import unittest
from decimal import Decimal

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "chaos"))

from harness import Env, ensure_stack, main  # noqa: E402
import model  # noqa: E402

SEED = int(os.environ.get("PL_ANALYTICS_SEED", "20"))
DAY = 86400
T0 = calendar.timegm((2030, 1, 1, 0, 0, 0)) * 1000
RULES = model.DEFAULT_RULES
WORKER_ARGS = ["--set", "rules.file=" + RULES,
               "--set", "kafka.consumer.session.timeout.ms=6000",
               "--set", "kafka.consumer.heartbeat.interval.ms=1000"]
PARTITIONS = 4
DRAIN_S = 150          # for the derived events of one phase
SETTLE_S = 20          # for the figures once the derived events are there
REL_ERR = 0.10         # the documented error of the percentile estimates
CONVERSION_ERR = 1e-3  # conversion may be printed rounded (3 decimals)

FORECAST_KEYS = ["month", "currency", "open_count", "open_amount",
                 "weighted_amount", "best_case_amount", "commit_amount",
                 "won_count", "won_amount"]
STAGE_KEYS = ["stage", "open_count", "entered", "advanced", "moved_back",
              "lost", "won", "conversion", "p50_seconds", "p90_seconds",
              "stale_after_seconds"]
SOURCE_KEYS = ["source", "leads", "mql", "sal", "sql", "disqualified", "won"]

_stream = []


def stream():
    """The seeded stream (built once; ids are the same in every Env, whose
    topics and keys are prefixed)."""
    if not _stream:
        _stream.append(model.Stream(
            SEED, 350, 160, 150 * DAY, T0, "an",
            currencies=("USD", "EUR", "GBP"), owners=model.MORE_OWNERS,
            close_years=(2030, 2031), p_no_owner=0.05, p_no_source=0.08,
            source_updates=0.15, step_scale=6 * 3600, followups=True,
            varied_conversions=True, rules_file=RULES))
    return _stream[0]


def owners_to_check(s):
    """Two busy owners, a quiet one, "none" (the deals without an owner)
    and a name nobody has."""
    names = s.owner_names()
    return names[:2] + names[-1:] + ["none", "nobody-at-all"]


# ---------------------------------------------------------------- driving

def split(items):
    deals = [p for _, k, p in items
             if k == "json" and p["type"].startswith("deal.")]
    leads = [p for _, k, p in items
             if k == "json" and p["type"].startswith("lead.")]
    raws = [p[1] for _, k, p in items if k == "raw"]
    return deals, leads, raws


def produce(env, items, chunks=1, between=None):
    """Produce items in order: deal events to sales.deals, lead events to
    sales.leads, invalid values raw to sales.deals; in `chunks` parts,
    calling between(i) before part i."""
    size = max(1, -(-len(items) // chunks))
    for n, i in enumerate(range(0, len(items), size)):
        if between:
            between(n)
        deals, leads, raws = split(items[i:i + size])
        if deals:
            env.produce("sales.deals", deals)
        if leads:
            env.produce("sales.leads", leads)
        if raws:
            env.produce_raw("sales.deals", raws, key="junk")


def phase_causes(s, phase):
    """The causes whose derived event must be on sales.pipeline once the
    phase is applied."""
    if phase == 1:
        return (set(s.expect) - s.followup_causes) | \
            set(s.conversion_derived_ids())
    return set(s.expect) & s.followup_causes


def wait_derived(env, causes, what):
    deadline = time.time() + DRAIN_S
    missing = causes
    while time.time() < deadline:
        have = {m.get("caused_by") for m in env.tail("sales.pipeline")}
        missing = causes - have
        if not missing:
            return
        env.check_workers()
        time.sleep(0.5)
    raise AssertionError("%s: %d of %d derived events still missing after "
                         "%d s, e.g. caused by %s\n%s" % (
                             what, len(missing), len(causes), DRAIN_S,
                             sorted(missing)[:5], env.diagnosis()))



def start_workers(env):
    for program in ("deal_worker", "deal_worker", "lead_worker"):
        env.start_worker(program, WORKER_ARGS)


# ---------------------------------------------------------------- reports

def report(env, kind, owner=None, as_json=True):
    args = ["report", kind] + (["--json"] if as_json else []) + \
        (["--owner", owner] if owner else [])
    p = env.ctl(*args, timeout=60)
    out = p.stdout.decode()
    if not as_json:
        return out
    try:
        return json.loads(out, parse_float=Decimal)
    except ValueError as e:
        raise AssertionError("pipelinectl %s: not JSON (%s): %r" % (
            " ".join(args), e, out[:500]))


def dec(v):
    if isinstance(v, bool) or not isinstance(v, (int, Decimal)):
        return None
    return Decimal(v)


def close_enough(got, want):
    """A percentile estimate: within REL_ERR of the exact value (+-1 s for
    tiny values)."""
    if got is None or want is None:
        return got is None and want is None
    if isinstance(got, bool) or not isinstance(got, (int, Decimal, float)):
        return False
    return abs(float(got) - want) <= REL_ERR * want + 1


def check_rows(label, got_rows, want_rows, keys, key_of, compare):
    """Problems (text) between two lists of rows."""
    out = []
    if not isinstance(got_rows, list):
        return ["%s: not a list: %r" % (label, got_rows)]
    for i, g in enumerate(got_rows):
        if not isinstance(g, dict) or sorted(g) != sorted(keys):
            out.append("%s: row %d has fields %s, the contract's are %s" % (
                label, i, sorted(g) if isinstance(g, dict) else g, keys))
            return out
    got = {key_of(g): g for g in got_rows}
    want = {key_of(w): w for w in want_rows}
    for k in sorted(set(want) - set(got)):
        out.append("%s: row %s missing; expected %s" % (
            label, "/".join(k), want[k]))
    for k in sorted(set(got) - set(want)):
        out.append("%s: row %s not expected; got %s" % (
            label, "/".join(k), got[k]))
    order = [key_of(g) for g in got_rows]
    if set(order) == set(want) and order != [key_of(w) for w in want_rows]:
        out.append("%s: rows in the order %s, expected %s" % (
            label, order, [key_of(w) for w in want_rows]))
    for k in sorted(set(got) & set(want)):
        for f in keys:
            problem = compare(f, got[k][f], want[k][f])
            if problem:
                out.append("%s: row %s: %s: %s" % (label, "/".join(k), f,
                                                   problem))
    return out


def exact(f, got, want):
    if isinstance(want, Decimal) or isinstance(want, int) and \
            not isinstance(want, bool):
        if dec(got) is None or dec(got) != want:
            return "got %r, expected %s" % (got, want)
        return None
    if got != want:
        return "got %r, expected %r" % (got, want)
    return None


def stage_field(f, got, want):
    if f in ("p50_seconds", "p90_seconds"):
        if not close_enough(got, want):
            return "got %r, expected %s (within %d%% + 1 s)" % (
                got, want, REL_ERR * 100)
        return None
    if f == "conversion":
        if want is None or got is None:
            return None if got is want else \
                "got %r, expected %r" % (got, want)
        if dec(got) is None or abs(float(got) - want) > CONVERSION_ERR:
            return "got %r, expected %.6f" % (got, want)
        return None
    return exact(f, got, want)


def bottleneck_choices(s, want, owner):
    """The stages the workers may name as the bottleneck, given that each
    p50 is an estimate within REL_ERR (+1 s): every qualifying stage
    whose ratio could reach the best one's (the model's exact choice is
    among them); {None} when no stage qualifies."""
    figures = s.stage_figures(owner)
    ratios = {}
    for x in want["stages"]:
        if len(figures[x["stage"]]["seconds"]) >= 10 and \
                x["stale_after_seconds"]:
            ratios[x["stage"]] = (x["p50_seconds"],
                                  x["stale_after_seconds"])
    if not ratios:
        return {None}
    lo = max(((p * (1 - REL_ERR) - 1) / st) for p, st in ratios.values())
    return {k for k, (p, st) in ratios.items()
            if (p * (1 + REL_ERR) + 1) / st >= lo}


def compare_reports(env, s, owners):
    """(problems, {(kind, owner): report as printed})"""
    problems, seen = [], {}
    for owner in [None] + owners:
        label = "--owner %s" % owner if owner else "all owners"
        want = s.forecast(owner)
        got = report(env, "forecast", owner)
        seen[("forecast", owner)] = got
        if not isinstance(got, dict) or sorted(got) != ["months"]:
            problems.append("forecast %s: top level %r, expected "
                            "{\"months\": [...]}" % (label, got))
        else:
            problems += check_rows(
                "forecast " + label, got["months"], want["months"],
                FORECAST_KEYS, lambda r: (r["month"], r["currency"]), exact)
        want = s.stages(owner)
        got = report(env, "stages", owner)
        seen[("stages", owner)] = got
        if not isinstance(got, dict) or sorted(got) != ["bottleneck",
                                                        "stages"]:
            problems.append("stages %s: top level %r, expected "
                            "{\"stages\": [...], \"bottleneck\": ...}" % (
                                label, got))
        else:
            problems += check_rows(
                "stages " + label, got["stages"], want["stages"],
                STAGE_KEYS, lambda r: (r["stage"],), stage_field)
            ok = bottleneck_choices(s, want, owner)
            if got["bottleneck"] not in ok:
                problems.append(
                    "stages %s: bottleneck %r, expected %s (exactly: %r)" % (
                        label, got["bottleneck"],
                        " or ".join(repr(x) for x in sorted(
                            ok, key=str)), want["bottleneck"]))
    want = s.sources()
    got = report(env, "sources")
    seen[("sources", None)] = got
    if not isinstance(got, dict) or sorted(got) != ["sources"]:
        problems.append("sources: top level %r, expected "
                        "{\"sources\": [...]}" % (got,))
    else:
        problems += check_rows("sources", got["sources"], want["sources"],
                               SOURCE_KEYS, lambda r: (r["source"],), exact)
    return problems, seen


def settle(env, s):
    """Poll the reports until they match the model (the figures follow the
    derived events within a second) or SETTLE_S pass: (problems, seen)."""
    owners = owners_to_check(s)
    deadline = time.time() + SETTLE_S
    while True:
        problems, seen = compare_reports(env, s, owners)
        if not problems or time.time() > deadline:
            return problems, seen
        time.sleep(1)


def failure_text(what, problems):
    return "%s: %d differences from the model (seed %d):\n  %s%s" % (
        what, len(problems), SEED, "\n  ".join(problems[:60]),
        "\n  ... %d more" % (len(problems) - 60)
        if len(problems) > 60 else "")


def expect_reports(test, env, s, what):
    """settle(), and fail with every difference."""
    problems, seen = settle(env, s)
    if problems:
        test.fail(failure_text(what, problems))
    return seen


# ---------------------------------------------------------------- tests

class Live(unittest.TestCase):
    """One Env: the stream through 2 deal workers and 1 lead worker."""

    @classmethod
    def setUpClass(cls):
        ensure_stack()
        cls.s = stream()
        cls.env = Env("Analytics", partitions=PARTITIONS)
        cls.failure = None
        try:
            start_workers(cls.env)
            produce(cls.env, cls.s.items)
            wait_derived(cls.env, phase_causes(cls.s, 1), "phase 1")
            produce(cls.env, cls.s.followups)
            wait_derived(cls.env, phase_causes(cls.s, 2), "phase 2")
            # the live figures, before any test rebuilds them
            cls.live_problems, cls.live = settle(cls.env, cls.s)
        except Exception as e:   # reported by every test
            cls.failure = e

    @classmethod
    def tearDownClass(cls):
        cls.env.close()

    def setUp(self):
        if self.failure:
            raise self.failure

    def test_1_reports_match_the_model(self):
        s = self.s
        self.assertGreaterEqual(s.counts["events"] + len(s.followups), 3000)
        if self.live_problems:
            self.fail(failure_text("live", self.live_problems))

    def test_3_rebuild_gives_the_live_figures(self):
        # `report rebuild` wants the workers stopped (an event applied
        # during a rebuild may be counted twice or not at all)
        self.env.close(clean=False)
        self.env.ctl("report", "rebuild", timeout=120)
        rebuilt = expect_reports(self, self.env, self.s, "after rebuild")
        if self.live_problems:
            self.fail("the rebuilt figures match the model, the live ones "
                      "did not (see test_1)")
        for key in sorted(self.live, key=str):
            self.assertEqual(
                rebuilt[key], self.live[key],
                "report %s%s differs after rebuild" % (
                    key[0], " --owner %s" % key[1] if key[1] else ""))

    def test_4_tables(self):
        owner = owners_to_check(self.s)[0]
        for kind, owner_arg, col in (("forecast", None, "month"),
                                     ("forecast", owner, "month"),
                                     ("stages", None, "stage"),
                                     ("stages", owner, "stage"),
                                     ("sources", None, "source")):
            rows = report(self.env, kind, owner_arg)
            rows = rows["months" if kind == "forecast" else kind]
            text = report(self.env, kind, owner_arg, as_json=False)
            what = "report %s%s" % (kind, " --owner " + owner_arg
                                    if owner_arg else "")
            lines = [l for l in text.splitlines() if l.strip() and
                     l.strip(" -=+|:") and
                     not l.strip().lower().startswith("bottleneck")]
            self.assertTrue(lines, "%s printed nothing" % what)
            header = lines[0].lower()
            self.assertIn(col, header, "%s: no header line:\n%s" % (
                what, text))
            self.assertEqual(len(lines) - 1, len(rows),
                             "%s: %d lines under the header for %d rows:\n%s"
                             % (what, len(lines) - 1, len(rows), text))
            for line, row in zip(lines[1:], rows):
                key = [row["month"], row["currency"]] if kind == "forecast" \
                    else [row[col]]
                for k in key:
                    self.assertIn(k, line.split(), "%s: row %s printed as %r"
                                  % (what, "/".join(key), line))
            if kind == "stages":
                self.assertIn("bottleneck", text.lower(),
                              "%s: no bottleneck line:\n%s" % (what, text))


class Crash(unittest.TestCase):
    """The same stream with a deal worker and the lead worker SIGKILLed
    mid-stream and started again, and every event delivered twice."""

    @classmethod
    def setUpClass(cls):
        ensure_stack()
        cls.s = stream()
        cls.env = Env("AnalyticsCrash", partitions=PARTITIONS)

    @classmethod
    def tearDownClass(cls):
        cls.env.close()

    def kill_and_restart(self, program):
        env = self.env
        victims = [p for p in env.workers if p.poll() is None and
                   os.path.basename(p.args[0]) == program]
        p = victims[0]
        p.send_signal(signal.SIGKILL)
        p.wait()
        self.kills.append("%s pid %d with %d derived events out" % (
            program, p.pid, len(env.tail("sales.pipeline"))))
        env.start_worker(program, WORKER_ARGS)

    def wait_some_applied(self, n):
        """Until n derived events are out (the workers are mid-stream)."""
        deadline = time.time() + 60
        while time.time() < deadline:
            if len(self.env.tail("sales.pipeline")) >= n:
                return
            time.sleep(0.2)

    def test_2_crash_and_redelivery_count_each_event_once(self):
        s, env = self.s, self.env
        self.kills = []
        start_workers(env)
        chunks = 30
        plan = {chunks // 3: "deal_worker", chunks // 2: "lead_worker",
                2 * chunks // 3: "deal_worker"}

        def between(i):
            if i in plan:
                # once the workers are busy with the stream
                self.wait_some_applied(len(s.expect) * i // (2 * chunks))
                self.kill_and_restart(plan[i])
        produce(env, s.items, chunks=chunks, between=between)
        # every event again (a producer's retry, a replay)
        produce(env, s.items, chunks=10)
        wait_derived(env, phase_causes(s, 1), "phase 1")

        def between2(i):
            if i == 2:
                self.kill_and_restart("deal_worker")
        produce(env, s.followups, chunks=4, between=between2)
        produce(env, s.followups)
        wait_derived(env, phase_causes(s, 2), "phase 2")
        self.assertEqual(len(self.kills), 4, self.kills)
        print("\n  SIGKILLed: %s (%d causes expected)" % (
            "; ".join(self.kills), len(phase_causes(s, 1)) +
            len(phase_causes(s, 2))), flush=True)
        expect_reports(self, env, s, "after SIGKILLs (%s) and redelivery"
                       % ", ".join(self.kills))


if __name__ == "__main__":
    main()
