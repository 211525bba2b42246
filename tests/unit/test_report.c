/*
 * test_report.c - unit tests of the pipeline reports (common/report.c) and
 * of the time-in-stage histogram they read (common/analytics.c).
 *
 * The reports are built from hand-written figures, field by field as
 * analytics.h lays out <prefix>{stats}, and the shipped rules (stage order,
 * probabilities, stale thresholds); the tests check what
 * `pipelinectl report ... --json` prints: the rows, the arithmetic of the
 * contract (weighted, best case, commit, conversion, percentiles, the
 * bottleneck rule with its threshold and tie rule), the owner filter and
 * the exact decimals of the amounts.  No services needed.
 */
#include "analytics.h"
#include "report.h"
#include "store.h"
#include "testutil.h"

#include <math.h>

#define AMT(units) ((int64_t)(units) * PL_AMOUNT_SCALE)

/* ---- figures ---- */

/* The field of parts (joined by '|', each escaped as the workers do). */
static void field_name(char *field, size_t size, const char *const *parts)
{
    char esc[3 * 256 + 1];
    size_t n = 0;

    field[0] = '\0';
    for (int i = 0; parts[i]; i++) {
        pl_field_escape(parts[i], esc, sizeof(esc));
        n += (size_t)snprintf(field + n, size - n, "%s%s", i ? "|" : "",
                              esc);
        assert_true(n < size);
    }
}

/* field += v */
static void fig(pl_fields_t *f, int64_t v, const char *const *parts)
{
    char field[4096];
    const char *have;

    field_name(field, sizeof(field), parts);
    if ((have = pl_fields_get(f, field)))
        v += strtoll(have, NULL, 10);
    assert_int_equal(pl_fields_set_int(f, field, v), 0);
}

#define FIG(f, v, ...)                                                       \
    fig((f), (v), (const char *const[]){__VA_ARGS__, NULL})

/* Open deals: n deals, amount (scaled) in stage for owner/month/currency. */
static void open_deals(pl_fields_t *f, const char *owner, const char *month,
                       const char *cur, const char *stage, int64_t n,
                       int64_t amount)
{
    FIG(f, n, "f", owner, month, cur, stage, "n");
    FIG(f, amount, "f", owner, month, cur, stage, "a");
}

static void won_deals(pl_fields_t *f, const char *owner, const char *month,
                      const char *cur, int64_t n, int64_t amount)
{
    FIG(f, n, "w", owner, month, cur, "n");
    FIG(f, amount, "w", owner, month, cur, "a");
}

/* n moves out of stage taking `seconds` each, into the histogram. */
static void moves_out(pl_fields_t *f, const char *owner, const char *stage,
                      int64_t seconds, int64_t n)
{
    char b[16];

    snprintf(b, sizeof(b), "%d", pl_hist_bucket(seconds));
    FIG(f, n, "h", owner, stage, b);
}

/* The report as the CLI prints it with --json. */
static char *dump(json_t *report)
{
    char *s;

    assert_non_null(report);
    s = pl_report_dumps(report);
    assert_non_null(s);
    json_decref(report);
    return s;
}

static void assert_dump(json_t *report, const char *expected)
{
    char *s = dump(report);

    if (strcmp(s, expected))
        fail_msg("got\n  %s\nexpected\n  %s", s, expected);
    free(s);
}

/* The estimate the report gives for a percentile of `seconds`. */
static long long est(int64_t seconds)
{
    return llround(pl_hist_value(pl_hist_bucket(seconds)));
}

/* ---- forecast ---- */

static void forecast_figures(pl_fields_t *f)
{
    open_deals(f, "ann", "2026-03", "USD", "proposal", 2, AMT(30000));
    open_deals(f, "ann", "2026-03", "USD", "negotiation", 1,
               AMT(10000) + 5000); /* 10000.5 */
    open_deals(f, "bob", "2026-03", "USD", "closing", 1, AMT(5000));
    open_deals(f, "", "none", "EUR", "qualification", 1, 0); /* no amount */
    open_deals(f, "ann", "2026-03", "EUR", "scoping", 1, AMT(100));
    won_deals(f, "ann", "2026-02", "USD", 1, AMT(12000) + 5000);
    /* a month whose figures went back to zero: no row */
    open_deals(f, "bob", "2026-04", "USD", "scoping", 0, 0);
    won_deals(f, "bob", "2026-04", "USD", 0, 0);
    /* other kinds of figures are not the forecast's business */
    FIG(f, 7, "s", "ann", "proposal", "open");
    FIG(f, 3, "l", "referral", "leads");
}

static void test_forecast_rows(void **state)
{
    pl_rules_t *r = *state;
    pl_fields_t f = {0};

    forecast_figures(&f);
    /* 2026-03 USD: weighted 30000 x 0.4 + 10000.5 x 0.6 + 5000 x 0.8 =
     * 22000.3; best case (>= 0.6) 10000.5 + 5000; commit (>= 0.8) 5000 */
    assert_dump(
        pl_report_forecast(r, &f, NULL),
        "{\"months\":["
        "{\"month\":\"2026-02\",\"currency\":\"USD\",\"open_count\":0,"
        "\"open_amount\":0,\"weighted_amount\":0,\"best_case_amount\":0,"
        "\"commit_amount\":0,\"won_count\":1,\"won_amount\":12000.5},"
        "{\"month\":\"2026-03\",\"currency\":\"EUR\",\"open_count\":1,"
        "\"open_amount\":100,\"weighted_amount\":20,\"best_case_amount\":0,"
        "\"commit_amount\":0,\"won_count\":0,\"won_amount\":0},"
        "{\"month\":\"2026-03\",\"currency\":\"USD\",\"open_count\":4,"
        "\"open_amount\":45000.5,\"weighted_amount\":22000.3,"
        "\"best_case_amount\":15000.5,\"commit_amount\":5000,"
        "\"won_count\":0,\"won_amount\":0},"
        "{\"month\":\"none\",\"currency\":\"EUR\",\"open_count\":1,"
        "\"open_amount\":0,\"weighted_amount\":0,\"best_case_amount\":0,"
        "\"commit_amount\":0,\"won_count\":0,\"won_amount\":0}]}");
    pl_fields_clear(&f);
}

