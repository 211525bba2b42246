/*
 * test_timers.c - unit tests of the alert engine: a deal's timers and the
 * alerts they yield.
 *
 * Deals are driven through pl_rules_apply_deal() as a worker would, then
 * pl_rules_deal_timers() must list the timers the contract's "Alerts"
 * paragraph calls for, and pl_rules_deal_alert() must build deal.stale and
 * deal.close_reminder events that the codec accepts, or refuse a timer the
 * deal has moved past.  The shipped deploy/rules/default.yaml is found
 * through PL_SOURCE_DIR (environment, set by ctest, else the compile-time
 * definition); seconds-scale rules are inline, and the broken alerts files
 * are in tests/unit/rules/.
 */
#include "codec.h"
#include "testutil.h"

#define SEC 1000LL
#define HOUR (3600LL * SEC)
#define DAY (86400LL * SEC)
#define T0 1700000000000LL /* 2023-11-14T22:13:20Z */

static pl_rules_t *load_default(void)
{
    char why[4800];
    pl_rules_t *r = load_default_rules(why, sizeof(why));

    if (!r)
        fail_msg("%s", why);
    return r;
}

static pl_rules_t *parse_inline(const char *text)
{
    char err[512] = "";
    pl_rules_t *r = pl_rules_parse(text, strlen(text), "inline.yaml", err,
                                   sizeof(err));
    if (!r)
        fail_msg("inline rules: %s", err);
    return r;
}

static int setup_default(void **state)
{
    *state = load_default();
    return *state ? 0 : -1;
}

static int32_t date_of(const char *s)
{
    int32_t d;
    assert_int_equal(pl_date_parse(s, &d), 0);
    return d;
}

/* ---------------------------------------------------------------------- */
/* Driving a deal                                                         */

/* The event base: type, id, deal D1, occurred_at at. */
static void ev_base(pl_event_t *ev, pl_event_type_t type, int64_t at)
{
    static int seq;
    char id[32];

    snprintf(id, sizeof(id), "e%d", ++seq);
    deal_event(ev, type, id, "D1", at);
}

/* Apply ev to *st (which becomes the next state); it must be applied. */
static void apply(const pl_rules_t *r, pl_deal_state_t *st, pl_event_t *ev)
{
    pl_deal_state_t next;
    pl_deal_outcome_t out;

    pl_deal_state_init(&next);
    assert_int_equal(pl_rules_apply_deal(r, st, ev, &next, &out), 0);
    if (out.verdict != PL_DEAL_APPLIED)
        fail_msg("%s rejected: %s %s", pl_event_type_name(ev->type),
                 out.reason_code, out.message);
    pl_deal_state_clear(st);
    *st = next;
    pl_event_clear(ev);
}

/* deal.created in `stage` (NULL: the first), amount 1000 USD, owner ann,
 * close date `date` (NULL: none). */
static void create(const pl_rules_t *r, pl_deal_state_t *st, int64_t at,
                   const char *stage, const char *date)
{
    pl_event_t ev;

    ev_base(&ev, PL_EV_DEAL_CREATED, at);
    assert_int_equal(pl_str_set(&ev.stage, stage), 0);
    assert_int_equal(pl_str_set(&ev.owner, "ann"), 0);
    assert_int_equal(pl_str_set(&ev.currency, "USD"), 0);
    ev.amount = 1000 * PL_AMOUNT_SCALE;
    ev.present |= PL_F_AMOUNT;
    if (date) {
        ev.expected_close_date = date_of(date);
        ev.present |= PL_F_EXPECTED_CLOSE_DATE;
    }
    apply(r, st, &ev);
}

static void request(const pl_rules_t *r, pl_deal_state_t *st, int64_t at,
                    const char *to)
{
    pl_event_t ev;

    ev_base(&ev, PL_EV_DEAL_STAGE_REQUESTED, at);
    assert_int_equal(pl_str_set(&ev.to_stage, to), 0);
    assert_int_equal(pl_str_set(&ev.reason, "test"), 0);
    apply(r, st, &ev);
}

static void activity(const pl_rules_t *r, pl_deal_state_t *st, int64_t at,
                     const char *act)
{
    pl_event_t ev;

    ev_base(&ev, PL_EV_DEAL_ACTIVITY, at);
    assert_int_equal(pl_str_set(&ev.activity, act), 0);
    apply(r, st, &ev);
}

static void move_date(const pl_rules_t *r, pl_deal_state_t *st, int64_t at,
                      const char *date)
{
    pl_event_t ev;

    ev_base(&ev, PL_EV_DEAL_UPDATED, at);
    ev.expected_close_date = date_of(date);
    ev.present |= PL_F_EXPECTED_CLOSE_DATE;
    apply(r, st, &ev);
}

/* ---------------------------------------------------------------------- */
/* Looking at timers and alerts                                           */

typedef struct timers_s {
    pl_timer_t t[PL_TIMERS_MAX];
    int n;
} timers_t;

