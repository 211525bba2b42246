/*
 * test_lead_rules.c - unit tests of the lead section and the lead engine.
 *
 * Loads the shipped deploy/rules/default.yaml and checks its scoring against
 * the "Lead scoring" table of CONTRACT.md criterion by criterion (on, off,
 * field missing, with the exact reason lines a person reads), the mql
 * threshold at its edges, disqualification, every status move and every
 * rejection of pl_rules_apply_lead(), update merging, and the broken lead
 * sections in tests/unit/rules/.  The source tree is found through the
 * PL_SOURCE_DIR environment variable (set by ctest), else the compile-time
 * PL_SOURCE_DIR.
 */
#include "testutil.h"

#define SEC 1000LL
#define T0 1700000000000LL /* 2023-11-14T22:13:20Z */

/* ------------------------------------------------------------------------ */
/* Building events                                                          */

/* "1500" or "0.5" -> scaled by PL_AMOUNT_SCALE */
static int64_t scaled(const char *s)
{
    int64_t whole = 0, frac = 0, div = PL_AMOUNT_SCALE;

    for (; *s && *s != '.'; s++)
        whole = whole * 10 + (*s - '0');
    if (*s == '.')
        for (s++; *s && div > 1; s++) {
            div /= 10;
            frac += (*s - '0') * div;
        }
    return whole * PL_AMOUNT_SCALE + frac;
}

/* A comma-separated list ("" = an empty list that was given). */
static void set_list(pl_event_t *ev, pl_strlist_t *l, uint32_t bit,
                     const char *csv)
{
    char buf[512], *p = buf;

    pl_strlist_clear(l);
    ev->present |= bit;
    snprintf(buf, sizeof(buf), "%s", csv);
    while (*p) {
        char *comma = strchr(p, ',');
        if (comma)
            *comma = '\0';
        assert_int_equal(pl_strlist_add(l, p), 0);
        if (!comma)
            break;
        p = comma + 1;
    }
}

/* Set one profile field from "key=value". */
static void set_field(pl_event_t *ev, const char *kv)
{
    const char *eq = strchr(kv, '=');
    char key[64];
    const char *v;
    char **str = NULL;

    assert_non_null(eq);
    snprintf(key, sizeof(key), "%.*s", (int)(eq - kv), kv);
    v = eq + 1;
    if (!strcmp(key, "email"))
        str = &ev->email;
    else if (!strcmp(key, "company"))
        str = &ev->company;
    else if (!strcmp(key, "industry"))
        str = &ev->industry;
    else if (!strcmp(key, "contact_title"))
        str = &ev->contact_title;
    else if (!strcmp(key, "source"))
        str = &ev->source;
    else if (!strcmp(key, "owner"))
        str = &ev->owner;
    else if (!strcmp(key, "employees")) {
        ev->employees = strtoll(v, NULL, 10);
        ev->present |= PL_F_EMPLOYEES;
    } else if (!strcmp(key, "months_in_role")) {
        ev->months_in_role = strtoll(v, NULL, 10);
        ev->present |= PL_F_MONTHS_IN_ROLE;
    } else if (!strcmp(key, "monthly_ad_spend")) {
        ev->monthly_ad_spend = scaled(v);
        ev->present |= PL_F_MONTHLY_AD_SPEND;
    } else if (!strcmp(key, "technologies"))
        set_list(ev, &ev->technologies, PL_F_TECHNOLOGIES, v);
    else if (!strcmp(key, "hiring_for"))
        set_list(ev, &ev->hiring_for, PL_F_HIRING_FOR, v);
    else
        fail_msg("test bug: unknown field '%s'", key);
    if (str)
        assert_int_equal(pl_str_set(str, v), 0);
}

static int event_seq;

/* A lead input event; the va list is "key=value" profile fields, NULL
 * terminated. */
static void lead_ev_v(pl_event_t *ev, pl_event_type_t type, const char *id,
                      int64_t at, va_list ap)
{
    char eid[64];
    const char *kv;

    pl_event_init(ev);
    ev->type = type;
    snprintf(eid, sizeof(eid), "e-%d", ++event_seq);
    assert_int_equal(pl_str_set(&ev->event_id, eid), 0);
    assert_int_equal(pl_str_set(&ev->lead_id, id), 0);
    ev->occurred_at = at;
    ev->present |= PL_F_OCCURRED_AT;
    while ((kv = va_arg(ap, const char *)))
        set_field(ev, kv);
}

static void lead_ev(pl_event_t *ev, pl_event_type_t type, const char *id,
                    int64_t at, ...)
{
    va_list ap;
    va_start(ap, at);
    lead_ev_v(ev, type, id, at, ap);
    va_end(ap);
}

static void apply(const pl_rules_t *r, const pl_lead_state_t *cur,
                  const pl_event_t *ev, pl_lead_state_t *next,
                  pl_lead_outcome_t *out)
{
    int rc = pl_rules_apply_lead(r, cur, ev, next, out);
    if (rc != 0)
        fail_msg("pl_rules_apply_lead returned %d: %s", rc, out->message);
}

/* Create lead `id` with the given profile into *st (initialised); *out
 * receives the outcome (cleared by the caller). */
static void create_lead(const pl_rules_t *r, pl_lead_state_t *st,
                        pl_lead_outcome_t *out, const char *id, int64_t at,
                        ...)
{
    pl_event_t ev;
    va_list ap;

    va_start(ap, at);
    lead_ev_v(&ev, PL_EV_LEAD_CREATED, id, at, ap);
    va_end(ap);
    apply(r, NULL, &ev, st, out);
    pl_event_clear(&ev);
}

/* Apply ev to *st in place (through a second state). */
static void step(const pl_rules_t *r, pl_lead_state_t *st,
                 const pl_event_t *ev, pl_lead_outcome_t *out)
{
    pl_lead_state_t next;

    pl_lead_state_init(&next);
    apply(r, st, ev, &next, out);
    pl_lead_state_clear(st);
    *st = next;
}

/* A stored lead in any status, as the store would hand it back. */
static void lead_in_status(const pl_rules_t *r, pl_lead_state_t *st,
                           const char *status)
{
    pl_lead_outcome_t out;

    pl_lead_state_init(st);
    /* 25 + 15 + 15 = 55: mql */
    create_lead(r, st, &out, "L1", T0, "industry=banking", "employees=40",
                "technologies=hubspot", NULL);
    assert_string_equal(st->status, "mql");
    pl_lead_outcome_clear(&out);
    assert_int_equal(pl_str_set(&st->status, status), 0);
}

/* The reason line that starts with "name: ", or NULL. */
static const char *reason_of(const pl_lead_outcome_t *out, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < out->reasons.count; i++)
        if (!strncmp(out->reasons.items[i], name, n) &&
            out->reasons.items[i][n] == ':')
            return out->reasons.items[i];
    return NULL;
}

static void expect_reason(const pl_lead_outcome_t *out, const char *line)
{
    for (size_t i = 0; i < out->reasons.count; i++)
        if (!strcmp(out->reasons.items[i], line))
            return;
    for (size_t i = 0; i < out->reasons.count; i++)
        fprintf(stderr, "  reason: %s\n", out->reasons.items[i]);
    fail_msg("reason '%s' not given", line);
}

