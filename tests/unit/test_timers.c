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
 *
 * The second group is the timers' and the apply script's side in Redis
 * (common/store.c): claims that take their time from Redis, leases that are
 * extended or lost, per-key errors that fail one op and write nothing, the
 * bounds on :history and :applied, and refused credentials.  It needs a
 * real Redis, so it runs only when PL_TEST_REDIS names one (host:port);
 * tests/integration/test_store_errors.py runs it so, against the local
 * stack (and PL_TEST_REDIS_ACL: a private Redis with ACL users).  Its keys
 * carry a prefix of their own, deleted afterwards.
 */
#include "codec.h"
#include "slots.h"
#include "store.h"
#include "testutil.h"

#include <hiredis/hiredis.h>
#include <openssl/sha.h>
#include <time.h>
#include <unistd.h>

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
    assert_int_equal(pl_deal_state_take(st, &next), 0);
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
/* CRC16-XMODEM bit by bit, as Redis's crc16.c defines it: the reference
 * the table-driven pl_slot_of must agree with. */
static uint16_t crc16_bitwise(const char *buf, size_t len)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)((unsigned char)buf[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = crc & 0x8000 ? (uint16_t)((crc << 1) ^ 0x1021)
                               : (uint16_t)(crc << 1);
    }
    return crc;
}

static void test_slot_of(void **state)
{
    char key[64];
    unsigned x = 12345;
    (void)state;
    /* the check value of CRC16-XMODEM, and CLUSTER KEYSLOT's answers */
    assert_int_equal(pl_slot_of("123456789", 9), 0x31C3 % PL_SLOTS);
    assert_int_equal(pl_slot_of("foo", 3), 12182);
    assert_int_equal(pl_slot_of("{foo}:x", 7), 12182);
    assert_int_equal(pl_slot_of("{}foo", 5),
                     crc16_bitwise("{}foo", 5) % PL_SLOTS);
    for (int i = 0; i < 2000; i++) { /* any bytes, any length */
        size_t len = (size_t)(i % 60);
        for (size_t j = 0; j < len; j++) {
            x = x * 1103515245u + 12345u;
            key[j] = (char)(x >> 16 & 0xff);
            if (key[j] == '{' || key[j] == '}')
                key[j] = 'a';
        }
        assert_int_equal(pl_slot_of(key, len),
                         crc16_bitwise(key, len) % PL_SLOTS);
    }
    /* every slot's tag hashes to its slot */
    for (int slot = 0; slot < PL_SLOTS; slot++) {
        const char *t = pl_slot_tag(slot);
        assert_int_equal(pl_slot_of(t, strlen(t)), slot);
    }
}

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
    /* CONTRACT: "<type>:" + the first 32 hex digits of SHA-256 over
     * "<type>\n<deal_id>\n<timer>\n<due ms>" */
    snprintf(cause, sizeof(cause),
             "deal.close_reminder\nD1\nclosing_soon@7d\n%lld",
             (long long)(day - 7 * DAY));
    {
        unsigned char md[SHA256_DIGEST_LENGTH];
        size_t n = (size_t)snprintf(expected, sizeof(expected),
                                    "deal.close_reminder:");
        SHA256((const unsigned char *)cause, strlen(cause), md);
        for (size_t i = 0; i < 16; i++)
            n += (size_t)snprintf(expected + n, sizeof(expected) - n, "%02x",
                                  md[i]);
    }
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

/* ---------------------------------------------------------------------- */
/* Error classes (no Redis needed)                                        */

static void test_error_classes(void **state)
{
    static const struct {
        const char *text;
        pl_redis_class_t want;
    } cases[] = {
        {"LOADING Redis is loading the dataset in memory", PL_REDIS_RETRIABLE},
        {"BUSY Redis is busy running a script.", PL_REDIS_RETRIABLE},
        {"MASTERDOWN Link with MASTER is down", PL_REDIS_RETRIABLE},
        {"TRYAGAIN Multiple keys request during rehashing", PL_REDIS_RETRIABLE},
        {"CLUSTERDOWN The cluster is down", PL_REDIS_RETRIABLE},
        {"READONLY You can't write against a read only replica.",
         PL_REDIS_RETRIABLE},
        {"OOM command not allowed when used memory > 'maxmemory'.",
         PL_REDIS_RETRIABLE},
        {"NOREPLICAS Not enough good replicas to write.", PL_REDIS_RETRIABLE},
        {"NOSCRIPT No matching script. Please use EVAL.", PL_REDIS_RETRIABLE},
        {"ERR Error running script (call to f_0123): @user_script:1: "
         "@user_script: 1: -OOM command not allowed when used memory > "
         "'maxmemory'.",
         PL_REDIS_RETRIABLE},
        {NULL, PL_REDIS_RETRIABLE},
        {"NOAUTH Authentication required.", PL_REDIS_FATAL},
        {"WRONGPASS invalid username-password pair or user is disabled.",
         PL_REDIS_FATAL},
        {"NOPERM this user has no permissions to run the 'evalsha' command",
         PL_REDIS_FATAL},
        {"WRONGTYPE Operation against a key holding the wrong kind of value",
         PL_REDIS_PER_KEY},
        {"WRONGTYPE p{deal:X}:history is a string, not a list",
         PL_REDIS_PER_KEY},
        {"ERR user_script:1: Script attempted to access nonexistent global "
         "variable 'x' script: 0123, on @user_script:1.",
         PL_REDIS_PER_KEY},
        {"ERR value is not a valid float", PL_REDIS_PER_KEY},
        /* a code is a whole word */
        {"BUSYKEY Target key name already exists.", PL_REDIS_PER_KEY},
        {"OOMPH", PL_REDIS_PER_KEY},
        {"", PL_REDIS_PER_KEY},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++)
        if (pl_store_error_class(cases[i].text) != cases[i].want)
            fail_msg("'%s': class %d, want %d",
                     cases[i].text ? cases[i].text : "(null)",
                     (int)pl_store_error_class(cases[i].text),
                     (int)cases[i].want);
}

/* ---------------------------------------------------------------------- */
/* The store against a real Redis (PL_TEST_REDIS)                         */

static char redis_host[256];
static int redis_port;
static char key_prefix[80];
static redisContext *raw; /* our own connection, to arrange and look */

static void parse_addr(const char *addr, char *host, size_t host_size,
                       int *port)
{
    const char *colon = strrchr(addr, ':');
    assert_non_null(colon);
    snprintf(host, host_size, "%.*s", (int)(colon - addr), addr);
    *port = (int)strtol(colon + 1, NULL, 10);
}

static redisReply *rcmd(const char *fmt, ...)
{
    va_list ap;
    redisReply *r;

    va_start(ap, fmt);
    r = redisvCommand(raw, fmt, ap);
    va_end(ap);
    if (!r)
        fail_msg("redis: %s", raw->errstr);
    return r;
}

static long long rint_cmd(const char *fmt, ...)
{
    va_list ap;
    redisReply *r;
    long long v;

    va_start(ap, fmt);
    r = redisvCommand(raw, fmt, ap);
    va_end(ap);
    if (!r || r->type != REDIS_REPLY_INTEGER)
        fail_msg("redis %s: not an integer reply (%s)", fmt,
                 r && r->str ? r->str : raw->errstr);
    v = r->integer;
    freeReplyObject(r);
    return v;
}

/* ZSCORE as an integer; -1 when the member is not there. */
static long long zscore(const char *shard, const char *member)
{
    redisReply *r = rcmd("ZSCORE %s %s", shard, member);
    long long v = r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10)
                                                : -1;
    freeReplyObject(r);
    return v;
}

/* Redis's clock in ms. */
static int64_t redis_now(void)
{
    redisReply *r = rcmd("TIME");
    int64_t ms;
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    ms = strtoll(r->element[0]->str, NULL, 10) * 1000 +
         strtoll(r->element[1]->str, NULL, 10) / 1000;
    freeReplyObject(r);
    return ms;
}

/* "<prefix>{deal:<id>}<suffix>" */
static void entity_key(char *buf, size_t size, const char *id,
                       const char *suffix)
{
    snprintf(buf, size, "%s{deal:%s}%s", key_prefix, id, suffix);
}

static pl_store_t *store_open(void)
{
    char err[512] = "";
    pl_store_t *s = pl_store_new(redis_host, redis_port, "", key_prefix, err,
                                 sizeof(err));
    if (!s)
        fail_msg("pl_store_new: %s", err);
    if (pl_store_connect(s, err, sizeof(err)))
        fail_msg("pl_store_connect: %s", err);
    return s;
}

