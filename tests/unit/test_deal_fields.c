/*
 * test_deal_fields.c - unit tests of common/deal.c and the deterministic
 * ids and revisions (pl_hash_hex, pl_event_derive_id, pl_store_next_rev).
 *
 * A deal's state goes to Redis as readable hash fields and must come back
 * exactly; a damaged field must be refused, not read as zero.  The derived
 * events of an outcome are what downstream consumers see: for a stage
 * change they carry the probability of the new stage from the shipped
 * rules, the time spent in the old stage and the deal's owner, currency and
 * amount; for a rejection the reason; and their event_id is the same every
 * time the same input is processed, which is what makes a replay
 * harmless.  The rules come from deploy/rules/default.yaml under
 * PL_SOURCE_DIR (environment, set by ctest; else the compile definition).
 */
#include <jansson.h>
#include <openssl/evp.h>

#include "codec.h"
#include "deal.h"
#include "sbuf.h"
#include "store.h"
#include "testutil.h"

#define SEC 1000LL
#define T0 1700000000000LL /* 2023-11-14T22:13:20Z */
#define REV "0123456789abcdef0123456789abcdef"

static pl_rules_t *rules;

/* Group setup and teardown: the default rules in `rules`. */
static int setup_global_rules(void **state)
{
    char why[4800];
    (void)state;
    if (!(rules = load_default_rules(why, sizeof(why)))) {
        fprintf(stderr, "%s\n", why);
        return -1;
    }
    return 0;
}

static int teardown_global_rules(void **state)
{
    (void)state;
    pl_rules_destroy(rules);
    rules = NULL;
    return 0;
}

/* A deal with every field set. */
static void full_state(pl_deal_state_t *st)
{
    pl_deal_state_init(st);
    st->exists = true;
    assert_int_equal(pl_str_set(&st->deal_id, "D-1"), 0);
    assert_int_equal(pl_str_set(&st->lead_id, "L-7"), 0);
    assert_int_equal(pl_str_set(&st->name, "Acme, \"big\" renewal"), 0);
    assert_int_equal(pl_str_set(&st->owner, "ana@example.com"), 0);
    assert_int_equal(pl_str_set(&st->currency, "EUR"), 0);
    assert_int_equal(pl_str_set(&st->stage, "negotiation"), 0);
    st->amount = 12345678901LL; /* 1234567.8901 */
    st->has_amount = true;
    st->expected_close_date = 19782; /* 2024-02-29 */
    st->has_close_date = true;
    st->created_at = T0;
    st->stage_entered_at = T0 + 3600 * SEC + 7;
    st->last_event_at = T0 + 86400 * SEC + 999;
    st->activities = 1u << PL_ACT_CALL | 1u << PL_ACT_DEMO |
                     1u << PL_ACT_CONTRACT_SIGNED | 1u << PL_ACT_NOTE;
}

/* ---- state <-> fields ---- */

static void test_fields_roundtrip_full(void **state)
{
    pl_deal_state_t st, back;
    pl_fields_t f = {0};
    char rev[PL_REV_LEN + 1] = "junk";
    (void)state;

    full_state(&st);
    pl_deal_state_init(&back);
    assert_int_equal(pl_deal_to_fields(&st, REV, &f), 0);

    /* readable with redis-cli, under short names; the deal_id is the
     * key's */
    assert_string_equal(pl_fields_get(&f, "s"), "negotiation");
    assert_string_equal(pl_fields_get(&f, "a"), "1234567.8901");
    assert_string_equal(pl_fields_get(&f, "cd"), "2024-02-29");
    /* the bits of the kinds seen, in the order that is stored for good:
     * call 0, demo 3, contract_signed 6, note 7 */
    assert_string_equal(pl_fields_get(&f, "ac"), "201");
    assert_string_equal(pl_fields_get(&f, "ca"), "1700000000000");
    assert_string_equal(pl_fields_get(&f, "rev"), REV);
    assert_null(pl_fields_get(&f, "deal_id"));
    assert_int_equal(f.count, 12);
    for (size_t i = 0; i < f.count; i++)
        if (strcmp(f.keys[i], "rev") &&
            !pl_deal_field_long_name(f.keys[i]))
            fail_msg("field %s has no long name", f.keys[i]);
    assert_string_equal(pl_deal_field_long_name("le"), "last_event_at");
    assert_null(pl_deal_field_long_name("rev"));

    assert_int_equal(pl_deal_from_fields(&f, "D-1", &back, rev), 0);
    assert_string_equal(rev, REV);
    assert_false(back.old_layout);
    assert_deal_stored_equal(&st, &back);

    pl_fields_clear(&f);
    pl_deal_state_clear(&st);
    pl_deal_state_clear(&back);
}

/* Fewer fields: no lead, no close date, no activities, a negative and a
 * zero amount, every activity kind. */
/* The diff a write sends, applied over the stored fields, gives exactly
 * the fields of a whole write; an unchanged field is not sent. */