static timers_t timers(const pl_rules_t *r, const pl_deal_state_t *st)
{
    timers_t ts;

    memset(&ts, 0, sizeof(ts));
    ts.n = pl_rules_deal_timers(r, st, ts.t);
    assert_in_range(ts.n, 0, PL_TIMERS_MAX);
    for (int i = 1; i < ts.n; i++)
        if (strcmp(ts.t[i - 1].name, ts.t[i].name) >= 0)
            fail_msg("timers not sorted: %s before %s", ts.t[i - 1].name,
                     ts.t[i].name);
    return ts;
}

/* The due time of timer `name`, or -1 when the deal has no such timer. */
static int64_t due_of(const timers_t *ts, const char *name)
{
    for (int i = 0; i < ts->n; i++)
        if (!strcmp(ts->t[i].name, name))
            return ts->t[i].due;
    return -1;
}

/* The names, comma-separated, for comparing whole sets. */
static const char *names_of(const timers_t *ts)
{
    static char buf[PL_TIMERS_MAX * PL_TIMER_NAME_MAX];
    size_t used = 0;

    buf[0] = '\0';
    for (int i = 0; i < ts->n; i++)
        used += (size_t)snprintf(buf + used, sizeof(buf) - used, "%s%s",
                                 i ? "," : "", ts->t[i].name);
    return buf;
}

/* The alert for (name, due) must be built and pass the codec's checks. */
static void alert_ok(const pl_rules_t *r, const pl_deal_state_t *st,
                     const char *name, int64_t due, int64_t now,
                     pl_event_t *ev)
{
    char err[256] = "";

    pl_event_init(ev);
    assert_int_equal(pl_rules_deal_alert(r, st, name, due, now, ev), 0);
    if (pl_codec_validate(ev, err, sizeof(err)) < 0)
        fail_msg("%s alert does not validate: %s", name, err);
    assert_int_equal(ev->occurred_at, due);
    assert_string_equal(ev->deal_id, st->deal_id);
    assert_string_equal(ev->stage, st->stage);
}

/* The timer (name, due) must not fire: returns 1, alert left empty. */
static void alert_gone(const pl_rules_t *r, const pl_deal_state_t *st,
                       const char *name, int64_t due)
{
    pl_event_t ev;

    pl_event_init(&ev);
    assert_int_equal(pl_rules_deal_alert(r, st, name, due, due + SEC, &ev),
                     1);
    assert_null(ev.event_id);
    assert_int_equal(ev.type, PL_EV_UNKNOWN);
    pl_event_clear(&ev);
}

/* ---------------------------------------------------------------------- */
/* The default rules                                                      */

static void test_default_settings(void **state)
{
    const pl_rules_t *r = *state;

    assert_int_equal(pl_rules_closing_soon_count(r), 2);
    assert_int_equal(pl_rules_closing_soon_ms(r, 0), 7 * DAY);
    assert_int_equal(pl_rules_closing_soon_ms(r, 1), 1 * DAY);
    assert_int_equal(pl_rules_closing_soon_ms(r, 2), -1);
    assert_int_equal(pl_rules_overdue_after_ms(r), 0);
    assert_int_equal(pl_rules_stale_repeat_ms(r), 0);
}

/* Stale at last_event_at + the stage's stale_after; a stage change
 * re-arms it with the new stage's threshold. */
static void test_stale_rearmed_by_stage_change(void **state)
{
    const pl_rules_t *r = *state;
    pl_deal_state_t st;
    timers_t ts;

    pl_deal_state_init(&st);
    create(r, &st, T0, NULL, NULL);
    ts = timers(r, &st);
    assert_string_equal(names_of(&ts), "stale");
    assert_int_equal(due_of(&ts, "stale"), T0 + 7 * DAY);

    request(r, &st, T0 + 2 * DAY, "scoping");
    ts = timers(r, &st);
    assert_string_equal(names_of(&ts), "stale");
    assert_int_equal(due_of(&ts, "stale"), T0 + 2 * DAY + 10 * DAY);
    alert_gone(r, &st, "stale", T0 + 7 * DAY);

    request(r, &st, T0 + 3 * DAY, "proposal");
    ts = timers(r, &st);
    assert_int_equal(due_of(&ts, "stale"), T0 + 3 * DAY + 14 * DAY);
    pl_deal_state_clear(&st);
}

/* Activity (a later last_event_at) postpones stale; the old due no longer
 * fires, the new one does. */