static void test_forecast_owner(void **state)
{
    pl_rules_t *r = *state;
    pl_fields_t f = {0};

    forecast_figures(&f);
    assert_dump(
        pl_report_forecast(r, &f, "ann"),
        "{\"months\":["
        "{\"month\":\"2026-02\",\"currency\":\"USD\",\"open_count\":0,"
        "\"open_amount\":0,\"weighted_amount\":0,\"best_case_amount\":0,"
        "\"commit_amount\":0,\"won_count\":1,\"won_amount\":12000.5},"
        "{\"month\":\"2026-03\",\"currency\":\"EUR\",\"open_count\":1,"
        "\"open_amount\":100,\"weighted_amount\":20,\"best_case_amount\":0,"
        "\"commit_amount\":0,\"won_count\":0,\"won_amount\":0},"
        "{\"month\":\"2026-03\",\"currency\":\"USD\",\"open_count\":3,"
        "\"open_amount\":40000.5,\"weighted_amount\":18000.3,"
        "\"best_case_amount\":10000.5,\"commit_amount\":0,"
        "\"won_count\":0,\"won_amount\":0}]}");
    /* "none": the deals without an owner */
    assert_dump(pl_report_forecast(r, &f, "none"),
                "{\"months\":[{\"month\":\"none\",\"currency\":\"EUR\","
                "\"open_count\":1,\"open_amount\":0,\"weighted_amount\":0,"
                "\"best_case_amount\":0,\"commit_amount\":0,"
                "\"won_count\":0,\"won_amount\":0}]}");
    assert_dump(pl_report_forecast(r, &f, "carol"), "{\"months\":[]}");
    pl_fields_clear(&f);

    /* an owner with the separator and a blank in the name */
    open_deals(&f, "a|b c", "2026-01", "USD", "closing", 1, AMT(1));
    open_deals(&f, "a", "2026-01", "USD", "closing", 1, AMT(2));
    assert_dump(pl_report_forecast(r, &f, "a|b c"),
                "{\"months\":[{\"month\":\"2026-01\",\"currency\":\"USD\","
                "\"open_count\":1,\"open_amount\":1,"
                "\"weighted_amount\":0.8,\"best_case_amount\":1,"
                "\"commit_amount\":1,\"won_count\":0,\"won_amount\":0}]}");
    pl_fields_clear(&f);
}

static void test_forecast_exact_amounts(void **state)
{
    pl_rules_t *r = *state;
    pl_fields_t f = {0};
    json_t *rep, *row;
    char *s;

    /* amounts keep their 4 decimals, and the weighted amount every place
     * of amount x probability */
    open_deals(&f, "", "2026-01", "USD", "qualification", 1, 5); /* 0.0005 */
    open_deals(&f, "", "2026-01", "JPY", "proposal", 1,
               AMT(1234) + 5678); /* 1234.5678 x 0.4 */
    open_deals(&f, "", "2026-02", "EUR", "closing", 1,
               AMT(600000000000) + 5000); /* 600000000000.5 x 0.8 */
    open_deals(&f, "", "2026-03", "EUR", "closing", 1,
               AMT(1000000000000)); /* whole */
    /* 17 significant digits, more than a double holds: a string with the
     * exact decimal (the codec's convention) */
    open_deals(&f, "", "2026-01", "EUR", "closing", 1,
               AMT(549755813887) + 9999);
    open_deals(&f, "", "2026-04", "EUR", "closing", 1,
               AMT(9000000000000) + 1);
    rep = pl_report_forecast(r, &f, NULL);
    assert_non_null(rep);
    row = json_array_get(json_object_get(rep, "months"), 0);
    assert_string_equal(json_string_value(json_object_get(row, "currency")),
                        "EUR");
    s = dump(rep);
    assert_non_null(strstr(s, "\"open_amount\":0.0005,"
                              "\"weighted_amount\":0.00005,"));
    assert_non_null(strstr(s, "\"open_amount\":1234.5678,"
                              "\"weighted_amount\":493.82712,"));
    assert_non_null(strstr(s, "\"open_amount\":600000000000.5,"
                              "\"weighted_amount\":480000000000.4,"));
    assert_non_null(strstr(s, "\"open_amount\":1000000000000,"
                              "\"weighted_amount\":800000000000,"));
    assert_non_null(strstr(s, "\"open_amount\":549755813887.9999,"
                              "\"weighted_amount\":\"439804651110.39992\","));
    assert_non_null(strstr(s, "\"open_amount\":\"9000000000000.0001\","
                              "\"weighted_amount\":\"7200000000000.00008\","));
    free(s);

    /* the table: 2 places, rounded half away from zero */
    rep = pl_report_forecast(r, &f, NULL);
    s = pl_report_table(rep);
    assert_non_null(s);
    assert_non_null(strstr(s, " 549755813888.00 "));
    assert_non_null(strstr(s, " 439804651110.40 "));
    assert_non_null(strstr(s, " 1234.57 "));
    assert_non_null(strstr(s, " 493.83 "));
    free(s);
    json_decref(rep);
    pl_fields_clear(&f);
}

