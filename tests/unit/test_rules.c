/*
 * test_rules.c - unit tests of the rules file and the deal engine.
 *
 * Loads the shipped deploy/rules/default.yaml and checks it against the
 * "Default rules" table of CONTRACT.md, drives pl_rules_apply_deal() through
 * every stage pair and every reason_code, and feeds the broken files in
 * tests/unit/rules/ to the loader.  The source tree is found through the
 * PL_SOURCE_DIR environment variable (set by ctest), else the compile-time
 * PL_SOURCE_DIR.
 */
#include "testutil.h"

#define SEC 1000LL
#define DAY (86400LL * SEC)
#define T0 1700000000000LL /* 2023-11-14T22:13:20Z */

enum { QUAL, SCOP, PROP, NEGO, CLOS, WON, LOST, NSTAGES };

/* The contract table, in order. */
static const struct {
    const char *name;
    double probability;
    int64_t stale_ms;
} contract_stages[NSTAGES] = {
    {"qualification", 0.10, 7 * DAY}, {"scoping", 0.20, 10 * DAY},
    {"proposal", 0.40, 14 * DAY},     {"negotiation", 0.60, 10 * DAY},
    {"closing", 0.80, 1 * DAY},       {"won", 1.00, 0},
    {"lost", 0.00, 0},
};

/* Transitions as the contract words them. */
static bool contract_allows(int from, int to)
{
    bool open = from <= CLOS;
    if (open && to == from + 1)
        return true; /* forward one stage; closing -> won */
    if ((from == NEGO || from == CLOS) && to == from - 1)
        return true; /* back one from negotiation and closing */
    if (open && to == LOST)
        return true;
    return from == LOST && to == QUAL; /* reopen */
}

/* ------------------------------------------------------------------------ */
/* Event and state builders                                                 */

static void ev_base(pl_event_t *ev, pl_event_type_t type, const char *deal,
                    int64_t at)
{
    deal_event(ev, type, "ev-1", deal, at);
}

static void ev_request(pl_event_t *ev, const char *deal, const char *to,
                       const char *reason, int64_t at)
{
    ev_base(ev, PL_EV_DEAL_STAGE_REQUESTED, deal, at);
    assert_int_equal(pl_str_set(&ev->to_stage, to), 0);
    assert_int_equal(pl_str_set(&ev->reason, reason), 0);
}

static void ev_activity(pl_event_t *ev, const char *deal, const char *act,
                        int64_t at)
{
    ev_base(ev, PL_EV_DEAL_ACTIVITY, deal, at);
    assert_int_equal(pl_str_set(&ev->activity, act), 0);
}

static void ev_amount(pl_event_t *ev, int64_t units)
{
    ev->amount = units * PL_AMOUNT_SCALE;
    ev->present |= PL_F_AMOUNT;
}

static void ev_close_date(pl_event_t *ev, int32_t day)
{
    ev->expected_close_date = day;
    ev->present |= PL_F_EXPECTED_CLOSE_DATE;
}

/* A stored deal in `stage` that meets every requirement of every stage. */
static void qualified_deal(pl_deal_state_t *st, const char *stage,
                           int64_t entered_at)
{
    pl_deal_state_init(st);
    st->exists = true;
    assert_int_equal(pl_str_set(&st->deal_id, "D-1"), 0);
    assert_int_equal(pl_str_set(&st->owner, "alice"), 0);
    assert_int_equal(pl_str_set(&st->currency, "EUR"), 0);
    assert_int_equal(pl_str_set(&st->stage, stage), 0);
    st->amount = 5000 * PL_AMOUNT_SCALE;
    st->has_amount = true;
    st->expected_close_date = 19700;
    st->has_close_date = true;
    st->created_at = entered_at - DAY;
    st->stage_entered_at = entered_at;
    st->last_event_at = entered_at;
    st->activities = 1u << PL_ACT_CONTRACT_SIGNED;
    st->version = 42;
}

/* Apply ev to cur and check the engine did not fail. */
static void apply(const pl_rules_t *r, const pl_deal_state_t *cur,
                  const pl_event_t *ev, pl_deal_state_t *next,
                  pl_deal_outcome_t *out)
{
    assert_int_equal(pl_rules_apply_deal(r, cur, ev, next, out), 0);
}

/* Apply ev; expect a rejection with code, state unchanged. */
static void expect_rejected(const pl_rules_t *r, const pl_deal_state_t *cur,
                            const pl_event_t *ev, const char *code)
{
    pl_deal_state_t next, absent;
    pl_deal_outcome_t out;

    pl_deal_state_init(&next);
    pl_deal_state_init(&absent);
    apply(r, cur, ev, &next, &out);
    assert_int_equal(out.verdict, PL_DEAL_REJECTED);
    assert_non_null(out.reason_code);
    assert_string_equal(out.reason_code, code);
    assert_false(out.stage_changed);
    assert_true(out.message[0] != '\0');
    assert_deal_state_equal(&next, cur ? cur : &absent);
    pl_deal_state_clear(&next);
}

/* ------------------------------------------------------------------------ */
/* The default file                                                         */

static void test_default_matches_contract(void **state)
{
    const pl_rules_t *r = *state;

    assert_int_equal(pl_rules_stage_count(r), NSTAGES);
    assert_string_equal(pl_rules_first_stage(r), "qualification");
    for (int i = 0; i < NSTAGES; i++) {
        assert_string_equal(pl_rules_stage_name(r, i),
                            contract_stages[i].name);
        assert_int_equal(pl_rules_stage_index(r, contract_stages[i].name),
                         i);
        assert_true(pl_rules_stage_probability(r, i) ==
                    contract_stages[i].probability);
        assert_int_equal(pl_rules_stage_stale_ms(r, i),
                         contract_stages[i].stale_ms);
        assert_int_equal(pl_rules_stage_is_terminal(r, i), i == WON);
        assert_int_equal(pl_rules_stage_is_closed(r, i),
                         i == WON || i == LOST);
        for (int j = 0; j < NSTAGES; j++)
            assert_int_equal(pl_rules_transition_allowed(r, i, j),
                             contract_allows(i, j));
    }
    assert_int_equal(pl_rules_stage_index(r, "prposal"), -1);
    assert_int_equal(pl_rules_stage_index(r, NULL), -1);
    assert_null(pl_rules_stage_name(r, NSTAGES));
    assert_null(pl_rules_stage_name(r, -1));
    assert_false(pl_rules_stage_is_terminal(r, 99));
}