static int setup_redis(void **state)
{
    const char *addr = getenv("PL_TEST_REDIS");
    struct timeval tv = {5, 0};

    (void)state;
    parse_addr(addr, redis_host, sizeof(redis_host), &redis_port);
    raw = redisConnectWithTimeout(redis_host, redis_port, tv);
    if (!raw || raw->err) {
        fprintf(stderr, "redis %s: %s\n", addr,
                raw ? raw->errstr : "no context");
        return -1;
    }
    snprintf(key_prefix, sizeof(key_prefix), "t-store-%ld-%lld:",
             (long)getpid(), (long long)time(NULL));
    return 0;
}

/* Delete our keys (only those with our prefix: other runs share Redis). */
static int teardown_redis(void **state)
{
    char cursor[32] = "0";

    (void)state;
    do {
        redisReply *r = redisCommand(raw, "SCAN %s MATCH %s* COUNT 1000",
                                     cursor, key_prefix);
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2)
            break;
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        for (size_t i = 0; i < r->element[1]->elements; i++) {
            redisReply *d = redisCommand(raw, "DEL %s",
                                         r->element[1]->element[i]->str);
            if (d)
                freeReplyObject(d);
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0"));
    redisFree(raw);
    raw = NULL;
    return 0;
}

/* A claim takes "now" from Redis (TIME in the script) and holds each due
 * timer until Redis's now + lease: the caller passes no clock, so a worker
 * whose clock is a minute behind (or ahead) claims exactly the same timers,
 * with the same lease end, as one whose clock is right. */
static void test_claim_uses_redis_time(void **state)
{
    pl_store_t *s = store_open();
    char *shard = pl_store_timer_shard(s, 7), err[512] = "";
    char due_m[64], later_m[64];
    pl_claim_t *claims = NULL, *again = NULL;
    size_t n = 0, n2 = 0;
    int64_t t = redis_now(), before, after, now = 0;

    (void)state;
    snprintf(due_m, sizeof(due_m), "stale|%lld|D-due", (long long)(t - 1000));
    snprintf(later_m, sizeof(later_m), "stale|%lld|D-later",
             (long long)(t + 60000));
    freeReplyObject(rcmd("ZADD %s %lld %s %lld %s", shard,
                         (long long)(t - 1000), due_m, (long long)(t + 60000),
                         later_m));

    before = redis_now();
    assert_int_equal(pl_store_claim_timers(s, 7, 8, 1, 5000, 100, &claims, &n,
                                           &now, err, sizeof(err)),
                     0);
    after = redis_now();
    /* only the timer due by Redis's now: not the one due in a minute */
    assert_int_equal(n, 1);
    assert_string_equal(claims[0].member, due_m);
    assert_int_equal(claims[0].slot, 7);
    assert_in_range(now, before, after);
    assert_int_equal(claims[0].lease_until, now + 5000);
    assert_int_equal(zscore(shard, due_m), claims[0].lease_until);
    assert_int_equal(zscore(shard, later_m), t + 60000);

    /* held: nobody claims it again before the lease ends */
    assert_int_equal(pl_store_claim_timers(s, 0, 16, 16, 5000, 100, &again,
                                           &n2, NULL, err, sizeof(err)),
                     0);
    assert_int_equal(n2, 0);

    pl_store_claims_free(again, n2);
    pl_store_claims_free(claims, n);
    free(shard);
    pl_store_destroy(s);
}

/* Extending a claim moves its lease end to Redis's now + lease while the
 * claim is ours; once another worker has claimed the timer (our lease ran
 * out), extending and completing report it lost and change nothing. */
static void test_extend_and_lose_claims(void **state)
{
    pl_store_t *a = store_open(), *b = store_open();
    char *shard = pl_store_timer_shard(a, 9), err[512] = "";
    char m1[64], m2[64];
    pl_claim_t *ca = NULL, *cb = NULL;
    size_t na = 0, nb = 0;
    bool held[2] = {false, false}, removed[2] = {true, true};
    int64_t t = redis_now(), first_end, before, now = 0;

    (void)state;
    snprintf(m1, sizeof(m1), "stale|%lld|D-kept", (long long)(t - 10));
    snprintf(m2, sizeof(m2), "stale|%lld|D-lost", (long long)(t - 5));
    freeReplyObject(rcmd("ZADD %s %lld %s", shard, (long long)(t - 10), m1));

    /* a claims m1 with a short lease and extends it */
    assert_int_equal(pl_store_claim_timers(a, 9, 10, 1, 300, 100, &ca, &na,
                                           &now, err, sizeof(err)),
                     0);
    assert_int_equal(na, 1);
    first_end = ca[0].lease_until;
    assert_int_equal(first_end, now + 300);
    before = redis_now();
    assert_int_equal(pl_store_extend_timers(a, ca, 1, 20000, held, err,
                                            sizeof(err)),
                     0);
    assert_true(held[0]);
    assert_in_range(ca[0].lease_until, before + 20000, redis_now() + 20000);
    assert_int_equal(zscore(shard, m1), ca[0].lease_until);
    /* past the first lease end, b still cannot claim it */
    usleep(400 * 1000);
    assert_int_equal(pl_store_claim_timers(b, 9, 10, 1, 20000, 100, &cb, &nb,
                                           NULL, err, sizeof(err)),
                     0);
    assert_int_equal(nb, 0);
    pl_store_claims_free(cb, nb);
    cb = NULL;

    /* a claims m2 with a lease that runs out; b claims it after that */
    pl_store_claims_free(ca, na);
    ca = NULL;
    freeReplyObject(rcmd("ZADD %s %lld %s", shard, (long long)(t - 5), m2));
    assert_int_equal(pl_store_claim_timers(a, 9, 10, 1, 1, 100, &ca, &na,
                                           NULL, err, sizeof(err)),
                     0);
    assert_int_equal(na, 1);
    assert_string_equal(ca[0].member, m2);
    usleep(50 * 1000);
    assert_int_equal(pl_store_claim_timers(b, 9, 10, 1, 20000, 100, &cb, &nb,
                                           NULL, err, sizeof(err)),
                     0);
    assert_int_equal(nb, 1);
    assert_string_equal(cb[0].member, m2);
    first_end = ca[0].lease_until;
    assert_int_equal(pl_store_extend_timers(a, ca, 1, 20000, held, err,
                                            sizeof(err)),
                     0);
    assert_false(held[0]);
    assert_int_equal(ca[0].lease_until, first_end); /* unchanged */
    assert_int_equal(zscore(shard, m2), cb[0].lease_until); /* b's */
    assert_int_equal(pl_store_complete_timers(a, ca, 1, removed, err,
                                              sizeof(err)),
                     0);
    assert_false(removed[0]);
    assert_int_equal(zscore(shard, m2), cb[0].lease_until);
    /* b completes it; and m1, still a's after extending, is a's to finish */
    assert_int_equal(pl_store_complete_timers(b, cb, 1, removed, err,
                                              sizeof(err)),
                     0);
    assert_true(removed[0]);
    assert_int_equal(zscore(shard, m2), -1);
    assert_int_not_equal(zscore(shard, m1), -1);

    pl_store_claims_free(ca, na);
    pl_store_claims_free(cb, nb);
    free(shard);
    pl_store_destroy(a);
    pl_store_destroy(b);
}

/* A new deal's apply op: state {rev, stage}, a history entry and a timer. */
typedef struct apply_case_s {
    pl_store_apply_t op;
    pl_fields_t set, timers;
    char rev[PL_REV_LEN + 1];
    char member[96];
} apply_case_t;

static void apply_case(apply_case_t *c, const char *id, const char *event_id,
                       const char *prev_rev, const char *score)
{
    memset(c, 0, sizeof(*c));
    pl_store_next_rev(prev_rev, event_id, c->rev);
    assert_int_equal(pl_fields_set(&c->set, "rev", c->rev), 0);
    assert_int_equal(pl_fields_set(&c->set, "stage", "qualification"), 0);
    snprintf(c->member, sizeof(c->member), "stale|%s|%s", score, id);
    assert_int_equal(pl_fields_set(&c->timers, c->member, score), 0);
    c->op.kind = "deal";
    c->op.id = id;
    c->op.event_id = event_id;
    c->op.expected_rev = prev_rev;
    c->op.set = &c->set;
    c->op.timers_add = &c->timers;
    c->op.history = "{\"to\":\"qualification\"}";
    c->op.outcome = "out";
    c->op.outcome_len = 3;
}

static void apply_case_clear(apply_case_t *c)
{
    pl_store_apply_clear(&c->op);
    pl_fields_clear(&c->set);
    pl_fields_clear(&c->timers);
}

/* Does the entity have any key (an :out:<event_id> one too), or a member
 * in its timer shard? */
static bool written(pl_store_t *s, const char *id, const char *member)
{
    static const char *const suffixes[] = {"", ":applied", ":history"};
    pl_fields_t timers = {0};
    char k[256], err[512];
    bool any = false;
    redisReply *r;

    for (size_t i = 0; i < 3; i++) {
        entity_key(k, sizeof(k), id, suffixes[i]);
        r = rcmd("TYPE %s", k);
        /* a key we planted with another type is not a write of ours */
        if (strcmp(r->str, "none") && !strcmp(r->str, i <= 1 ? "hash"
                                                            : "list"))
            any = true;
        freeReplyObject(r);
    }
    entity_key(k, sizeof(k), id, ":out:*");
    r = rcmd("KEYS %s", k);
    if (r->elements)
        any = true;
    freeReplyObject(r);
    if (pl_store_entity_timers(s, "deal", id, &timers, err, sizeof(err)) ==
            0 &&
        pl_fields_get(&timers, member))
        any = true;
    pl_fields_clear(&timers);
    return any;
}

/* One key of the wrong type (or an argument the script refuses) fails only
 * its own op, with Redis's text, and writes nothing; the rest of the batch
 * is applied.  Before: the whole call failed as "retriable", for ever. */
static void test_apply_per_key_errors(void **state)
{
    static const struct {
        const char *suffix; /* key planted with the wrong type */
        const char *plant;  /* the command (key appended) */
        const char *words;
    } cases[] = {
        {"", "RPUSH %s x", "is a list, not a hash"},
        {":applied", "SET %s x", "is a string, not a hash"},
        /* (:out:<event_id> is written with SET, which replaces a key of
         * any type: test_out_keys) */
        {":history", "SET %s x", "is a string, not a list"},
        /* the timer shard of the entity's slot: written after
         * :out:<event_id> and :history, which are undone */
        {"#shard", "SET %s x", "is a string, not a zset"},
        {NULL, NULL, "timer score is not a number"},
    };
    pl_store_t *s = store_open();
    char err[512] = "";

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
        apply_case_t c[3];
        pl_store_apply_t ops[3];
        char bad[64], good1[64], good2[64], k[256];

        snprintf(bad, sizeof(bad), "WT-bad-%zu", i);
        snprintf(good1, sizeof(good1), "WT-good1-%zu", i);
        snprintf(good2, sizeof(good2), "WT-good2-%zu", i);
        apply_case(&c[0], good1, "e-g1", "", "1700000000000");
        apply_case(&c[1], bad, "e-bad", "",
                   cases[i].suffix ? "1700000000000" : "soon");
        apply_case(&c[2], good2, "e-g2", "", "1700000000000");
        if (cases[i].suffix && cases[i].suffix[0] == '#') {
            char tagged[80];
            int n = snprintf(tagged, sizeof(tagged), "{deal:%s}", bad);
            snprintf(k, sizeof(k), "%stimers:{%s}", key_prefix,
                     pl_slot_tag(pl_slot_of(tagged, (size_t)n)));
            freeReplyObject(rcmd(cases[i].plant, k));
        } else if (cases[i].suffix) {
            entity_key(k, sizeof(k), bad, cases[i].suffix);
            freeReplyObject(rcmd(cases[i].plant, k));
        }
        for (size_t j = 0; j < 3; j++)
            ops[j] = c[j].op;
        if (pl_store_apply(s, ops, 3, 60000, err, sizeof(err)))
            fail_msg("case %zu: the call failed: %s", i, err);
        assert_int_equal(ops[0].result, PL_APPLY_OK);
        assert_int_equal(ops[2].result, PL_APPLY_OK);
        if (ops[1].result != PL_APPLY_FAILED)
            fail_msg("case %zu: result %d, want FAILED", i,
                     (int)ops[1].result);
        assert_non_null(ops[1].error);
        if (!strstr(ops[1].error, cases[i].words))
            fail_msg("case %zu: '%s' not in '%s'", i, cases[i].words,
                     ops[1].error);
        if (cases[i].suffix) {
            if (strncmp(ops[1].error, "WRONGTYPE ", 10) ||
                !strstr(ops[1].error, k))
                fail_msg("case %zu: '%s' does not name %s", i, ops[1].error,
                         k);
            assert_int_equal(pl_store_error_class(ops[1].error),
                             PL_REDIS_PER_KEY);
        }
        if (written(s, bad, c[1].member))
            fail_msg("case %zu: the failed op wrote something", i);
        assert_true(written(s, good1, c[0].member));
        assert_true(written(s, good2, c[2].member));
        if (cases[i].suffix && cases[i].suffix[0] == '#')
            freeReplyObject(rcmd("DEL %s", k));
        for (size_t j = 0; j < 3; j++) {
            c[j].op = ops[j];
            apply_case_clear(&c[j]);
        }
    }
    pl_store_destroy(s);
}