static void assert_list_equal(const pl_strlist_t *a, const pl_strlist_t *b)
{
    assert_int_equal(a->count, b->count);
    for (size_t i = 0; i < a->count; i++)
        assert_string_equal(a->items[i], b->items[i]);
}

static void assert_lead_equal(const pl_lead_state_t *a,
                              const pl_lead_state_t *b)
{
    const pl_event_t *p = &a->profile, *q = &b->profile;

    assert_int_equal(a->exists, b->exists);
    assert_str_or_null(a->status, b->status);
    assert_int_equal(a->score, b->score);
    assert_str_or_null(a->owner, b->owner);
    assert_str_or_null(a->deal_id, b->deal_id);
    assert_int_equal(a->created_at, b->created_at);
    assert_int_equal(a->status_changed_at, b->status_changed_at);
    assert_int_equal(a->last_event_at, b->last_event_at);
    assert_int_equal(a->version, b->version);
    assert_int_equal(p->present, q->present);
    assert_str_or_null(p->lead_id, q->lead_id);
    assert_str_or_null(p->email, q->email);
    assert_str_or_null(p->company, q->company);
    assert_str_or_null(p->industry, q->industry);
    assert_str_or_null(p->contact_title, q->contact_title);
    assert_str_or_null(p->source, q->source);
    assert_str_or_null(p->owner, q->owner);
    assert_int_equal(p->employees, q->employees);
    assert_int_equal(p->months_in_role, q->months_in_role);
    assert_int_equal(p->monthly_ad_spend, q->monthly_ad_spend);
    assert_list_equal(&p->technologies, &q->technologies);
    assert_list_equal(&p->hiring_for, &q->hiring_for);
}

/* ------------------------------------------------------------------------ */
/* Scoring                                                                  */

/* Each contract criterion alone: on gives its points, off and missing give
 * 0, each with the line a person reads. */
static void test_each_criterion(void **state)
{
    const pl_rules_t *r = *state;
    static const struct {
        const char *name;
        int64_t points;
        const char *on, *on2; /* profile fields (on2 may be NULL) */
        const char *on_reason;
        const char *off;
        const char *off_reason;
        const char *missing_reason;
    } cases[] = {
        {"target_industry", 25, "industry=banking", NULL,
         "target_industry: +25 (industry 'banking' in [financial_services, "
         "banking])",
         "industry=software",
         "target_industry: 0 (industry 'software' not in "
         "[financial_services, banking])",
         "target_industry: 0 (industry missing)"},
        {"target_industry", 25, "industry=financial_services", NULL,
         "target_industry: +25 (industry 'financial_services' in "
         "[financial_services, banking])",
         "industry=insurance",
         "target_industry: 0 (industry 'insurance' not in "
         "[financial_services, banking])",
         "target_industry: 0 (industry missing)"},
        {"company_size", 15, "employees=10", NULL,
         "company_size: +15 (employees 10 >= 10)", "employees=9",
         "company_size: 0 (employees 9 is not >= 10)",
         "company_size: 0 (employees missing)"},
        {"advertises", 15, "monthly_ad_spend=1500", NULL,
         "advertises: +15 (monthly_ad_spend 1500 > 0)",
         "monthly_ad_spend=0",
         "advertises: 0 (monthly_ad_spend 0 is not > 0; technologies "
         "missing)",
         "advertises: 0 (monthly_ad_spend missing; technologies missing)"},
        {"uses_hubspot", 15, "technologies=salesforce,hubspot", NULL,
         "uses_hubspot: +15 (technologies [salesforce, hubspot] has "
         "'hubspot')",
         "technologies=salesforce",
         "uses_hubspot: 0 (technologies [salesforce] has no 'hubspot')",
         "uses_hubspot: 0 (technologies missing)"},
        {"hiring_marketing", 10, "hiring_for=sales,marketing", NULL,
         "hiring_marketing: +10 (hiring_for [sales, marketing] has "
         "'marketing')",
         "hiring_for=engineering",
         "hiring_marketing: 0 (hiring_for [engineering] has no "
         "'marketing')",
         "hiring_marketing: 0 (hiring_for missing)"},
        {"hr_manager", 10, "contact_title=Senior hr MANAGER, EMEA", NULL,
         "hr_manager: +10 (contact_title 'Senior hr MANAGER, EMEA' contains "
         "'HR Manager' (ignoring case))",
         "contact_title=HR Director",
         "hr_manager: 0 (contact_title 'HR Director' does not contain "
         "'HR Manager' (ignoring case))",
         "hr_manager: 0 (contact_title missing)"},
        {"new_in_role", 10, "months_in_role=11", NULL,
         "new_in_role: +10 (months_in_role 11 < 12)", "months_in_role=12",
         "new_in_role: 0 (months_in_role 12 is not < 12)",
         "new_in_role: 0 (months_in_role missing)"},
    };
    (void)state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pl_lead_state_t st;
        pl_lead_outcome_t out;
        const char *line;

        /* missing: nothing known about the lead */
        pl_lead_state_init(&st);
        create_lead(r, &st, &out, "L1", T0, NULL);
        assert_int_equal(out.score, 0);
        expect_reason(&out, cases[i].missing_reason);
        pl_lead_outcome_clear(&out);
        pl_lead_state_clear(&st);

        /* on: exactly this criterion's points */
        create_lead(r, &st, &out, "L1", T0, cases[i].on, cases[i].on2, NULL);
        if (out.score != cases[i].points)
            fail_msg("%s on: score %lld, expected %lld", cases[i].name,
                     (long long)out.score, (long long)cases[i].points);
        expect_reason(&out, cases[i].on_reason);
        pl_lead_outcome_clear(&out);
        pl_lead_state_clear(&st);

        /* off: the field is there but does not match */
        create_lead(r, &st, &out, "L1", T0, cases[i].off, NULL);
        assert_int_equal(out.score, 0);
        expect_reason(&out, cases[i].off_reason);
        line = reason_of(&out, cases[i].name);
        assert_non_null(line);
        pl_lead_outcome_clear(&out);
        pl_lead_state_clear(&st);
    }
}

/* Every criterion and the disqualifier explain themselves, in file order;
 * all of them on make the contract's 100. */
static void test_full_profile(void **state)
{
    const pl_rules_t *r = *state;
    static const char *const order[] = {
        "target_industry", "company_size",     "advertises",
        "uses_hubspot",    "hiring_marketing", "hr_manager",
        "new_in_role",     "too_small"};
    pl_lead_state_t st;
    pl_lead_outcome_t out;
    int64_t score = -1;
    bool dq = true;

    assert_true(pl_rules_has_lead(r));
    assert_int_equal(pl_rules_lead_mql_score(r), 50);
    pl_lead_state_init(&st);
    create_lead(r, &st, &out, "L1", T0, "industry=financial_services",
                "employees=250", "monthly_ad_spend=12000.5",
                "technologies=google_ads,hubspot", "hiring_for=marketing",
                "contact_title=HR Manager", "months_in_role=3",
                "email=ann@example.com", "company=Acme Bank",
                "source=referral", NULL);
    assert_int_equal(out.verdict, PL_LEAD_APPLIED);
    assert_true(out.status_changed);
    assert_string_equal(out.from_status, "new");
    assert_string_equal(out.to_status, "mql");
    assert_int_equal(out.score, 100);
    assert_int_equal(st.score, 100);
    assert_int_equal(out.reasons.count, 8);
    for (size_t i = 0; i < 8; i++) {
        size_t n = strlen(order[i]);
        if (strncmp(out.reasons.items[i], order[i], n))
            fail_msg("reason %zu is '%s', expected %s first", i,
                     out.reasons.items[i], order[i]);
    }
    /* any: only the conditions that matched are named */
    expect_reason(&out, "advertises: +15 (monthly_ad_spend 12000.5 > 0; "
                        "technologies [google_ads, hubspot] has "
                        "'google_ads')");
    expect_reason(&out,
                  "too_small: not disqualified (employees 250 is not < 10)");

    /* the pure scorer gives the same */
    {
        pl_strlist_t reasons = {NULL, 0};
        assert_int_equal(
            pl_rules_score_lead(r, &st.profile, &score, &dq, &reasons), 0);
        assert_int_equal(score, 100);
        assert_false(dq);
        assert_list_equal(&reasons, &out.reasons);
        pl_strlist_clear(&reasons);
        /* reasons are optional */
        assert_int_equal(
            pl_rules_score_lead(r, &st.profile, &score, &dq, NULL), 0);
        assert_int_equal(score, 100);
    }
    pl_lead_outcome_clear(&out);
    pl_lead_state_clear(&st);
}