/* Every pair of stages: allowed ones apply, the rest get the right code. */
static void test_all_stage_pairs(void **state)
{
    const pl_rules_t *r = *state;
    int applied = 0, rejected = 0;

    for (int from = 0; from < NSTAGES; from++) {
        for (int to = 0; to < NSTAGES; to++) {
            const char *fname = contract_stages[from].name;
            const char *tname = contract_stages[to].name;
            pl_deal_state_t cur, next;
            pl_deal_outcome_t out;
            pl_event_t ev;

            qualified_deal(&cur, fname, T0);
            pl_deal_state_init(&next);
            ev_request(&ev, "D-1", tname, "budget cut", T0 + 3 * DAY);
            apply(r, &cur, &ev, &next, &out);
            assert_string_equal(out.from_stage, fname);
            assert_string_equal(out.to_stage, tname);
            if (from != to && contract_allows(from, to)) {
                applied++;
                assert_int_equal(out.verdict, PL_DEAL_APPLIED);
                assert_null(out.reason_code);
                assert_true(out.stage_changed);
                assert_string_equal(next.stage, tname);
                assert_int_equal(next.stage_entered_at, T0 + 3 * DAY);
                assert_int_equal(next.last_event_at, T0 + 3 * DAY);
                assert_int_equal(out.seconds_in_previous_stage, 3 * 86400);
                assert_int_equal(next.version, 42);
            } else {
                const char *code = from == to  ? "already_in_stage"
                                   : from == WON ? "terminal"
                                                 : "not_allowed";
                rejected++;
                assert_int_equal(out.verdict, PL_DEAL_REJECTED);
                assert_string_equal(out.reason_code, code);
                assert_false(out.stage_changed);
                assert_deal_state_equal(&next, &cur);
            }
            pl_event_clear(&ev);
            pl_deal_state_clear(&cur);
            pl_deal_state_clear(&next);
        }
    }
    /* 4 forward + closing->won, 2 back, 5 to lost, 1 reopen */
    assert_int_equal(applied, 13);
    assert_int_equal(rejected, NSTAGES * NSTAGES - 13);
}

/* ------------------------------------------------------------------------ */
/* deal.created                                                             */

static void test_created_defaults_to_first_stage(void **state)
{
    const pl_rules_t *r = *state;
    pl_deal_state_t cur, next;
    pl_deal_outcome_t out;
    pl_event_t ev;

    pl_deal_state_init(&cur);
    cur.version = 7; /* whatever the store says */
    pl_deal_state_init(&next);
    ev_base(&ev, PL_EV_DEAL_CREATED, "D-9", T0);
    assert_int_equal(pl_str_set(&ev.lead_id, "L-9"), 0);
    assert_int_equal(pl_str_set(&ev.name, "Acme renewal"), 0);
    assert_int_equal(pl_str_set(&ev.owner, "bob"), 0);
    assert_int_equal(pl_str_set(&ev.currency, "USD"), 0);
    ev_amount(&ev, 1200);
    ev_close_date(&ev, 19800);

    apply(r, &cur, &ev, &next, &out);
    assert_int_equal(out.verdict, PL_DEAL_APPLIED);
    assert_true(out.stage_changed);
    assert_null(out.reason_code);
    assert_string_equal(out.from_stage, "");
    assert_string_equal(out.to_stage, "qualification");
    assert_int_equal(out.seconds_in_previous_stage, 0);
    assert_true(next.exists);
    assert_string_equal(next.deal_id, "D-9");
    assert_string_equal(next.lead_id, "L-9");
    assert_string_equal(next.name, "Acme renewal");
    assert_string_equal(next.owner, "bob");
    assert_string_equal(next.currency, "USD");
    assert_string_equal(next.stage, "qualification");
    assert_true(next.has_amount);
    assert_int_equal(next.amount, 1200 * PL_AMOUNT_SCALE);
    assert_true(next.has_close_date);
    assert_int_equal(next.expected_close_date, 19800);
    assert_int_equal(next.created_at, T0);
    assert_int_equal(next.stage_entered_at, T0);
    assert_int_equal(next.last_event_at, T0);
    assert_int_equal(next.activities, 0);
    assert_int_equal(next.version, 7);

    /* the same deal again: duplicate, and the stored deal is untouched */
    expect_rejected(r, &next, &ev, "duplicate_deal");

    /* cur == NULL means "no such deal" as well */
    pl_deal_state_clear(&next);
    apply(r, NULL, &ev, &next, &out);
    assert_int_equal(out.verdict, PL_DEAL_APPLIED);
    assert_string_equal(next.stage, "qualification");

    pl_event_clear(&ev);
    pl_deal_state_clear(&next);
}

static void test_created_in_stage_checks_requirements(void **state)
{
    const pl_rules_t *r = *state;
    pl_deal_state_t next;
    pl_deal_outcome_t out;
    pl_event_t ev;

    pl_deal_state_init(&next);
    ev_base(&ev, PL_EV_DEAL_CREATED, "D-2", T0);
    assert_int_equal(pl_str_set(&ev.stage, "proposal"), 0);

    apply(r, NULL, &ev, &next, &out);
    assert_int_equal(out.verdict, PL_DEAL_REJECTED);
    assert_string_equal(out.reason_code, "missing_field");
    assert_non_null(strstr(out.message, "amount"));
    assert_string_equal(out.from_stage, "");
    assert_string_equal(out.to_stage, "proposal");
    assert_false(next.exists);
    assert_null(next.deal_id);

    ev_amount(&ev, 10);
    apply(r, NULL, &ev, &next, &out);
    assert_int_equal(out.verdict, PL_DEAL_APPLIED);
    assert_true(out.stage_changed);
    assert_string_equal(next.stage, "proposal");

    assert_int_equal(pl_str_set(&ev.stage, "prposal"), 0);
    expect_rejected(r, NULL, &ev, "unknown_stage");

    pl_event_clear(&ev);
    pl_deal_state_clear(&next);
}