/* A chain of n events on deal id, each with a history entry "h<i>", as one
 * pipelined call; every op must come back with want. */
static void apply_chain(pl_store_t *s, const char *id, int from, int n,
                        char rev[PL_REV_LEN + 1], pl_apply_result_t want)
{
    pl_store_apply_t *ops = calloc((size_t)n, sizeof(*ops));
    pl_fields_t *sets = calloc((size_t)n, sizeof(*sets));
    char (*eids)[32] = calloc((size_t)n, sizeof(*eids));
    char (*hist)[32] = calloc((size_t)n, sizeof(*hist));
    char (*revs)[PL_REV_LEN + 1] = calloc((size_t)n + 1, sizeof(*revs));
    char err[512] = "";

    assert_true(ops && sets && eids && hist && revs);
    snprintf(revs[0], sizeof(revs[0]), "%s", rev);
    for (int i = 0; i < n; i++) {
        snprintf(eids[i], sizeof(eids[i]), "e%d", from + i);
        snprintf(hist[i], sizeof(hist[i]), "h%d", from + i);
        pl_store_next_rev(revs[i], eids[i], revs[i + 1]);
        assert_int_equal(pl_fields_set(&sets[i], "rev", revs[i + 1]), 0);
        ops[i].kind = "deal";
        ops[i].id = id;
        ops[i].event_id = eids[i];
        ops[i].expected_rev = revs[i];
        ops[i].set = &sets[i];
        ops[i].history = hist[i];
        ops[i].outcome = "o";
        ops[i].outcome_len = 1;
    }
    if (pl_store_apply(s, ops, (size_t)n, 3600000, err, sizeof(err)))
        fail_msg("apply: %s", err);
    for (int i = 0; i < n; i++) {
        if (ops[i].result != want)
            fail_msg("op %d: result %d, want %d (%s)", i, (int)ops[i].result,
                     (int)want, ops[i].error ? ops[i].error : "");
        pl_store_apply_clear(&ops[i]);
        pl_fields_clear(&sets[i]);
    }
    if (want == PL_APPLY_OK)
        snprintf(rev, PL_REV_LEN + 1, "%s", revs[n]);
    free(ops);
    free(sets);
    free(eids);
    free(hist);
    free(revs);
}

/* The elements of a list key, joined with ',' */
static void list_of(const char *k, char *buf, size_t size)
{
    redisReply *r = rcmd("LRANGE %s 0 -1", k);
    size_t len = 0;

    buf[0] = '\0';
    for (size_t i = 0; i < r->elements && len < size; i++)
        len += (size_t)snprintf(buf + len, size - len, "%s%s", i ? "," : "",
                                r->element[i]->str);
    freeReplyObject(r);
}

/* :history keeps the newest history_max entries; :applied remembers the
 * newest applied_max event ids (past it, the oldest are forgotten down to
 * applied_max - applied_max/8; field "" counts the records); defaults 1000
 * and 1000. */