/* The OR criterion: either condition, both, neither. */
static void test_any_criterion(void **state)
{
    const pl_rules_t *r = *state;
    static const struct {
        const char *a, *b;
        int64_t score;
        const char *reason;
    } cases[] = {
        {"monthly_ad_spend=0.5", NULL, 15,
         "advertises: +15 (monthly_ad_spend 0.5 > 0)"},
        {"technologies=google_ads", NULL, 15,
         "advertises: +15 (technologies [google_ads] has 'google_ads')"},
        {"monthly_ad_spend=0", "technologies=google_ads", 15,
         "advertises: +15 (technologies [google_ads] has 'google_ads')"},
        {"monthly_ad_spend=99", "technologies=google_ads", 15,
         "advertises: +15 (monthly_ad_spend 99 > 0; technologies "
         "[google_ads] has 'google_ads')"},
        {"monthly_ad_spend=0", "technologies=", 0,
         "advertises: 0 (monthly_ad_spend 0 is not > 0; technologies [] "
         "has no 'google_ads')"},
        {"technologies=Google_Ads", NULL, 0, /* contains is exact */
         "advertises: 0 (monthly_ad_spend missing; technologies "
         "[Google_Ads] has no 'google_ads')"},
    };
    (void)state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pl_lead_state_t st;
        pl_lead_outcome_t out;

        pl_lead_state_init(&st);
        create_lead(r, &st, &out, "L1", T0, cases[i].a, cases[i].b, NULL);
        assert_int_equal(out.score, cases[i].score);
        expect_reason(&out, cases[i].reason);
        pl_lead_outcome_clear(&out);
        pl_lead_state_clear(&st);
    }
}

/* mql_score 50 with the default weights: 45 nurture, 50 and 55 mql. */
static void test_threshold_defaults(void **state)
{
    const pl_rules_t *r = *state;
    pl_lead_state_t st;
    pl_lead_outcome_t out;

    pl_lead_state_init(&st);
    /* 25 + 10 + 10 = 45 */
    create_lead(r, &st, &out, "L45", T0, "industry=banking",
                "hiring_for=marketing", "contact_title=HR manager", NULL);
    assert_int_equal(out.score, 45);
    assert_string_equal(out.to_status, "nurture");
    assert_string_equal(st.status, "nurture");
    pl_lead_outcome_clear(&out);
    pl_lead_state_clear(&st);

    /* 25 + 15 + 10 = 50 */
    create_lead(r, &st, &out, "L50", T0, "industry=banking",
                "employees=10", "months_in_role=0", NULL);
    assert_int_equal(out.score, 50);
    assert_string_equal(out.to_status, "mql");
    pl_lead_outcome_clear(&out);
    pl_lead_state_clear(&st);

    /* 15 + 15 + 15 + 10 = 55 */
    create_lead(r, &st, &out, "L55", T0, "employees=11",
                "technologies=hubspot,google_ads", "months_in_role=1",
                NULL);
    assert_int_equal(out.score, 55);
    assert_string_equal(out.to_status, "mql");
    pl_lead_outcome_clear(&out);
    pl_lead_state_clear(&st);
}

/* The default weights are all multiples of 5, so 49 needs its own file:
 * 49 is nurture, 50 is mql, both when created and when scored again. */
static void test_threshold_edges(void **state)
{
    static const char text[] =
        "deal:\n"
        "  stages: [{name: open, probability: 0.5}]\n"
        "  transitions: []\n"
        "lead:\n"
        "  mql_score: 50\n"
        "  criteria:\n"
        "    - {name: big, field: employees, op: '>=', value: 100, "
        "points: 49}\n"
        "    - {name: referred, field: source, op: equals, value: referral, "
        "points: 1}\n"
        "    - {name: spends, field: monthly_ad_spend, op: '>=', "
        "value: 0.25, points: 0}\n";
    char err[512] = "";
    pl_rules_t *r = pl_rules_parse(text, strlen(text), "edges.yaml", err,
                                   sizeof(err));
    pl_lead_state_t st;
    pl_lead_outcome_t out;
    pl_event_t ev;

    (void)state;
    if (!r)
        fail_msg("edges.yaml: %s", err);
    pl_lead_state_init(&st);
    create_lead(r, &st, &out, "L1", T0, "employees=100", "source=event",
                NULL);
    assert_int_equal(out.score, 49);
    assert_string_equal(out.to_status, "nurture");
    expect_reason(&out, "referred: 0 (source 'event' is not 'referral')");
    pl_lead_outcome_clear(&out);

    /* one more point: mql */
    lead_ev(&ev, PL_EV_LEAD_UPDATED, "L1", T0 + SEC, "source=referral",
            NULL);
    step(r, &st, &ev, &out);
    pl_event_clear(&ev);
    assert_int_equal(out.score, 50);
    assert_true(out.status_changed);
    assert_string_equal(out.from_status, "nurture");
    assert_string_equal(out.to_status, "mql");
    expect_reason(&out, "referred: +1 (source 'referral' equals "
                        "'referral')");
    pl_lead_outcome_clear(&out);

    /* one less: back to nurture */
    lead_ev(&ev, PL_EV_LEAD_UPDATED, "L1", T0 + 2 * SEC, "employees=99",
            "monthly_ad_spend=0.25", NULL);
    step(r, &st, &ev, &out);
    pl_event_clear(&ev);
    assert_int_equal(out.score, 1);
    assert_string_equal(out.from_status, "mql");
    assert_string_equal(out.to_status, "nurture");
    expect_reason(&out, "big: 0 (employees 99 is not >= 100)");
    expect_reason(&out, "spends: +0 (monthly_ad_spend 0.25 >= 0.25)");
    pl_lead_outcome_clear(&out);

    pl_lead_state_clear(&st);
    pl_rules_destroy(r);

    /* created at exactly 50 */
    r = pl_rules_parse(text, strlen(text), "edges.yaml", err, sizeof(err));
    assert_non_null(r);
    create_lead(r, &st, &out, "L2", T0, "employees=500", "source=referral",
                NULL);
    assert_int_equal(out.score, 50);
    assert_string_equal(out.to_status, "mql");
    pl_lead_outcome_clear(&out);
    pl_lead_state_clear(&st);
    pl_rules_destroy(r);
}