static void test_activity_postpones_stale(void **state)
{
    const pl_rules_t *r = *state;
    pl_deal_state_t st;
    pl_event_t ev;
    timers_t ts;

    pl_deal_state_init(&st);
    create(r, &st, T0, NULL, NULL);
    activity(r, &st, T0 + 5 * DAY, "call");
    ts = timers(r, &st);
    assert_int_equal(due_of(&ts, "stale"), T0 + 12 * DAY);
    alert_gone(r, &st, "stale", T0 + 7 * DAY);

    alert_ok(r, &st, "stale", T0 + 12 * DAY, T0 + 12 * DAY + 1500, &ev);
    assert_int_equal(ev.type, PL_EV_DEAL_STALE);
    assert_int_equal(ev.idle_since, T0 + 5 * DAY);
    assert_int_equal(ev.idle_seconds, 7 * 86400 + 1);
    assert_int_equal(ev.threshold_seconds, 7 * 86400);
    assert_string_equal(ev.owner, "ann");
    assert_string_equal(ev.currency, "USD");
    assert_int_equal(ev.amount, 1000 * PL_AMOUNT_SCALE);
    assert_true(ev.present & PL_F_AMOUNT);
    pl_event_clear(&ev);
    pl_deal_state_clear(&st);
}

/* closing_soon 7d and 1d before the date (00:00 UTC), overdue the day
 * after; a new date moves them and the old ones do not fire. */
static void test_close_date_reminders(void **state)
{
    const pl_rules_t *r = *state;
    int64_t day = (int64_t)date_of("2023-12-20") * DAY;
    pl_deal_state_t st;
    pl_event_t ev;
    timers_t ts;
    char json_date[64];

    assert_int_equal(day, 1703030400000LL); /* 2023-12-20T00:00:00Z */
    pl_deal_state_init(&st);
    create(r, &st, T0, "negotiation", "2023-12-20");
    ts = timers(r, &st);
    assert_string_equal(names_of(&ts),
                        "closing_soon@1d,closing_soon@7d,overdue,stale");
    assert_int_equal(due_of(&ts, "closing_soon@7d"), day - 7 * DAY);
    assert_int_equal(due_of(&ts, "closing_soon@1d"), day - 1 * DAY);
    assert_int_equal(due_of(&ts, "overdue"), day + DAY);
    assert_int_equal(due_of(&ts, "stale"), T0 + 10 * DAY);

    alert_ok(r, &st, "closing_soon@7d", day - 7 * DAY, day - 7 * DAY, &ev);
    assert_int_equal(ev.type, PL_EV_DEAL_CLOSE_REMINDER);
    assert_string_equal(ev.kind, "closing_soon");
    assert_int_equal(ev.due_at, day - 7 * DAY);
    assert_true(ev.present & PL_F_EXPECTED_CLOSE_DATE);
    assert_int_equal(ev.expected_close_date, date_of("2023-12-20"));
    assert_string_equal(ev.stage, "negotiation");
    {
        char *json = pl_codec_to_json(NULL, &ev);
        assert_non_null(json);
        assert_non_null(strstr(json, "\"type\":\"deal.close_reminder\""));
        assert_non_null(strstr(json, "\"kind\":\"closing_soon\""));
        snprintf(json_date, sizeof(json_date),
                 "\"expected_close_date\":\"2023-12-20\"");
        assert_non_null(strstr(json, json_date));
        assert_non_null(strstr(json, "\"due_at\":\"2023-12-13T00:00:00"));
        free(json);
    }
    pl_event_clear(&ev);

    alert_ok(r, &st, "overdue", day + DAY, day + DAY + 5, &ev);
    assert_string_equal(ev.kind, "overdue");
    pl_event_clear(&ev);

    move_date(r, &st, T0 + HOUR, "2024-01-10");
    ts = timers(r, &st);
    day = (int64_t)date_of("2024-01-10") * DAY;
    assert_int_equal(due_of(&ts, "closing_soon@7d"), day - 7 * DAY);
    assert_int_equal(due_of(&ts, "overdue"), day + DAY);
    alert_gone(r, &st, "closing_soon@7d",
               (int64_t)date_of("2023-12-20") * DAY - 7 * DAY);
    alert_gone(r, &st, "overdue", (int64_t)date_of("2023-12-21") * DAY);
    pl_deal_state_clear(&st);
}

/* Close reminders already due when the deal is written: only the latest
 * of them is kept (no burst of stale "closing in 7 days" next to "closing in
 * 1 day" or "overdue"); reminders still ahead are all kept. */
static void test_past_reminders_superseded(void **state)
{
    const pl_rules_t *r = *state;
    int64_t day = (int64_t)date_of("2023-12-20") * DAY;
    pl_deal_state_t st;
    timers_t ts;

    pl_deal_state_init(&st);
    /* written 3 days before the close date: 7d is past, 1d ahead */
    create(r, &st, day - 3 * DAY, "negotiation", "2023-12-20");
    ts = timers(r, &st);
    assert_string_equal(names_of(&ts),
                        "closing_soon@1d,closing_soon@7d,overdue,stale");
    pl_deal_state_clear(&st);

    /* written 12 hours before: 7d and 1d both past, only 1d stays */
    pl_deal_state_init(&st);
    create(r, &st, day - 12 * HOUR, "negotiation", "2023-12-20");
    ts = timers(r, &st);
    assert_string_equal(names_of(&ts), "closing_soon@1d,overdue,stale");
    assert_int_equal(due_of(&ts, "closing_soon@1d"), day - DAY);
    alert_gone(r, &st, "closing_soon@7d", day - 7 * DAY);
    pl_deal_state_clear(&st);

    /* written after the close date has passed: only overdue */
    pl_deal_state_init(&st);
    create(r, &st, day + 2 * DAY, "negotiation", "2023-12-20");
    ts = timers(r, &st);
    assert_string_equal(names_of(&ts), "overdue,stale");
    pl_deal_state_clear(&st);
}