static void test_history_and_applied_bounds(void **state)
{
    pl_store_t *s = store_open();
    char rev[PL_REV_LEN + 1] = "", k[256], buf[512];

    (void)state;
    pl_store_set_limits(s, 3, 4);
    apply_chain(s, "LIM", 0, 10, rev, PL_APPLY_OK);
    entity_key(k, sizeof(k), "LIM", ":history");
    list_of(k, buf, sizeof(buf));
    assert_string_equal(buf, "h7,h8,h9");
    entity_key(k, sizeof(k), "LIM", ":applied");
    assert_int_equal(rint_cmd("HLEN %s", k), 4 + 1);
    for (int i = 6; i <= 9; i++)
        assert_int_equal(rint_cmd("HEXISTS %s e%d", k, i), 1);
    {
        redisReply *r = rcmd("HGET %s e9", k);
        assert_string_equal(r->str, "10");
        freeReplyObject(r);
        entity_key(k, sizeof(k), "LIM", ":out:e9");
        r = rcmd("GET %s", k);
        assert_non_null(r->str);
        assert_string_equal(r->str, "o");
        freeReplyObject(r);
        entity_key(k, sizeof(k), "LIM", ":applied");
    }
    assert_int_equal(rint_cmd("HEXISTS %s e5", k), 0);
    assert_in_range(rint_cmd("PTTL %s", k), 3725000, 3825000);
    /* a remembered id is a duplicate; a forgotten one is new again */
    {
        char old_rev[PL_REV_LEN + 1] = "";
        apply_chain(s, "LIM", 9, 1, old_rev, PL_APPLY_DUPLICATE);
    }
    apply_chain(s, "LIM", 0, 1, rev, PL_APPLY_OK);
    assert_int_equal(rint_cmd("HLEN %s", k), 4 + 1);
    assert_int_equal(rint_cmd("HEXISTS %s e0", k), 1);
    assert_int_equal(rint_cmd("HEXISTS %s e6", k), 0);

    /* the defaults */
    pl_store_destroy(s);
    s = store_open();
    rev[0] = '\0';
    apply_chain(s, "DEF", 0, 1005, rev, PL_APPLY_OK);
    entity_key(k, sizeof(k), "DEF", ":history");
    assert_int_equal(rint_cmd("LLEN %s", k), 1000);
    entity_key(k, sizeof(k), "DEF", ":applied");
    /* the 1001st forgot the oldest 126 (down to 875), then 4 more */
    assert_int_equal(rint_cmd("HLEN %s", k), 879 + 1);
    assert_int_equal(rint_cmd("HEXISTS %s e125", k), 0);
    assert_int_equal(rint_cmd("HEXISTS %s e126", k), 1);
    assert_int_equal(rint_cmd("HEXISTS %s e1004", k), 1);
    pl_store_destroy(s);
}

/* Event eid of deal id again: a duplicate; what was stored for it. */
static char *duplicate_of(pl_store_t *s, const char *id, const char *eid)
{
    pl_store_apply_t op;
    char err[512] = "", *out;

    memset(&op, 0, sizeof(op));
    op.kind = "deal";
    op.id = id;
    op.event_id = eid;
    op.expected_rev = "";
    if (pl_store_apply(s, &op, 1, 3600000, err, sizeof(err)))
        fail_msg("apply: %s", err);
    if (op.result != PL_APPLY_DUPLICATE)
        fail_msg("%s: result %d, not a duplicate", eid, (int)op.result);
    assert_non_null(out = strndup(op.stored, op.stored_len));
    pl_store_apply_clear(&op);
    return out;
}

/* :applied records of older versions: "<n>|" (numbered, the outcome in
 * :out) and the outcome itself (before numbers) are still read, for a
 * duplicate and for the oldest-first bound, next to today's "<n>". */
static void test_applied_records_of_older_versions(void **state)
{
    pl_store_t *s = store_open();
    char rev[PL_REV_LEN + 1] = "", k[256], *o;

    (void)state;
    pl_store_set_limits(s, 10, 2);
    apply_chain(s, "OLDREC", 0, 3, rev, PL_APPLY_OK);
    for (int i = 0; i < 3; i++) {
        char suffix[16];
        snprintf(suffix, sizeof(suffix), ":out:e%d", i);
        entity_key(k, sizeof(k), "OLDREC", suffix);
        assert_int_equal(rint_cmd("DEL %s", k), 1);
    }
    entity_key(k, sizeof(k), "OLDREC", ":applied");
    freeReplyObject(rcmd("HSET %s e0 1|", k));
    freeReplyObject(rcmd("HSET %s e1 %s", k, "t/0/5\nX"));
    {
        redisReply *r = rcmd("HGET %s e2", k);
        assert_string_equal(r->str, "3");
        freeReplyObject(r);
    }
    o = duplicate_of(s, "OLDREC", "e0");
    assert_string_equal(o, "");
    free(o);
    o = duplicate_of(s, "OLDREC", "e1");
    assert_string_equal(o, "t/0/5\nX");
    free(o);
    o = duplicate_of(s, "OLDREC", "e2");
    assert_string_equal(o, "");
    free(o);
    /* an outcome an earlier version kept in the entity's :out hash */
    entity_key(k, sizeof(k), "OLDREC", ":out");
    freeReplyObject(rcmd("HSET %s e2 %s", k, "t/0/7\nY"));
    o = duplicate_of(s, "OLDREC", "e2");
    assert_string_equal(o, "t/0/7\nY");
    free(o);
    entity_key(k, sizeof(k), "OLDREC", ":applied");
    /* past the bound (2) the oldest go: e1 (no number), then e0 (1) */
    apply_chain(s, "OLDREC", 3, 1, rev, PL_APPLY_OK);
    assert_int_equal(rint_cmd("HEXISTS %s e1", k), 0);
    assert_int_equal(rint_cmd("HEXISTS %s e0", k), 0);
    assert_int_equal(rint_cmd("HEXISTS %s e2", k), 1);
    assert_int_equal(rint_cmd("HEXISTS %s e3", k), 1);
    pl_store_destroy(s);
}

/* An applied event's derived events go to :out:<event_id>, a string set
 * with its expiry (one SET .. PX; a key of another type under that name
 * is replaced); an event without any keeps none; drop ops delete them
 * (one DEL a call, whatever the number of entities), keeping the
 * :applied records, so that a redelivery is still a duplicate. */
static void test_out_keys(void **state)
{
    pl_store_t *s = store_open();
    apply_case_t c[3];
    pl_store_apply_t ops[4];
    const char *blank_a[] = {"oa"}, *blank_b[] = {"ob"};
    char err[512] = "", k[256], *o;
    redisReply *r;

    (void)state;
    apply_case(&c[0], "OUT-a", "oa", "", "1700000000000");
    apply_case(&c[1], "OUT-b", "ob", "", "1700000000000");
    apply_case(&c[2], "OUT-c", "oc", "", "1700000000000");
    c[2].op.outcome = NULL; /* derives nothing */
    c[2].op.outcome_len = 0;
    entity_key(k, sizeof(k), "OUT-b", ":out:ob");
    freeReplyObject(rcmd("RPUSH %s planted", k));
    for (size_t j = 0; j < 3; j++)
        ops[j] = c[j].op;
    if (pl_store_apply(s, ops, 3, 3600000, err, sizeof(err)))
        fail_msg("apply: %s", err);
    for (size_t j = 0; j < 3; j++)
        assert_int_equal(ops[j].result, PL_APPLY_OK);
    entity_key(k, sizeof(k), "OUT-a", ":out:oa");
    r = rcmd("GET %s", k);
    assert_non_null(r->str);
    assert_string_equal(r->str, "out");
    freeReplyObject(r);
    /* dedupe.ttl and its sixteenth, as :applied */
    assert_in_range(rint_cmd("PTTL %s", k), 3725000, 3825000);
    entity_key(k, sizeof(k), "OUT-b", ":out:ob");
    r = rcmd("GET %s", k); /* the planted list is replaced */
    assert_non_null(r->str);
    assert_string_equal(r->str, "out");
    freeReplyObject(r);
    entity_key(k, sizeof(k), "OUT-c", ":out:oc");
    assert_int_equal(rint_cmd("EXISTS %s", k), 0);
    o = duplicate_of(s, "OUT-a", "oa");
    assert_string_equal(o, "out");
    free(o);
    for (size_t j = 0; j < 3; j++) {
        c[j].op = ops[j];
        apply_case_clear(&c[j]);
    }

    /* two drop ops (two entities) and an apply in one call */
    memset(ops, 0, sizeof(ops));
    ops[0] = (pl_store_apply_t){.kind = "deal", .id = "OUT-a",
                                .blank = blank_a, .nblank = 1};
    ops[1] = (pl_store_apply_t){.kind = "deal", .id = "OUT-b",
                                .blank = blank_b, .nblank = 1};
    apply_case(&c[0], "OUT-d", "od", "", "1700000000000");
    ops[2] = c[0].op;
    if (pl_store_apply(s, ops, 3, 3600000, err, sizeof(err)))
        fail_msg("apply with drops: %s", err);
    assert_int_equal(ops[0].result, PL_APPLY_OK);
    assert_int_equal(ops[1].result, PL_APPLY_OK);
    assert_int_equal(ops[2].result, PL_APPLY_OK);
    entity_key(k, sizeof(k), "OUT-a", ":out:oa");
    assert_int_equal(rint_cmd("EXISTS %s", k), 0);
    entity_key(k, sizeof(k), "OUT-b", ":out:ob");
    assert_int_equal(rint_cmd("EXISTS %s", k), 0);
    entity_key(k, sizeof(k), "OUT-d", ":out:od");
    assert_int_equal(rint_cmd("EXISTS %s", k), 1);
    o = duplicate_of(s, "OUT-a", "oa"); /* the record stays */
    assert_string_equal(o, "");
    free(o);
    c[0].op = ops[2];
    apply_case_clear(&c[0]);
    for (size_t j = 0; j < 2; j++)
        pl_store_apply_clear(&ops[j]);
    pl_store_destroy(s);
}