/* employees present and < 10 disqualifies whatever the score; missing
 * employees does not. */
static void test_disqualify(void **state)
{
    const pl_rules_t *r = *state;
    pl_lead_state_t st;
    pl_lead_outcome_t out;

    pl_lead_state_init(&st);
    /* 25 + 15 + 15 + 10 + 10 + 10 = 85, but 9 employees */
    create_lead(r, &st, &out, "L1", T0, "industry=banking", "employees=9",
                "technologies=hubspot,google_ads", "hiring_for=marketing",
                "contact_title=HR Manager", "months_in_role=2", NULL);
    assert_int_equal(out.score, 85);
    assert_true(out.status_changed);
    assert_string_equal(out.from_status, "new");
    assert_string_equal(out.to_status, "disqualified");
    assert_string_equal(st.status, "disqualified");
    expect_reason(&out, "too_small: disqualified (employees 9 < 10)");
    pl_lead_outcome_clear(&out);
    pl_lead_state_clear(&st);

    create_lead(r, &st, &out, "L2", T0, "employees=0", NULL);
    assert_string_equal(out.to_status, "disqualified");
    pl_lead_outcome_clear(&out);
    pl_lead_state_clear(&st);

    /* not when employees is missing: 25 + 15 + 15 = 55, mql */
    create_lead(r, &st, &out, "L3", T0, "industry=banking",
                "technologies=hubspot,google_ads", NULL);
    assert_string_equal(out.to_status, "mql");
    expect_reason(&out, "too_small: not disqualified (employees missing)");
    pl_lead_outcome_clear(&out);
    pl_lead_state_clear(&st);

    /* nor at 10 */
    create_lead(r, &st, &out, "L4", T0, "employees=10", NULL);
    assert_string_equal(out.to_status, "nurture");
    expect_reason(&out,
                  "too_small: not disqualified (employees 10 is not < 10)");
    pl_lead_outcome_clear(&out);
    pl_lead_state_clear(&st);
}

/* ------------------------------------------------------------------------ */
/* Status moves                                                             */

/* new -> mql -> sal -> sql, with owner, deal id, times and reasons. */
static void test_happy_path(void **state)
{
    const pl_rules_t *r = *state;
    pl_lead_state_t st;
    pl_lead_outcome_t out;
    pl_event_t ev;

    pl_lead_state_init(&st);
    create_lead(r, &st, &out, "L1", T0, "industry=banking", "employees=40",
                "technologies=hubspot", "owner=marketing-bot", NULL);
    assert_true(st.exists);
    assert_string_equal(st.status, "mql");
    assert_int_equal(st.score, 55);
    assert_string_equal(st.owner, "marketing-bot");
    assert_string_equal(st.profile.lead_id, "L1");
    assert_int_equal(st.created_at, T0);
    assert_int_equal(st.status_changed_at, T0);
    assert_int_equal(st.last_event_at, T0);
    assert_null(st.deal_id);
    assert_false(out.convert);
    assert_null(out.reason_code);
    pl_lead_outcome_clear(&out);

    lead_ev(&ev, PL_EV_LEAD_ACCEPTED, "L1", T0 + 60 * SEC, NULL);
    assert_int_equal(pl_str_set(&ev.owner, "ann"), 0);
    step(r, &st, &ev, &out);
    pl_event_clear(&ev);
    assert_int_equal(out.verdict, PL_LEAD_APPLIED);
    assert_true(out.status_changed);
    assert_string_equal(out.from_status, "mql");
    assert_string_equal(out.to_status, "sal");
    assert_int_equal(out.score, 55);
    assert_string_equal(out.reasons.items[0], "accepted by 'ann'");
    assert_int_equal(out.reasons.count, 9); /* decision + 8 criteria */
    expect_reason(&out, "uses_hubspot: +15 (technologies [hubspot] has "
                        "'hubspot')");
    assert_string_equal(st.status, "sal");
    assert_string_equal(st.owner, "ann");
    assert_int_equal(st.status_changed_at, T0 + 60 * SEC);
    assert_int_equal(st.created_at, T0);
    pl_lead_outcome_clear(&out);

    lead_ev(&ev, PL_EV_LEAD_CONVERTED, "L1", T0 + 120 * SEC, NULL);
    step(r, &st, &ev, &out);
    pl_event_clear(&ev);
    assert_int_equal(out.verdict, PL_LEAD_APPLIED);
    assert_true(out.status_changed);
    assert_true(out.convert);
    assert_string_equal(out.from_status, "sal");
    assert_string_equal(out.to_status, "sql");
    assert_string_equal(out.reasons.items[0], "converted into deal D-L1");
    assert_int_equal(out.score, 55);
    assert_string_equal(st.status, "sql");
    assert_string_equal(st.deal_id, "D-L1");
    assert_string_equal(st.owner, "ann");
    assert_int_equal(st.status_changed_at, T0 + 120 * SEC);
    assert_int_equal(st.last_event_at, T0 + 120 * SEC);
    pl_lead_outcome_clear(&out);
    pl_lead_state_clear(&st);
}

static void test_convert_explicit_deal_id(void **state)
{
    const pl_rules_t *r = *state;
    pl_lead_state_t st;
    pl_lead_outcome_t out;
    pl_event_t ev;

    lead_in_status(r, &st, "sal");
    lead_ev(&ev, PL_EV_LEAD_CONVERTED, "L1", T0 + SEC, NULL);
    assert_int_equal(pl_str_set(&ev.deal_id, "D-77"), 0);
    step(r, &st, &ev, &out);
    pl_event_clear(&ev);
    assert_true(out.convert);
    assert_string_equal(st.deal_id, "D-77");
    assert_string_equal(out.reasons.items[0], "converted into deal D-77");
    pl_lead_outcome_clear(&out);

    /* delivered again: already sql, no second deal */
    lead_ev(&ev, PL_EV_LEAD_CONVERTED, "L1", T0 + 2 * SEC, NULL);
    step(r, &st, &ev, &out);
    pl_event_clear(&ev);
    assert_int_equal(out.verdict, PL_LEAD_REJECTED);
    assert_string_equal(out.reason_code, "already_in_stage");
    assert_false(out.convert);
    assert_non_null(strstr(out.message, "D-77"));
    assert_string_equal(st.deal_id, "D-77");
    pl_lead_outcome_clear(&out);
    pl_lead_state_clear(&st);
}

/* lead.rejected from every open status. */
static void test_rejected_from_open(void **state)
{
    const pl_rules_t *r = *state;
    static const char *const open[] = {"new", "nurture", "mql", "sal"};

    for (size_t i = 0; i < 4; i++) {
        pl_lead_state_t st;
        pl_lead_outcome_t out;
        pl_event_t ev;

        lead_in_status(r, &st, open[i]);
        lead_ev(&ev, PL_EV_LEAD_REJECTED, "L1", T0 + SEC, NULL);
        assert_int_equal(pl_str_set(&ev.reason, "no budget"), 0);
        step(r, &st, &ev, &out);
        pl_event_clear(&ev);
        assert_int_equal(out.verdict, PL_LEAD_APPLIED);
        assert_true(out.status_changed);
        assert_string_equal(out.from_status, open[i]);
        assert_string_equal(out.to_status, "disqualified");
        assert_string_equal(out.reasons.items[0],
                            "rejected by sales: 'no budget'");
        assert_int_equal(out.score, 55);
        assert_string_equal(st.status, "disqualified");
        assert_int_equal(st.status_changed_at, T0 + SEC);
        pl_lead_outcome_clear(&out);
        pl_lead_state_clear(&st);
    }
}