/* A deal without a currency counts in USD, the contract's default. */
static void test_forecast_default_currency(void **state)
{
    pl_fields_t f = {0};

    open_deals(&f, "", "2026-05", "", "qualification", 1, 0);
    open_deals(&f, "", "2026-05", "USD", "qualification", 2, AMT(10));
    won_deals(&f, "ann", "2026-05", "", 1, 0);
    assert_dump(pl_report_forecast(*state, &f, NULL),
                "{\"months\":[{\"month\":\"2026-05\",\"currency\":\"USD\","
                "\"open_count\":3,\"open_amount\":10,"
                "\"weighted_amount\":1,\"best_case_amount\":0,"
                "\"commit_amount\":0,\"won_count\":1,\"won_amount\":0}]}");
    pl_fields_clear(&f);
}

static void test_forecast_empty(void **state)
{
    pl_fields_t f = {0};
    char *t;
    json_t *rep;

    assert_dump(pl_report_forecast(*state, &f, NULL), "{\"months\":[]}");
    /* figures that are not integers are skipped, not fatal */
    assert_int_equal(pl_fields_set(&f, "f||2026-01|USD|scoping|n", "x"), 0);
    assert_dump(pl_report_forecast(*state, &f, NULL), "{\"months\":[]}");
    rep = pl_report_forecast(*state, &f, NULL);
    t = pl_report_table(rep);
    assert_non_null(t);
    assert_string_equal(t, "MONTH  CURRENCY  OPEN  OPEN_AMOUNT  WEIGHTED  "
                           "BEST_CASE  COMMIT  WON  WON_AMOUNT\n");
    free(t);
    json_decref(rep);
    pl_fields_clear(&f);
}

static void test_forecast_table(void **state)
{
    pl_fields_t f = {0};
    json_t *rep;
    char *t;
    size_t width = 0;
    int lines = 0;

    forecast_figures(&f);
    rep = pl_report_forecast(*state, &f, NULL);
    t = pl_report_table(rep);
    assert_non_null(t);
    assert_non_null(strstr(t, "45000.50"));
    assert_non_null(strstr(t, "22000.30"));
    assert_non_null(strstr(t, "12000.50"));
    /* numbers right-aligned, the last column a number: equal widths */
    for (const char *line = t, *nl; (nl = strchr(line, '\n'));
         line = nl + 1, lines++) {
        if (!width)
            width = (size_t)(nl - line);
        assert_int_equal((size_t)(nl - line), width);
    }
    assert_int_equal(lines, 5); /* header + 4 rows */
    free(t);
    json_decref(rep);
    pl_fields_clear(&f);
}

/* ---- stages ---- */

static void test_stages_rows(void **state)
{
    pl_rules_t *r = *state;
    pl_fields_t f = {0};
    json_t *rep, *stages, *q, *s;
    char *t;

    FIG(&f, 3, "s", "ann", "qualification", "open");
    FIG(&f, 2, "s", "", "qualification", "open");
    FIG(&f, 12, "s", "ann", "qualification", "entered");
    FIG(&f, 6, "s", "ann", "qualification", "advanced");
    FIG(&f, 2, "s", "ann", "qualification", "lost");
    FIG(&f, 1, "s", "", "qualification", "advanced");
    FIG(&f, 1, "s", "", "qualification", "lost");
    /* 1..10 hours out of qualification (ann), then one by nobody */
    for (int h = 1; h <= 8; h++)
        moves_out(&f, "ann", "qualification", h * 3600, 1);
    moves_out(&f, "", "qualification", 9 * 3600, 1);
    moves_out(&f, "", "qualification", 10 * 3600, 1);
    /* scoping: entered, nothing left yet */
    FIG(&f, 4, "s", "bob", "scoping", "entered");
    FIG(&f, 4, "s", "bob", "scoping", "open");
    /* closed stages are not rows; won counts out of closing */
    FIG(&f, 2, "s", "bob", "won", "entered");
    FIG(&f, 2, "s", "bob", "closing", "won");
    FIG(&f, 1, "s", "bob", "closing", "moved_back");

    rep = pl_report_stages(r, &f, NULL);
    assert_non_null(rep);
    stages = json_object_get(rep, "stages");
    assert_int_equal(json_array_size(stages), 5);
    q = json_array_get(stages, 0);
    assert_string_equal(json_string_value(json_object_get(q, "stage")),
                        "qualification");
    assert_int_equal(json_integer_value(json_object_get(q, "open_count")),
                     5);
    assert_int_equal(json_integer_value(json_object_get(q, "entered")), 12);
    assert_int_equal(json_integer_value(json_object_get(q, "advanced")), 7);
    assert_int_equal(json_integer_value(json_object_get(q, "lost")), 3);
    assert_true(fabs(json_real_value(json_object_get(q, "conversion")) -
                     0.7) < 1e-12);
    /* nearest rank: the 5th and 9th of 10 */
    assert_int_equal(json_integer_value(json_object_get(q, "p50_seconds")),
                     est(5 * 3600));
    assert_int_equal(json_integer_value(json_object_get(q, "p90_seconds")),
                     est(9 * 3600));
    assert_int_equal(
        json_integer_value(json_object_get(q, "stale_after_seconds")),
        7 * 86400);
    s = json_array_get(stages, 1);
    assert_string_equal(json_string_value(json_object_get(s, "stage")),
                        "scoping");
    assert_true(json_is_null(json_object_get(s, "conversion")));
    assert_true(json_is_null(json_object_get(s, "p50_seconds")));
    assert_true(json_is_null(json_object_get(s, "p90_seconds")));
    s = json_array_get(stages, 4);
    assert_string_equal(json_string_value(json_object_get(s, "stage")),
                        "closing");
    assert_true(fabs(json_real_value(json_object_get(s, "conversion")) -
                     2.0 / 3.0) < 1e-12);
    /* 10 moves out of qualification: it qualifies, alone */
    assert_string_equal(
        json_string_value(json_object_get(rep, "bottleneck")),
        "qualification");

    t = pl_report_table(rep);
    assert_non_null(t);
    assert_non_null(strstr(t, "STAGE  "));
    assert_non_null(strstr(t, "70.0%"));
    assert_non_null(strstr(t, "7d"));
    assert_non_null(strstr(t, "\nbottleneck: qualification\n"));
    free(t);
    json_decref(rep);

    /* owner filter: ann has 8 moves out, below the threshold */
    rep = pl_report_stages(r, &f, "ann");
    q = json_array_get(json_object_get(rep, "stages"), 0);
    assert_int_equal(json_integer_value(json_object_get(q, "open_count")),
                     3);
    assert_int_equal(json_integer_value(json_object_get(q, "advanced")), 6);
    assert_true(fabs(json_real_value(json_object_get(q, "conversion")) -
                     0.75) < 1e-12);
    assert_int_equal(json_integer_value(json_object_get(q, "p50_seconds")),
                     est(4 * 3600));
    assert_true(json_is_null(json_object_get(rep, "bottleneck")));
    json_decref(rep);
    rep = pl_report_stages(r, &f, "none");
    q = json_array_get(json_object_get(rep, "stages"), 0);
    assert_int_equal(json_integer_value(json_object_get(q, "open_count")),
                     2);
    json_decref(rep);
    pl_fields_clear(&f);
}