static void test_fields_diff(void **state)
{
    pl_deal_state_t prev, next, back;
    pl_fields_t stored = {0}, diff = {0}, whole = {0};
    char rev[PL_REV_LEN + 1];
    (void)state;

    full_state(&prev);
    full_state(&next);
    pl_deal_state_init(&back);
    assert_int_equal(pl_deal_to_fields(&prev, "r1", &stored), 0);

    /* nothing changed: the revision alone */
    assert_int_equal(
        pl_deal_to_fields_diff(&prev, &next, "r2", &diff, NULL), 0);
    assert_int_equal(diff.count, 1);
    assert_string_equal(pl_fields_get(&diff, "rev"), "r2");
    pl_fields_clear(&diff);

    /* a stage move, an activity, a new amount and owner */
    free(next.stage);
    next.stage = strdup("closed_won");
    free(next.owner);
    next.owner = strdup("someone.else@example.com");
    next.stage_entered_at += 5;
    next.last_event_at += 5;
    next.amount += 1;
    next.activities |= 1u << PL_ACT_EMAIL;
    assert_int_equal(
        pl_deal_to_fields_diff(&prev, &next, "r2", &diff, NULL), 0);
    assert_int_equal(diff.count, 7);
    assert_null(pl_fields_get(&diff, "ca"));
    assert_null(pl_fields_get(&diff, "cd"));
    assert_string_equal(pl_fields_get(&diff, "ac"), "203");
    for (size_t i = 0; i < diff.count; i++)
        assert_int_equal(
            pl_fields_set(&stored, diff.keys[i], diff.values[i]), 0);
    assert_int_equal(pl_deal_to_fields(&next, "r2", &whole), 0);
    assert_int_equal(stored.count, whole.count);
    for (size_t i = 0; i < whole.count; i++)
        assert_string_equal(pl_fields_get(&stored, whole.keys[i]),
                            whole.values[i]);
    assert_int_equal(pl_deal_from_fields(&stored, "D-1", &back, rev), 0);
    assert_deal_stored_equal(&next, &back);

    /* a deal that does not exist yet: every field */
    pl_fields_clear(&diff);
    prev.exists = false;
    assert_int_equal(
        pl_deal_to_fields_diff(&prev, &next, "r2", &diff, NULL), 0);
    assert_int_equal(diff.count, whole.count);

    /* one stored in the older layout: every field, in the new names */
    pl_fields_clear(&diff);
    prev.exists = true;
    prev.old_layout = true;
    assert_int_equal(
        pl_deal_to_fields_diff(&prev, &next, "r2", &diff, NULL), 0);
    assert_int_equal(diff.count, whole.count);
    assert_non_null(pl_fields_get(&diff, "ca"));

    pl_fields_clear(&stored);
    pl_fields_clear(&diff);
    pl_fields_clear(&whole);
    pl_deal_state_clear(&prev);
    pl_deal_state_clear(&next);
    pl_deal_state_clear(&back);
}

static void test_fields_roundtrip_sparse(void **state)
{
    static const int64_t amounts[] = {-32500, 0, 1, 999999999999999999LL};
    (void)state;
    for (size_t i = 0; i < sizeof(amounts) / sizeof(amounts[0]); i++) {
        pl_deal_state_t st, back;
        pl_fields_t f = {0};
        char rev[PL_REV_LEN + 1];

        pl_deal_state_init(&st);
        pl_deal_state_init(&back);
        st.exists = true;
        assert_int_equal(pl_str_set(&st.deal_id, "D-2"), 0);
        assert_int_equal(pl_str_set(&st.stage, "qualification"), 0);
        st.amount = amounts[i];
        st.has_amount = true;
        st.activities = i == 0 ? 0 : (1u << PL_ACT__COUNT) - 1;
        st.created_at = st.stage_entered_at = st.last_event_at = T0;

        assert_int_equal(pl_deal_to_fields(&st, "", &f), 0);
        assert_null(pl_fields_get(&f, "l"));
        assert_null(pl_fields_get(&f, "cd"));
        assert_int_equal(pl_deal_from_fields(&f, "D-2", &back, rev), 0);
        assert_string_equal(rev, "");
        assert_deal_stored_equal(&st, &back);
        pl_fields_clear(&f);
        pl_deal_state_clear(&st);
        pl_deal_state_clear(&back);
    }
}

/* Without a stage a deal does not exist, whatever else is there. */
static void test_fields_absent_deal(void **state)
{
    pl_deal_state_t st, back;
    pl_fields_t f = {0};
    char rev[PL_REV_LEN + 1];
    (void)state;

    pl_deal_state_init(&st);
    pl_deal_state_init(&back);
    assert_int_equal(pl_deal_to_fields(&st, REV, &f), 0);
    assert_null(pl_fields_get(&f, "s"));
    assert_int_equal(pl_deal_from_fields(&f, "D-3", &back, rev), 0);
    assert_false(back.exists);
    assert_null(back.stage);
    assert_string_equal(rev, REV);
    pl_fields_clear(&f);

    /* an empty hash (redis: key not found) */
    assert_int_equal(pl_deal_from_fields(&f, "D-3", &back, rev), 0);
    assert_false(back.exists);
    assert_string_equal(rev, "");

    /* leftovers without a stage */
    assert_int_equal(pl_fields_set(&f, "deal_id", "D-3"), 0);
    assert_int_equal(pl_fields_set(&f, "a", "5"), 0);
    assert_int_equal(pl_fields_set(&f, "amount", "5"), 0);
    assert_int_equal(pl_deal_from_fields(&f, "D-3", &back, rev), 0);
    assert_false(back.exists);

    /* from_fields starts from a clean state: old content is freed */
    full_state(&back);
    assert_int_equal(pl_deal_from_fields(&f, "D-3", &back, rev), 0);
    assert_false(back.exists);
    assert_null(back.owner);
    assert_false(back.has_amount);

    pl_fields_clear(&f);
    pl_deal_state_clear(&back);
}

/* st's fields as the older layout wrote them: long names, the deal_id,
 * the activities as a comma list (always there). */
static void old_layout_fields(const pl_deal_state_t *st, pl_fields_t *out)
{
    pl_fields_t f = {0};
    char acts[256] = "";
    size_t n = 0;

    assert_int_equal(pl_deal_to_fields(st, REV, &f), 0);
    assert_int_equal(pl_fields_set(out, "deal_id", st->deal_id), 0);
    for (size_t i = 0; i < f.count; i++) {
        const char *k = pl_deal_field_long_name(f.keys[i]);
        if (strcmp(f.keys[i], "ac"))
            assert_int_equal(
                pl_fields_set(out, k ? k : f.keys[i], f.values[i]), 0);
    }
    for (int a = 0; a < PL_ACT__COUNT; a++)
        if (st->activities & (1u << a))
            n += (size_t)snprintf(acts + n, sizeof(acts) - n, "%s%s",
                                  n ? "," : "",
                                  pl_activity_name((pl_activity_t)a));
    assert_int_equal(pl_fields_set(out, "activities", acts), 0);
    pl_fields_clear(&f);
}

/* One corrupt field: -1, not a silently zeroed value.  field is a long
 * name: it is set under its short name in the layout of today, and in a
 * hash of the older layout under its own. */