/* One applied op for deal `id` with an analytics delta; its sequence
 * number, and in *slot the slot of the list that holds it. */
static int64_t apply_delta(pl_store_t *s, const char *id, const char *delta,
                           int *slot)
{
    pl_store_apply_t op;
    pl_fields_t set = {0};
    char err[512] = "", eid[64], rev[PL_REV_LEN + 1];
    int64_t seq;

    snprintf(eid, sizeof(eid), "e-%s", id);
    pl_store_next_rev("", eid, rev);
    assert_int_equal(pl_fields_set(&set, "rev", rev), 0);
    memset(&op, 0, sizeof(op));
    op.kind = "deal";
    op.id = id;
    op.event_id = eid;
    op.expected_rev = "";
    op.set = &set;
    op.outcome = "o";
    op.outcome_len = 1;
    op.stats = delta;
    op.stats_len = strlen(delta);
    if (pl_store_apply(s, &op, 1, DAY, err, sizeof(err)))
        fail_msg("apply: %s", err);
    assert_int_equal(op.result, PL_APPLY_OK);
    seq = op.stats_seq;
    *slot = op.stats_slot;
    assert_int_equal(*slot, pl_store_delta_slot(s, op.slot));
    pl_store_apply_clear(&op);
    pl_fields_clear(&set);
    return seq;
}

/* Two workers write deltas into one slot (two deals of that slot) and
 * fold them from memory in the other order: both count, once.  Before,
 * the second fold found the mark above its delta and dropped it. */
static void test_fold_out_of_order(void **state)
{
    pl_store_t *s = store_open();
    char x[32] = "FO-0", y[32], err[512] = "";
    int slot = pl_store_entity_slot("deal", x), i = 1, dsx, dsy;
    int64_t sx, sy;
    pl_fields_t figs = {0};
    const char *dx = "t|fold\t1\n", *dy = "t|fold\t10\n";

    (void)state;
    do
        snprintf(y, sizeof(y), "FO-%d", i++);
    while (pl_store_entity_slot("deal", y) != slot);
    sx = apply_delta(s, x, dx, &dsx);
    sy = apply_delta(s, y, dy, &dsy);
    assert_int_equal(dsx, dsy);
    slot = dsx;
    assert_int_equal(sy, sx + 1);
    /* y's worker folds first, then x's; then y's again (a retry) */
    assert_int_equal(
        pl_store_stats_fold_deltas(s, &slot, &sy, &dy, 1, err, sizeof(err)),
        0);
    assert_int_equal(
        pl_store_stats_fold_deltas(s, &slot, &sx, &dx, 1, err, sizeof(err)),
        0);
    assert_int_equal(
        pl_store_stats_fold_deltas(s, &slot, &sy, &dy, 1, err, sizeof(err)),
        0);
    /* and the slot's list, as a redelivery's duplicate folds it */
    assert_int_equal(pl_store_stats_fold(s, &slot, 1, err, sizeof(err)), 0);
    assert_int_equal(pl_store_stats_read(s, &figs, err, sizeof(err)), 0);
    assert_non_null(pl_fields_get(&figs, "t|fold"));
    assert_string_equal(pl_fields_get(&figs, "t|fold"), "11");
    pl_fields_clear(&figs);
    pl_store_destroy(s);
}

/* Deltas folded from memory go as their sum (one HINCRBY per field); a
 * second fold of the same deltas (a retry) finds them folded and adds
 * nothing, and a fold mixing new and folded deltas adds only the new. */
static void test_fold_sum(void **state)
{
    pl_store_t *s = store_open();
    const char *d[3] = {"u|a\t5\nu|b\t1\n", "u|a\t-2\nu|c\t7\n",
                        "u|b\t-1\nu|d\t4\n"};
    const char *ids[3] = {"FS-a", "FS-b", "FS-c"};
    int slots[3];
    int64_t seqs[3];
    pl_fields_t figs = {0};
    char err[512] = "";

    (void)state;
    for (int i = 0; i < 3; i++)
        seqs[i] = apply_delta(s, ids[i], d[i], &slots[i]);
    for (int round = 0; round < 2; round++)
        assert_int_equal(pl_store_stats_fold_deltas(s, slots, seqs, d, 2, err,
                                                    sizeof(err)),
                         0);
    assert_int_equal(pl_store_stats_fold_deltas(s, slots, seqs, d, 3, err,
                                                sizeof(err)),
                     0);
    assert_int_equal(pl_store_stats_read(s, &figs, err, sizeof(err)), 0);
    assert_string_equal(pl_fields_get(&figs, "u|a"), "3");
    assert_null(pl_fields_get(&figs, "u|b")); /* 1 - 1: deleted */
    assert_string_equal(pl_fields_get(&figs, "u|c"), "7");
    assert_string_equal(pl_fields_get(&figs, "u|d"), "4");
    pl_fields_clear(&figs);
    /* a clean shutdown pops the folded deltas from their lists */
    assert_int_equal(pl_store_trim_folded(s, err, sizeof(err)), 0);
    for (int i = 0; i < 3; i++) {
        char k[256];
        snprintf(k, sizeof(k), "%sstats:{%s}", key_prefix,
                 pl_slot_tag(slots[i]));
        assert_int_equal(rint_cmd("LLEN %s", k), 0);
    }
    pl_store_destroy(s);
}

/* op i of a call for deal ids[i] with delta d[i] (its fields in *set) */
static void delta_op(pl_store_apply_t *op, pl_fields_t *set, const char *id,
                     const char *eid, const char *delta)
{
    char rev[PL_REV_LEN + 1];

    pl_store_next_rev("", eid, rev);
    assert_int_equal(pl_fields_set(set, "rev", rev), 0);
    memset(op, 0, sizeof(*op));
    op->kind = "deal";
    op->id = id;
    op->event_id = eid;
    op->expected_rev = "";
    op->set = set;
    op->outcome = "o";
    op->outcome_len = 1;
    op->stats = delta;
    op->stats_len = strlen(delta);
}

static void delta_ops_clear(pl_store_apply_t *ops, pl_fields_t *set,
                            size_t n)
{
    for (size_t i = 0; i < n; i++) {
        pl_store_apply_clear(&ops[i]);
        pl_fields_clear(&set[i]);
    }
}

/* The deltas of one script call go to its list as one entry: every op
 * has its number, and it counts each delta once, whether folded from
 * memory (the ops' deltas, one record) or from the list. */