static void test_stages_json_shape(void **state)
{
    pl_fields_t f = {0};

    FIG(&f, 1, "s", "ann", "proposal", "open");
    FIG(&f, 1, "s", "ann", "proposal", "entered");
    FIG(&f, 1, "s", "ann", "scoping", "advanced");
    moves_out(&f, "ann", "scoping", 1, 1); /* one second: exact */
    assert_dump(
        pl_report_stages(*state, &f, NULL),
        "{\"stages\":["
        "{\"stage\":\"qualification\",\"open_count\":0,\"entered\":0,"
        "\"advanced\":0,\"moved_back\":0,\"lost\":0,\"won\":0,"
        "\"conversion\":null,\"p50_seconds\":null,\"p90_seconds\":null,"
        "\"stale_after_seconds\":604800},"
        "{\"stage\":\"scoping\",\"open_count\":0,\"entered\":0,"
        "\"advanced\":1,\"moved_back\":0,\"lost\":0,\"won\":0,"
        "\"conversion\":1,\"p50_seconds\":1,\"p90_seconds\":1,"
        "\"stale_after_seconds\":864000},"
        "{\"stage\":\"proposal\",\"open_count\":1,\"entered\":1,"
        "\"advanced\":0,\"moved_back\":0,\"lost\":0,\"won\":0,"
        "\"conversion\":null,\"p50_seconds\":null,\"p90_seconds\":null,"
        "\"stale_after_seconds\":1209600},"
        "{\"stage\":\"negotiation\",\"open_count\":0,\"entered\":0,"
        "\"advanced\":0,\"moved_back\":0,\"lost\":0,\"won\":0,"
        "\"conversion\":null,\"p50_seconds\":null,\"p90_seconds\":null,"
        "\"stale_after_seconds\":864000},"
        "{\"stage\":\"closing\",\"open_count\":0,\"entered\":0,"
        "\"advanced\":0,\"moved_back\":0,\"lost\":0,\"won\":0,"
        "\"conversion\":null,\"p50_seconds\":null,\"p90_seconds\":null,"
        "\"stale_after_seconds\":86400}],"
        "\"bottleneck\":null}");
    pl_fields_clear(&f);
}

static const char *bottleneck_of(const pl_rules_t *r, const pl_fields_t *f)
{
    static char name[64];
    json_t *rep = pl_report_stages(r, f, NULL);
    const json_t *b;

    assert_non_null(rep);
    b = json_object_get(rep, "bottleneck");
    snprintf(name, sizeof(name), "%s",
             json_is_string(b) ? json_string_value(b) : "(null)");
    json_decref(rep);
    return name;
}