static void expect_corrupt(const char *field, const char *value)
{
    pl_deal_state_t st, back;
    pl_fields_t f = {0};
    char rev[PL_REV_LEN + 1];
    const char *k = NULL;
    int r;

    full_state(&st);
    pl_deal_state_init(&back);
    assert_int_equal(pl_deal_to_fields(&st, REV, &f), 0);
    for (size_t i = 0; i < f.count; i++)
        if (!strcmp(pl_deal_field_long_name(f.keys[i]) ?: "", field))
            k = f.keys[i];
    assert_non_null(k);
    assert_int_equal(pl_fields_set(&f, k, value), 0);
    r = pl_deal_from_fields(&f, "D-1", &back, rev);
    pl_fields_clear(&f);
    if (r != -1)
        fail_msg("%s=\"%s\" accepted", field, value);
    old_layout_fields(&st, &f);
    assert_int_equal(pl_fields_set(&f, field, value), 0);
    r = pl_deal_from_fields(&f, "D-1", &back, rev);
    pl_fields_clear(&f);
    pl_deal_state_clear(&st);
    pl_deal_state_clear(&back);
    if (r != -1)
        fail_msg("%s=\"%s\" accepted", field, value);
}

static void test_fields_corrupt(void **state)
{
    (void)state;
    expect_corrupt("amount", "abc");
    expect_corrupt("amount", "12.5x");
    expect_corrupt("amount", "1.23456");
    expect_corrupt("amount", "");
    expect_corrupt("expected_close_date", "2024-13-01");
    expect_corrupt("expected_close_date", "soon");
    expect_corrupt("created_at", "12x");
    expect_corrupt("stage_entered_at", "1e3");
    expect_corrupt("last_event_at", "99999999999999999999999");
    /* an empty time is not 0 (the Unix epoch) */
    expect_corrupt("created_at", "");
    expect_corrupt("stage_entered_at", "");
    /* the activities' bits: a number (the older layout's comma list is
     * text) */
    {
        pl_deal_state_t back;
        pl_fields_t f = {0};
        char rev[PL_REV_LEN + 1];
        static const char *const bad[] = {"call", "-1", "4294967296", "1x",
                                          ""};
        pl_deal_state_init(&back);
        for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
            assert_int_equal(pl_fields_set(&f, "s", "scoping"), 0);
            assert_int_equal(pl_fields_set(&f, "ac", bad[i]), 0);
            if (pl_deal_from_fields(&f, "D-1", &back, rev) != -1)
                fail_msg("ac=\"%s\" accepted", bad[i]);
            pl_fields_clear(&f);
        }
        pl_deal_state_clear(&back);
    }
}

/* A hash the older layout wrote (long names, the deal_id) reads back the
 * same and is marked old_layout; in a hash half rewritten the short name
 * wins; the diff over it is the whole state, and it names every old field
 * to remove. */
static void test_fields_old_layout(void **state)
{
    pl_deal_state_t st, back;
    pl_fields_t f = {0}, diff = {0}, whole = {0};
    pl_strlist_t old = {0};
    char rev[PL_REV_LEN + 1];
    (void)state;

    full_state(&st);
    pl_deal_state_init(&back);
    old_layout_fields(&st, &f);
    assert_non_null(pl_fields_get(&f, "stage_entered_at"));
    assert_string_equal(pl_fields_get(&f, "activities"),
                        "call,demo,contract_signed,note");
    assert_null(pl_fields_get(&f, "se"));
    assert_int_equal(pl_deal_from_fields(&f, "D-other", &back, rev), 0);
    assert_string_equal(rev, REV);
    assert_true(back.old_layout);
    assert_deal_stored_equal(&st, &back); /* deal_id from the hash */

    /* half rewritten: a newer stage under "s" wins over "stage" */
    assert_int_equal(pl_fields_set(&f, "s", "closing"), 0);
    assert_int_equal(pl_deal_from_fields(&f, "D-1", &back, rev), 0);
    assert_string_equal(back.stage, "closing");
    assert_true(back.old_layout);

    /* the names a rewrite removes: every old one there is, no new one */
    assert_int_equal(pl_deal_to_fields_diff(&back, &st, REV, &diff, &old),
                     0);
    assert_int_equal(pl_deal_to_fields(&st, REV, &whole), 0);
    assert_int_equal(diff.count, whole.count);
    for (size_t i = 0; i < f.count; i++) {
        bool listed = false;
        for (size_t j = 0; j < old.count; j++)
            listed |= !strcmp(old.items[j], f.keys[i]);
        if (listed != (strcmp(f.keys[i], "rev") &&
                       strcmp(f.keys[i], "s")))
            fail_msg("field %s %s in the old names", f.keys[i],
                     listed ? "wrongly" : "not");
    }

    pl_strlist_clear(&old);
    pl_fields_clear(&f);
    pl_fields_clear(&diff);
    pl_fields_clear(&whole);
    pl_deal_state_clear(&st);
    pl_deal_state_clear(&back);
}

/* ---- history ---- */

/* The history entry is written without jansson, byte for byte as
 * json_dumps(JSON_COMPACT | JSON_PRESERVE_ORDER) wrote it before: quotes,
 * backslashes, control characters and UTF-8 in the strings. */