/* contract_not_sent 24h after entering closing; gone once contract_sent is
 * seen; gone when the deal leaves closing; re-armed on coming back. */
static void test_contract_not_sent(void **state)
{
    const pl_rules_t *r = *state;
    pl_deal_state_t st;
    pl_event_t ev;
    timers_t ts;

    pl_deal_state_init(&st);
    create(r, &st, T0, "negotiation", "2023-12-20");
    ts = timers(r, &st);
    assert_int_equal(due_of(&ts, "contract_not_sent"), -1);

    request(r, &st, T0 + DAY, "closing");
    ts = timers(r, &st);
    assert_string_equal(
        names_of(&ts),
        "closing_soon@1d,closing_soon@7d,contract_not_sent,overdue,stale");
    assert_int_equal(due_of(&ts, "contract_not_sent"), T0 + DAY + 24 * HOUR);
    assert_int_equal(due_of(&ts, "stale"), T0 + DAY + 1 * DAY);
    alert_ok(r, &st, "contract_not_sent", T0 + 2 * DAY, T0 + 2 * DAY, &ev);
    assert_string_equal(ev.kind, "contract_not_sent");
    assert_string_equal(ev.stage, "closing");
    pl_event_clear(&ev);

    /* another activity postpones nothing but stale */
    activity(r, &st, T0 + DAY + HOUR, "call");
    ts = timers(r, &st);
    assert_int_equal(due_of(&ts, "contract_not_sent"), T0 + 2 * DAY);

    /* leaving closing cancels it, coming back re-arms it */
    request(r, &st, T0 + DAY + 2 * HOUR, "negotiation");
    ts = timers(r, &st);
    assert_int_equal(due_of(&ts, "contract_not_sent"), -1);
    alert_gone(r, &st, "contract_not_sent", T0 + 2 * DAY);
    request(r, &st, T0 + DAY + 3 * HOUR, "closing");
    ts = timers(r, &st);
    assert_int_equal(due_of(&ts, "contract_not_sent"),
                     T0 + DAY + 3 * HOUR + 24 * HOUR);
    alert_gone(r, &st, "contract_not_sent", T0 + 2 * DAY);

    /* the contract is sent: gone for good */
    activity(r, &st, T0 + DAY + 4 * HOUR, "contract_sent");
    ts = timers(r, &st);
    assert_int_equal(due_of(&ts, "contract_not_sent"), -1);
    assert_string_equal(names_of(&ts),
                        "closing_soon@1d,closing_soon@7d,overdue,stale");
    alert_gone(r, &st, "contract_not_sent", T0 + DAY + 27 * HOUR);
    pl_deal_state_clear(&st);
}

/* won and lost deals have no timers, and none of their old timers fire;
 * neither does anything for a deal that does not exist. */
static void test_closed_deals_have_none(void **state)
{
    const pl_rules_t *r = *state;
    pl_deal_state_t st, none;
    pl_timer_t t[PL_TIMERS_MAX];
    timers_t ts;

    pl_deal_state_init(&st);
    create(r, &st, T0, "closing", "2023-12-20");
    ts = timers(r, &st);
    assert_int_equal(ts.n, 5);
    activity(r, &st, T0 + HOUR, "contract_signed");
    request(r, &st, T0 + 2 * HOUR, "won");
    ts = timers(r, &st);
    assert_int_equal(ts.n, 0);
    alert_gone(r, &st, "stale", T0 + HOUR + DAY);
    alert_gone(r, &st, "overdue", (int64_t)date_of("2023-12-21") * DAY);
    pl_deal_state_clear(&st);

    create(r, &st, T0, "closing", "2023-12-20");
    request(r, &st, T0 + HOUR, "lost");
    ts = timers(r, &st);
    assert_int_equal(ts.n, 0);
    alert_gone(r, &st, "contract_not_sent", T0 + DAY);
    alert_gone(r, &st, "closing_soon@1d",
               (int64_t)date_of("2023-12-19") * DAY);
    /* reopened: timers again */
    request(r, &st, T0 + 2 * HOUR, "qualification");
    ts = timers(r, &st);
    assert_string_equal(names_of(&ts),
                        "closing_soon@1d,closing_soon@7d,overdue,stale");
    pl_deal_state_clear(&st);

    pl_deal_state_init(&none);
    assert_int_equal(pl_rules_deal_timers(r, &none, t), 0);
    assert_int_equal(pl_rules_deal_timers(r, NULL, t), 0);
    assert_int_equal(pl_rules_deal_timers(NULL, &none, t), 0);
    alert_gone(r, &none, "stale", T0);
    alert_gone(r, NULL, "overdue", T0);
}