static void test_bottleneck_threshold(void **state)
{
    pl_rules_t *r = *state;
    pl_fields_t f = {0};

    /* qualification: 10 moves, 1 h each (of 7 d: 0.006) */
    moves_out(&f, "", "qualification", 3600, 10);
    FIG(&f, 10, "s", "", "qualification", "advanced");
    /* proposal: 9 moves of 13 days (of 14 d: 0.93) - not enough moves */
    moves_out(&f, "", "proposal", 13 * 86400, 9);
    FIG(&f, 9, "s", "", "proposal", "advanced");
    assert_string_equal(bottleneck_of(r, &f), "qualification");
    /* the 10th move out of proposal (a loss) makes it count */
    moves_out(&f, "", "proposal", 13 * 86400, 1);
    FIG(&f, 1, "s", "", "proposal", "lost");
    assert_string_equal(bottleneck_of(r, &f), "proposal");
    pl_fields_clear(&f);

    /* fewer than 10 everywhere: null */
    moves_out(&f, "", "closing", 86400 * 5, 9);
    assert_string_equal(bottleneck_of(r, &f), "(null)");
    pl_fields_clear(&f);
}

static void test_bottleneck_ties(void **state)
{
    pl_rules_t *r = *state;
    pl_fields_t f = {0};

    /* scoping and negotiation have the same stale_after (10 d) and the
     * same times: the same ratio.  The lower conversion wins. */
    moves_out(&f, "", "scoping", 2 * 86400, 10);
    moves_out(&f, "", "negotiation", 2 * 86400, 10);
    FIG(&f, 8, "s", "", "scoping", "advanced");
    FIG(&f, 2, "s", "", "scoping", "lost");
    FIG(&f, 5, "s", "", "negotiation", "advanced");
    FIG(&f, 5, "s", "", "negotiation", "moved_back");
    assert_string_equal(bottleneck_of(r, &f), "negotiation");
    pl_fields_clear(&f);

    moves_out(&f, "", "scoping", 2 * 86400, 10);
    moves_out(&f, "", "negotiation", 2 * 86400, 10);
    FIG(&f, 3, "s", "", "scoping", "advanced");
    FIG(&f, 7, "s", "", "scoping", "lost");
    FIG(&f, 9, "s", "", "negotiation", "won"); /* custom rules may */
    FIG(&f, 1, "s", "", "negotiation", "moved_back");
    assert_string_equal(bottleneck_of(r, &f), "scoping");
    pl_fields_clear(&f);

    /* the same ratio by different numbers: 1 d of 10 d vs 2.4 h of 1 d */
    moves_out(&f, "", "negotiation", 86400, 10);
    moves_out(&f, "", "closing", 8640, 10);
    FIG(&f, 10, "s", "", "negotiation", "advanced");
    FIG(&f, 4, "s", "", "closing", "won");
    FIG(&f, 6, "s", "", "closing", "lost");
    if (est(86400) * 86400 == est(8640) * 864000)
        assert_string_equal(bottleneck_of(r, &f), "closing");
    else /* the estimates differ: the higher ratio */
        assert_string_equal(bottleneck_of(r, &f),
                            est(86400) * 86400 > est(8640) * 864000
                                ? "negotiation"
                                : "closing");
    pl_fields_clear(&f);

    /* the higher ratio wins whatever the conversion */
    moves_out(&f, "", "scoping", 5 * 86400, 10);
    moves_out(&f, "", "negotiation", 2 * 86400, 10);
    FIG(&f, 10, "s", "", "scoping", "advanced");
    FIG(&f, 10, "s", "", "negotiation", "lost");
    assert_string_equal(bottleneck_of(r, &f), "scoping");
    pl_fields_clear(&f);
}

/* A stage without stale_after never is the bottleneck. */
static void test_bottleneck_never_stale(void **state)
{
    static const char yaml[] =
        "deal:\n"
        "  stages:\n"
        "    - name: a\n"
        "      probability: 0.5\n"
        "    - name: b\n"
        "      probability: 0.7\n"
        "      stale_after: 1d\n"
        "    - name: won\n"
        "      probability: 1.0\n"
        "  transitions:\n"
        "    - {from: a, to: b}\n"
        "    - {from: b, to: won}\n";
    char err[512] = "";
    pl_rules_t *r = pl_rules_parse(yaml, strlen(yaml), "inline.yaml", err,
                                   sizeof(err));
    pl_fields_t f = {0};
    json_t *rep;

    (void)state;
    if (!r)
        fail_msg("inline rules: %s", err);
    moves_out(&f, "", "a", 30 * 86400, 20);
    FIG(&f, 20, "s", "", "a", "advanced");
    moves_out(&f, "", "b", 60, 10);
    FIG(&f, 10, "s", "", "b", "won");
    rep = pl_report_stages(r, &f, NULL);
    assert_true(json_is_null(json_object_get(
        json_array_get(json_object_get(rep, "stages"), 0),
        "stale_after_seconds")));
    assert_string_equal(
        json_string_value(json_object_get(rep, "bottleneck")), "b");
    json_decref(rep);
    pl_fields_clear(&f);
    pl_rules_destroy(r);
}

/* ---- sources ---- */