static void test_history_entry_as_jansson(void **state)
{
    static const char *const owners[] = {
        "ana@example.com", "a \"quoted\" \\ name", "tab\there\nnl\r",
        "ctl\x01\x1f\b\f", "Zoë Ødegård 東京", "/slash/", ""};
    (void)state;
    for (size_t i = 0; i < sizeof(owners) / sizeof(*owners); i++) {
        pl_deal_outcome_t out;
        pl_event_t ev;
        pl_deal_state_t next;
        char *mine, *theirs, at[40], amount[64];
        json_t *o;

        memset(&out, 0, sizeof(out));
        snprintf(out.from_stage, sizeof(out.from_stage), "scoping");
        snprintf(out.to_stage, sizeof(out.to_stage), "proposal");
        out.seconds_in_previous_stage = 86400 + (int64_t)i;
        pl_event_init(&ev);
        assert_int_equal(pl_str_set(&ev.event_id, owners[i]), 0);
        ev.occurred_at = T0 + 123;
        pl_deal_state_init(&next);
        next.exists = true;
        assert_int_equal(pl_str_set(&next.owner, owners[i]), 0);
        assert_int_equal(pl_str_set(&next.currency, "EUR"), 0);
        next.amount = 12345678901LL;
        next.has_amount = i % 2 == 0;

        pl_time_format_rfc3339(ev.occurred_at, at, sizeof(at));
        o = json_pack("{s:s, s:s, s:s, s:s}", "from", out.from_stage, "to",
                      out.to_stage, "at", at, "event_id", ev.event_id);
        assert_non_null(o);
        json_object_set_new(o, "owner", json_string(next.owner));
        json_object_set_new(o, "seconds",
                            json_integer(out.seconds_in_previous_stage));
        if (next.has_amount) {
            pl_amount_format(next.amount, amount, sizeof(amount));
            json_object_set_new(o, "amount", json_string(amount));
        }
        json_object_set_new(o, "currency", json_string(next.currency));
        theirs = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
        mine = pl_deal_history_entry(&out, &ev, &next);
        assert_non_null(theirs);
        assert_non_null(mine);
        assert_string_equal(mine, theirs);
        free(mine);
        free(theirs);
        json_decref(o);
        pl_event_clear(&ev);
        pl_deal_state_clear(&next);
    }
}

static void test_history_entry(void **state)
{
    pl_deal_outcome_t out;
    pl_event_t ev;
    char *s;
    json_t *o;
    json_error_t jerr;
    (void)state;

    memset(&out, 0, sizeof(out));
    out.verdict = PL_DEAL_APPLIED;
    out.stage_changed = true;
    snprintf(out.from_stage, sizeof(out.from_stage), "scoping");
    snprintf(out.to_stage, sizeof(out.to_stage), "proposal");
    pl_event_init(&ev);
    ev.type = PL_EV_DEAL_STAGE_REQUESTED;
    assert_int_equal(pl_str_set(&ev.event_id, "evt-\"1\""), 0);
    ev.occurred_at = T0 + 123;
    ev.present |= PL_F_OCCURRED_AT;

    s = pl_deal_history_entry(&out, &ev, NULL);
    assert_non_null(s);
    o = json_loads(s, 0, &jerr);
    if (!o)
        fail_msg("history entry is not JSON: %s (%s)", s, jerr.text);
    assert_true(json_is_object(o));
    assert_int_equal(json_object_size(o), 4);
    assert_string_equal(json_string_value(json_object_get(o, "from")),
                        "scoping");
    assert_string_equal(json_string_value(json_object_get(o, "to")),
                        "proposal");
    assert_string_equal(json_string_value(json_object_get(o, "at")),
                        "2023-11-14T22:13:20.123Z");
    assert_string_equal(json_string_value(json_object_get(o, "event_id")),
                        "evt-\"1\"");
    /* one line: a Redis list entry */
    assert_null(strchr(s, '\n'));
    json_decref(o);
    free(s);

    /* a new deal enters its first stage from "" */
    out.from_stage[0] = '\0';
    snprintf(out.to_stage, sizeof(out.to_stage), "qualification");
    s = pl_deal_history_entry(&out, &ev, NULL);
    assert_non_null(s);
    o = json_loads(s, 0, &jerr);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "from")), "");
    json_decref(o);
    free(s);

    /* with the state after the change: what the analytics rebuild needs */
    {
        pl_deal_state_t next;
        pl_deal_state_init(&next);
        next.exists = true;
        assert_int_equal(pl_str_set(&next.owner, "ana"), 0);
        assert_int_equal(pl_str_set(&next.currency, "EUR"), 0);
        next.amount = 125005000; /* 12500.5 */
        next.has_amount = true;
        out.seconds_in_previous_stage = 42;
        s = pl_deal_history_entry(&out, &ev, &next);
        assert_non_null(s);
        o = json_loads(s, 0, &jerr);
        assert_non_null(o);
        assert_string_equal(json_string_value(json_object_get(o, "owner")),
                            "ana");
        assert_int_equal(json_integer_value(json_object_get(o, "seconds")),
                         42);
        assert_string_equal(json_string_value(json_object_get(o, "amount")),
                            "12500.5");
        assert_string_equal(
            json_string_value(json_object_get(o, "currency")), "EUR");
        json_decref(o);
        free(s);
        pl_deal_state_clear(&next);
    }
    pl_event_clear(&ev);
}

/* ---- derived events ---- */

static void make_event(pl_event_t *ev, pl_event_type_t type, const char *id,
                       int64_t at)
{
    deal_event(ev, type, id, "D-1", at);
}

/* A deal in scoping since T0, with amount, owner and currency. */
static void scoping_state(pl_deal_state_t *st)
{
    full_state(st);
    assert_int_equal(pl_str_set(&st->stage, "scoping"), 0);
    st->stage_entered_at = T0;
    st->last_event_at = T0;
    st->amount = 120005000; /* 12000.5 */
}

/* Run the real engine on cur and ev, then derive. */
static void decide(const pl_deal_state_t *cur, const pl_event_t *ev,
                   pl_deal_state_t *next, pl_deal_outcome_t *out,
                   pl_event_t *d)
{
    pl_deal_state_init(next);
    if (pl_rules_apply_deal(rules, cur, ev, next, out) != 0)
        fail_msg("engine: %s", out->message);
    pl_event_init(d);
    assert_int_equal(pl_deal_derived(rules, ev, next, out, d), 0);
}