/* ------------------------------------------------------------------------ */
/* Requirements                                                             */

static void expect_missing(const pl_rules_t *r, const pl_deal_state_t *cur,
                           const pl_event_t *ev, const char *message)
{
    pl_deal_state_t next;
    pl_deal_outcome_t out;

    pl_deal_state_init(&next);
    apply(r, cur, ev, &next, &out);
    assert_int_equal(out.verdict, PL_DEAL_REJECTED);
    assert_string_equal(out.reason_code, "missing_field");
    assert_string_equal(out.message, message);
    assert_deal_state_equal(&next, cur);
    pl_deal_state_clear(&next);
}

static void expect_moves(const pl_rules_t *r, pl_deal_state_t *cur,
                         const pl_event_t *ev, const char *stage)
{
    pl_deal_state_t next;
    pl_deal_outcome_t out;

    pl_deal_state_init(&next);
    apply(r, cur, ev, &next, &out);
    assert_int_equal(out.verdict, PL_DEAL_APPLIED);
    assert_true(out.stage_changed);
    assert_string_equal(next.stage, stage);
    assert_int_equal(pl_deal_state_copy(cur, &next), 0);
    pl_deal_state_clear(&next);
}

static void test_requirements(void **state)
{
    const pl_rules_t *r = *state;
    pl_deal_state_t cur;
    pl_event_t ev;

    /* proposal: amount must be > 0; absent and zero both fail */
    qualified_deal(&cur, "scoping", T0);
    cur.has_amount = false;
    cur.amount = 0;
    ev_request(&ev, "D-1", "proposal", NULL, T0 + SEC);
    expect_missing(r, &cur, &ev, "amount must be > 0 to enter proposal");
    cur.has_amount = true;
    expect_missing(r, &cur, &ev, "amount must be > 0 to enter proposal");
    cur.amount = -5 * PL_AMOUNT_SCALE;
    expect_missing(r, &cur, &ev, "amount must be > 0 to enter proposal");
    cur.amount = 1; /* 0.0001 */
    expect_moves(r, &cur, &ev, "proposal");
    pl_event_clear(&ev);

    /* negotiation: expected_close_date */
    cur.has_close_date = false;
    ev_request(&ev, "D-1", "negotiation", NULL, T0 + 2 * SEC);
    expect_missing(r, &cur, &ev,
                   "expected_close_date is required to enter negotiation");
    cur.has_close_date = true;
    expect_moves(r, &cur, &ev, "negotiation");
    pl_event_clear(&ev);

    /* closing: amount and date again */
    cur.has_amount = false;
    ev_request(&ev, "D-1", "closing", NULL, T0 + 3 * SEC);
    expect_missing(r, &cur, &ev, "amount must be > 0 to enter closing");
    cur.has_amount = true;
    cur.has_close_date = false;
    expect_missing(r, &cur, &ev,
                   "expected_close_date is required to enter closing");
    cur.has_close_date = true;
    expect_moves(r, &cur, &ev, "closing");
    pl_event_clear(&ev);

    /* won: a contract_signed activity, recorded by deal.activity */
    cur.activities = 1u << PL_ACT_CONTRACT_SENT;
    ev_request(&ev, "D-1", "won", NULL, T0 + 4 * SEC);
    expect_missing(r, &cur, &ev,
                   "contract_signed activity required to enter won");
    {
        pl_deal_state_t next;
        pl_deal_outcome_t out;
        pl_event_t act;

        pl_deal_state_init(&next);
        ev_activity(&act, "D-1", "contract_signed", T0 + 5 * SEC);
        apply(r, &cur, &act, &next, &out);
        assert_int_equal(out.verdict, PL_DEAL_APPLIED);
        assert_false(out.stage_changed);
        assert_string_equal(out.from_stage, "closing");
        assert_string_equal(out.to_stage, "closing");
        assert_int_equal(next.activities,
                         (1u << PL_ACT_CONTRACT_SENT) |
                             (1u << PL_ACT_CONTRACT_SIGNED));
        assert_int_equal(next.last_event_at, T0 + 5 * SEC);
        assert_int_equal(next.stage_entered_at, cur.stage_entered_at);
        assert_int_equal(pl_deal_state_copy(&cur, &next), 0);
        pl_deal_state_clear(&next);
        pl_event_clear(&act);
    }
    ev.occurred_at = T0 + 6 * SEC;
    expect_moves(r, &cur, &ev, "won");
    pl_event_clear(&ev);
    pl_deal_state_clear(&cur);

    /* lost: the request must carry a reason (an empty one does not count) */
    qualified_deal(&cur, "negotiation", T0);
    ev_request(&ev, "D-1", "lost", NULL, T0 + SEC);
    expect_missing(r, &cur, &ev, "reason is required to enter lost");
    assert_int_equal(pl_str_set(&ev.reason, ""), 0);
    expect_missing(r, &cur, &ev, "reason is required to enter lost");
    assert_int_equal(pl_str_set(&ev.reason, "went with a competitor"), 0);
    expect_moves(r, &cur, &ev, "lost");
    pl_event_clear(&ev);
    pl_deal_state_clear(&cur);
}