static void test_sources(void **state)
{
    pl_fields_t f = {0};
    json_t *rep;
    char *t;

    (void)state;
    FIG(&f, 5, "l", "referral", "leads");
    FIG(&f, 3, "l", "referral", "mql");
    FIG(&f, 2, "l", "referral", "sal");
    FIG(&f, 1, "l", "referral", "sql");
    FIG(&f, 1, "l", "referral", "won");
    FIG(&f, 2, "l", "none", "leads");
    FIG(&f, 1, "l", "none", "disqualified");
    FIG(&f, 1, "l", "cold_call", "leads");
    FIG(&f, 0, "l", "event", "leads"); /* all zero: no row */
    FIG(&f, 4, "s", "ann", "proposal", "open");
    assert_dump(
        pl_report_sources(&f),
        "{\"sources\":["
        "{\"source\":\"cold_call\",\"leads\":1,\"mql\":0,\"sal\":0,"
        "\"sql\":0,\"disqualified\":0,\"won\":0},"
        "{\"source\":\"none\",\"leads\":2,\"mql\":0,\"sal\":0,\"sql\":0,"
        "\"disqualified\":1,\"won\":0},"
        "{\"source\":\"referral\",\"leads\":5,\"mql\":3,\"sal\":2,"
        "\"sql\":1,\"disqualified\":0,\"won\":1}]}");
    rep = pl_report_sources(&f);
    t = pl_report_table(rep);
    assert_string_equal(t,
                        "SOURCE     LEADS  MQL  SAL  SQL  DISQUALIFIED  WON\n"
                        "cold_call      1    0    0    0             0    0\n"
                        "none           2    0    0    0             1    0\n"
                        "referral       5    3    2    1             0    1\n");
    free(t);
    json_decref(rep);
    pl_fields_clear(&f);
    assert_dump(pl_report_sources(&f), "{\"sources\":[]}");
}

/* ---- gauges ---- */

static double gauge(const pl_report_gauge_t *g, size_t n, const char *name,
                    const char *labels)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(g[i].name, name) && !strcmp(g[i].labels, labels))
            return g[i].value;
    fail_msg("no gauge %s{%s}", name, labels);
    return 0;
}

static void test_gauges(void **state)
{
    pl_fields_t f = {0};
    pl_report_gauge_t *g;
    size_t n;

    forecast_figures(&f);
    FIG(&f, 2, "s", "bob", "proposal", "open");
    FIG(&f, 3, "l", "sa\"y", "won");
    assert_int_equal(pl_report_gauges(*state, &f, &g, &n), 0);
    assert_true(gauge(g, n, "pipeline_stage_open_deals",
                      "stage=\"proposal\"") == 9);
    assert_true(gauge(g, n, "pipeline_stage_open_deals",
                      "stage=\"closing\"") == 0);
    assert_true(gauge(g, n, "pipeline_forecast_open_amount",
                      "month=\"2026-03\",currency=\"USD\"") == 45000.5);
    assert_true(fabs(gauge(g, n, "pipeline_forecast_weighted_amount",
                           "month=\"2026-03\",currency=\"USD\"") -
                     22000.3) < 1e-9);
    assert_true(gauge(g, n, "pipeline_forecast_won_deals",
                      "month=\"2026-02\",currency=\"USD\"") == 1);
    assert_true(gauge(g, n, "pipeline_source_leads",
                      "source=\"referral\"") == 3);
    assert_true(gauge(g, n, "pipeline_source_won",
                      "source=\"sa\\\"y\"") == 3);
    pl_report_gauges_free(g, n);
    pl_fields_clear(&f);
}

/* ---- summing deltas ---- */

static int collect(void *opaque, const char *field, int64_t v)
{
    pl_fields_t *f = opaque;

    return pl_fields_set_int(f, field, v);
}

static void test_sum(void **state)
{
    pl_report_sum_t *s = pl_report_sum_new();
    pl_fields_t f = {0}, seen = {0};
    const char d1[] = "f|ann|2026-03|USD|proposal|n\t1\n"
                      "f|ann|2026-03|USD|proposal|a\t300000000\n"
                      "s|ann|proposal|open\t1\n";
    const char d2[] = "f|ann|2026-03|USD|proposal|n\t-1\n"
                      "f|ann|2026-03|USD|proposal|a\t-300000000\n"
                      "L|L-1\t1\n"
                      "s|ann|proposal|open\t1";
    int64_t v;

    (void)state;
    assert_non_null(s);
    assert_int_equal(pl_report_sum_add_delta(s, d1, strlen(d1)), 0);
    assert_int_equal(pl_report_sum_add_delta(s, d2, strlen(d2)), 0);
    assert_int_equal(pl_report_sum_count(s), 2);
    assert_int_equal(pl_report_sum_take(s, "L|L-1"), 1);
    assert_int_equal(pl_report_sum_take(s, "L|L-1"), 0);
    assert_int_equal(pl_report_sum_take(s, "L|nope"), 0);
    assert_int_equal(pl_report_sum_add(s, "l|none|won", 2), 0);
    assert_int_equal(pl_report_sum_fields(s, &f), 0);
    assert_int_equal(f.count, 2);
    assert_int_equal(pl_fields_get_int(&f, "s|ann|proposal|open", &v, NULL),
                     0);
    assert_int_equal(v, 2);
    assert_string_equal(pl_fields_get(&f, "l|none|won"), "2");
    assert_int_equal(pl_report_sum_foreach(s, collect, &seen), 0);
    assert_int_equal(seen.count, 2);
    /* not a delta */
    assert_int_equal(pl_report_sum_add_delta(s, "x\t1\ny 2\n", 8), -1);
    assert_int_equal(pl_report_sum_add_delta(s, "x\tz\n", 4), -1);
    pl_fields_clear(&f);
    pl_fields_clear(&seen);
    pl_report_sum_destroy(s);
    pl_report_sum_destroy(NULL);
}

/* many fields: the map grows */
static void test_sum_many(void **state)
{
    pl_report_sum_t *s = pl_report_sum_new();
    char k[32];

    (void)state;
    for (int i = 0; i < 20000; i++) {
        snprintf(k, sizeof(k), "h||qualification|%d", i);
        assert_int_equal(pl_report_sum_add(s, k, i + 1), 0);
    }
    assert_int_equal(pl_report_sum_count(s), 20000);
    assert_int_equal(pl_report_sum_take(s, "h||qualification|12345"), 12346);
    pl_report_sum_destroy(s);
}