/* Alert ids: deterministic per deal, timer and due; distinct otherwise. */
static void test_alert_ids(void **state)
{
    const pl_rules_t *r = *state;
    int64_t day = (int64_t)date_of("2023-12-20") * DAY;
    char expected[PL_EVENT_ID_MAX + 1], cause[128];
    pl_deal_state_t st, other;
    pl_event_t a, b, c, d;

    pl_deal_state_init(&st);
    pl_deal_state_init(&other);
    create(r, &st, T0, "closing", "2023-12-20");
    assert_int_equal(pl_deal_state_copy(&other, &st), 0);
    assert_int_equal(pl_str_set(&other.deal_id, "D2"), 0);

    alert_ok(r, &st, "closing_soon@7d", day - 7 * DAY, day, &a);
    alert_ok(r, &st, "closing_soon@7d", day - 7 * DAY, day + HOUR, &b);
    assert_string_equal(a.event_id, b.event_id); /* a redelivery */
    snprintf(cause, sizeof(cause), "D1|closing_soon@7d|%lld",
             (long long)(day - 7 * DAY));
    pl_event_derive_id(PL_EV_DEAL_CLOSE_REMINDER, cause, expected);
    assert_string_equal(a.event_id, expected);
    assert_true(!strncmp(a.event_id, "deal.close_reminder:", 20));

    alert_ok(r, &st, "closing_soon@1d", day - 1 * DAY, day, &c);
    alert_ok(r, &other, "closing_soon@7d", day - 7 * DAY, day, &d);
    assert_string_not_equal(a.event_id, c.event_id);
    assert_string_not_equal(a.event_id, d.event_id);
    pl_event_clear(&b);
    pl_event_clear(&c);
    pl_event_clear(&d);

    /* the same timer at another due (after activity) has another id */
    alert_ok(r, &st, "stale", T0 + DAY, T0 + DAY, &b);
    assert_true(!strncmp(b.event_id, "deal.stale:", 11));
    activity(r, &st, T0 + HOUR, "email");
    alert_ok(r, &st, "stale", T0 + HOUR + DAY, T0 + HOUR + DAY, &c);
    assert_string_not_equal(b.event_id, c.event_id);
    assert_string_not_equal(a.event_id, b.event_id);

    /* a reused alert struct is emptied first */
    assert_int_equal(pl_rules_deal_alert(r, &st, "stale", T0 + HOUR + DAY,
                                         T0 + 2 * DAY, &c),
                     0);
    assert_int_equal(pl_rules_deal_alert(r, &st, "stale", T0 + DAY,
                                         T0 + 2 * DAY, &c),
                     1);
    assert_null(c.event_id);

    pl_event_clear(&a);
    pl_event_clear(&b);
    pl_event_clear(&c);
    pl_deal_state_clear(&st);
    pl_deal_state_clear(&other);
}

/* Every kind of alert, with and without the optional fields, passes the
 * codec; idle_seconds is never negative. */
static void test_alerts_validate(void **state)
{
    const pl_rules_t *r = *state;
    pl_deal_state_t st;
    pl_timer_t t[PL_TIMERS_MAX];
    pl_event_t ev;
    char err[256];
    int n;

    pl_deal_state_init(&st);
    create(r, &st, T0, "closing", "2023-12-20");
    n = pl_rules_deal_timers(r, &st, t);
    assert_int_equal(n, 5);
    for (int i = 0; i < n; i++) {
        alert_ok(r, &st, t[i].name, t[i].due, t[i].due, &ev);
        assert_int_equal(ev.type, !strcmp(t[i].name, "stale")
                                      ? PL_EV_DEAL_STALE
                                      : PL_EV_DEAL_CLOSE_REMINDER);
        assert_string_equal(pl_timer_kind(t[i].name),
                            ev.kind ? ev.kind : "stale");
        pl_event_clear(&ev);
    }

    /* no owner, amount or currency: still valid, fields absent */
    free(st.owner);
    st.owner = NULL;
    free(st.currency);
    st.currency = NULL;
    st.has_amount = false;
    st.amount = 0;
    alert_ok(r, &st, "stale", T0 + DAY, T0 - 5 * SEC, &ev);
    assert_null(ev.owner);
    assert_null(ev.currency);
    assert_false(ev.present & PL_F_AMOUNT);
    assert_int_equal(ev.idle_seconds, 0); /* a clock behind the events */
    pl_event_clear(&ev);

    /* an amount without a currency: USD, as the codec defaults it */
    st.has_amount = true;
    st.amount = 5 * PL_AMOUNT_SCALE;
    alert_ok(r, &st, "contract_not_sent", T0 + DAY, T0 + DAY, &ev);
    assert_string_equal(ev.currency, "USD");
    assert_int_equal(pl_codec_validate(&ev, err, sizeof(err)), 0);
    pl_event_clear(&ev);
    pl_deal_state_clear(&st);

    /* a deal in negotiation without a close date */
    create(r, &st, T0, "scoping", NULL);
    n = pl_rules_deal_timers(r, &st, t);
    assert_int_equal(n, 1);
    pl_deal_state_clear(&st);
}