static void test_fold_call_entry(void **state)
{
    pl_store_t *s = store_open();
    const char *ids[3] = {"CE-a", "CE-b", "CE-c"};
    const char *eids[3] = {"e-ce-a", "e-ce-b", "e-ce-c"};
    const char *d[3] = {"v|a\t5\nv|b\t1\n", "v|a\t-2\n", "v|c\t7\n"};
    pl_store_apply_t ops[3];
    pl_fields_t set[3] = {{0}}, figs = {0};
    int slots[3];
    int64_t seqs[3];
    char err[512] = "", k[256], body[256];
    long long before;
    redisReply *r;

    (void)state;
    for (int i = 0; i < 3; i++)
        delta_op(&ops[i], &set[i], ids[i], eids[i], d[i]);
    if (pl_store_is_cluster(s))
        skip(); /* one call per slot there: one delta an entry */
    snprintf(k, sizeof(k), "%sstats:{%s}", key_prefix,
             pl_slot_tag(PL_DELTA_SLOT));
    before = rint_cmd("LLEN %s", k);
    if (pl_store_apply(s, ops, 3, DAY, err, sizeof(err)))
        fail_msg("apply: %s", err);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(ops[i].result, PL_APPLY_OK);
        assert_int_equal(ops[i].stats_slot, PL_DELTA_SLOT);
        assert_true(ops[i].stats_seq > 0);
        assert_int_equal(ops[i].stats_seq, ops[0].stats_seq);
        slots[i] = ops[i].stats_slot;
        seqs[i] = ops[i].stats_seq;
    }
    assert_int_equal(rint_cmd("LLEN %s", k), before + 1);
    r = rcmd("LINDEX %s -1", k);
    snprintf(body, sizeof(body), "%lld\n%s%s%s", (long long)seqs[0], d[0],
             d[1], d[2]);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    assert_string_equal(r->str, body);
    freeReplyObject(r);
    /* from memory, twice (a retry), then from the list */
    for (int round = 0; round < 2; round++)
        assert_int_equal(pl_store_stats_fold_deltas(s, slots, seqs, d, 3, err,
                                                    sizeof(err)),
                         0);
    assert_int_equal(pl_store_stats_fold(s, slots, 1, err, sizeof(err)), 0);
    assert_int_equal(pl_store_stats_read(s, &figs, err, sizeof(err)), 0);
    assert_non_null(pl_fields_get(&figs, "v|a"));
    assert_string_equal(pl_fields_get(&figs, "v|a"), "3");
    assert_string_equal(pl_fields_get(&figs, "v|b"), "1");
    assert_string_equal(pl_fields_get(&figs, "v|c"), "7");
    pl_fields_clear(&figs);
    delta_ops_clear(ops, set, 3);
    pl_store_destroy(s);
}

/* A call that stops on an error in its second op (a timer score Redis
 * refuses) still records the first op's delta, which is written: the
 * first comes back as a duplicate when each goes again alone, and its
 * delta is folded from the list, as a duplicate's is. */
static void test_fold_call_error_keeps_deltas(void **state)
{
    pl_store_t *s = store_open();
    pl_store_apply_t ops[2];
    pl_fields_t set[2] = {{0}}, timers = {0}, figs = {0};
    char err[512] = "";
    int slot;

    (void)state;
    delta_op(&ops[0], &set[0], "CX-a", "e-cx-a", "x|a\t4\n");
    delta_op(&ops[1], &set[1], "CX-b", "e-cx-b", "x|b\t9\n");
    /* Lua's tonumber takes it, ZADD does not */
    assert_int_equal(pl_fields_set(&timers, "stale@1d|1|CX-b", " 5"), 0);
    ops[1].timers_add = &timers;
    if (pl_store_apply(s, ops, 2, DAY, err, sizeof(err)))
        fail_msg("apply: %s", err);
    if (!pl_store_is_cluster(s)) /* one call: split */
        assert_int_equal(ops[0].result, PL_APPLY_DUPLICATE);
    assert_int_not_equal(ops[1].result, PL_APPLY_OK);
    slot = pl_store_delta_slot(s, ops[0].slot);
    assert_int_equal(pl_store_stats_fold(s, &slot, 1, err, sizeof(err)), 0);
    assert_int_equal(pl_store_stats_read(s, &figs, err, sizeof(err)), 0);
    assert_non_null(pl_fields_get(&figs, "x|a"));
    assert_string_equal(pl_fields_get(&figs, "x|a"), "4");
    assert_null(pl_fields_get(&figs, "x|b"));
    pl_fields_clear(&figs);
    pl_fields_clear(&timers);
    delta_ops_clear(ops, set, 2);
    pl_store_destroy(s);
}

/* The fold adds in Lua what it can add exactly (integers of up to 15
 * digits) and leaves the rest to HINCRBY: a figure past 2^53, a term of 18
 * digits, a field named twice in a delta, a figure that comes to 0. */
static void test_fold_exact(void **state)
{
    pl_store_t *s = store_open();
    const char *d[2] = {"z|big\t1\nz|s\t5\nz|s\t-5\nz|s\t2\nz|n\t-3\n"
                        "z|z\t-3\nz|bi\t123456789012345678\n",
                        "z|big\t1\nz|bi\t-1\nz|m\t999999999999999\n"};
    int slots[2];
    int64_t seqs[2];
    char err[512] = "", k[256];
    pl_fields_t figs = {0};

    (void)state;
    snprintf(k, sizeof(k), "%s{stats}", key_prefix);
    freeReplyObject(rcmd("HSET %s z|big 9007199254740993 z|z 3 z|m "
                         "999999999999999",
                         k));
    /* one delta alone (added delta by delta), then both (as their sum) */
    seqs[0] = apply_delta(s, "ZX-0", d[0], &slots[0]);
    seqs[1] = apply_delta(s, "ZX-1", d[1], &slots[1]);
    assert_int_equal(pl_store_stats_fold_deltas(s, slots, seqs, d, 1, err,
                                                sizeof(err)),
                     0);
    assert_int_equal(pl_store_stats_fold_deltas(s, slots, seqs, d, 2, err,
                                                sizeof(err)),
                     0);
    assert_int_equal(pl_store_stats_read(s, &figs, err, sizeof(err)), 0);
    assert_string_equal(pl_fields_get(&figs, "z|big"), "9007199254740995");
    assert_string_equal(pl_fields_get(&figs, "z|s"), "2");
    assert_string_equal(pl_fields_get(&figs, "z|n"), "-3");
    assert_null(pl_fields_get(&figs, "z|z"));
    assert_string_equal(pl_fields_get(&figs, "z|bi"), "123456789012345677");
    assert_string_equal(pl_fields_get(&figs, "z|m"), "1999999999999998");
    pl_fields_clear(&figs);
    pl_store_destroy(s);
}

#define EARLY_OPS 300

/* pl_store_apply_start() writes each whole call (128 ops) as it fills:
 * Redis has applied them before pl_store_apply(), which sends the rest and
 * reads every reply, in order; an abandoned start is read and dropped
 * (its ops come back as duplicates), and the connection stays in step. */
static void test_apply_start(void **state)
{
    pl_store_t *s = store_open();
    pl_store_apply_t *ops = calloc(EARLY_OPS, sizeof(*ops));
    pl_fields_t *set = calloc(EARLY_OPS, sizeof(*set));
    char (*ids)[32] = calloc(EARLY_OPS, sizeof(*ids));
    char (*eids)[32] = calloc(EARLY_OPS, sizeof(*eids));
    char err[512] = "", k[256];

    (void)state;
    assert_non_null(ops);
    assert_non_null(set);
    assert_non_null(ids);
    assert_non_null(eids);
    if (pl_store_is_cluster(s))
        skip(); /* calls by slot: nothing starts early */
    for (int i = 0; i < EARLY_OPS; i++) {
        snprintf(ids[i], sizeof(ids[i]), "ES-%d", i);
        snprintf(eids[i], sizeof(eids[i]), "e-es-%d", i);
        delta_op(&ops[i], &set[i], ids[i], eids[i], "w|n\t1\n");
    }
    for (size_t n = 1; n <= 200; n++)
        pl_store_apply_start(s, ops, n, DAY);
    /* the first call (ops 0-127) is written; op 128's is not yet */
    entity_key(k, sizeof(k), "ES-0", ":applied");
    for (int i = 0; i < 200 && !rint_cmd("HEXISTS %s e-es-0", k); i++)
        usleep(5000);
    assert_int_equal(rint_cmd("HEXISTS %s e-es-0", k), 1);
    entity_key(k, sizeof(k), "ES-127", ":applied");
    assert_int_equal(rint_cmd("HEXISTS %s e-es-127", k), 1);
    entity_key(k, sizeof(k), "ES-128", ":applied");
    assert_int_equal(rint_cmd("EXISTS %s", k), 0);
    if (pl_store_apply(s, ops, EARLY_OPS, DAY, err, sizeof(err)))
        fail_msg("apply: %s", err);
    for (int i = 0; i < EARLY_OPS; i++) {
        assert_int_equal(ops[i].result, PL_APPLY_OK);
        assert_true(ops[i].stats_seq > 0);
        pl_store_apply_clear(&ops[i]);
    }
    /* the same events again, started and abandoned: read and dropped */
    for (int i = 0; i < EARLY_OPS; i++) {
        pl_fields_clear(&set[i]);
        snprintf(ids[i], sizeof(ids[i]), "EA-%d", i);
        snprintf(eids[i], sizeof(eids[i]), "e-ea-%d", i);
        delta_op(&ops[i], &set[i], ids[i], eids[i], "w|n\t1\n");
    }
    pl_store_apply_start(s, ops, 256, DAY);
    pl_store_apply_abandon(s);
    /* then applied for real (the same array: a new batch there) */
    if (pl_store_apply(s, ops, EARLY_OPS, DAY, err, sizeof(err)))
        fail_msg("apply: %s", err);
    for (int i = 0; i < EARLY_OPS; i++) {
        assert_int_equal(ops[i].result,
                         i < 256 ? PL_APPLY_DUPLICATE : PL_APPLY_OK);
        pl_store_apply_clear(&ops[i]);
        pl_fields_clear(&set[i]);
    }
    entity_key(k, sizeof(k), "EA-299", ":applied");
    assert_int_equal(rint_cmd("HEXISTS %s e-ea-299", k), 1);
    free(ops);
    free(set);
    free(ids);
    free(eids);
    pl_store_destroy(s);
}