/* Every rejection: the code, the statuses reported, and no change. */
static void test_every_rejection(void **state)
{
    const pl_rules_t *r = *state;
    static const struct {
        const char *status; /* NULL: unknown lead */
        pl_event_type_t type;
        const char *code;
        const char *requested;
        const char *words;
    } cases[] = {
        {NULL, PL_EV_LEAD_UPDATED, "unknown_lead", "", "'L1' does not exist"},
        {NULL, PL_EV_LEAD_ACCEPTED, "unknown_lead", "sal", "does not exist"},
        {NULL, PL_EV_LEAD_REJECTED, "unknown_lead", "disqualified",
         "does not exist"},
        {NULL, PL_EV_LEAD_CONVERTED, "unknown_lead", "sql",
         "does not exist"},
        {"nurture", PL_EV_LEAD_CREATED, "not_allowed", "new",
         "lead 'L1' already exists; send lead.updated"},
        {"sql", PL_EV_LEAD_CREATED, "not_allowed", "new", "already exists"},
        {"new", PL_EV_LEAD_ACCEPTED, "not_allowed", "sal",
         "only an mql lead"},
        {"nurture", PL_EV_LEAD_ACCEPTED, "not_allowed", "sal",
         "lead 'L1' is nurture; only an mql lead can be accepted"},
        {"sal", PL_EV_LEAD_ACCEPTED, "already_in_stage", "sal",
         "already sal"},
        {"sql", PL_EV_LEAD_ACCEPTED, "terminal", "sal", "final"},
        {"disqualified", PL_EV_LEAD_ACCEPTED, "terminal", "sal", "final"},
        {"disqualified", PL_EV_LEAD_REJECTED, "already_in_stage",
         "disqualified", "already disqualified"},
        {"sql", PL_EV_LEAD_REJECTED, "terminal", "disqualified", "final"},
        {"new", PL_EV_LEAD_CONVERTED, "not_allowed", "sql",
         "only a sal lead"},
        {"nurture", PL_EV_LEAD_CONVERTED, "not_allowed", "sql",
         "only a sal lead"},
        {"mql", PL_EV_LEAD_CONVERTED, "not_allowed", "sql",
         "lead 'L1' is mql; only a sal lead (accepted by sales) can be "
         "converted"},
        {"sql", PL_EV_LEAD_CONVERTED, "already_in_stage", "sql",
         "already sql"},
        {"disqualified", PL_EV_LEAD_CONVERTED, "terminal", "sql", "final"},
        /* the required fields, in case a producer's event slips through */
        {"mql", PL_EV_LEAD_ACCEPTED, "missing_field", "sal", "owner"},
        {"mql", PL_EV_LEAD_REJECTED, "missing_field", "disqualified",
         "reason"},
    };
    (void)state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pl_lead_state_t cur, next;
        pl_lead_outcome_t out;
        pl_event_t ev;

        pl_lead_state_init(&cur);
        if (cases[i].status)
            lead_in_status(r, &cur, cases[i].status);
        cur.version = 7;
        lead_ev(&ev, cases[i].type, "L1", T0 + SEC, "industry=software",
                NULL);
        if (strcmp(cases[i].code, "missing_field")) {
            assert_int_equal(pl_str_set(&ev.owner, "ann"), 0);
            assert_int_equal(pl_str_set(&ev.reason, "no budget"), 0);
        }
        pl_lead_state_init(&next);
        apply(r, cases[i].status ? &cur : NULL, &ev, &next, &out);
        if (out.verdict != PL_LEAD_REJECTED || !out.reason_code ||
            strcmp(out.reason_code, cases[i].code))
            fail_msg("case %zu (%s on %s): expected %s, got %s (%s)", i,
                     pl_event_type_name(cases[i].type),
                     cases[i].status ? cases[i].status : "unknown",
                     cases[i].code,
                     out.reason_code ? out.reason_code : "applied",
                     out.message);
        if (!strstr(out.message, cases[i].words))
            fail_msg("case %zu: '%s' not in '%s'", i, cases[i].words,
                     out.message);
        assert_false(out.status_changed);
        assert_false(out.convert);
        assert_int_equal(out.reasons.count, 0);
        assert_string_equal(out.from_status,
                            cases[i].status ? cases[i].status : "");
        assert_string_equal(out.to_status, cases[i].requested);
        if (cases[i].status) {
            assert_int_equal(out.score, 55);
            assert_lead_equal(&next, &cur); /* nothing changed */
        } else {
            assert_false(next.exists);
        }
        pl_lead_outcome_clear(&out);
        pl_event_clear(&ev);
        pl_lead_state_clear(&cur);
        pl_lead_state_clear(&next);
    }
}

/* ------------------------------------------------------------------------ */
/* Updates                                                                  */

/* Present fields replace, lists as a whole; the rest stays; a score change
 * alone changes no status. */
static void test_update_merges(void **state)
{
    const pl_rules_t *r = *state;
    pl_lead_state_t st;
    pl_lead_outcome_t out;
    pl_event_t ev;

    pl_lead_state_init(&st);
    /* 15 + 15 = 30: nurture */
    create_lead(r, &st, &out, "L1", T0, "employees=40",
                "technologies=hubspot,salesforce", "company=Acme",
                "email=a@acme.example", NULL);
    assert_string_equal(st.status, "nurture");
    pl_lead_outcome_clear(&out);

    /* +10 (title) and technologies replaced: hubspot gone, google_ads in:
     * 15 + 15 + 10 = 40, still nurture, nothing to publish */
    lead_ev(&ev, PL_EV_LEAD_UPDATED, "L1", T0 + 10 * SEC,
            "technologies=google_ads", "contact_title=HR Manager", NULL);
    step(r, &st, &ev, &out);
    pl_event_clear(&ev);
    assert_int_equal(out.verdict, PL_LEAD_APPLIED);
    assert_false(out.status_changed);
    assert_string_equal(out.from_status, "nurture");
    assert_string_equal(out.to_status, "nurture");
    assert_int_equal(out.score, 40);
    assert_int_equal(out.reasons.count, 8); /* scored: reasons filled */
    expect_reason(&out, "uses_hubspot: 0 (technologies [google_ads] has no "
                        "'hubspot')");
    assert_int_equal(st.score, 40);
    assert_int_equal(st.profile.technologies.count, 1);
    assert_string_equal(st.profile.technologies.items[0], "google_ads");
    assert_string_equal(st.profile.company, "Acme");
    assert_string_equal(st.profile.email, "a@acme.example");
    assert_int_equal(st.profile.employees, 40);
    assert_string_equal(st.profile.contact_title, "HR Manager");
    assert_int_equal(st.status_changed_at, T0);
    assert_int_equal(st.last_event_at, T0 + 10 * SEC);
    pl_lead_outcome_clear(&out);

    /* +25: 65, mql */
    lead_ev(&ev, PL_EV_LEAD_UPDATED, "L1", T0 + 20 * SEC,
            "industry=banking", "owner=bob", NULL);
    step(r, &st, &ev, &out);
    pl_event_clear(&ev);
    assert_true(out.status_changed);
    assert_string_equal(out.from_status, "nurture");
    assert_string_equal(out.to_status, "mql");
    assert_int_equal(out.score, 65);
    assert_string_equal(st.status, "mql");
    assert_string_equal(st.owner, "bob");
    assert_int_equal(st.status_changed_at, T0 + 20 * SEC);
    pl_lead_outcome_clear(&out);

    /* an older event (out of order) does not move last_event_at back */
    lead_ev(&ev, PL_EV_LEAD_UPDATED, "L1", T0 + 5 * SEC, "company=Acme Inc",
            NULL);
    step(r, &st, &ev, &out);
    pl_event_clear(&ev);
    assert_false(out.status_changed);
    assert_string_equal(st.profile.company, "Acme Inc");
    assert_int_equal(st.last_event_at, T0 + 20 * SEC);
    pl_lead_outcome_clear(&out);

    /* employees down to 3: disqualified */
    lead_ev(&ev, PL_EV_LEAD_UPDATED, "L1", T0 + 30 * SEC, "employees=3",
            NULL);
    step(r, &st, &ev, &out);
    pl_event_clear(&ev);
    assert_true(out.status_changed);
    assert_string_equal(out.from_status, "mql");
    assert_string_equal(out.to_status, "disqualified");
    expect_reason(&out, "too_small: disqualified (employees 3 < 10)");
    pl_lead_outcome_clear(&out);

    /* disqualified is closed: back to 40 employees changes the score only */
    lead_ev(&ev, PL_EV_LEAD_UPDATED, "L1", T0 + 40 * SEC, "employees=40",
            NULL);
    step(r, &st, &ev, &out);
    pl_event_clear(&ev);
    assert_int_equal(out.verdict, PL_LEAD_APPLIED);
    assert_false(out.status_changed);
    assert_string_equal(st.status, "disqualified");
    assert_int_equal(st.score, 65);
    pl_lead_outcome_clear(&out);
    pl_lead_state_clear(&st);
}