static void test_reopen_lost_and_won_is_final(void **state)
{
    const pl_rules_t *r = *state;
    pl_deal_state_t cur;
    pl_event_t ev;

    qualified_deal(&cur, "lost", T0);
    ev_request(&ev, "D-1", "scoping", NULL, T0 + SEC);
    expect_rejected(r, &cur, &ev, "not_allowed");
    pl_event_clear(&ev);
    ev_request(&ev, "D-1", "qualification", NULL, T0 + SEC);
    expect_moves(r, &cur, &ev, "qualification");
    pl_event_clear(&ev);
    pl_deal_state_clear(&cur);

    qualified_deal(&cur, "won", T0);
    assert_true(pl_rules_stage_is_terminal(r, pl_rules_stage_index(r, "won")));
    for (int i = 0; i < NSTAGES; i++) {
        ev_request(&ev, "D-1", contract_stages[i].name, "oops", T0 + SEC);
        expect_rejected(r, &cur, &ev,
                        i == WON ? "already_in_stage" : "terminal");
        pl_event_clear(&ev);
    }
    pl_deal_state_clear(&cur);
}

static void test_seconds_in_previous_stage(void **state)
{
    const pl_rules_t *r = *state;
    pl_deal_state_t cur, next;
    pl_deal_outcome_t out;
    pl_event_t ev;

    pl_deal_state_init(&cur);
    pl_deal_state_init(&next);
    ev_base(&ev, PL_EV_DEAL_CREATED, "D-1", T0);
    apply(r, &cur, &ev, &next, &out);
    assert_int_equal(out.seconds_in_previous_stage, 0);
    assert_int_equal(pl_deal_state_copy(&cur, &next), 0);
    pl_event_clear(&ev);

    /* 90.9 s later: whole seconds */
    ev_request(&ev, "D-1", "scoping", NULL, T0 + 90 * SEC + 900);
    apply(r, &cur, &ev, &next, &out);
    assert_true(out.stage_changed);
    assert_string_equal(out.from_stage, "qualification");
    assert_string_equal(out.to_stage, "scoping");
    assert_int_equal(out.seconds_in_previous_stage, 90);
    assert_int_equal(next.stage_entered_at, T0 + 90 * SEC + 900);
    assert_int_equal(next.created_at, T0);
    assert_int_equal(pl_deal_state_copy(&cur, &next), 0);
    pl_event_clear(&ev);

    /* an event that arrives late: stage time never negative, and neither
     * the stage start nor last_event_at goes back (CONTRACT, precision:
     * "stage start times ... use the later of the two") */
    ev_request(&ev, "D-1", "lost", "no budget", T0 + 10 * SEC);
    apply(r, &cur, &ev, &next, &out);
    assert_true(out.stage_changed);
    assert_int_equal(out.seconds_in_previous_stage, 0);
    assert_int_equal(next.stage_entered_at, T0 + 90 * SEC + 900);
    assert_int_equal(next.last_event_at, T0 + 90 * SEC + 900);
    pl_event_clear(&ev);

    pl_deal_state_clear(&cur);
    pl_deal_state_clear(&next);
}

/* ------------------------------------------------------------------------ */
/* CONTRACT, precision: the order of the checks on a stage request          */