static void test_derived_stage_changed(void **state)
{
    pl_deal_state_t cur, next;
    pl_deal_outcome_t out;
    pl_event_t ev, d;
    char id[PL_EVENT_ID_MAX + 1];
    (void)state;

    scoping_state(&cur);
    make_event(&ev, PL_EV_DEAL_STAGE_REQUESTED, "evt-1",
               T0 + 3 * 3600 * SEC + 999);
    assert_int_equal(pl_str_set(&ev.to_stage, "proposal"), 0);
    decide(&cur, &ev, &next, &out, &d);

    assert_int_equal(out.verdict, PL_DEAL_APPLIED);
    assert_true(out.stage_changed);
    assert_int_equal(d.type, PL_EV_DEAL_STAGE_CHANGED);
    /* the id: type name, ':', 32 hex of SHA-256("deal.stage_changed\nevt-1")
     * - pinned, so ids stay the same across versions and replays */
    assert_string_equal(d.event_id,
                        "deal.stage_changed:d1b07e69a2cbac1070359a75cb3ee0ed");
    pl_event_derive_id(PL_EV_DEAL_STAGE_CHANGED, "evt-1", id);
    assert_string_equal(d.event_id, id);
    assert_string_equal(d.caused_by, "evt-1");
    assert_string_equal(d.deal_id, "D-1");
    assert_string_equal(d.from_stage, "scoping");
    assert_string_equal(d.to_stage, "proposal");
    assert_int_equal(d.occurred_at, ev.occurred_at);
    assert_true(d.present & PL_F_OCCURRED_AT);
    /* the new stage's probability, from the rules file */
    assert_true(d.present & PL_F_PROBABILITY);
    assert_true(d.probability > 0.399 && d.probability < 0.401);
    assert_true(d.present & PL_F_SECONDS_IN_PREVIOUS_STAGE);
    assert_int_equal(d.seconds_in_previous_stage, 3 * 3600);
    assert_string_equal(d.owner, "ana@example.com");
    assert_string_equal(d.currency, "EUR");
    assert_true(d.present & PL_F_AMOUNT);
    assert_int_equal(d.amount, 120005000);
    assert_null(d.reason_code);

    /* the same input again: the same event, byte for byte the same id */
    {
        pl_deal_state_t next2;
        pl_deal_outcome_t out2;
        pl_event_t d2;
        decide(&cur, &ev, &next2, &out2, &d2);
        assert_string_equal(d2.event_id, d.event_id);
        pl_event_clear(&d2);
        pl_deal_state_clear(&next2);
    }
    /* a different input (another event_id): a different id */
    {
        pl_deal_state_t next2;
        pl_deal_outcome_t out2;
        pl_event_t d2, ev2;
        make_event(&ev2, PL_EV_DEAL_STAGE_REQUESTED, "evt-2",
                   ev.occurred_at);
        assert_int_equal(pl_str_set(&ev2.to_stage, "proposal"), 0);
        decide(&cur, &ev2, &next2, &out2, &d2);
        assert_int_equal(d2.type, PL_EV_DEAL_STAGE_CHANGED);
        assert_string_not_equal(d2.event_id, d.event_id);
        assert_int_equal(strncmp(d2.event_id, "deal.stage_changed:", 19), 0);
        pl_event_clear(&d2);
        pl_event_clear(&ev2);
        pl_deal_state_clear(&next2);
    }
    /* each stage's probability is the rules file's */
    {
        static const struct {
            const char *from, *to;
            double p;
        } moves[] = {{"proposal", "negotiation", 0.60},
                     {"negotiation", "closing", 0.80},
                     {"closing", "lost", 0.0},
                     {"lost", "qualification", 0.10}};
        for (size_t i = 0; i < sizeof(moves) / sizeof(moves[0]); i++) {
            pl_deal_state_t c2, next2;
            pl_deal_outcome_t out2;
            pl_event_t d2, ev2;
            full_state(&c2);
            assert_int_equal(pl_str_set(&c2.stage, moves[i].from), 0);
            /* in stage since T0, nothing since (an older last event would
             * make the request below an out-of-order one) */
            c2.stage_entered_at = c2.last_event_at = T0;
            make_event(&ev2, PL_EV_DEAL_STAGE_REQUESTED, "evt-p", T0 + SEC);
            assert_int_equal(pl_str_set(&ev2.to_stage, moves[i].to), 0);
            assert_int_equal(pl_str_set(&ev2.reason, "budget"), 0);
            decide(&c2, &ev2, &next2, &out2, &d2);
            if (d2.type != PL_EV_DEAL_STAGE_CHANGED)
                fail_msg("%s -> %s: %s", moves[i].from, moves[i].to,
                         out2.message);
            assert_true(d2.probability > moves[i].p - 0.001 &&
                        d2.probability < moves[i].p + 0.001);
            assert_int_equal(d2.seconds_in_previous_stage, 1);
            pl_event_clear(&d2);
            pl_event_clear(&ev2);
            pl_deal_state_clear(&next2);
            pl_deal_state_clear(&c2);
        }
    }

    pl_event_clear(&d);
    pl_event_clear(&ev);
    pl_deal_state_clear(&next);
    pl_deal_state_clear(&cur);
}

/* A new deal enters the first stage: a stage change from "", 0 s. */
static void test_derived_new_deal(void **state)
{
    pl_deal_state_t next;
    pl_deal_outcome_t out;
    pl_event_t ev, d;
    (void)state;

    make_event(&ev, PL_EV_DEAL_CREATED, "evt-new", T0);
    assert_int_equal(pl_str_set(&ev.owner, "bo"), 0);
    assert_int_equal(pl_str_set(&ev.currency, "USD"), 0);
    assert_int_equal(pl_str_set(&ev.name, "n"), 0);
    decide(NULL, &ev, &next, &out, &d);
    assert_int_equal(d.type, PL_EV_DEAL_STAGE_CHANGED);
    assert_string_equal(d.from_stage, "");
    assert_string_equal(d.to_stage, "qualification");
    assert_int_equal(d.seconds_in_previous_stage, 0);
    assert_true(d.probability > 0.099 && d.probability < 0.101);
    assert_string_equal(d.owner, "bo");
    assert_string_equal(d.currency, "USD");
    assert_false(d.present & PL_F_AMOUNT); /* none given */
    pl_event_clear(&d);
    pl_event_clear(&ev);
    pl_deal_state_clear(&next);
}