/* A rejection (set NULL) with its own ttl_ms */
static void reject(pl_store_t *s, const char *id, const char *event_id,
                   const char *rev, int64_t ttl_ms)
{
    pl_store_apply_t op;
    char err[512] = "";

    memset(&op, 0, sizeof(op));
    op.kind = "deal";
    op.id = id;
    op.event_id = event_id;
    op.expected_rev = rev;
    op.outcome = "rejected";
    op.outcome_len = 8;
    op.ttl_ms = ttl_ms;
    if (pl_store_apply(s, &op, 1, 30LL * DAY, err, sizeof(err)))
        fail_msg("apply: %s", err);
    assert_int_equal(op.result, PL_APPLY_OK);
    pl_store_apply_clear(&op);
}

/* ttl_ms overrides the call's dedupe ttl for one op, but never shortens
 * the expiry an entity's :applied key already has. */
static void test_ttl_override(void **state)
{
    pl_store_t *s = store_open();
    char rev[PL_REV_LEN + 1] = "", k[256], ko[256];

    (void)state;
    /* an unknown id's rejection: a short-lived record only */
    reject(s, "GHOST", "e-ghost", "", 2000);
    entity_key(k, sizeof(k), "GHOST", ":applied");
    assert_in_range(rint_cmd("PTTL %s", k), 1, 2000);
    entity_key(ko, sizeof(ko), "GHOST", "");
    assert_int_equal(rint_cmd("EXISTS %s", ko), 0);

    /* an entity that exists keeps its long expiry */
    apply_chain(s, "REAL", 0, 1, rev, PL_APPLY_OK); /* ttl 1 h */
    reject(s, "REAL", "e-refused", rev, 2000);
    entity_key(k, sizeof(k), "REAL", ":applied");
    assert_in_range(rint_cmd("PTTL %s", k), 3725000, 3825000);
    assert_int_equal(rint_cmd("HEXISTS %s e-refused", k), 1);

    /* and a short one grows when the entity is then written */
    reject(s, "LATE", "e-early", "", 2000);
    rev[0] = '\0';
    apply_chain(s, "LATE", 0, 1, rev, PL_APPLY_OK);
    entity_key(k, sizeof(k), "LATE", ":applied");
    assert_in_range(rint_cmd("PTTL %s", k), 3725000, 3825000);
    pl_store_destroy(s);
}

/* One op of a new or existing deal, given when its :applied key is known
 * to expire; returns what the op says it is now. */
static int64_t apply_known(pl_store_t *s, const char *id, const char *eid,
                           char rev[PL_REV_LEN + 1], int64_t until)
{
    apply_case_t c;
    char err[512] = "";
    int64_t now;

    apply_case(&c, id, eid, rev, "1700000000000");
    c.op.applied_until = until;
    if (pl_store_apply(s, &c.op, 1, 3600000, err, sizeof(err)))
        fail_msg("apply: %s", err);
    assert_int_equal(c.op.result, PL_APPLY_OK);
    now = c.op.new_applied_until;
    snprintf(rev, PL_REV_LEN + 1, "%s", c.rev);
    apply_case_clear(&c);
    return now;
}

/* The :applied key's expiry is the ttl + 1/16; an op whose caller knows
 * it is still that far off sends no PEXPIRE (the expiry stays as it is),
 * unless the key is gone; one that does not know sets it again. */
static void test_applied_expiry_kept(void **state)
{
    pl_store_t *s = store_open();
    char rev[PL_REV_LEN + 1] = "", k[256];
    int64_t u1, u2, u3, u4;

    (void)state;
    entity_key(k, sizeof(k), "KEEP", ":applied");
    u1 = apply_known(s, "KEEP", "e1", rev, 0);
    assert_true(u1 > 0);
    assert_in_range(rint_cmd("PTTL %s", k), 3725000, 3825000);
    /* known to live long enough: left as it is (shortened here so that a
     * PEXPIRE would show) */
    freeReplyObject(rcmd("PEXPIRE %s 5000000", k));
    u2 = apply_known(s, "KEEP", "e2", rev, u1);
    assert_int_equal(u2, u1);
    assert_in_range(rint_cmd("PTTL %s", k), 4900000, 5000000);
    /* not known (or too close): set again */
    u3 = apply_known(s, "KEEP", "e3", rev, u1 - 300000);
    assert_true(u3 >= u1);
    assert_in_range(rint_cmd("PTTL %s", k), 3725000, 3825000);
    /* the key gone meanwhile: made again with its expiry, never without */
    freeReplyObject(rcmd("DEL %s", k));
    u4 = apply_known(s, "KEEP", "e4", rev, u3);
    assert_int_equal(u4, u3);
    assert_in_range(rint_cmd("PTTL %s", k), 3725000, 3825000);
    assert_int_equal(rint_cmd("HEXISTS %s e4", k), 1);
    pl_store_destroy(s);
}

/* One event of deal LZ on rev: its stale timer moves from `from` to `to`
 * (members "stale|<due>|LZ"; to 0: goes away), lazily from lazy_due (0:
 * not), or sweeping (lazy_due -1), with an "overdue" timer due at `other`
 * too when other > 0.  Returns the op's slot. */
static int apply_move(pl_store_t *s, const char *eid, char rev[PL_REV_LEN + 1],
                      int64_t from, int64_t to, int64_t lazy_due,
                      int64_t other)
{
    apply_case_t c;
    pl_strlist_t rem = {0};
    char m[96], score[24], err[512] = "";
    int slot;

    snprintf(score, sizeof(score), "%lld", (long long)to);
    apply_case(&c, "LZ", eid, rev, score);
    c.op.history = NULL;
    if (!to) /* the stale timer goes away: none added */
        pl_fields_clear(&c.timers);
    snprintf(m, sizeof(m), "stale|%lld|LZ", (long long)from);
    assert_int_equal(pl_strlist_add(&rem, m), 0);
    if (other > 0) {
        snprintf(m, sizeof(m), "overdue|%lld|LZ", (long long)other);
        snprintf(score, sizeof(score), "%lld", (long long)other);
        assert_int_equal(pl_fields_set(&c.timers, m, score), 0);
    }
    c.op.timers_remove = &rem;
    c.op.lazy_stale_due = lazy_due > 0 ? lazy_due : 0;
    c.op.stale_sweep = lazy_due < 0;
    if (pl_store_apply(s, &c.op, 1, 3600000, err, sizeof(err)))
        fail_msg("apply: %s", err);
    assert_int_equal(c.op.result, PL_APPLY_OK);
    snprintf(rev, PL_REV_LEN + 1, "%s", c.rev);
    slot = c.op.slot;
    pl_strlist_clear(&rem);
    apply_case_clear(&c);
    return slot;
}

/* timers.stale.lazy: a stale timer moving later from a due still ahead of
 * Redis's clock is left as it is (the member scheduled before stays, the
 * new one is not added); the op's other timers are written; from a due
 * that has come, the move is written as given. */