/* A request that fails two adjacent checks reports the earlier one. */
static void test_check_order(void **state)
{
    const pl_rules_t *r = *state;
    static const struct {
        const char *stage; /* stored stage; NULL: the deal does not exist */
        bool bare;         /* no amount, no close date, no activities */
        const char *to, *reason;
        const char *code;  /* the earlier check */
        const char *also;  /* the later check it also fails */
    } cases[] = {
        /* unknown_deal before unknown_stage */
        {NULL, false, "prposal", NULL, "unknown_deal", "unknown_stage"},
        /* unknown_stage before already_in_stage: a deal left in a stage
         * the rules no longer define, asked to stay there */
        {"legacy", false, "legacy", NULL, "unknown_stage",
         "already_in_stage"},
        /* already_in_stage before terminal */
        {"won", false, "won", NULL, "already_in_stage", "terminal"},
        /* terminal before not_allowed */
        {"won", false, "qualification", NULL, "terminal", "not_allowed"},
        {"won", false, "lost", "x", "terminal", "not_allowed"},
        /* not_allowed before missing_field */
        {"scoping", true, "closing", NULL, "not_allowed", "missing_field"},
        {"qualification", true, "won", NULL, "not_allowed",
         "missing_field"},
        {"lost", false, "lost", NULL, "already_in_stage", "missing_field"},
        /* and each later check alone, so the pairs above are real */
        {"legacy", false, "scoping", NULL, NULL, NULL},
        {"scoping", true, "proposal", NULL, "missing_field", NULL},
        {"negotiation", false, "won", NULL, "not_allowed", NULL},
        {"closing", true, "won", NULL, "missing_field", NULL},
        {"won", false, "closing", NULL, "terminal", "not_allowed"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pl_deal_state_t cur, next;
        pl_deal_outcome_t out;
        pl_event_t ev;

        if (cases[i].stage) {
            qualified_deal(&cur, cases[i].stage, T0);
            if (cases[i].bare) {
                cur.has_amount = cur.has_close_date = false;
                cur.amount = 0;
                cur.activities = 0;
            }
        } else {
            pl_deal_state_init(&cur);
        }
        pl_deal_state_init(&next);
        ev_request(&ev, "D-1", cases[i].to, cases[i].reason, T0 + SEC);
        apply(r, &cur, &ev, &next, &out);
        if (!cases[i].code) {
            if (out.verdict != PL_DEAL_APPLIED)
                fail_msg("case %zu: %s -> %s: expected applied, got %s", i,
                         cases[i].stage, cases[i].to, out.reason_code);
        } else {
            if (out.verdict != PL_DEAL_REJECTED ||
                strcmp(out.reason_code, cases[i].code))
                fail_msg("case %zu: %s -> %s: expected %s (before %s), "
                         "got %s",
                         i, cases[i].stage ? cases[i].stage : "(none)",
                         cases[i].to, cases[i].code,
                         cases[i].also ? cases[i].also : "-",
                         out.verdict == PL_DEAL_REJECTED ? out.reason_code
                                                         : "applied");
            assert_false(out.stage_changed);
            assert_deal_state_equal(&next, &cur);
        }
        pl_event_clear(&ev);
        pl_deal_state_clear(&next);
        pl_deal_state_clear(&cur);
    }
}

/* ------------------------------------------------------------------------ */
/* CONTRACT, precision: time never runs backwards                           */

/* Events that arrive out of order are applied, but the stage start, the
 * idle period and every duration only move forward. */
static void test_out_of_order_events(void **state)
{
    const pl_rules_t *r = *state;
    pl_deal_state_t cur, next;
    pl_deal_outcome_t out;
    pl_event_t ev, alert;
    pl_timer_t t[PL_TIMERS_MAX];
    int n, k;

    pl_deal_state_init(&cur);
    pl_deal_state_init(&next);
    ev_base(&ev, PL_EV_DEAL_CREATED, "D-1", T0);
    ev_amount(&ev, 100);
    ev_close_date(&ev, 19700);
    apply(r, &cur, &ev, &next, &out);
    assert_int_equal(out.verdict, PL_DEAL_APPLIED);
    assert_int_equal(pl_deal_state_copy(&cur, &next), 0);
    pl_event_clear(&ev);

    /* a call at T0 + 100 s: the deal's last event */
    ev_activity(&ev, "D-1", "call", T0 + 100 * SEC);
    apply(r, &cur, &ev, &next, &out);
    assert_int_equal(next.last_event_at, T0 + 100 * SEC);
    assert_int_equal(next.stage_entered_at, T0);
    assert_int_equal(pl_deal_state_copy(&cur, &next), 0);
    pl_event_clear(&ev);

    /* a move to scoping stamped T0 + 40 s arrives after it: applied, as of
     * the deal's last event (T0 + 100 s), not before it */
    ev_request(&ev, "D-1", "scoping", NULL, T0 + 40 * SEC);
    apply(r, &cur, &ev, &next, &out);
    assert_int_equal(out.verdict, PL_DEAL_APPLIED);
    assert_true(out.stage_changed);
    assert_string_equal(next.stage, "scoping");
    assert_int_equal(out.seconds_in_previous_stage, 100);
    assert_int_equal(next.stage_entered_at, T0 + 100 * SEC);
    assert_int_equal(next.last_event_at, T0 + 100 * SEC);
    assert_int_equal(pl_deal_state_copy(&cur, &next), 0);
    pl_event_clear(&ev);

    /* an update older than everything: applied, no time goes back */
    ev_base(&ev, PL_EV_DEAL_UPDATED, "D-1", T0 - 3600 * SEC);
    ev_amount(&ev, 250);
    apply(r, &cur, &ev, &next, &out);
    assert_int_equal(out.verdict, PL_DEAL_APPLIED);
    assert_int_equal(next.amount, 250 * PL_AMOUNT_SCALE);
    assert_int_equal(next.stage_entered_at, T0 + 100 * SEC);
    assert_int_equal(next.last_event_at, T0 + 100 * SEC);
    assert_int_equal(pl_deal_state_copy(&cur, &next), 0);
    pl_event_clear(&ev);

    /* a move out of scoping stamped before the deal entered it: 0 s in
     * scoping, never negative, and the new stage starts no earlier */
    ev_request(&ev, "D-1", "proposal", NULL, T0 + 10 * SEC);
    apply(r, &cur, &ev, &next, &out);
    assert_true(out.stage_changed);
    assert_int_equal(out.seconds_in_previous_stage, 0);
    assert_int_equal(next.stage_entered_at, T0 + 100 * SEC);
    assert_int_equal(next.last_event_at, T0 + 100 * SEC);
    assert_int_equal(pl_deal_state_copy(&cur, &next), 0);
    pl_event_clear(&ev);

    /* the next event in order measures from there */
    ev_request(&ev, "D-1", "negotiation", NULL, T0 + 160 * SEC);
    apply(r, &cur, &ev, &next, &out);
    assert_true(out.stage_changed);
    assert_int_equal(out.seconds_in_previous_stage, 60);
    assert_int_equal(next.stage_entered_at, T0 + 160 * SEC);
    assert_int_equal(next.last_event_at, T0 + 160 * SEC);
    assert_int_equal(pl_deal_state_copy(&cur, &next), 0);
    pl_event_clear(&ev);

    /* a late activity does not start an earlier idle period: the stale
     * timer stays at last_event_at + stale_after, and the alert's idle
     * time is never negative */
    ev_activity(&ev, "D-1", "email", T0 + 5 * SEC);
    apply(r, &cur, &ev, &next, &out);
    assert_int_equal(next.last_event_at, T0 + 160 * SEC);
    pl_event_clear(&ev);
    n = pl_rules_deal_timers(r, &next, t);
    for (k = 0; k < n && strcmp(t[k].name, "stale"); k++)
        ;
    assert_true(k < n);
    assert_int_equal(t[k].due, T0 + 160 * SEC + 10 * DAY);
    pl_event_init(&alert);
    assert_int_equal(pl_rules_deal_alert(r, &next, "stale", t[k].due,
                                         t[k].due, &alert),
                     0);
    assert_int_equal(alert.idle_since, T0 + 160 * SEC);
    assert_int_equal(alert.idle_seconds, 10 * 86400);
    pl_event_clear(&alert);

    pl_deal_state_clear(&cur);
    pl_deal_state_clear(&next);
}

/* ------------------------------------------------------------------------ */
/* deal.updated, deal.activity, unknown deals, errors                       */

static void test_updated_merges_present_fields(void **state)
{
    const pl_rules_t *r = *state;
    pl_deal_state_t cur, next;
    pl_deal_outcome_t out;
    pl_event_t ev;

    qualified_deal(&cur, "proposal", T0);
    pl_deal_state_init(&next);
    ev_base(&ev, PL_EV_DEAL_UPDATED, "D-1", T0 + 5 * SEC);
    assert_int_equal(pl_str_set(&ev.owner, "carol"), 0);
    ev_amount(&ev, 7500);

    apply(r, &cur, &ev, &next, &out);
    assert_int_equal(out.verdict, PL_DEAL_APPLIED);
    assert_false(out.stage_changed);
    assert_string_equal(out.from_stage, "proposal");
    assert_string_equal(out.to_stage, "proposal");
    assert_string_equal(next.owner, "carol");
    assert_int_equal(next.amount, 7500 * PL_AMOUNT_SCALE);
    /* absent fields are kept */
    assert_string_equal(next.currency, "EUR");
    assert_null(next.name);
    assert_true(next.has_close_date);
    assert_int_equal(next.expected_close_date, 19700);
    assert_string_equal(next.stage, "proposal");
    assert_int_equal(next.stage_entered_at, T0);
    assert_int_equal(next.last_event_at, T0 + 5 * SEC);
    /* cur is not touched */
    assert_string_equal(cur.owner, "alice");
    pl_event_clear(&ev);

    ev_base(&ev, PL_EV_DEAL_UPDATED, "D-1", T0 - DAY);
    assert_int_equal(pl_str_set(&ev.name, "Renamed"), 0);
    assert_int_equal(pl_str_set(&ev.currency, "GBP"), 0);
    ev_close_date(&ev, 20000);
    apply(r, &cur, &ev, &next, &out);
    assert_string_equal(next.name, "Renamed");
    assert_string_equal(next.currency, "GBP");
    assert_int_equal(next.expected_close_date, 20000);
    assert_int_equal(next.last_event_at, T0); /* max, not the older time */
    pl_event_clear(&ev);

    pl_deal_state_clear(&cur);
    pl_deal_state_clear(&next);
}

static void test_unknown_deal(void **state)
{
    const pl_rules_t *r = *state;
    pl_deal_state_t absent;
    pl_deal_state_t next;
    pl_deal_outcome_t out;
    pl_event_t ev;

    pl_deal_state_init(&absent);
    pl_deal_state_init(&next);

    ev_base(&ev, PL_EV_DEAL_UPDATED, "D-404", T0);
    ev_amount(&ev, 5);
    expect_rejected(r, &absent, &ev, "unknown_deal");
    expect_rejected(r, NULL, &ev, "unknown_deal");
    pl_event_clear(&ev);

    ev_activity(&ev, "D-404", "call", T0);
    expect_rejected(r, &absent, &ev, "unknown_deal");
    pl_event_clear(&ev);

    ev_request(&ev, "D-404", "scoping", NULL, T0);
    apply(r, &absent, &ev, &next, &out);
    assert_string_equal(out.reason_code, "unknown_deal");
    assert_string_equal(out.from_stage, "");
    assert_string_equal(out.to_stage, "scoping");
    assert_non_null(strstr(out.message, "D-404"));
    pl_event_clear(&ev);
    pl_deal_state_clear(&next);
}

/* Each reason_code of the contract that a deal can get. */
static void test_every_reason_code(void **state)
{
    const pl_rules_t *r = *state;
    static const char *const codes[] = {
        "unknown_deal", "unknown_stage",  "not_allowed",
        "terminal",     "missing_field",  "duplicate_deal",
        "already_in_stage",
    };
    const char *seen[16];
    size_t nseen = 0;
    pl_deal_state_t scoping, won;
    pl_event_t ev;

    qualified_deal(&scoping, "scoping", T0);
    qualified_deal(&won, "won", T0);
    for (int k = 0; k < 8; k++) {
        const pl_deal_state_t *cur = &scoping;
        pl_deal_state_t next;
        pl_deal_outcome_t out;

        switch (k) {
        case 0: ev_request(&ev, "D-1", "scoping", NULL, T0); cur = NULL; break;
        case 1: ev_request(&ev, "D-1", "prposal", NULL, T0); break;
        case 2: ev_request(&ev, "D-1", "closing", NULL, T0); break;
        case 3: ev_request(&ev, "D-1", "lost", "x", T0); cur = &won; break;
        case 4: ev_request(&ev, "D-1", "lost", NULL, T0); break;
        case 5: ev_base(&ev, PL_EV_DEAL_CREATED, "D-1", T0); break;
        case 6: ev_request(&ev, "D-1", "scoping", NULL, T0); break;
        default: /* an applied event has no code */
            ev_request(&ev, "D-1", "proposal", NULL, T0);
            break;
        }
        pl_deal_state_init(&next);
        apply(r, cur, &ev, &next, &out);
        if (k == 7) {
            assert_int_equal(out.verdict, PL_DEAL_APPLIED);
            assert_null(out.reason_code);
        } else {
            assert_int_equal(out.verdict, PL_DEAL_REJECTED);
            assert_string_equal(out.reason_code, codes[k]);
            seen[nseen++] = out.reason_code;
        }
        pl_deal_state_clear(&next);
        pl_event_clear(&ev);
    }
    assert_int_equal(nseen, sizeof(codes) / sizeof(codes[0]));
    for (size_t i = 0; i < nseen; i++)
        for (size_t j = i + 1; j < nseen; j++)
            assert_string_not_equal(seen[i], seen[j]);
    pl_deal_state_clear(&scoping);
    pl_deal_state_clear(&won);
}

static void test_internal_errors(void **state)
{
    const pl_rules_t *r = *state;
    pl_deal_state_t cur, next;
    pl_deal_outcome_t out;
    pl_event_t ev;

    qualified_deal(&cur, "scoping", T0);
    pl_deal_state_init(&next);

    ev_base(&ev, PL_EV_LEAD_CREATED, "D-1", T0);
    assert_int_equal(pl_rules_apply_deal(r, &cur, &ev, &next, &out), -1);
    assert_non_null(strstr(out.message, "lead.created"));
    assert_false(next.exists);
    pl_event_clear(&ev);

    ev_activity(&ev, "D-1", "lunch", T0);
    assert_int_equal(pl_rules_apply_deal(r, &cur, &ev, &next, &out), -1);
    assert_non_null(strstr(out.message, "lunch"));
    pl_event_clear(&ev);

    ev_request(&ev, "D-1", NULL, NULL, T0);
    assert_int_equal(pl_rules_apply_deal(r, &cur, &ev, &next, &out), -1);
    pl_event_clear(&ev);

    ev_base(&ev, PL_EV_DEAL_UPDATED, NULL, T0);
    assert_int_equal(pl_rules_apply_deal(r, &cur, &ev, &next, &out), -1);
    pl_event_clear(&ev);

    pl_deal_state_clear(&cur);
    pl_deal_state_clear(&next);
}

static void test_state_copy(void **state)
{
    pl_deal_state_t a, b;

    (void)state;
    qualified_deal(&a, "proposal", T0);
    pl_deal_state_init(&b);
    assert_int_equal(pl_str_set(&b.name, "old"), 0); /* freed by the copy */
    assert_int_equal(pl_deal_state_copy(&b, &a), 0);
    assert_deal_state_equal(&a, &b);
    assert_ptr_not_equal(a.stage, b.stage);
    pl_deal_state_clear(&a);
    assert_false(a.exists);
    assert_null(a.stage);
    assert_string_equal(b.stage, "proposal");
    pl_deal_state_clear(&b);
    pl_deal_state_clear(&b); /* twice is fine */
}

/* The engine's next state borrows the strings it shares with cur (no copy
 * per event), and pl_deal_state_take makes it cur without copying them. */
static void test_state_borrow_and_take(void **state)
{
    const pl_rules_t *r = *state;
    pl_deal_state_t cur, next, other;
    pl_deal_outcome_t out;
    pl_event_t ev;
    char *deal_id, *stage, *currency;

    qualified_deal(&cur, "proposal", T0);
    deal_id = cur.deal_id;
    stage = cur.stage;
    currency = cur.currency;
    pl_deal_state_init(&next);
    assert_int_equal(pl_str_set(&next.name, "freed"), 0);
    ev_base(&ev, PL_EV_DEAL_UPDATED, "D-1", T0 + SEC);
    assert_int_equal(pl_str_set(&ev.owner, "carol"), 0);
    apply(r, &cur, &ev, &next, &out);
    pl_event_clear(&ev);
    assert_int_equal(out.verdict, PL_DEAL_APPLIED);
    /* shared, not copied: every string but the owner the event set */
    assert_ptr_equal(next.deal_id, deal_id);
    assert_ptr_equal(next.stage, stage);
    assert_ptr_not_equal(next.owner, cur.owner);
    assert_string_equal(next.owner, "carol");
    assert_true(next.borrowed & 1u << 0);    /* deal_id */
    assert_false(next.borrowed & 1u << 3);   /* owner: its own */
    assert_false(next.borrowed & 1u << 2);   /* name: NULL, nothing */

    /* take: the shared strings pass to cur as they are */
    assert_int_equal(pl_deal_state_take(&cur, &next), 0);
    assert_int_equal(cur.borrowed, 0);
    assert_ptr_equal(cur.deal_id, deal_id);
    assert_ptr_equal(cur.stage, stage);
    assert_string_equal(cur.owner, "carol");
    assert_false(next.exists);
    assert_null(next.deal_id);

    /* a rejection gives cur's state back, borrowed; clearing it leaves
     * cur whole */
    ev_base(&ev, PL_EV_DEAL_STAGE_REQUESTED, "D-1", T0 + 2 * SEC);
    assert_int_equal(pl_str_set(&ev.to_stage, "proposal"), 0);
    apply(r, &cur, &ev, &next, &out);
    pl_event_clear(&ev);
    assert_int_equal(out.verdict, PL_DEAL_REJECTED);
    assert_deal_state_equal(&next, &cur);
    assert_ptr_equal(next.currency, currency);
    pl_deal_state_clear(&next);
    assert_string_equal(cur.currency, "EUR");

    /* a state borrowing from another than dst: its strings are copied */
    ev_base(&ev, PL_EV_DEAL_ACTIVITY, "D-1", T0 + 3 * SEC);
    assert_int_equal(pl_str_set(&ev.activity, "email"), 0);
    apply(r, &cur, &ev, &next, &out);
    pl_event_clear(&ev);
    qualified_deal(&other, "scoping", T0);
    assert_int_equal(pl_deal_state_take(&other, &next), 0);
    assert_ptr_not_equal(other.stage, cur.stage);
    assert_string_equal(other.stage, "proposal");
    assert_int_equal(other.borrowed, 0);
    pl_deal_state_clear(&cur); /* other owns its own */
    assert_string_equal(other.deal_id, "D-1");
    assert_true(other.activities & 1u << PL_ACT_EMAIL);
    pl_deal_state_clear(&other);
}

/* ------------------------------------------------------------------------ */
/* Durations and the file format                                            */

static void test_durations(void **state)
{
    static const struct {
        const char *text;
        int64_t ms;
    } good[] = {
        {"7d", 7 * DAY},
        {"90s", 90 * SEC},
        {"1h30m", 90 * 60 * SEC},
        {"15m", 15 * 60 * SEC},
        {"1d12h", DAY + 12 * 3600 * SEC},
        {"0s", 0},
        {"2h1s", 7201 * SEC},
    };
    static const char *const bad[] = {
        "", "7", "7x", "-1d", "d", "1.5h", " 7d", "7d ", "7 d", "1h30",
        "+1d", "100ms", "99999999999999999999d", "9999999999999999d",
    };
    int64_t ms;

    (void)state;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        ms = -1;
        assert_int_equal(pl_duration_parse(good[i].text, &ms), 0);
        assert_int_equal(ms, good[i].ms);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ms = 123;
        if (pl_duration_parse(bad[i], &ms) != -1)
            fail_msg("duration '%s' was accepted", bad[i]);
        assert_int_equal(ms, 123);
    }
    assert_int_equal(pl_duration_parse(NULL, &ms), -1);
}