static void test_derived_rejected(void **state)
{
    pl_deal_state_t cur, next;
    pl_deal_outcome_t out;
    pl_event_t ev, d;
    char id[PL_EVENT_ID_MAX + 1];
    (void)state;

    scoping_state(&cur);
    make_event(&ev, PL_EV_DEAL_STAGE_REQUESTED, "evt-1", T0 + SEC);
    assert_int_equal(pl_str_set(&ev.to_stage, "won"), 0);
    decide(&cur, &ev, &next, &out, &d);

    assert_int_equal(out.verdict, PL_DEAL_REJECTED);
    assert_int_equal(d.type, PL_EV_DEAL_TRANSITION_REJECTED);
    assert_int_equal(strncmp(d.event_id, "deal.transition_rejected:", 25), 0);
    pl_event_derive_id(PL_EV_DEAL_TRANSITION_REJECTED, "evt-1", id);
    assert_string_equal(d.event_id, id);
    /* not the id a stage change of the same input would get */
    pl_event_derive_id(PL_EV_DEAL_STAGE_CHANGED, "evt-1", id);
    assert_string_not_equal(d.event_id, id);
    assert_string_equal(d.caused_by, "evt-1");
    assert_string_equal(d.deal_id, "D-1");
    assert_string_equal(d.from_stage, "scoping");
    assert_string_equal(d.to_stage, "won");
    assert_string_equal(d.reason_code, "not_allowed");
    assert_non_null(d.message);
    assert_string_equal(d.message, out.message);
    assert_true(strlen(d.message) > 0);
    assert_int_equal(d.occurred_at, ev.occurred_at);
    /* a rejection carries no probability or stage time */
    assert_false(d.present & PL_F_PROBABILITY);
    assert_false(d.present & PL_F_SECONDS_IN_PREVIOUS_STAGE);
    /* the state did not move */
    assert_string_equal(next.stage, "scoping");
    pl_event_clear(&d);
    pl_event_clear(&ev);
    pl_deal_state_clear(&next);

    /* a request for an unknown deal */
    make_event(&ev, PL_EV_DEAL_STAGE_REQUESTED, "evt-u", T0);
    assert_int_equal(pl_str_set(&ev.to_stage, "proposal"), 0);
    decide(NULL, &ev, &next, &out, &d);
    assert_int_equal(d.type, PL_EV_DEAL_TRANSITION_REJECTED);
    assert_string_equal(d.reason_code, "unknown_deal");
    assert_string_equal(d.from_stage, "");
    assert_string_equal(d.to_stage, "proposal");
    pl_event_clear(&d);
    pl_event_clear(&ev);
    pl_deal_state_clear(&next);

    /* missing requirement: proposal needs an amount */
    pl_deal_state_clear(&cur);
    scoping_state(&cur);
    cur.has_amount = false;
    make_event(&ev, PL_EV_DEAL_STAGE_REQUESTED, "evt-m", T0);
    assert_int_equal(pl_str_set(&ev.to_stage, "proposal"), 0);
    decide(&cur, &ev, &next, &out, &d);
    assert_string_equal(d.reason_code, "missing_field");
    assert_non_null(strstr(d.message, "amount"));
    pl_event_clear(&d);
    pl_event_clear(&ev);
    pl_deal_state_clear(&next);
    pl_deal_state_clear(&cur);
}

/* An applied update or activity publishes nothing. */
static void test_derived_applied_update(void **state)
{
    pl_deal_state_t cur, next;
    pl_deal_outcome_t out;
    pl_event_t ev, d;
    (void)state;

    scoping_state(&cur);
    make_event(&ev, PL_EV_DEAL_UPDATED, "evt-upd", T0 + SEC);
    ev.amount = 50000;
    ev.present |= PL_F_AMOUNT;
    decide(&cur, &ev, &next, &out, &d);
    assert_int_equal(out.verdict, PL_DEAL_APPLIED);
    assert_false(out.stage_changed);
    assert_int_equal(d.type, PL_EV_UNKNOWN);
    assert_null(d.event_id);
    assert_null(d.deal_id);
    assert_int_equal(d.present, 0);
    pl_event_clear(&d);
    pl_event_clear(&ev);
    pl_deal_state_clear(&next);

    make_event(&ev, PL_EV_DEAL_ACTIVITY, "evt-act", T0 + SEC);
    assert_int_equal(pl_str_set(&ev.activity, "demo"), 0);
    decide(&cur, &ev, &next, &out, &d);
    assert_int_equal(d.type, PL_EV_UNKNOWN);
    assert_null(d.event_id);
    pl_event_clear(&d);
    pl_event_clear(&ev);
    pl_deal_state_clear(&next);
    pl_deal_state_clear(&cur);
}

/* ---- ids and revisions ---- */

static bool is_hex32(const char *s)
{
    if (strlen(s) != 32)
        return false;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
            return false;
    return true;
}

static void test_hash_and_ids(void **state)
{
    char a[PL_HASH_HEX_LEN + 1], b[PL_HASH_HEX_LEN + 1];
    char i1[PL_EVENT_ID_MAX + 1], i2[PL_EVENT_ID_MAX + 1];
    (void)state;

    pl_hash_hex("deal.stage_changed", "evt-1", a);
    assert_string_equal(a, "d1b07e69a2cbac1070359a75cb3ee0ed");
    pl_hash_hex("deal.stage_changed", "evt-1", b);
    assert_string_equal(a, b);
    pl_hash_hex("deal.stage_changed", "evt-2", b);
    assert_string_not_equal(a, b);
    /* order matters */
    pl_hash_hex("a", "b", a);
    pl_hash_hex("b", "a", b);
    assert_string_not_equal(a, b);
    /* the separator matters: ("ab","") is not ("a","b") */
    pl_hash_hex("ab", "", b);
    assert_string_not_equal(a, b);
    assert_true(is_hex32(a));

    pl_event_derive_id(PL_EV_DEAL_STALE, "D-1/1700000000000", i1);
    pl_event_derive_id(PL_EV_DEAL_STALE, "D-1/1700000000000", i2);
    assert_string_equal(i1, i2);
    assert_int_equal(strncmp(i1, "deal.stale:", 11), 0);
    assert_true(is_hex32(i1 + 11));
    pl_event_derive_id(PL_EV_DEAL_CLOSE_REMINDER, "D-1/1700000000000", i2);
    assert_string_not_equal(i1, i2);
    assert_int_equal(strncmp(i2, "deal.close_reminder:", 20), 0);
    pl_event_derive_id(PL_EV_DEAL_STALE, "D-1/1700000000001", i2);
    assert_string_not_equal(i1, i2);
    /* a long cause still fits */
    {
        char cause[1024];
        memset(cause, 'x', sizeof(cause) - 1);
        cause[sizeof(cause) - 1] = '\0';
        pl_event_derive_id(PL_EV_LEAD_STATUS_CHANGED, cause, i1);
        assert_int_equal(strlen(i1), strlen("lead.status_changed:") + 32);
    }
}