static void test_apply_lazy_stale(void **state)
{
    pl_store_t *s = store_open();
    char rev[PL_REV_LEN + 1] = "", m[96], *shard;
    int64_t t = redis_now(), s1 = t + 60000, s2 = t + 65000, s3 = t + 70000;
    int slot;

    (void)state;
    /* created: stale due at s1 (no move: written) */
    slot = apply_move(s, "e1", rev, 0, s1, 0, 0);
    shard = pl_store_timer_shard(s, slot);
    snprintf(m, sizeof(m), "stale|%lld|LZ", (long long)s1);
    assert_int_equal(zscore(shard, m), s1);
    /* postponed to s2 while s1 is ahead: nothing moves, the other timer
     * is added */
    apply_move(s, "e2", rev, s1, s2, s1, t + 90000);
    assert_int_equal(zscore(shard, m), s1);
    snprintf(m, sizeof(m), "stale|%lld|LZ", (long long)s2);
    assert_int_equal(zscore(shard, m), -1);
    snprintf(m, sizeof(m), "overdue|%lld|LZ", (long long)(t + 90000));
    assert_int_equal(zscore(shard, m), t + 90000);
    /* postponed again from s2 (still ahead), not lazily: written */
    apply_move(s, "e3", rev, s1, s3, 0, 0);
    snprintf(m, sizeof(m), "stale|%lld|LZ", (long long)s1);
    assert_int_equal(zscore(shard, m), -1);
    snprintf(m, sizeof(m), "stale|%lld|LZ", (long long)s3);
    assert_int_equal(zscore(shard, m), s3);
    /* lazily from a due that has come (it may have fired): written */
    apply_move(s, "e4", rev, s3, s3 + 1000, t - 1000, 0);
    assert_int_equal(zscore(shard, m), -1);
    snprintf(m, sizeof(m), "stale|%lld|LZ", (long long)(s3 + 1000));
    assert_int_equal(zscore(shard, m), s3 + 1000);
    /* postponed lazily again: s3 + 1000 stays, the state names s3 + 2000 */
    apply_move(s, "e5", rev, s3 + 1000, s3 + 2000, s3 + 1000, 0);
    assert_int_equal(zscore(shard, m), s3 + 1000);
    /* moved earlier, to s1, sweeping: the member left goes (the one named,
     * s3 + 2000, is not there), the new one stays, the other timer too */
    apply_move(s, "e6", rev, s3 + 2000, s1, -1, 0);
    assert_int_equal(zscore(shard, m), -1);
    snprintf(m, sizeof(m), "stale|%lld|LZ", (long long)s1);
    assert_int_equal(zscore(shard, m), s1);
    snprintf(m, sizeof(m), "overdue|%lld|LZ", (long long)(t + 90000));
    assert_int_equal(zscore(shard, m), t + 90000);
    /* postponed lazily, then closed, sweeping: no stale member is left */
    apply_move(s, "e7", rev, s1, s2, s1, 0);
    apply_move(s, "e8", rev, s2, 0, -1, 0);
    assert_int_equal(zscore(shard, m), t + 90000);
    snprintf(m, sizeof(m), "stale|%lld|LZ", (long long)s1);
    assert_int_equal(zscore(shard, m), -1);
    snprintf(m, sizeof(m), "stale|%lld|LZ", (long long)s2);
    assert_int_equal(zscore(shard, m), -1);
    free(shard);
    pl_store_destroy(s);
}

/* Refused credentials are fatal (-2), with Redis's text and never the
 * password; Redis unreachable is retriable (-1). */
static void test_connect_errors(void **state)
{
    const char *pw = "pw-never-shown-4711";
    char err[512];
    pl_store_t *s;

    (void)state;
    /* the stack's Redis has no password: AUTH is refused */
    s = pl_store_new(redis_host, redis_port, pw, key_prefix, err, sizeof(err));
    assert_non_null(s);
    err[0] = '\0';
    assert_int_equal(pl_store_connect(s, err, sizeof(err)), -2);
    assert_true(*err);
    assert_null(strstr(err, pw));
    /* so is an unknown ACL user */
    assert_int_equal(pl_store_set_username(s, "pl-no-such-user"), 0);
    err[0] = '\0';
    assert_int_equal(pl_store_connect(s, err, sizeof(err)), -2);
    assert_non_null(strstr(err, "WRONGPASS"));
    assert_null(strstr(err, pw));
    pl_store_destroy(s);

    /* nobody listening: retriable */
    s = pl_store_new("127.0.0.1", 1, pw, key_prefix, err, sizeof(err));
    assert_non_null(s);
    assert_int_equal(pl_store_connect(s, err, sizeof(err)), -1);
    assert_null(strstr(err, pw));
    pl_store_destroy(s);
}

/* Against a Redis with ACL users (PL_TEST_REDIS_ACL, made by
 * test_store_errors.py: the default user off, "app" with every right and
 * password app-pass, "reader" with read commands only, password
 * reader-pass). */
static void test_acl_users(void **state)
{
    const char *addr = getenv("PL_TEST_REDIS_ACL");
    char host[256], err[512];
    int port;
    pl_store_t *s;
    const char *ids[] = {"X"};
    pl_fields_t f = {0};

    (void)state;
    if (!addr || !*addr)
        skip();
    parse_addr(addr, host, sizeof(host), &port);

    s = pl_store_new(host, port, "app-pass", key_prefix, err, sizeof(err));
    assert_non_null(s);
    /* no user: the default user is off */
    err[0] = '\0';
    assert_int_equal(pl_store_connect(s, err, sizeof(err)), -2);
    assert_null(strstr(err, "app-pass"));
    /* the right user and password */
    assert_int_equal(pl_store_set_username(s, "app"), 0);
    if (pl_store_connect(s, err, sizeof(err)))
        fail_msg("connect as app: %s", err);
    assert_int_equal(pl_store_read(s, "deal", ids, 1, &f, err, sizeof(err)),
                     0);
    pl_fields_clear(&f);
    pl_store_destroy(s);

    /* a wrong password */
    s = pl_store_new(host, port, "not-app-pass", key_prefix, err,
                     sizeof(err));
    assert_int_equal(pl_store_set_username(s, "app"), 0);
    err[0] = '\0';
    assert_int_equal(pl_store_connect(s, err, sizeof(err)), -2);
    assert_non_null(strstr(err, "WRONGPASS"));
    assert_null(strstr(err, "not-app-pass"));
    pl_store_destroy(s);

    /* a user without the rights to run the scripts */
    s = pl_store_new(host, port, "reader-pass", key_prefix, err,
                     sizeof(err));
    assert_int_equal(pl_store_set_username(s, "reader"), 0);
    err[0] = '\0';
    assert_int_equal(pl_store_connect(s, err, sizeof(err)), -2);
    assert_non_null(strstr(err, "NOPERM"));
    pl_store_destroy(s);
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
        cmocka_unit_test(test_slot_of),
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
        cmocka_unit_test(test_error_classes),
    };
    const struct CMUnitTest store_tests[] = {
        cmocka_unit_test(test_claim_uses_redis_time),
        cmocka_unit_test(test_extend_and_lose_claims),
        cmocka_unit_test(test_apply_per_key_errors),
        cmocka_unit_test(test_history_and_applied_bounds),
        cmocka_unit_test(test_applied_records_of_older_versions),
        cmocka_unit_test(test_out_keys),
        cmocka_unit_test(test_ttl_override),
        cmocka_unit_test(test_applied_expiry_kept),
        cmocka_unit_test(test_apply_lazy_stale),
        cmocka_unit_test(test_fold_out_of_order),
        cmocka_unit_test(test_fold_sum),
        cmocka_unit_test(test_fold_call_entry),
        cmocka_unit_test(test_apply_start),
        cmocka_unit_test(test_fold_exact),
        cmocka_unit_test(test_fold_call_error_keeps_deltas),
        cmocka_unit_test(test_connect_errors),
        cmocka_unit_test(test_acl_users),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    const char *redis = getenv("PL_TEST_REDIS");

    if (!redis || !*redis) {
        printf("store tests not run: PL_TEST_REDIS is not set "
               "(tests/integration/test_store_errors.py runs them)\n");
        return failed;
    }
    return failed + cmocka_run_group_tests_name("store (Redis)", store_tests,
                                                setup_redis, teardown_redis);
}