/* ---- a deal's delta (analytics.c) ---- */

/* The figures of a delta's text, summed (fields whose sum is 0 left out). */
static void delta_sums(const pl_delta_t *d, pl_fields_t *out)
{
    pl_report_sum_t *s = pl_report_sum_new();
    pl_fields_t all = {0};

    assert_non_null(s);
    if (d->len)
        assert_int_equal(pl_report_sum_add_delta(s, d->buf, d->len), 0);
    assert_int_equal(pl_report_sum_fields(s, &all), 0);
    for (size_t i = 0; i < all.count; i++)
        if (strcmp(all.values[i], "0"))
            assert_int_equal(
                pl_fields_set(out, all.keys[i], all.values[i]), 0);
    pl_fields_clear(&all);
    pl_report_sum_destroy(s);
}

static size_t delta_lines(const pl_delta_t *d)
{
    size_t n = 0;
    for (size_t i = 0; i < d->len; i++)
        n += d->buf[i] == '\n';
    return n;
}

/* pl_analytics_deal_delta leaves out the lines of an update that cancel
 * out; over every pair of states from a grid of owners, stages (open and
 * closed), currencies, close dates (none, the same month, the next) and
 * amounts, its figures are those of the whole contributions: next's
 * minus cur's. */
static void test_deal_delta_nets_out(void **state)
{
    pl_rules_t *r = *state;
    static char *const owners[] = {NULL, "ann", "bob"};
    static char *const stages[] = {"proposal", "negotiation", "won"};
    static char *const currencies[] = {"USD", "EUR"};
    static const int32_t dates[] = {-1, 20500, 20501, 20540};
    static const int64_t amounts[] = {-1, AMT(100), AMT(250) + 5};
    enum { NO = 3, NS = 3, NC = 2, ND = 4, NA = 3, N = NO * NS * NC * ND * NA };
    pl_deal_state_t *st = calloc(N + 1, sizeof(*st));
    pl_deal_outcome_t oc = {.verdict = PL_DEAL_APPLIED};
    pl_event_t ev = {0};
    size_t pairs = 0, fewer = 0;

    assert_non_null(st);
    for (int i = 0; i < N; i++) {
        int k = i;
        st[i].exists = true;
        st[i].deal_id = "D-1";
        st[i].owner = owners[k % NO], k /= NO;
        st[i].stage = stages[k % NS], k /= NS;
        st[i].currency = currencies[k % NC], k /= NC;
        if (dates[k % ND] >= 0) {
            st[i].has_close_date = true;
            st[i].expected_close_date = dates[k % ND];
        }
        k /= ND;
        if (amounts[k % NA] >= 0) {
            st[i].has_amount = true;
            st[i].amount = amounts[k % NA];
        }
    }
    /* st[N]: a deal that does not exist (yet) */
    for (int i = 0; i <= N; i++) {
        for (int j = 0; j <= N; j++) {
            pl_delta_t got = {0}, whole = {0};
            pl_fields_t a = {0}, b = {0};
            assert_int_equal(pl_analytics_deal_delta(r, &st[i], &st[j], &oc,
                                                     &ev, &got),
                             0);
            assert_int_equal(pl_analytics_deal_contrib(r, &st[i], -1, &whole),
                             0);
            assert_int_equal(pl_analytics_deal_contrib(r, &st[j], 1, &whole),
                             0);
            delta_sums(&got, &a);
            delta_sums(&whole, &b);
            if (a.count != b.count)
                fail_msg("pair %d -> %d: %zu figures, expected %zu", i, j,
                         a.count, b.count);
            for (size_t f = 0; f < b.count; f++) {
                const char *v = pl_fields_get(&a, b.keys[f]);
                if (!v || strcmp(v, b.values[f]))
                    fail_msg("pair %d -> %d: %s = %s, expected %s", i, j,
                             b.keys[f], v ? v : "(none)", b.values[f]);
            }
            assert_true(delta_lines(&got) <= delta_lines(&whole));
            fewer += delta_lines(&got) < delta_lines(&whole);
            pairs++;
            pl_fields_clear(&a);
            pl_fields_clear(&b);
            pl_delta_free(&got);
            pl_delta_free(&whole);
        }
    }
    assert_int_equal(pairs, (size_t)(N + 1) * (N + 1));
    assert_true(fewer > 0);
    /* an update of the amount alone: one line */
    {
        pl_deal_state_t cur = st[3], next = st[3];
        pl_delta_t d = {0};
        cur.has_amount = next.has_amount = true;
        cur.amount = AMT(100);
        next.amount = AMT(140);
        assert_int_equal(
            pl_analytics_deal_delta(r, &cur, &next, &oc, &ev, &d), 0);
        char want[64];
        snprintf(want, sizeof(want), "|a\t%lld\n", (long long)AMT(40));
        assert_int_equal(delta_lines(&d), 1);
        assert_non_null(strstr(d.buf, want));
        pl_delta_free(&d);
    }
    free(st);
}

/* ---- the histogram (analytics.c) ---- */

static void check_bound(int64_t v)
{
    double e = pl_hist_value(pl_hist_bucket(v));

    if (fabs(e - (double)v) / (double)v > 0.10)
        fail_msg("%lld s estimated as %g (bucket %d)", (long long)v, e,
                 pl_hist_bucket(v));
}