static void test_timer_names(void **state)
{
    const pl_rules_t *r = *state;
    pl_deal_state_t st;
    pl_event_t ev;

    assert_string_equal(pl_timer_kind("closing_soon@7d"), "closing_soon");
    assert_string_equal(pl_timer_kind("closing_soon@1d12h"), "closing_soon");
    assert_string_equal(pl_timer_kind("overdue"), "overdue");
    assert_string_equal(pl_timer_kind("contract_not_sent"),
                        "contract_not_sent");
    assert_string_equal(pl_timer_kind("stale"), "stale");
    assert_null(pl_timer_kind("closing_soon@"));
    assert_null(pl_timer_kind("closing_soon@soon"));
    assert_null(pl_timer_kind("closing_soon"));
    assert_null(pl_timer_kind("stale2"));
    assert_null(pl_timer_kind(""));
    assert_null(pl_timer_kind(NULL));

    pl_deal_state_init(&st);
    pl_event_init(&ev);
    create(r, &st, T0, "closing", "2023-12-20");
    /* unknown names are errors; a known kind the rules do not have (any
     * more) just does not fire */
    assert_int_equal(pl_rules_deal_alert(r, &st, "nope", T0, T0, &ev), -1);
    assert_int_equal(
        pl_rules_deal_alert(r, &st, "closing_soon@x", T0, T0, &ev), -1);
    assert_int_equal(pl_rules_deal_alert(NULL, &st, "stale", T0, T0, &ev),
                     -1);
    assert_int_equal(pl_rules_deal_alert(r, &st, NULL, T0, T0, &ev), -1);
    assert_int_equal(pl_rules_deal_alert(r, &st, "stale", T0, T0, NULL), -1);
    alert_gone(r, &st, "closing_soon@3d",
               (int64_t)date_of("2023-12-17") * DAY);
    assert_null(ev.event_id);
    /* no repeat in the default rules */
    {
        int64_t next = 42;
        assert_false(pl_rules_timer_next(r, &st, "stale", T0 + DAY, T0 + DAY,
                                         &next));
        assert_int_equal(next, 42);
    }
    pl_deal_state_clear(&st);
}

/* The section can be cut off before `lead:` (tests do) and still holds
 * the alerts: lead stays the last section. */
static void test_lead_is_last(void **state)
{
    char path[4096], err[512] = "";
    char *text, *lead, *alerts;
    size_t len;
    FILE *f;
    pl_rules_t *r;

    (void)state;
    source_path(path, sizeof(path), "deploy/rules/default.yaml");
    assert_non_null(f = fopen(path, "rb"));
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    len = (size_t)ftell(f);
    rewind(f);
    assert_non_null(text = calloc(1, len + 1));
    assert_int_equal(fread(text, 1, len, f), len);
    fclose(f);
    assert_non_null(lead = strstr(text, "\nlead:"));
    assert_non_null(alerts = strstr(text, "\nalerts:"));
    assert_true(alerts < lead);
    for (const char *p = lead + 1; (p = strchr(p, '\n')); p++)
        if (p[1] && p[1] != ' ' && p[1] != '#' && p[1] != '\n')
            fail_msg("a top-level key after lead: '%.20s'", p + 1);
    r = pl_rules_parse(text, (size_t)(lead - text), "cut.yaml", err,
                       sizeof(err));
    if (!r)
        fail_msg("default.yaml without lead: %s", err);
    assert_false(pl_rules_has_lead(r));
    assert_int_equal(pl_rules_closing_soon_count(r), 2);
    pl_rules_destroy(r);
    free(text);
}

/* ---------------------------------------------------------------------- */
/* Seconds-scale rules                                                    */

#define SECONDS_DEAL                                                         \
    "deal:\n"                                                                \
    "  stages:\n"                                                            \
    "    - {name: open, probability: 0.1, stale_after: 5s}\n"                \
    "    - {name: waiting, probability: 0.5}\n"                              \
    "    - {name: closing, probability: 0.8, stale_after: 3s}\n"             \
    "    - {name: done, probability: 1}\n"                                   \
    "    - {name: gone, probability: 0, closed: true}\n"                     \
    "  transitions:\n"                                                       \
    "    - {from: open, to: [waiting, closing, gone]}\n"                     \
    "    - {from: waiting, to: [closing, done, gone]}\n"                     \
    "    - {from: closing, to: [done, gone]}\n"                              \
    "    - {from: gone, to: open}\n"