/* ---- CONTRACT, precision: derived ids and seconds_in_previous_stage ---- */

/* "<type>:" + the first 32 hex digits of SHA-256 over text, computed here
 * with OpenSSL directly, not with the code under test. */
static void contract_id(const char *type, const char *text, char *out,
                        size_t size)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    size_t n;

    assert_int_equal(EVP_Digest(text, strlen(text), md, &mdlen, EVP_sha256(),
                                NULL),
                     1);
    assert_true(mdlen >= 16);
    n = (size_t)snprintf(out, size, "%s:", type);
    for (unsigned int i = 0; i < 16; i++)
        n += (size_t)snprintf(out + n, size - n, "%02x", md[i]);
}

static void test_contract_derived_ids(void **state)
{
    pl_deal_state_t cur, next, st;
    pl_deal_outcome_t out;
    pl_event_t ev, d, alert;
    pl_timer_t t[PL_TIMERS_MAX];
    char want[PL_EVENT_ID_MAX + 64], text[1024];
    int n;
    (void)state;

    /* a stage change: over "deal.stage_changed\n<caused_by>" */
    scoping_state(&cur);
    make_event(&ev, PL_EV_DEAL_STAGE_REQUESTED, "req-42", T0 + 60 * SEC);
    assert_int_equal(pl_str_set(&ev.to_stage, "proposal"), 0);
    decide(&cur, &ev, &next, &out, &d);
    assert_int_equal(d.type, PL_EV_DEAL_STAGE_CHANGED);
    contract_id("deal.stage_changed", "deal.stage_changed\nreq-42", want,
                sizeof(want));
    assert_string_equal(d.event_id, want);
    pl_event_clear(&d);
    pl_event_clear(&ev);
    pl_deal_state_clear(&next);

    /* a rejection: over "deal.transition_rejected\n<caused_by>" */
    make_event(&ev, PL_EV_DEAL_STAGE_REQUESTED, "req-43", T0 + 60 * SEC);
    assert_int_equal(pl_str_set(&ev.to_stage, "won"), 0);
    decide(&cur, &ev, &next, &out, &d);
    assert_int_equal(d.type, PL_EV_DEAL_TRANSITION_REJECTED);
    contract_id("deal.transition_rejected",
                "deal.transition_rejected\nreq-43", want, sizeof(want));
    assert_string_equal(d.event_id, want);
    pl_event_clear(&d);
    pl_event_clear(&ev);
    pl_deal_state_clear(&next);
    pl_deal_state_clear(&cur);

    /* timers: over "<type>\n<deal_id>\n<timer>\n<due ms>", for the stale
     * alert and a close reminder of the same deal */
    full_state(&st); /* negotiation, close date 2024-02-29 */
    n = pl_rules_deal_timers(rules, &st, t);
    assert_true(n >= 2);
    for (int i = 0; i < n; i++) {
        const char *type =
            strcmp(t[i].name, "stale") ? "deal.close_reminder" : "deal.stale";
        pl_event_init(&alert);
        assert_int_equal(pl_rules_deal_alert(rules, &st, t[i].name, t[i].due,
                                             t[i].due, &alert),
                         0);
        snprintf(text, sizeof(text), "%s\nD-1\n%s\n%lld", type, t[i].name,
                 (long long)t[i].due);
        contract_id(type, text, want, sizeof(want));
        if (strcmp(alert.event_id, want))
            fail_msg("timer %s due %lld: id %s, contract says %s", t[i].name,
                     (long long)t[i].due, alert.event_id, want);
        pl_event_clear(&alert);
    }
    /* pinned: deal D-1's stale timer due at T0 */
    st.last_event_at = T0 - 10 * 86400 * SEC; /* negotiation: stale 10d */
    pl_event_init(&alert);
    assert_int_equal(pl_rules_deal_alert(rules, &st, "stale", T0, T0, &alert),
                     0);
    contract_id("deal.stale", "deal.stale\nD-1\nstale\n1700000000000", want,
                sizeof(want));
    assert_string_equal(alert.event_id, want);
    pl_event_clear(&alert);
    pl_deal_state_clear(&st);
}

/* A new deal's deal.stage_changed carries seconds_in_previous_stage 0, in
 * the JSON form and in Avro alike (not absent). */