/* CONTRACT, precision: an event older than the lead's last event is
 * applied, but time never runs backwards - the status change takes effect
 * at the lead's last event, and last_event_at stays. */
static void test_out_of_order_status_change(void **state)
{
    const pl_rules_t *r = *state;
    pl_lead_state_t st;
    pl_lead_outcome_t out;
    pl_event_t ev;

    pl_lead_state_init(&st);
    /* 15 + 15 = 30: nurture at T0 */
    create_lead(r, &st, &out, "L1", T0, "employees=40",
                "technologies=hubspot", NULL);
    assert_string_equal(st.status, "nurture");
    pl_lead_outcome_clear(&out);

    /* an update at T0 + 100 s that changes no status */
    lead_ev(&ev, PL_EV_LEAD_UPDATED, "L1", T0 + 100 * SEC, "company=Acme",
            NULL);
    step(r, &st, &ev, &out);
    pl_event_clear(&ev);
    assert_false(out.status_changed);
    assert_int_equal(st.status_changed_at, T0);
    assert_int_equal(st.last_event_at, T0 + 100 * SEC);
    pl_lead_outcome_clear(&out);

    /* an update stamped T0 + 40 s arrives after it and moves the lead to
     * mql (+25: 55): applied, as of T0 + 100 s */
    lead_ev(&ev, PL_EV_LEAD_UPDATED, "L1", T0 + 40 * SEC, "industry=banking",
            NULL);
    step(r, &st, &ev, &out);
    pl_event_clear(&ev);
    assert_int_equal(out.verdict, PL_LEAD_APPLIED);
    assert_true(out.status_changed);
    assert_string_equal(out.to_status, "mql");
    assert_string_equal(st.status, "mql");
    assert_int_equal(st.status_changed_at, T0 + 100 * SEC);
    assert_int_equal(st.last_event_at, T0 + 100 * SEC);
    pl_lead_outcome_clear(&out);

    /* accepted, stamped even before the lead was created: sal, and the
     * time in mql is 0, not negative */
    lead_ev(&ev, PL_EV_LEAD_ACCEPTED, "L1", T0 - 3600 * SEC, "owner=ann",
            NULL);
    step(r, &st, &ev, &out);
    pl_event_clear(&ev);
    assert_true(out.status_changed);
    assert_string_equal(st.status, "sal");
    assert_int_equal(st.status_changed_at, T0 + 100 * SEC);
    assert_int_equal(st.last_event_at, T0 + 100 * SEC);
    assert_int_equal(st.created_at, T0);
    pl_lead_outcome_clear(&out);

    /* in order again: from the event's own time */
    lead_ev(&ev, PL_EV_LEAD_CONVERTED, "L1", T0 + 160 * SEC, NULL);
    step(r, &st, &ev, &out);
    pl_event_clear(&ev);
    assert_true(out.status_changed);
    assert_int_equal(st.status_changed_at, T0 + 160 * SEC);
    assert_int_equal(st.last_event_at, T0 + 160 * SEC);
    pl_lead_outcome_clear(&out);
    pl_lead_state_clear(&st);
}

/* sal and sql are never downgraded by scoring; a disqualifying match still
 * disqualifies sal, not sql. */
static void test_no_downgrade(void **state)
{
    const pl_rules_t *r = *state;
    static const char *const kept[] = {"sal", "sql"};
    pl_lead_state_t st;
    pl_lead_outcome_t out;
    pl_event_t ev;

    for (size_t i = 0; i < 2; i++) {
        lead_in_status(r, &st, kept[i]);
        lead_ev(&ev, PL_EV_LEAD_UPDATED, "L1", T0 + SEC,
                "industry=software", "technologies=", NULL);
        step(r, &st, &ev, &out);
        pl_event_clear(&ev);
        assert_int_equal(out.verdict, PL_LEAD_APPLIED);
        assert_int_equal(out.score, 15);
        assert_false(out.status_changed);
        assert_string_equal(out.to_status, kept[i]);
        assert_string_equal(st.status, kept[i]);
        assert_int_equal(st.score, 15);
        pl_lead_outcome_clear(&out);

        lead_ev(&ev, PL_EV_LEAD_UPDATED, "L1", T0 + 2 * SEC, "employees=2",
                NULL);
        step(r, &st, &ev, &out);
        pl_event_clear(&ev);
        if (!strcmp(kept[i], "sal")) {
            assert_true(out.status_changed);
            assert_string_equal(out.from_status, "sal");
            assert_string_equal(out.to_status, "disqualified");
        } else {
            assert_false(out.status_changed);
            assert_string_equal(st.status, "sql");
        }
        pl_lead_outcome_clear(&out);
        pl_lead_state_clear(&st);
    }
}

/* A stored status the engine does not know is scored like nurture. */
static void test_unknown_stored_status(void **state)
{
    const pl_rules_t *r = *state;
    pl_lead_state_t st;
    pl_lead_outcome_t out;
    pl_event_t ev;

    lead_in_status(r, &st, "qualified?");
    assert_false(pl_lead_status_known("qualified?"));
    lead_ev(&ev, PL_EV_LEAD_UPDATED, "L1", T0 + SEC, NULL);
    step(r, &st, &ev, &out);
    pl_event_clear(&ev);
    assert_true(out.status_changed);
    assert_string_equal(out.from_status, "qualified?");
    assert_string_equal(out.to_status, "mql");
    assert_string_equal(st.status, "mql");
    pl_lead_outcome_clear(&out);
    pl_lead_state_clear(&st);
}