static void test_hist_error_bound(void **state)
{
    (void)state;
    assert_int_equal(pl_hist_bucket(0), 0);
    assert_true(pl_hist_value(0) == 0);
    assert_true(pl_hist_value(pl_hist_bucket(1)) == 1); /* exact */
    for (int64_t v = 1; v <= 1000000; v++)
        check_bound(v);
    /* a sample up to 10^12: every 997th from 10^6, and the powers */
    for (int64_t v = 1000000; v <= INT64_C(1000000000000);
         v += v / 997 + 1)
        check_bound(v);
    for (int64_t v = 10; v <= INT64_C(1000000000000); v *= 10) {
        check_bound(v - 1);
        check_bound(v);
        check_bound(v + 1);
    }
    /* buckets only grow */
    for (int64_t v = 1; v < 100000; v++)
        assert_true(pl_hist_bucket(v) <= pl_hist_bucket(v + 1));
    assert_true(pl_hist_bucket(INT64_MAX) < PL_HIST_BUCKETS);
}

static void test_hist_percentiles(void **state)
{
    int64_t c[PL_HIST_BUCKETS] = {0};

    (void)state;
    assert_true(pl_hist_percentile(c, 0.5) == -1);
    /* one value */
    c[pl_hist_bucket(3600)] = 7;
    assert_true(pl_hist_percentile(c, 0.5) ==
                pl_hist_value(pl_hist_bucket(3600)));
    assert_true(pl_hist_percentile(c, 0.9) ==
                pl_hist_value(pl_hist_bucket(3600)));
    /* 1..100: nearest rank 50 and 90, within 10% */
    memset(c, 0, sizeof(c));
    for (int v = 1; v <= 100; v++)
        c[pl_hist_bucket(v)]++;
    assert_true(fabs(pl_hist_percentile(c, 0.5) - 50) <= 5);
    assert_true(fabs(pl_hist_percentile(c, 0.9) - 90) <= 9);
    assert_true(pl_hist_percentile(c, 0.5) ==
                pl_hist_value(pl_hist_bucket(50)));
    assert_true(pl_hist_percentile(c, 0.9) ==
                pl_hist_value(pl_hist_bucket(90)));
    assert_true(pl_hist_percentile(c, 1.0) ==
                pl_hist_value(pl_hist_bucket(100)));
    /* 9 zeros and one long stay: the median is 0, p90 still 0 (9 of 10
     * at or below it), p100 the long one */
    memset(c, 0, sizeof(c));
    c[0] = 9;
    c[pl_hist_bucket(86400)] = 1;
    assert_true(pl_hist_percentile(c, 0.5) == 0);
    assert_true(pl_hist_percentile(c, 0.9) == 0);
    assert_true(fabs(pl_hist_percentile(c, 1.0) - 86400) <= 8640);
}

/* pl_field_escape copies runs of plain bytes at once: the same output and
 * length as escaping byte by byte, for every buffer size (truncation
 * included) and bytes of every kind. */
static size_t escape_bytewise(const char *in, char *out, size_t out_size)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)in;
         *p && o + 4 <= out_size; p++) {
        if (*p == '%' || *p == '|' || *p < 0x21) {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        } else {
            out[o++] = (char)*p;
        }
    }
    if (!out_size)
        return 0;
    o = o < out_size ? o : out_size - 1;
    out[o] = '\0';
    return o;
}

static void test_field_escape(void **state)
{
    static const char pool[] = "ab|%% \t\x01\x7f\xc3\xa9Zz09-_.";
    unsigned seed = 12345;
    (void)state;
    for (int round = 0; round < 2000; round++) {
        char in[40], a[64], b[64];
        size_t len = (size_t)(round % 37);
        for (size_t i = 0; i < len; i++) {
            seed = seed * 1103515245u + 12345u;
            in[i] = pool[(seed >> 16) % (sizeof(pool) - 1)];
        }
        in[len] = '\0';
        for (size_t size = 0; size <= sizeof(a); size++) {
            memset(a, 'x', sizeof(a));
            memset(b, 'x', sizeof(b));
            size_t na = pl_field_escape(in, a, size);
            size_t nb = escape_bytewise(in, b, size);
            assert_int_equal(na, nb);
            assert_memory_equal(a, b, sizeof(a));
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_field_escape),
        cmocka_unit_test(test_forecast_rows),
        cmocka_unit_test(test_forecast_owner),
        cmocka_unit_test(test_forecast_exact_amounts),
        cmocka_unit_test(test_forecast_default_currency),
        cmocka_unit_test(test_forecast_empty),
        cmocka_unit_test(test_forecast_table),
        cmocka_unit_test(test_stages_rows),
        cmocka_unit_test(test_stages_json_shape),
        cmocka_unit_test(test_bottleneck_threshold),
        cmocka_unit_test(test_bottleneck_ties),
        cmocka_unit_test(test_bottleneck_never_stale),
        cmocka_unit_test(test_sources),
        cmocka_unit_test(test_gauges),
        cmocka_unit_test(test_sum),
        cmocka_unit_test(test_sum_many),
        cmocka_unit_test(test_deal_delta_nets_out),
        cmocka_unit_test(test_hist_error_bound),
        cmocka_unit_test(test_hist_percentiles),
    };

    return cmocka_run_group_tests(tests, setup_rules, teardown_rules);
}