static void test_new_deal_seconds_zero_json_and_avro(void **state)
{
    char dir[4096], err[512] = "";
    pl_codec_t *c;
    pl_deal_state_t next;
    pl_deal_outcome_t out;
    pl_event_t ev, d, back;
    void *buf = NULL;
    size_t len = 0;
    char *js;
    json_t *o;
    json_error_t jerr;
    (void)state;

    source_path(dir, sizeof(dir), "schemas");
    if (!(c = pl_codec_new(dir, err, sizeof(err))))
        fail_msg("codec: %s", err);
    make_event(&ev, PL_EV_DEAL_CREATED, "evt-new", T0);
    decide(NULL, &ev, &next, &out, &d);
    assert_int_equal(d.type, PL_EV_DEAL_STAGE_CHANGED);
    assert_string_equal(d.from_stage, "");
    assert_true(d.present & PL_F_SECONDS_IN_PREVIOUS_STAGE);
    assert_int_equal(d.seconds_in_previous_stage, 0);

    /* JSON: "seconds_in_previous_stage": 0 */
    js = pl_codec_to_json(c, &d);
    assert_non_null(js);
    o = json_loads(js, 0, &jerr);
    if (!o)
        fail_msg("not JSON: %s (%s)", js, jerr.text);
    if (!json_is_integer(json_object_get(o, "seconds_in_previous_stage")))
        fail_msg("JSON form without seconds_in_previous_stage 0: %s", js);
    assert_int_equal(
        json_integer_value(json_object_get(o, "seconds_in_previous_stage")),
        0);
    json_decref(o);

    /* Avro: encoded as 0 (the union's long branch), decoded back as
     * present and 0 */
    if (pl_codec_encode(c, &d, &buf, &len, err, sizeof(err)))
        fail_msg("encode: %s", err);
    assert_int_equal(((unsigned char *)buf)[0], PL_WIRE_MAGIC);
    pl_event_init(&back);
    if (pl_codec_decode(c, buf, len, &back, err, sizeof(err)))
        fail_msg("decode: %s", err);
    assert_int_equal(back.type, PL_EV_DEAL_STAGE_CHANGED);
    assert_true(back.present & PL_F_SECONDS_IN_PREVIOUS_STAGE);
    assert_int_equal(back.seconds_in_previous_stage, 0);
    /* and the JSON of the decoded Avro event says the same */
    free(js);
    js = pl_codec_to_json(c, &back);
    assert_non_null(js);
    assert_non_null(strstr(js, "\"seconds_in_previous_stage\":0"));

    free(js);
    free(buf);
    pl_event_clear(&back);
    pl_event_clear(&d);
    pl_event_clear(&ev);
    pl_deal_state_clear(&next);
    pl_codec_destroy(c);
}

static void test_next_rev_chain(void **state)
{
    char r1[PL_REV_LEN + 1], r2[PL_REV_LEN + 1], r3[PL_REV_LEN + 1],
        x[PL_REV_LEN + 1], y[PL_REV_LEN + 1];
    (void)state;

    pl_store_next_rev("", "evt-1", r1);
    assert_true(is_hex32(r1));
    assert_string_equal(r1, "8f9c493dc2466e7a58417821f977a83f");
    pl_store_next_rev(r1, "evt-2", r2);
    pl_store_next_rev(r2, "evt-3", r3);
    assert_true(is_hex32(r2));
    assert_string_not_equal(r1, r2);
    assert_string_not_equal(r2, r3);
    /* deterministic */
    pl_store_next_rev(r1, "evt-2", x);
    assert_string_equal(x, r2);
    /* the same event on a different previous revision: a different rev */
    pl_store_next_rev("", "evt-2", x);
    assert_string_not_equal(x, r2);
    pl_store_next_rev(r3, "evt-2", x);
    assert_string_not_equal(x, r2);
    /* the same writes in another order end elsewhere */
    pl_store_next_rev("", "evt-2", x);
    pl_store_next_rev(x, "evt-1", y);
    pl_store_next_rev(y, "evt-3", x);
    assert_string_not_equal(x, r3);
}

/* pl_fmt_int (the numbers of the apply calls, timer members and history
 * entries) writes what printf's %lld writes, at every digit count and both
 * ends of the range. */
static void test_fmt_int(void **state)
{
    static const int64_t cases[] = {
        0, 1, 9, 10, 11, 99, 100, 101, 999, 1000, 12345, 1764547200000,
        INT64_MAX, INT64_MIN, INT64_MIN + 1, -1, -9, -10, -99, -100, -101};
    char buf[32], want[32];
    (void)state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *end = buf + sizeof(buf), *p = pl_fmt_int(end, cases[i]);
        snprintf(want, sizeof(want), "%lld", (long long)cases[i]);
        assert_int_equal(end - p, strlen(want));
        assert_memory_equal(p, want, strlen(want));
    }
    /* every power of ten and its neighbours, both signs */
    for (int64_t t = 1; t <= INT64_MAX / 10; t *= 10) {
        for (int64_t d = -1; d <= 1; d++) {
            for (int sign = -1; sign <= 1; sign += 2) {
                int64_t v = sign * (t + d);
                char *end = buf + sizeof(buf), *p = pl_fmt_int(end, v);
                snprintf(want, sizeof(want), "%lld", (long long)v);
                assert_int_equal(end - p, strlen(want));
                assert_memory_equal(p, want, strlen(want));
            }
        }
    }
    /* zeros inside the eight-digit blocks, and values of every length
     * (a fixed pseudo-random walk) */
    {
        static const int64_t inner[] = {100000000, 100000001, 199999999,
                                        1000000000000000001,
                                        1234500000006789, 900000000000000009};
        uint64_t x = 88172645463325252u;
        for (size_t i = 0; i < 20000; i++) {
            int64_t v;
            if (i < sizeof(inner) / sizeof(inner[0])) {
                v = inner[i];
            } else {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                v = (int64_t)(x >> (x % 63));
                if (x & 1)
                    v = -v;
            }
            char *end = buf + sizeof(buf), *p = pl_fmt_int(end, v);
            snprintf(want, sizeof(want), "%lld", (long long)v);
            assert_int_equal(end - p, strlen(want));
            assert_memory_equal(p, want, strlen(want));
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fields_roundtrip_full),
        cmocka_unit_test(test_fields_diff),
        cmocka_unit_test(test_fields_roundtrip_sparse),
        cmocka_unit_test(test_fields_absent_deal),
        cmocka_unit_test(test_fields_corrupt),
        cmocka_unit_test(test_fields_old_layout),
        cmocka_unit_test(test_history_entry),
        cmocka_unit_test(test_history_entry_as_jansson),
        cmocka_unit_test(test_derived_stage_changed),
        cmocka_unit_test(test_derived_new_deal),
        cmocka_unit_test(test_derived_rejected),
        cmocka_unit_test(test_derived_applied_update),
        cmocka_unit_test(test_hash_and_ids),
        cmocka_unit_test(test_next_rev_chain),
        cmocka_unit_test(test_fmt_int),
        cmocka_unit_test(test_contract_derived_ids),
        cmocka_unit_test(test_new_deal_seconds_zero_json_and_avro),
    };
    return cmocka_run_group_tests(tests, setup_global_rules,
                                  teardown_global_rules);
}