/* Long free text in reasons is cut, on a UTF-8 boundary. */
static void test_long_text_in_reasons(void **state)
{
    const pl_rules_t *r = *state;
    char title[300], line[400];
    pl_lead_state_t st;
    pl_lead_outcome_t out;
    const char *reason, *q;

    /* 79 ASCII bytes, then 2-byte characters: byte 80 is mid-character */
    memset(title, 'x', 79);
    for (int i = 0; i < 50; i++)
        memcpy(title + 79 + 2 * i, "\xc3\xa9", 2);
    title[179] = '\0';
    snprintf(line, sizeof(line), "contact_title=%s", title);
    pl_lead_state_init(&st);
    create_lead(r, &st, &out, "L1", T0, line, NULL);
    reason = reason_of(&out, "hr_manager");
    assert_non_null(reason);
    q = strstr(reason, "'x");
    assert_non_null(q);
    /* 79 x's, no half character, then the ellipsis */
    assert_int_equal(strncmp(q + 1 + 79, "...'", 4), 0);
    assert_string_equal(st.profile.contact_title, title); /* kept whole */
    pl_lead_outcome_clear(&out);
    pl_lead_state_clear(&st);
}

/* ------------------------------------------------------------------------ */
/* API edges                                                                */

static void test_state_copy_and_statuses(void **state)
{
    const pl_rules_t *r = *state;
    pl_lead_state_t a, b;
    pl_lead_outcome_t out;

    pl_lead_state_init(&a);
    pl_lead_state_init(&b);
    create_lead(r, &a, &out, "L1", T0, "industry=banking",
                "technologies=hubspot", "hiring_for=", "email=x@y.example",
                "monthly_ad_spend=10.25", "months_in_role=4", NULL);
    pl_lead_outcome_clear(&out);
    assert_int_equal(pl_str_set(&a.deal_id, "D-9"), 0);
    a.version = 3;
    assert_int_equal(pl_lead_state_copy(&b, &a), 0);
    assert_lead_equal(&b, &a);
    assert_ptr_not_equal(b.status, a.status);
    assert_ptr_not_equal(b.profile.technologies.items[0],
                         a.profile.technologies.items[0]);
    /* copying over a filled state frees the old one (ASan checks) */
    assert_int_equal(pl_lead_state_copy(&b, &a), 0);
    pl_lead_state_clear(&a);
    pl_lead_state_clear(&b);
    pl_lead_state_clear(&b); /* twice is fine */
    pl_lead_outcome_clear(&out);

    for (size_t i = 0; i < 6; i++) {
        static const char *const all[] = {"new", "nurture", "mql",
                                          "sal", "sql",     "disqualified"};
        assert_true(pl_lead_status_known(all[i]));
        assert_int_equal(pl_lead_status_is_closed(all[i]), i >= 4);
    }
    assert_false(pl_lead_status_known(NULL));
    assert_false(pl_lead_status_known("SQL"));
}

static void test_internal_errors(void **state)
{
    const pl_rules_t *r = *state;
    static const char deal_only[] =
        "deal:\n"
        "  stages: [{name: open, probability: 0.5}]\n"
        "  transitions: []\n";
    char err[512];
    pl_rules_t *plain;
    pl_lead_state_t next;
    pl_lead_outcome_t out;
    pl_event_t ev;
    int64_t score;
    bool dq;

    pl_lead_state_init(&next);
    /* not a lead event */
    lead_ev(&ev, PL_EV_DEAL_CREATED, "L1", T0, NULL);
    assert_int_equal(pl_rules_apply_lead(r, NULL, &ev, &next, &out), -1);
    assert_non_null(strstr(out.message, "deal.created"));
    pl_event_clear(&ev);

    /* no lead_id */
    lead_ev(&ev, PL_EV_LEAD_CREATED, "L1", T0, NULL);
    pl_str_set(&ev.lead_id, NULL);
    assert_int_equal(pl_rules_apply_lead(r, NULL, &ev, &next, &out), -1);
    assert_non_null(strstr(out.message, "without lead_id"));
    assert_false(next.exists);
    pl_event_clear(&ev);

    /* a deal-only file loads, but has no lead engine */
    plain = pl_rules_parse(deal_only, strlen(deal_only), "deal.yaml", err,
                           sizeof(err));
    if (!plain)
        fail_msg("deal-only rules: %s", err);
    assert_false(pl_rules_has_lead(plain));
    assert_int_equal(pl_rules_lead_mql_score(plain), 0);
    lead_ev(&ev, PL_EV_LEAD_CREATED, "L1", T0, NULL);
    assert_int_equal(pl_rules_apply_lead(plain, NULL, &ev, &next, &out), -1);
    assert_non_null(strstr(out.message, "no 'lead' section"));
    assert_int_equal(pl_rules_score_lead(plain, &ev, &score, &dq, NULL), -1);
    assert_int_equal(pl_rules_apply_lead(NULL, NULL, &ev, &next, &out), -1);
    pl_event_clear(&ev);
    pl_rules_destroy(plain);
    assert_false(pl_rules_has_lead(NULL));
    pl_lead_state_clear(&next);
}

/* Other operators and shapes: in on a list field and on a number, all:,
 * present, equals on a number, <=, contains on text, a criterion with 0
 * points. */
static void test_other_operators(void **state)
{
    static const char text[] =
        "deal:\n"
        "  stages: [{name: open, probability: 0.5}]\n"
        "  transitions: []\n"
        "lead:\n"
        "  mql_score: 0\n"
        "  criteria:\n"
        "    - {name: crm, field: technologies, op: in, value: [hubspot, "
        "salesforce], points: 1}\n"
        "    - {name: sizes, field: employees, op: in, value: [10, 20], "
        "points: 2}\n"
        "    - name: both\n"
        "      points: 4\n"
        "      all:\n"
        "        - {field: email, op: present}\n"
        "        - {field: months_in_role, op: '<=', value: 6}\n"
        "    - {name: exact, field: months_in_role, op: equals, value: 6, "
        "points: 8}\n"
        "    - {name: bank, field: company, op: contains, value: Bank, "
        "points: 16}\n"
        "  disqualify:\n"
        "    - {name: competitor, field: email, op: contains_ignoring_case, "
        "value: '@rival.example'}\n";
    char err[512] = "";
    pl_rules_t *r = pl_rules_parse(text, strlen(text), "ops.yaml", err,
                                   sizeof(err));
    pl_lead_state_t st;
    pl_lead_outcome_t out;

    (void)state;
    if (!r)
        fail_msg("ops.yaml: %s", err);
    pl_lead_state_init(&st);
    create_lead(r, &st, &out, "L1", T0, "technologies=zoho,salesforce",
                "employees=20", "email=ann@bank.example",
                "months_in_role=6", "company=Acme Bank", NULL);
    assert_int_equal(out.score, 31);
    assert_string_equal(out.to_status, "mql"); /* mql_score 0 */
    expect_reason(&out,
                  "crm: +1 (technologies 'salesforce' in [hubspot, "
                  "salesforce])");
    expect_reason(&out, "sizes: +2 (employees 20 in [10, 20])");
    expect_reason(&out,
                  "both: +4 (email present; months_in_role 6 <= 6)");
    expect_reason(&out, "exact: +8 (months_in_role 6 = 6)");
    expect_reason(&out, "bank: +16 (company 'Acme Bank' contains 'Bank')");
    expect_reason(&out, "competitor: not disqualified (email "
                        "'ann@bank.example' does not contain "
                        "'@rival.example' (ignoring case))");
    pl_lead_outcome_clear(&out);
    pl_lead_state_clear(&st);

    create_lead(r, &st, &out, "L2", T0, "technologies=zoho",
                "employees=15", "months_in_role=7", "company=Acme bank",
                "email=Bob@RIVAL.example", NULL);
    assert_int_equal(out.score, 0);
    assert_string_equal(out.to_status, "disqualified");
    expect_reason(&out, "crm: 0 (technologies [zoho] has none of [hubspot, "
                        "salesforce])");
    expect_reason(&out, "sizes: 0 (employees 15 not in [10, 20])");
    /* all: only the failing condition is named */
    expect_reason(&out, "both: 0 (months_in_role 7 is not <= 6)");
    expect_reason(&out, "exact: 0 (months_in_role 7 is not 6)");
    expect_reason(&out, "bank: 0 (company 'Acme bank' does not contain "
                        "'Bank')");
    expect_reason(&out, "competitor: disqualified (email "
                        "'Bob@RIVAL.example' contains '@rival.example' "
                        "(ignoring case))");
    pl_lead_outcome_clear(&out);
    pl_lead_state_clear(&st);

    create_lead(r, &st, &out, "L3", T0, NULL);
    expect_reason(&out, "both: 0 (email missing; months_in_role missing)");
    pl_lead_outcome_clear(&out);
    pl_lead_state_clear(&st);
    pl_rules_destroy(r);
}