static void test_seconds_rules(void **state)
{
    static const char text[] =
        SECONDS_DEAL
        "alerts:\n"
        "  closing_soon: [90s, 36h, 0s]\n"
        "  overdue_after: 30s\n"
        "  contract_not_sent: {stage: waiting, after: 10s, unless: demo}\n"
        "  stale_repeat: 2s\n";
    pl_rules_t *r = parse_inline(text);
    int64_t day = (int64_t)date_of("2023-12-20") * DAY, next = 0;
    pl_deal_state_t st;
    pl_event_t ev;
    timers_t ts;

    (void)state;
    pl_deal_state_init(&st);
    create(r, &st, T0, NULL, "2023-12-20");
    ts = timers(r, &st);
    assert_string_equal(names_of(&ts),
                        "closing_soon@0s,closing_soon@1d12h,"
                        "closing_soon@1m30s,overdue,stale");
    assert_int_equal(due_of(&ts, "closing_soon@1m30s"), day - 90 * SEC);
    assert_int_equal(due_of(&ts, "closing_soon@1d12h"), day - 36 * HOUR);
    assert_int_equal(due_of(&ts, "closing_soon@0s"), day);
    assert_int_equal(due_of(&ts, "overdue"), day + DAY + 30 * SEC);
    assert_int_equal(due_of(&ts, "stale"), T0 + 5 * SEC);

    /* stale repeats every 2s while the deal stays idle */
    alert_ok(r, &st, "stale", T0 + 5 * SEC, T0 + 5 * SEC, &ev);
    pl_event_clear(&ev);
    assert_true(pl_rules_timer_next(r, &st, "stale", T0 + 5 * SEC,
                                    T0 + 5 * SEC + 100, &next));
    assert_int_equal(next, T0 + 7 * SEC);
    alert_ok(r, &st, "stale", next, next + 10, &ev);
    assert_int_equal(ev.idle_seconds, 7);
    pl_event_clear(&ev);
    /* a worker that was away skips the missed repeats */
    assert_true(pl_rules_timer_next(r, &st, "stale", T0 + 7 * SEC,
                                    T0 + 20 * SEC, &next));
    assert_int_equal(next, T0 + 21 * SEC);
    alert_gone(r, &st, "stale", T0 + 6 * SEC); /* not on the grid */
    alert_gone(r, &st, "stale", T0 + 3 * SEC); /* before the threshold */
    assert_false(pl_rules_timer_next(r, &st, "overdue", day + DAY,
                                     day + DAY, &next));

    /* `waiting` has no stale_after: no stale; contract_not_sent 10s after
     * entering it unless a demo */
    request(r, &st, T0 + 6 * SEC, "waiting");
    ts = timers(r, &st);
    assert_int_equal(due_of(&ts, "stale"), -1);
    assert_int_equal(due_of(&ts, "contract_not_sent"), T0 + 16 * SEC);
    alert_gone(r, &st, "stale", T0 + 7 * SEC);
    assert_false(pl_rules_timer_next(r, &st, "stale", T0 + 7 * SEC,
                                     T0 + 7 * SEC, &next));
    activity(r, &st, T0 + 7 * SEC, "contract_sent");
    ts = timers(r, &st);
    assert_int_equal(due_of(&ts, "contract_not_sent"), T0 + 16 * SEC);
    activity(r, &st, T0 + 8 * SEC, "demo");
    ts = timers(r, &st);
    assert_int_equal(due_of(&ts, "contract_not_sent"), -1);

    /* the terminal stage has no stale_after and no timers */
    request(r, &st, T0 + 9 * SEC, "done");
    ts = timers(r, &st);
    assert_int_equal(ts.n, 0);
    pl_deal_state_clear(&st);
    pl_rules_destroy(r);
}

/* Defaults and switches: no section, `alerts:` alone, empty values. */
static void test_alerts_defaults_and_off(void **state)
{
    static const char no_section[] = SECONDS_DEAL;
    static const char empty_section[] = SECONDS_DEAL "alerts:\n";
    static const char all_off[] = SECONDS_DEAL
        "alerts:\n"
        "  closing_soon: []\n"
        "  overdue_after:\n"
        "  contract_not_sent:\n";
    static const char no_closing[] =
        "deal:\n"
        "  stages:\n"
        "    - {name: open, probability: 0.1}\n"
        "    - {name: done, probability: 1}\n"
        "  transitions:\n"
        "    - {from: open, to: done}\n";
    const char *with_defaults[] = {no_section, empty_section};
    pl_deal_state_t st;
    pl_rules_t *r;
    timers_t ts;

    (void)state;
    pl_deal_state_init(&st);
    for (size_t i = 0; i < 2; i++) {
        r = parse_inline(with_defaults[i]);
        assert_int_equal(pl_rules_closing_soon_count(r), 2);
        assert_int_equal(pl_rules_overdue_after_ms(r), 0);
        create(r, &st, T0, "closing", "2023-12-20");
        ts = timers(r, &st);
        assert_string_equal(names_of(&ts),
                            "closing_soon@1d,closing_soon@7d,"
                            "contract_not_sent,overdue,stale");
        assert_int_equal(due_of(&ts, "contract_not_sent"), T0 + DAY);
        pl_deal_state_clear(&st);
        pl_rules_destroy(r);
    }

    r = parse_inline(all_off);
    assert_int_equal(pl_rules_closing_soon_count(r), 0);
    assert_int_equal(pl_rules_overdue_after_ms(r), -1);
    create(r, &st, T0, "closing", "2023-12-20");
    ts = timers(r, &st);
    assert_string_equal(names_of(&ts), "stale");
    alert_gone(r, &st, "overdue", (int64_t)date_of("2023-12-21") * DAY);
    pl_deal_state_clear(&st);
    pl_rules_destroy(r);

    /* no stage called closing: the default contract_not_sent is off */
    r = parse_inline(no_closing);
    create(r, &st, T0, NULL, "2023-12-20");
    ts = timers(r, &st);
    assert_string_equal(names_of(&ts),
                        "closing_soon@1d,closing_soon@7d,overdue");
    pl_deal_state_clear(&st);
    pl_rules_destroy(r);
}