/* Each broken file fails with its line and the words a user needs. */
static void test_bad_files(void **state)
{
    static const struct {
        const char *file;
        int line; /* 0: no line in the message */
        const char *words[3];
    } cases[] = {
        {"unknown_to_stage.yaml", 11,
         {"transition from 'scoping' names unknown stage 'prposal'"}},
        {"unknown_from_stage.yaml", 9,
         {"unknown stage 'qualifcation'"}},
        {"duplicate_stage.yaml", 9,
         {"duplicate stage 'scoping'", "line 6"}},
        {"bad_duration.yaml", 6, {"bad duration '7x'", "stale_after"}},
        {"bad_duration_no_unit.yaml", 8, {"bad duration '7'", "scoping"}},
        {"probability_range.yaml", 7, {"probability", "1.5", "0..1"}},
        {"probability_text.yaml", 5, {"probability", "qualification"}},
        {"unknown_requirement.yaml", 10,
         {"unknown requirement 'contract_sigend'", "stage 'won'"}},
        {"unknown_key_stage.yaml", 7,
         {"unknown key 'probabilty'", "stage 'scoping'"}},
        {"unknown_key_deal.yaml", 9, {"unknown key 'transition'", "deal"}},
        {"unknown_key_transition.yaml", 10,
         {"unknown key 'too'", "transition"}},
        {"unknown_section.yaml", 11, {"unknown key 'leads'", "top level"}},
        {"missing_stages.yaml", 3, {"stages"}},
        {"missing_deal.yaml", 2, {"missing section 'deal'"}},
        {"yaml_syntax.yaml", 7, {"YAML"}},
        {"duplicate_key.yaml", 6, {"duplicate key 'probability'"}},
        {"stale_on_terminal.yaml", 8, {"stale_after", "closed stage 'won'"}},
        {"self_transition.yaml", 9,
         {"transition from 'scoping' to itself"}},
        {"empty_stages.yaml", 3, {"deal.stages is empty"}},
        {"empty.yaml", 0, {"empty"}},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_bad_rules_file(cases[i].file, cases[i].line, cases[i].words);
}

static void test_parse_text(void **state)
{
    static const char good[] =
        "deal:\n"
        "  stages:\n"
        "    - {name: open, probability: 0.5, stale_after: 90s}\n"
        "    - name: signed\n"
        "      probability: 1\n"
        "      requires: contract_signed\n"
        "    - {name: dropped, probability: 0, requires: [reason, note],"
        " closed: true}\n"
        "  transitions:\n"
        "    - {from: open, to: signed}\n"
        "    - {from: open, to: dropped}\n"
        "    - {from: dropped, to: open}\n";
    static const char two_docs[] = "deal:\n"
                                   "  stages: [{name: a, probability: 1}]\n"
                                   "  transitions: []\n"
                                   "---\n"
                                   "deal: {}\n";
    char err[512] = "";
    pl_rules_t *r;

    (void)state;
    r = pl_rules_parse(good, strlen(good), "inline.yaml", err, sizeof(err));
    if (!r)
        fail_msg("inline rules: %s", err);
    assert_int_equal(pl_rules_stage_count(r), 3);
    assert_int_equal(pl_rules_stage_stale_ms(r, 0), 90 * SEC);
    assert_true(pl_rules_stage_is_terminal(r, 1));
    assert_false(pl_rules_stage_is_terminal(r, 2));
    assert_true(pl_rules_stage_is_closed(r, 2));
    assert_false(pl_rules_stage_is_closed(r, 0));
    {
        /* an activity other than contract_signed as a requirement */
        pl_deal_state_t cur, next;
        pl_deal_outcome_t out;
        pl_event_t ev;

        qualified_deal(&cur, "open", T0);
        pl_deal_state_init(&next);
        ev_request(&ev, "D-1", "dropped", "gone quiet", T0 + SEC);
        apply(r, &cur, &ev, &next, &out);
        assert_string_equal(out.reason_code, "missing_field");
        assert_string_equal(out.message,
                            "note activity required to enter dropped");
        cur.activities |= 1u << PL_ACT_NOTE;
        apply(r, &cur, &ev, &next, &out);
        assert_int_equal(out.verdict, PL_DEAL_APPLIED);
        pl_event_clear(&ev);
        pl_deal_state_clear(&cur);
        pl_deal_state_clear(&next);
    }
    pl_rules_destroy(r);

    /* the name given is the one in messages */
    r = pl_rules_parse("deal: [1, 2]\n", 13, "inline.yaml", err,
                       sizeof(err));
    assert_null(r);
    assert_true(!strncmp(err, "inline.yaml:1: ", 15));

    r = pl_rules_parse(two_docs, strlen(two_docs), "two.yaml", err,
                       sizeof(err));
    assert_null(r);
    assert_true(!strncmp(err, "two.yaml:4: ", 12));
    assert_non_null(strstr(err, "second YAML document"));

    r = pl_rules_load("/nonexistent/rules.yaml", err, sizeof(err));
    assert_null(r);
    assert_non_null(strstr(err, "/nonexistent/rules.yaml: cannot open"));

    pl_rules_destroy(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_matches_contract),
        cmocka_unit_test(test_all_stage_pairs),
        cmocka_unit_test(test_created_defaults_to_first_stage),
        cmocka_unit_test(test_created_in_stage_checks_requirements),
        cmocka_unit_test(test_requirements),
        cmocka_unit_test(test_reopen_lost_and_won_is_final),
        cmocka_unit_test(test_seconds_in_previous_stage),
        cmocka_unit_test(test_check_order),
        cmocka_unit_test(test_out_of_order_events),
        cmocka_unit_test(test_updated_merges_present_fields),
        cmocka_unit_test(test_unknown_deal),
        cmocka_unit_test(test_every_reason_code),
        cmocka_unit_test(test_internal_errors),
        cmocka_unit_test(test_state_copy),
        cmocka_unit_test(test_state_borrow_and_take),
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_parse_text),
    };
    return cmocka_run_group_tests(tests, setup_rules, teardown_rules);
}