/* ------------------------------------------------------------------------ */
/* Broken lead sections                                                     */

static void test_bad_lead_files(void **state)
{
    static const struct {
        const char *file;
        int line;
        const char *words[3];
    } cases[] = {
        {"lead_unknown_field.yaml", 13,
         {"unknown field 'industy'", "criterion 'target_industry'",
          "expected email"}},
        {"lead_unknown_op.yaml", 12,
         {"unknown operator 'is'", "criterion 'company_size'",
          "contains_ignoring_case"}},
        {"lead_numeric_op_on_text.yaml", 12,
         {"operator '>=' in criterion 'senior'", "industry is text"}},
        {"lead_unknown_field_in_any.yaml", 15,
         {"unknown field 'ad_spend'", "criterion 'advertises'"}},
        {"lead_missing_points.yaml", 12, {"criterion 'hubspot' has no points"}},
        {"lead_negative_points.yaml", 16,
         {"points of criterion 'hubspot'", "must not be negative"}},
        {"lead_duplicate_name.yaml", 17,
         {"duplicate criterion 'hubspot'", "line 11"}},
        {"lead_missing_value.yaml", 12, {"criterion 'size' has no value"}},
        {"lead_equals_on_list.yaml", 13,
         {"'equals'", "list field technologies", "contains"}},
        {"lead_bad_number.yaml", 14,
         {"value 'ten' of criterion 'size'", "whole number"}},
        {"lead_points_in_disqualify.yaml", 18,
         {"disqualifying criterion 'too_small' takes no points"}},
        {"lead_mql_unreachable.yaml", 10,
         {"mql_score 120", "100 points", "no lead could become mql"}},
        {"lead_missing_mql_score.yaml", 10, {"no 'mql_score'"}},
        {"lead_unknown_key.yaml", 15,
         {"unknown key 'weight'", "criterion 'hubspot'"}},
        {"lead_bad_source.yaml", 13, {"'referal' is not a source"}},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_bad_rules_file(cases[i].file, cases[i].line, cases[i].words);
}

/* Smaller mistakes, inline: each names its line. */
static void test_bad_lead_text(void **state)
{
    static const struct {
        const char *criterion; /* YAML flow mapping, on line 6 */
        const char *words;
    } cases[] = {
        {"{name: a, field: employees, op: contains, value: 3, points: 1}",
         "needs a text or list field; employees is a number"},
        {"{name: a, field: email, op: present, value: x, points: 1}",
         "'present' takes no value"},
        {"{name: a, field: industry, op: equals, value: [a, b], points: 1}",
         "takes one value (use 'in' for a list)"},
        {"{name: a, field: industry, op: in, value: [], points: 1}",
         "at least one value"},
        {"{name: a, field: industry, op: in, value: [Banking], points: 1}",
         "not a lowercase slug"},
        {"{name: a, field: monthly_ad_spend, op: '>', value: 1.23456, "
         "points: 1}",
         "at most 4 decimals"},
        {"{name: a, points: 1, any: []}", "non-empty list"},
        {"{name: a, points: 1, any: [{field: email, op: present}], "
         "all: [{field: email, op: present}]}",
         "both 'any' and 'all'"},
        {"{name: a, points: 1, field: email, any: [{field: email, op: "
         "present}]}",
         "put every condition inside 'any'"},
        {"{name: a, points: 1.5, field: email, op: present}",
         "whole number"},
        {"{name: a, points: 1}", "criterion 'a' has no field"},
        {"{name: a, points: 1, field: email}", "criterion 'a' has no op"},
        {"{name: '', points: 1, field: email, op: present}", "non-empty"},
        {"{points: 1, field: email, op: present}",
         "criterion #1 of lead.criteria has no name"},
        {"{name: a, field: contact_title, op: contains, value: '', "
         "points: 1}",
         "empty value"},
    };
    (void)state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char text[1024], err[512] = "";
        pl_rules_t *r;

        snprintf(text, sizeof(text),
                 "deal:\n"
                 "  stages: [{name: open, probability: 0.5}]\n"
                 "  transitions: []\n"
                 "lead:\n"
                 "  mql_score: 0\n"
                 "  criteria:\n"
                 "    - %s\n",
                 cases[i].criterion);
        r = pl_rules_parse(text, strlen(text), "bad.yaml", err, sizeof(err));
        if (r) {
            pl_rules_destroy(r);
            fail_msg("case %zu loaded: %s", i, cases[i].criterion);
        }
        if (strncmp(err, "bad.yaml:7: ", 12) || !strstr(err, cases[i].words))
            fail_msg("case %zu: expected 'bad.yaml:7: ...%s...', got '%s'",
                     i, cases[i].words, err);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_criterion),
        cmocka_unit_test(test_full_profile),
        cmocka_unit_test(test_any_criterion),
        cmocka_unit_test(test_threshold_defaults),
        cmocka_unit_test(test_threshold_edges),
        cmocka_unit_test(test_disqualify),
        cmocka_unit_test(test_happy_path),
        cmocka_unit_test(test_convert_explicit_deal_id),
        cmocka_unit_test(test_rejected_from_open),
        cmocka_unit_test(test_every_rejection),
        cmocka_unit_test(test_update_merges),
        cmocka_unit_test(test_out_of_order_status_change),
        cmocka_unit_test(test_no_downgrade),
        cmocka_unit_test(test_unknown_stored_status),
        cmocka_unit_test(test_long_text_in_reasons),
        cmocka_unit_test(test_state_copy_and_statuses),
        cmocka_unit_test(test_internal_errors),
        cmocka_unit_test(test_other_operators),
        cmocka_unit_test(test_bad_lead_files),
        cmocka_unit_test(test_bad_lead_text),
    };

    return cmocka_run_group_tests(tests, setup_rules, teardown_rules);
}