/* Each broken alerts file fails with its line and the words a user
 * needs. */
static void test_bad_alert_files(void **state)
{
    static const struct {
        const char *file;
        int line;
        const char *words[3];
    } cases[] = {
        {"alerts_unknown_key.yaml", 12,
         {"unknown key 'overdue_afte'", "in alerts", "overdue_after"}},
        {"alerts_bad_duration.yaml", 13,
         {"bad duration '1x'", "alerts.closing_soon"}},
        {"alerts_duplicate_offset.yaml", 11,
         {"'24h' is listed twice", "'1d' on line 11"}},
        {"alerts_bad_overdue.yaml", 12,
         {"bad duration '5'", "alerts.overdue_after"}},
        {"alerts_bad_repeat.yaml", 11,
         {"bad duration 'often'", "alerts.stale_repeat"}},
        {"alerts_unknown_stage.yaml", 13, {"unknown stage 'closng'"}},
        {"alerts_closed_stage.yaml", 12, {"closed stage 'won'"}},
        {"alerts_unknown_activity.yaml", 14,
         {"unknown activity 'contract_snt'", "contract_sent"}},
        {"alerts_unknown_key_cns.yaml", 13,
         {"unknown key 'aftre'", "alerts.contract_not_sent"}},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_bad_rules_file(cases[i].file, cases[i].line, cases[i].words);
}

/* Inline mistakes that need no fixture file. */
static void test_bad_alert_text(void **state)
{
    static const struct {
        const char *alerts;
        const char *words;
    } cases[] = {
        {"alerts: [7d]\n", "expected a mapping in alerts"},
        {"alerts:\n  closing_soon: {a: 1}\n", "alerts.closing_soon"},
        {"alerts:\n  closing_soon: [36501d]\n", "more than 36500d"},
        {"alerts:\n  closing_soon: [1s,2s,3s,4s,5s,6s,7s,8s,9s,10s,11s,12s,"
         "13s,14s]\n",
         "more than 13 offsets"},
        {"alerts:\n  contract_not_sent: {stage: gone}\n",
         "closed stage 'gone'"},
        {"alerts:\n  contract_not_sent: {after: -1s}\n", "bad duration"},
        {"alerts:\n  stale_repeat:\n", "bad duration ''"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char text[2048], err[512] = "";
        pl_rules_t *r;

        snprintf(text, sizeof(text), "%s%s", SECONDS_DEAL, cases[i].alerts);
        r = pl_rules_parse(text, strlen(text), "inline.yaml", err,
                           sizeof(err));
        if (r) {
            pl_rules_destroy(r);
            fail_msg("case %zu loaded without error", i);
        }
        if (strncmp(err, "inline.yaml:1", 13) || !strstr(err, cases[i].words))
            fail_msg("case %zu: '%s' not in '%s'", i, cases[i].words, err);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_default_settings, setup_default,
                                        teardown_rules),
        cmocka_unit_test_setup_teardown(test_stale_rearmed_by_stage_change,
                                        setup_default, teardown_rules),
        cmocka_unit_test_setup_teardown(test_activity_postpones_stale,
                                        setup_default, teardown_rules),
        cmocka_unit_test_setup_teardown(test_close_date_reminders,
                                        setup_default, teardown_rules),
        cmocka_unit_test_setup_teardown(test_past_reminders_superseded,
                                        setup_default, teardown_rules),
        cmocka_unit_test_setup_teardown(test_contract_not_sent,
                                        setup_default, teardown_rules),
        cmocka_unit_test_setup_teardown(test_closed_deals_have_none,
                                        setup_default, teardown_rules),
        cmocka_unit_test_setup_teardown(test_alert_ids, setup_default,
                                        teardown_rules),
        cmocka_unit_test_setup_teardown(test_alerts_validate, setup_default,
                                        teardown_rules),
        cmocka_unit_test_setup_teardown(test_timer_names, setup_default,
                                        teardown_rules),
        cmocka_unit_test(test_lead_is_last),
        cmocka_unit_test(test_seconds_rules),
        cmocka_unit_test(test_alerts_defaults_and_off),
        cmocka_unit_test(test_bad_alert_files),
        cmocka_unit_test(test_bad_alert_text),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
