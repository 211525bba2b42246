/*
 * test_codec.c - unit tests of common/codec.c against the real schemas/.
 *
 * Round trips every event type through Avro and JSON, pins the wire bytes
 * and the JSON text of a few events (so other Avro and JSON implementations
 * can rely on them), checks that bad input fails with an error naming the
 * field, and exercises the time, date and amount helpers at their edges.
 */
#include <unistd.h>

#include "codec.h"
#include "testutil.h"

static char schema_dir[4096];

static int setup(void **state)
{
    char err[512] = "";
    source_path(schema_dir, sizeof(schema_dir), "schemas");
    pl_codec_t *c = pl_codec_new(schema_dir, err, sizeof(err));
    if (!c) {
        fprintf(stderr, "pl_codec_new(%s): %s\n", schema_dir, err);
        return -1;
    }
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    pl_codec_destroy(*state);
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Building and comparing events                                          */
/* ---------------------------------------------------------------------- */

static void set(char **dst, const char *v)
{
    assert_int_equal(pl_str_set(dst, v), 0);
}

static void add(pl_strlist_t *l, const char *v)
{
    assert_int_equal(pl_strlist_add(l, v), 0);
}

/* An event of type t with every field of its schema set (plus nothing
 * else), with values that survive both encodings. */
static void make_full(pl_event_t *ev, pl_event_type_t t)
{
    pl_event_init(ev);
    ev->type = t;
    set(&ev->event_id, "evt-0001");
    ev->occurred_at = INT64_C(1795773600123); /* 2026-11-27T10:00:00.123Z */
    ev->present |= PL_F_OCCURRED_AT;
    switch (t) {
    case PL_EV_LEAD_CREATED:
    case PL_EV_LEAD_UPDATED:
        set(&ev->lead_id, "L-1");
        set(&ev->email, "ana@example.com");
        set(&ev->company, "Banco \"Ejemplo\" S.A. \xc3\xb1");
        set(&ev->industry, "banking");
        ev->employees = 250;
        ev->monthly_ad_spend = 12345678; /* 1234.5678 */
        add(&ev->technologies, "hubspot");
        add(&ev->technologies, "google_ads");
        add(&ev->hiring_for, "marketing");
        set(&ev->contact_title, "HR Manager\n(EMEA)");
        ev->months_in_role = 7;
        set(&ev->source, "referral");
        set(&ev->owner, "bob");
        ev->present |= PL_F_EMPLOYEES | PL_F_MONTHLY_AD_SPEND |
                       PL_F_TECHNOLOGIES | PL_F_HIRING_FOR |
                       PL_F_MONTHS_IN_ROLE;
        break;
    case PL_EV_LEAD_ACCEPTED:
        set(&ev->lead_id, "L-1");
        set(&ev->owner, "bob");
        break;
    case PL_EV_LEAD_REJECTED:
        set(&ev->lead_id, "L-1");
        set(&ev->reason, "no budget");
        break;
    case PL_EV_LEAD_CONVERTED:
        set(&ev->lead_id, "L-1");
        set(&ev->deal_id, "D-L-1");
        set(&ev->name, "Big deal");
        ev->amount = 120005000;
        set(&ev->currency, "EUR");
        ev->expected_close_date = 20784; /* 2026-11-27 */
        ev->present |= PL_F_AMOUNT | PL_F_EXPECTED_CLOSE_DATE;
        break;
    case PL_EV_DEAL_CREATED:
        set(&ev->deal_id, "D-1");
        set(&ev->lead_id, "L-1");
        set(&ev->name, "Big deal");
        set(&ev->owner, "bob");
        ev->amount = 5;
        set(&ev->currency, "USD");
        ev->expected_close_date = PL_INTAKE_DATE_MAX; /* 9999-12-31 */
        set(&ev->stage, "qualification");
        ev->present |= PL_F_AMOUNT | PL_F_EXPECTED_CLOSE_DATE;
        break;
    case PL_EV_DEAL_UPDATED:
        set(&ev->deal_id, "D-1");
        set(&ev->name, "Bigger deal");
        set(&ev->owner, "carol");
        ev->amount = INT64_C(999999999999999); /* 15 digits: exact in JSON */
        set(&ev->currency, "GBP");
        ev->expected_close_date = 0;
        ev->present |= PL_F_AMOUNT | PL_F_EXPECTED_CLOSE_DATE;
        break;
    case PL_EV_DEAL_STAGE_REQUESTED:
        set(&ev->deal_id, "D-1");
        set(&ev->to_stage, "lost");
        set(&ev->reason, "went with a competitor");
        set(&ev->requested_by, "bob");
        break;
    case PL_EV_DEAL_ACTIVITY:
        set(&ev->deal_id, "D-1");
        set(&ev->activity, "contract_signed");
        break;
    case PL_EV_LEAD_STATUS_CHANGED:
        set(&ev->lead_id, "L-1");
        set(&ev->from_status, "new");
        set(&ev->to_status, "mql");
        ev->score = 75;
        add(&ev->reasons, "industry");
        add(&ev->reasons, "employees");
        set(&ev->caused_by, "evt-0000");
        ev->present |= PL_F_SCORE | PL_F_REASONS;
        break;
    case PL_EV_LEAD_TRANSITION_REJECTED:
        set(&ev->lead_id, "L-1");
        set(&ev->status, "nurture");
        set(&ev->requested, "sal");
        set(&ev->reason_code, "not_allowed");
        set(&ev->message, "nurture -> sal is not allowed");
        set(&ev->caused_by, "evt-0000");
        break;
    case PL_EV_DEAL_STAGE_CHANGED:
        set(&ev->deal_id, "D-1");
        set(&ev->from_stage, "scoping");
        set(&ev->to_stage, "proposal");
        ev->amount = 1;
        set(&ev->currency, "USD");
        set(&ev->owner, "bob");
        ev->probability = 0.4;
        ev->seconds_in_previous_stage = 86400;
        set(&ev->caused_by, "evt-0000");
        ev->present |= PL_F_AMOUNT | PL_F_PROBABILITY |
                       PL_F_SECONDS_IN_PREVIOUS_STAGE;
        break;
    case PL_EV_DEAL_TRANSITION_REJECTED:
        set(&ev->deal_id, "D-1");
        set(&ev->from_stage, "won");
        set(&ev->to_stage, "lost");
        set(&ev->reason_code, "terminal");
        set(&ev->message, "won is final");
        set(&ev->caused_by, "evt-0000");
        break;
    case PL_EV_DEAL_STALE:
        set(&ev->deal_id, "D-1");
        set(&ev->stage, "scoping");
        set(&ev->owner, "bob");
        ev->amount = 10000;
        set(&ev->currency, "USD");
        ev->idle_since = -1; /* 1969-12-31T23:59:59.999Z */
        ev->idle_seconds = 864001;
        ev->threshold_seconds = 864000;
        ev->present |= PL_F_AMOUNT | PL_F_IDLE_SINCE | PL_F_IDLE_SECONDS |
                       PL_F_THRESHOLD_SECONDS;
        break;
    case PL_EV_DEAL_CLOSE_REMINDER:
        set(&ev->deal_id, "D-1");
        set(&ev->stage, "closing");
        set(&ev->owner, "bob");
        ev->amount = 5000000;
        set(&ev->currency, "USD");
        set(&ev->kind, "closing_soon");
        ev->expected_close_date = 20784;
        ev->due_at = INT64_C(1795773600000);
        ev->present |= PL_F_AMOUNT | PL_F_EXPECTED_CLOSE_DATE | PL_F_DUE_AT;
        break;
    default:
        fail_msg("no builder for type %d", (int)t);
    }
}

#define STRF(f) {#f, offsetof(pl_event_t, f)}
static const struct {
    const char *name;
    size_t off;
} str_fields[] = {
    STRF(event_id),     STRF(lead_id),     STRF(deal_id),     STRF(owner),
    STRF(name),         STRF(requested_by), STRF(caused_by),  STRF(email),
    STRF(company),      STRF(industry),    STRF(contact_title), STRF(source),
    STRF(currency),     STRF(stage),       STRF(to_stage),    STRF(from_stage),
    STRF(reason),       STRF(activity),    STRF(from_status), STRF(to_status),
    STRF(status),       STRF(requested),   STRF(reason_code), STRF(message),
    STRF(kind),
};

static void expect_writers_agree(pl_codec_t *c, const pl_event_t *ev,
                                 const void *buf, size_t len);

static void assert_list_equal(const char *what, const pl_strlist_t *a,
                              const pl_strlist_t *b)
{
    if (a->count != b->count)
        fail_msg("%s: %zu items vs %zu", what, a->count, b->count);
    for (size_t i = 0; i < a->count; i++)
        assert_string_equal(a->items[i], b->items[i]);
}

/* Every field of pl_event_t, presence included. */
static void assert_events_equal(const pl_event_t *a, const pl_event_t *b)
{
    assert_int_equal(a->type, b->type);
    for (size_t i = 0; i < sizeof(str_fields) / sizeof(str_fields[0]); i++) {
        const char *x = *(char *const *)((const char *)a + str_fields[i].off);
        const char *y = *(char *const *)((const char *)b + str_fields[i].off);
        if (!x != !y || (x && strcmp(x, y)))
            fail_msg("%s: '%s' vs '%s' (%s)", str_fields[i].name,
                     x ? x : "(null)", y ? y : "(null)",
                     pl_event_type_name(a->type));
    }
    if (a->present != b->present)
        fail_msg("present: 0x%x vs 0x%x (%s)", a->present, b->present,
                 pl_event_type_name(a->type));
#define NUMEQ(bit, f)                                                          \
    if ((a->present & (bit)) && a->f != b->f)                                  \
    fail_msg(#f ": %lld vs %lld", (long long)a->f, (long long)b->f)
    NUMEQ(PL_F_OCCURRED_AT, occurred_at);
    NUMEQ(PL_F_EMPLOYEES, employees);
    NUMEQ(PL_F_MONTHLY_AD_SPEND, monthly_ad_spend);
    NUMEQ(PL_F_MONTHS_IN_ROLE, months_in_role);
    NUMEQ(PL_F_AMOUNT, amount);
    NUMEQ(PL_F_EXPECTED_CLOSE_DATE, expected_close_date);
    NUMEQ(PL_F_SCORE, score);
    NUMEQ(PL_F_SECONDS_IN_PREVIOUS_STAGE, seconds_in_previous_stage);
    NUMEQ(PL_F_IDLE_SINCE, idle_since);
    NUMEQ(PL_F_IDLE_SECONDS, idle_seconds);
    NUMEQ(PL_F_THRESHOLD_SECONDS, threshold_seconds);
    NUMEQ(PL_F_DUE_AT, due_at);
#undef NUMEQ
    if ((a->present & PL_F_PROBABILITY) && a->probability != b->probability)
        fail_msg("probability: %.17g vs %.17g", a->probability,
                 b->probability);
    assert_list_equal("technologies", &a->technologies, &b->technologies);
    assert_list_equal("hiring_for", &a->hiring_for, &b->hiring_for);
    assert_list_equal("reasons", &a->reasons, &b->reasons);
}

/* Decode buf and expect failure with `want` in the message and ev
 * left cleared. */
static void expect_decode_error(pl_codec_t *c, const void *buf, size_t len,
                                const char *want)
{
    pl_event_t ev;
    char err[512] = "";
    pl_event_init(&ev);
    int rc = pl_codec_decode(c, buf, len, &ev, err, sizeof(err));
    if (rc != -1)
        fail_msg("decode succeeded, expected error containing '%s'", want);
    if (!strstr(err, want))
        fail_msg("error '%s' does not contain '%s'", err, want);
    assert_int_equal(ev.type, PL_EV_UNKNOWN);
    assert_null(ev.event_id);
    assert_int_equal(ev.present, 0);
    pl_event_clear(&ev);
}

static void expect_json_error(pl_codec_t *c, const char *json,
                              const char *want)
{
    expect_decode_error(c, json, strlen(json), want);
}

static void decode_ok(pl_codec_t *c, const void *buf, size_t len,
                      pl_event_t *ev)
{
    char err[512] = "";
    pl_event_init(ev);
    if (pl_codec_decode(c, buf, len, ev, err, sizeof(err)) != 0)
        fail_msg("decode failed: %s", err);
}

/* ---------------------------------------------------------------------- */
/* Round trips                                                            */
/* ---------------------------------------------------------------------- */

static void test_roundtrip_avro_all_types(void **state)
{
    pl_codec_t *c = *state;
    for (int t = PL_EV_UNKNOWN + 1; t < PL_EV__COUNT; t++) {
        pl_event_t in, out;
        void *buf;
        size_t len;
        char err[512] = "";
        make_full(&in, (pl_event_type_t)t);
        if (pl_codec_encode(c, &in, &buf, &len, err, sizeof(err)) != 0)
            fail_msg("encode %s: %s", pl_event_type_name(t), err);
        assert_true(len > PL_WIRE_HEADER_LEN);
        assert_int_equal(((unsigned char *)buf)[0], 0);
        assert_int_equal(((unsigned char *)buf)[4],
                         pl_codec_schema_id(c, (pl_event_type_t)t));
        decode_ok(c, buf, len, &out);
        assert_events_equal(&in, &out);
        /* decoding again into the same (filled) event is fine, and the
         * reused Avro value does not accumulate array items */
        assert_int_equal(pl_codec_decode(c, buf, len, &out, err, sizeof(err)),
                         0);
        assert_events_equal(&in, &out);
        free(buf);
        pl_event_clear(&in);
        pl_event_clear(&out);
    }
}

static void test_roundtrip_json_all_types(void **state)
{
    pl_codec_t *c = *state;
    for (int t = PL_EV_UNKNOWN + 1; t < PL_EV__COUNT; t++) {
        pl_event_t in, out;
        make_full(&in, (pl_event_type_t)t);
        char *json = pl_codec_to_json(c, &in);
        assert_non_null(json);
        assert_null(strchr(json, '\n'));
        decode_ok(c, json, strlen(json), &out);
        assert_events_equal(&in, &out);
        /* and the JSON of the decoded event is the same text */
        char *again = pl_codec_to_json(c, &out);
        assert_string_equal(json, again);
        free(again);
        free(json);
        pl_event_clear(&in);
        pl_event_clear(&out);
    }
}

static void test_roundtrip_minimal(void **state)
{
    pl_codec_t *c = *state;
    pl_event_t in, out;
    void *buf;
    size_t len;
    char err[256];
    pl_event_init(&in);
    in.type = PL_EV_LEAD_UPDATED;
    set(&in.event_id, "e");
    in.present = PL_F_OCCURRED_AT;
    set(&in.lead_id, "L-9");
    /* an explicitly empty array differs from an absent one */
    in.present |= PL_F_TECHNOLOGIES;
    assert_int_equal(pl_codec_encode(c, &in, &buf, &len, err, sizeof(err)),
                     0);
    decode_ok(c, buf, len, &out);
    assert_events_equal(&in, &out);
    free(buf);
    pl_event_clear(&out);

    char *json = pl_codec_to_json(c, &in);
    assert_string_equal(json, "{\"type\":\"lead.updated\",\"event_id\":\"e\","
                              "\"occurred_at\":\"1970-01-01T00:00:00.000Z\","
                              "\"lead_id\":\"L-9\",\"technologies\":[]}");
    decode_ok(c, json, strlen(json), &out);
    assert_events_equal(&in, &out);
    free(json);
    pl_event_clear(&out);
    pl_event_clear(&in);
}

/* The exact Avro bytes, as any Confluent-compatible producer writes them. */
static void test_avro_wire_bytes(void **state)
{
    pl_codec_t *c = *state;
    static const unsigned char want[] = {
        0x00, 0x00, 0x00, 0x00, 0x09,           /* magic, schema id 9 */
        0x04, 'e',  '1',                        /* event_id */
        0x02,                                   /* occurred_at = 1 */
        0x04, 'D',  '1',                        /* deal_id */
        0x08, 'c',  'a',  'l',  'l',            /* activity */
    };
    pl_event_t ev;
    void *buf;
    size_t len;
    char err[256];
    pl_event_init(&ev);
    ev.type = PL_EV_DEAL_ACTIVITY;
    set(&ev.event_id, "e1");
    ev.occurred_at = 1;
    ev.present = PL_F_OCCURRED_AT;
    set(&ev.deal_id, "D1");
    set(&ev.activity, "call");
    assert_int_equal(pl_codec_encode(c, &ev, &buf, &len, err, sizeof(err)),
                     0);
    assert_int_equal(len, sizeof(want));
    assert_memory_equal(buf, want, sizeof(want));
    free(buf);
    pl_event_clear(&ev);

    /* deal.updated with amount 12000.5: ["null", decimal] branch 1, then
     * bytes 07 27 21 88 (120005000); currency defaults to USD on decode */
    static const unsigned char upd[] = {
        0x00, 0x00, 0x00, 0x00, 0x07, 0x04, 'e',  '2',  0x00, 0x04, 'D',
        '1',  0x00, /* name null */ 0x00, /* owner null */
        0x02, 0x08, 0x07, 0x27, 0x21, 0x88, /* amount */
        0x00, /* currency null */ 0x00,     /* date null */
    };
    decode_ok(c, upd, sizeof(upd), &ev);
    assert_int_equal(ev.type, PL_EV_DEAL_UPDATED);
    assert_true(ev.present & PL_F_AMOUNT);
    assert_int_equal(ev.amount, 120005000);
    assert_string_equal(ev.currency, "USD");
    assert_null(ev.owner);
    assert_false(ev.present & PL_F_EXPECTED_CLOSE_DATE);
    pl_event_clear(&ev);

    /* a negative amount over 9 bytes, sign-extended: -1 (0.0001), read
     * as negative and so refused (the contract: invalid input) */
    static const unsigned char neg[] = {
        0x00, 0x00, 0x00, 0x00, 0x07, 0x04, 'e',  '2',  0x00, 0x04, 'D',
        '1',  0x00, 0x00, 0x02, 0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0x00, 0x00,
    };
    expect_decode_error(c, neg, sizeof(neg),
                        "field 'amount': must not be negative");
    /* the same over 9 bytes of 0x00: 0 is fine */
    static const unsigned char zero[] = {
        0x00, 0x00, 0x00, 0x00, 0x07, 0x04, 'e',  '2',  0x00, 0x04, 'D',
        '1',  0x00, 0x00, 0x02, 0x12, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00,
    };
    decode_ok(c, zero, sizeof(zero), &ev);
    assert_int_equal(ev.amount, 0);
    pl_event_clear(&ev);
}

/* The ends of decimal(18,4) survive Avro exactly; negative amounts encode
 * (derived events) but are refused at intake, read back as negative. */
static void test_avro_decimal_edges(void **state)
{
    pl_codec_t *c = *state;
    static const int64_t vals[] = {
        0, 1, -1, 127, 128, -128, -129, 32767, 32768, 120005000,
        INT64_C(999999999999999999), INT64_C(-999999999999999999)};
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        pl_event_t in, out;
        void *buf;
        size_t len;
        char err[256];
        make_full(&in, PL_EV_DEAL_UPDATED);
        in.amount = vals[i];
        assert_int_equal(
            pl_codec_encode(c, &in, &buf, &len, err, sizeof(err)), 0);
        expect_writers_agree(c, &in, buf, len);
        if (vals[i] < 0) {
            expect_decode_error(c, buf, len,
                                "field 'amount': must not be negative");
        } else {
            decode_ok(c, buf, len, &out);
            assert_events_equal(&in, &out);
            pl_event_clear(&out);
        }
        free(buf);
        pl_event_clear(&in);
    }
    /* and the encoder refuses what the schema cannot hold */
    pl_event_t ev;
    void *buf;
    size_t len;
    char err[256];
    make_full(&ev, PL_EV_DEAL_UPDATED);
    ev.amount = INT64_C(1000000000000000000);
    assert_int_equal(pl_codec_encode(c, &ev, &buf, &len, err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "field 'amount': out of range"));
    pl_event_clear(&ev);
}

static void test_to_json_format(void **state)
{
    pl_codec_t *c = *state;
    pl_event_t ev;
    make_full(&ev, PL_EV_DEAL_STAGE_CHANGED);
    ev.amount = 120005000;
    pl_str_set(&ev.currency, NULL); /* filled with the default */
    pl_str_set(&ev.from_stage, NULL); /* "" for a new deal */
    ev.present &= ~PL_F_SECONDS_IN_PREVIOUS_STAGE;
    char *json = pl_codec_to_json(c, &ev);
    assert_string_equal(
        json, "{\"type\":\"deal.stage_changed\",\"event_id\":\"evt-0001\","
              "\"occurred_at\":\"2026-11-27T10:00:00.123Z\","
              "\"deal_id\":\"D-1\",\"from_stage\":\"\","
              "\"to_stage\":\"proposal\",\"amount\":12000.5,"
              "\"currency\":\"USD\",\"owner\":\"bob\",\"probability\":0.4,"
              "\"caused_by\":\"evt-0000\"}");
    free(json);
    pl_event_clear(&ev);

    make_full(&ev, PL_EV_LEAD_CREATED);
    json = pl_codec_to_json(c, &ev);
    assert_string_equal(
        json,
        "{\"type\":\"lead.created\",\"event_id\":\"evt-0001\","
        "\"occurred_at\":\"2026-11-27T10:00:00.123Z\",\"lead_id\":\"L-1\","
        "\"email\":\"ana@example.com\","
        "\"company\":\"Banco \\\"Ejemplo\\\" S.A. \xc3\xb1\","
        "\"industry\":\"banking\",\"employees\":250,"
        "\"monthly_ad_spend\":1234.5678,"
        "\"technologies\":[\"hubspot\",\"google_ads\"],"
        "\"hiring_for\":[\"marketing\"],"
        "\"contact_title\":\"HR Manager\\n(EMEA)\",\"months_in_role\":7,"
        "\"source\":\"referral\",\"owner\":\"bob\"}");
    free(json);
    pl_event_clear(&ev);

    pl_event_init(&ev);
    assert_null(pl_codec_to_json(c, &ev)); /* unknown type */
}

/* ---------------------------------------------------------------------- */
/* JSON input                                                             */
/* ---------------------------------------------------------------------- */

static void test_json_input(void **state)
{
    pl_codec_t *c = *state;
    pl_event_t ev;
    const char *j1 =
        " \n\t{\"type\": \"deal.created\", \"event_id\": \"e1\","
        " \"occurred_at\": \"2026-11-27T11:00:00.5+01:00\","
        " \"deal_id\": \"D1\", \"amount\": 12000.50, \"owner\": null,"
        " \"expected_close_date\": \"2026-11-27\"}\n";
    decode_ok(c, j1, strlen(j1), &ev);
    assert_int_equal(ev.type, PL_EV_DEAL_CREATED);
    assert_string_equal(ev.event_id, "e1");
    assert_int_equal(ev.occurred_at, INT64_C(1795773600500));
    assert_string_equal(ev.deal_id, "D1");
    assert_int_equal(ev.amount, 120005000);
    assert_string_equal(ev.currency, "USD");
    assert_null(ev.owner);
    assert_null(ev.stage);
    assert_int_equal(ev.expected_close_date, 20784);
    assert_int_equal(ev.present, PL_F_OCCURRED_AT | PL_F_AMOUNT |
                                     PL_F_EXPECTED_CLOSE_DATE);
    pl_event_clear(&ev);

    /* amounts as strings are exact; integers are fine; so is 0.1 */
    const char *j2 = "{\"type\":\"lead.converted\",\"event_id\":\"e2\","
                     "\"occurred_at\":\"2026-11-27T10:00:00Z\","
                     "\"lead_id\":\"L1\",\"amount\":\"99999999999999.9999\","
                     "\"currency\":\"EUR\"}";
    decode_ok(c, j2, strlen(j2), &ev);
    assert_int_equal(ev.amount, INT64_C(999999999999999999));
    assert_string_equal(ev.currency, "EUR");
    pl_event_clear(&ev);
    const char *j3 = "{\"type\":\"deal.updated\",\"event_id\":\"e3\","
                     "\"occurred_at\":\"2026-11-27T10:00:00Z\","
                     "\"deal_id\":\"D1\",\"amount\":42}";
    decode_ok(c, j3, strlen(j3), &ev);
    assert_int_equal(ev.amount, 420000);
    pl_event_clear(&ev);
    const char *j4 = "{\"type\":\"deal.updated\",\"event_id\":\"e3\","
                     "\"occurred_at\":\"2026-11-27T10:00:00Z\","
                     "\"deal_id\":\"D1\",\"amount\":0.1}";
    decode_ok(c, j4, strlen(j4), &ev);
    assert_int_equal(ev.amount, 1000);
    pl_event_clear(&ev);

    /* a derived event reads back too; probability may be an integer */
    const char *j5 =
        "{\"type\":\"deal.stage_changed\",\"event_id\":\"e5\","
        "\"occurred_at\":\"2026-11-27T10:00:00Z\",\"deal_id\":\"D1\","
        "\"from_stage\":\"\",\"to_stage\":\"qualification\","
        "\"probability\":1,\"caused_by\":\"e4\"}";
    decode_ok(c, j5, strlen(j5), &ev);
    assert_string_equal(ev.from_stage, "");
    assert_true(ev.probability == 1.0);
    assert_false(ev.present & PL_F_AMOUNT);
    assert_null(ev.currency);
    pl_event_clear(&ev);
}

/* ---------------------------------------------------------------------- */
/* Errors                                                                 */
/* ---------------------------------------------------------------------- */

#define HEAD "{\"type\":\"deal.created\",\"event_id\":\"e1\","                 \
             "\"occurred_at\":\"2026-11-27T10:00:00Z\",\"deal_id\":\"D1\""

static void test_json_errors(void **state)
{
    pl_codec_t *c = *state;
    expect_json_error(c, HEAD ",\"amount\":true}",
                      "field 'amount': expected a decimal number");
    expect_json_error(c, HEAD ",\"amount\":\"12,5\"}", "field 'amount'");
    expect_json_error(c, HEAD ",\"amount\":1.23456}",
                      "field 'amount': more than 4 decimal places");
    expect_json_error(c, HEAD ",\"amount\":\"1.23456\"}", "field 'amount'");
    expect_json_error(c, HEAD ",\"amount\":1e15}",
                      "field 'amount': out of range");
    expect_json_error(c, HEAD ",\"owner\":42}",
                      "field 'owner': expected a string");
    expect_json_error(c, HEAD ",\"expected_close_date\":\"2026-02-30\"}",
                      "field 'expected_close_date'");
    expect_json_error(c, HEAD ",\"currency\":\"usd\"}", "field 'currency'");
    expect_json_error(c, HEAD ",\"colour\":\"red\"}",
                      "unknown field 'colour' for deal.created");
    expect_json_error(c, HEAD ",\"owner\":\"a\",\"owner\":\"b\"}",
                      "invalid JSON");
    expect_json_error(c, HEAD ",", "invalid JSON at line 1");
    expect_json_error(c, "{\"event_id\":\"e1\"}", "field 'type' is required");
    expect_json_error(c, "{\"type\":\"deal.exploded\"}",
                      "field 'type': unknown event type 'deal.exploded'");
    expect_json_error(c,
                      "{\"type\":\"lead.created\",\"event_id\":\"e1\","
                      "\"occurred_at\":\"2026-11-27T10:00:00Z\","
                      "\"lead_id\":\"L1\",\"employees\":\"ten\"}",
                      "field 'employees': expected an integer");
    expect_json_error(c,
                      "{\"type\":\"lead.created\",\"event_id\":\"e1\","
                      "\"occurred_at\":\"2026-11-27T10:00:00Z\","
                      "\"lead_id\":\"L1\",\"employees\":-1}",
                      "field 'employees': must not be negative");
    expect_json_error(c,
                      "{\"type\":\"lead.created\",\"event_id\":\"e1\","
                      "\"occurred_at\":\"2026-11-27T10:00:00Z\","
                      "\"lead_id\":\"L1\",\"technologies\":[\"a\",3]}",
                      "field 'technologies[1]': expected a string");
    expect_json_error(c,
                      "{\"type\":\"lead.created\",\"event_id\":\"e1\","
                      "\"occurred_at\":\"2026-11-27T10:00:00Z\","
                      "\"lead_id\":\"L1\",\"source\":\"tv\"}",
                      "field 'source': unknown value 'tv'");
    expect_json_error(c,
                      "{\"type\":\"lead.created\",\"event_id\":\"e1\","
                      "\"occurred_at\":\"2026-11-27T10:00:00Z\","
                      "\"lead_id\":\"L1\",\"industry\":\"Banking\"}",
                      "field 'industry'");
    expect_json_error(c,
                      "{\"type\":\"deal.stage_requested\",\"event_id\":"
                      "\"e1\",\"occurred_at\":\"2026-11-27T10:00:00Z\","
                      "\"deal_id\":\"D1\"}",
                      "field 'to_stage' is required for "
                      "deal.stage_requested");
    expect_json_error(c,
                      "{\"type\":\"deal.stage_requested\",\"event_id\":"
                      "\"e1\",\"occurred_at\":\"2026-11-27T10:00:00Z\","
                      "\"deal_id\":\"\",\"to_stage\":\"won\"}",
                      "field 'deal_id' is required for "
                      "deal.stage_requested");
    expect_json_error(c,
                      "{\"type\":\"deal.activity\",\"event_id\":\"e1\","
                      "\"occurred_at\":\"2026-11-27T10:00:00Z\","
                      "\"deal_id\":\"D1\",\"activity\":\"dance\"}",
                      "field 'activity': unknown value 'dance'");
    expect_json_error(c,
                      "{\"type\":\"deal.activity\",\"event_id\":\"e1\","
                      "\"deal_id\":\"D1\",\"activity\":\"call\"}",
                      "field 'occurred_at' is required for deal.activity");
    expect_json_error(c,
                      "{\"type\":\"deal.activity\",\"event_id\":\"e1\","
                      "\"occurred_at\":1795773600000,"
                      "\"deal_id\":\"D1\",\"activity\":\"call\"}",
                      "field 'occurred_at': expected an RFC 3339");
    expect_json_error(c,
                      "{\"type\":\"deal.activity\",\"event_id\":\"e1\","
                      "\"occurred_at\":\"2026-11-27 10:00\","
                      "\"deal_id\":\"D1\",\"activity\":\"call\"}",
                      "field 'occurred_at'");
    expect_json_error(c,
                      "{\"type\":\"deal.activity\",\"event_id\":\"\","
                      "\"occurred_at\":\"2026-11-27T10:00:00Z\","
                      "\"deal_id\":\"D1\",\"activity\":\"call\"}",
                      "field 'event_id' is required");

    char big[512];
    char id[PL_EVENT_ID_MAX + 2];
    memset(id, 'x', sizeof(id) - 1);
    id[sizeof(id) - 1] = '\0';
    snprintf(big, sizeof(big),
             "{\"type\":\"deal.activity\",\"event_id\":\"%s\","
             "\"occurred_at\":\"2026-11-27T10:00:00Z\","
             "\"deal_id\":\"D1\",\"activity\":\"call\"}",
             id);
    expect_json_error(c, big, "field 'event_id': 129 bytes, at most 128");
    /* exactly 128 bytes is fine */
    id[PL_EVENT_ID_MAX] = '\0';
    snprintf(big, sizeof(big),
             "{\"type\":\"deal.activity\",\"event_id\":\"%s\","
             "\"occurred_at\":\"2026-11-27T10:00:00Z\","
             "\"deal_id\":\"D1\",\"activity\":\"call\"}",
             id);
    pl_event_t ev;
    decode_ok(c, big, strlen(big), &ev);
    pl_event_clear(&ev);

    expect_json_error(c, "[1,2]", "bad magic byte 0x5b");
    expect_json_error(c, "  {\"type\": 7}", "field 'type': expected a string");
}

static void test_avro_errors(void **state)
{
    pl_codec_t *c = *state;
    pl_event_t ev;
    void *buf;
    size_t len;
    char err[256];

    static const unsigned char unknown_id[] = {0, 0, 0, 0, 99, 0x02, 'x'};
    expect_decode_error(c, unknown_id, sizeof(unknown_id),
                        "unknown schema id 99");
    static const unsigned char magic[] = {1, 0, 0, 0, 9, 0x02, 'x'};
    expect_decode_error(c, magic, sizeof(magic), "bad magic byte 0x01");
    static const unsigned char short_hdr[] = {0, 0, 0};
    expect_decode_error(c, short_hdr, sizeof(short_hdr), "truncated");
    expect_decode_error(c, "", 0, "empty message");

    make_full(&ev, PL_EV_DEAL_STAGE_CHANGED);
    assert_int_equal(pl_codec_encode(c, &ev, &buf, &len, err, sizeof(err)),
                     0);
    pl_event_clear(&ev);
    /* every truncation fails cleanly */
    for (size_t cut = PL_WIRE_HEADER_LEN; cut < len; cut++)
        expect_decode_error(c, buf, cut, "invalid Avro body");
    /* trailing bytes */
    unsigned char *longer = malloc(len + 1);
    memcpy(longer, buf, len);
    longer[len] = 0;
    expect_decode_error(c, longer, len + 1, "trailing bytes");
    free(longer);
    free(buf);

    /* a string length far beyond the message */
    static const unsigned char huge[] = {0,    0,    0,    0,    9,
                                         0xfe, 0xff, 0xff, 0xff, 0x0f};
    expect_decode_error(c, huge, sizeof(huge),
                        "invalid Avro body for deal.activity (schema id 9): "
                        "field 'event_id': length beyond the end");
    /* truncation names the field it cut */
    static const unsigned char cut[] = {0x00, 0x00, 0x00, 0x00, 0x09, 0x04,
                                        'e',  '1',  0x02, 0x04, 'D',  '1',
                                        0x08, 'c',  'a'};
    expect_decode_error(c, cut, sizeof(cut), "field 'activity'");
    /* an out-of-range union branch */
    static const unsigned char branch[] = {
        0x00, 0x00, 0x00, 0x00, 0x07, 0x04, 'e', '2', 0x00,
        0x04, 'D',  '1',  0x06, 0x00, 0x00, 0x00, 0x00};
    expect_decode_error(c, branch, sizeof(branch),
                        "field 'name': union branch out of range");

    /* Avro that is well-formed but breaks the contract */
    static const unsigned char dance[] = {
        0x00, 0x00, 0x00, 0x00, 0x09, 0x04, 'e', '1', 0x02, 0x04,
        'D',  '1',  0x0a, 'd',  'a',  'n',  'c', 'e'};
    expect_decode_error(c, dance, sizeof(dance),
                        "field 'activity': unknown value 'dance'");
    static const unsigned char no_id[] = {
        0x00, 0x00, 0x00, 0x00, 0x09, 0x00, 0x02, 0x04,
        'D',  '1',  0x08, 'c',  'a',  'l',  'l'};
    expect_decode_error(c, no_id, sizeof(no_id),
                        "field 'event_id' is required for deal.activity");
    static const unsigned char bad_utf8[] = {
        0x00, 0x00, 0x00, 0x00, 0x09, 0x04, 'e', '1', 0x02, 0x04,
        0xc3, 0x28, 0x08, 'c',  'a',  'l',  'l'};
    expect_decode_error(c, bad_utf8, sizeof(bad_utf8),
                        "field 'deal_id': not valid UTF-8");
    static const unsigned char nul[] = {
        0x00, 0x00, 0x00, 0x00, 0x09, 0x04, 'e', '1', 0x02, 0x04,
        'D',  0x00, 0x08, 'c',  'a',  'l',  'l'};
    expect_decode_error(c, nul, sizeof(nul),
                        "field 'deal_id': string contains a NUL byte");
    /* decimal wider than 18 digits */
    static const unsigned char wide[] = {
        0x00, 0x00, 0x00, 0x00, 0x07, 0x04, 'e',  '2',  0x00,
        0x04, 'D',  '1',  0x00, 0x00, 0x02, 0x10, 0x7f, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00};
    expect_decode_error(c, wide, sizeof(wide),
                        "field 'amount': out of range for decimal(18,4)");
}

static void test_encode_validates(void **state)
{
    pl_codec_t *c = *state;
    pl_event_t ev;
    void *buf = (void *)1;
    size_t len = 7;
    char err[256] = "";
    make_full(&ev, PL_EV_DEAL_CLOSE_REMINDER);
    set(&ev.kind, "someday");
    assert_int_equal(pl_codec_encode(c, &ev, &buf, &len, err, sizeof(err)),
                     -1);
    assert_null(buf);
    assert_int_equal(len, 0);
    assert_non_null(strstr(err, "field 'kind': unknown value 'someday'"));
    pl_event_clear(&ev);

    make_full(&ev, PL_EV_DEAL_STALE);
    ev.present &= ~PL_F_IDLE_SINCE;
    assert_int_equal(pl_codec_validate(&ev, err, sizeof(err)), -1);
    assert_string_equal(err, "field 'idle_since' is required for deal.stale");
    pl_event_clear(&ev);

    make_full(&ev, PL_EV_DEAL_STAGE_CHANGED);
    ev.probability = 1.5;
    assert_int_equal(pl_codec_validate(&ev, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "field 'probability'"));
    pl_event_clear(&ev);

    pl_event_init(&ev);
    assert_int_equal(pl_codec_validate(&ev, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "unknown event type"));
}

/* ---------------------------------------------------------------------- */
/* Schema ids and schema loading                                          */
/* ---------------------------------------------------------------------- */

static void test_schema_ids(void **state)
{
    pl_codec_t *c = *state;
    assert_int_equal(pl_codec_schema_id(c, PL_EV_LEAD_CREATED), 1);
    assert_int_equal(pl_codec_schema_id(c, PL_EV_DEAL_CLOSE_REMINDER), 15);
    assert_int_equal(pl_codec_schema_id(c, PL_EV_UNKNOWN), -1);
    assert_non_null(strstr(pl_codec_schema_text(c, PL_EV_DEAL_STALE),
                           "\"DealStale\""));
    assert_string_equal(pl_codec_record_name(PL_EV_DEAL_STAGE_REQUESTED),
                        "sales.pipeline.DealStageRequested");

    /* a registry id replaces the table's for encoding; both decode */
    pl_event_t ev, out;
    void *buf;
    size_t len;
    char err[256];
    make_full(&ev, PL_EV_DEAL_ACTIVITY);
    assert_int_equal(pl_codec_set_schema_id(c, PL_EV_DEAL_ACTIVITY, 70000),
                     0);
    assert_int_equal(pl_codec_set_schema_id(c, PL_EV_DEAL_STALE, 70000), -1);
    assert_int_equal(pl_codec_encode(c, &ev, &buf, &len, err, sizeof(err)),
                     0);
    assert_memory_equal(buf, "\x00\x00\x01\x11\x70", 5);
    decode_ok(c, buf, len, &out);
    assert_events_equal(&ev, &out);
    pl_event_clear(&out);
    ((unsigned char *)buf)[2] = 0, ((unsigned char *)buf)[3] = 0;
    ((unsigned char *)buf)[4] = 9;
    decode_ok(c, buf, len, &out);
    assert_events_equal(&ev, &out);
    pl_event_clear(&out);
    free(buf);
    pl_event_clear(&ev);
    assert_int_equal(pl_codec_set_schema_id(c, PL_EV_DEAL_ACTIVITY, 9), 0);
}

static void write_file(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

/* Write dir/ids.tsv pointing at the real schemas, except that `type` uses
 * `file` (relative to dir). */
static void write_ids(const char *dir, const char *type, const char *file)
{
    static const char *names[] = {
        "lead.created",        "lead.updated",
        "lead.accepted",       "lead.rejected",
        "lead.converted",      "deal.created",
        "deal.updated",        "deal.stage_requested",
        "deal.activity",       "lead.status_changed",
        "lead.transition_rejected", "deal.stage_changed",
        "deal.transition_rejected", "deal.stale",
        "deal.close_reminder"};
    char path[4200], text[16384] = "# test table\n";
    size_t used = strlen(text);
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char fname[64];
        size_t k = 0;
        for (const char *p = names[i]; *p && k + 1 < sizeof(fname); p++)
            fname[k++] = *p == '.' ? '_' : *p;
        fname[k] = '\0';
        int r;
        if (type && !strcmp(type, names[i]))
            r = snprintf(text + used, sizeof(text) - used, "%zu\t%s\t%s\n",
                         i + 1, names[i], file);
        else
            r = snprintf(text + used, sizeof(text) - used,
                         "%zu\t%s\t%s/%s.avsc\n", i + 1, names[i],
                         schema_dir, fname);
        used += (size_t)r;
    }
    snprintf(path, sizeof(path), "%s/ids.tsv", dir);
    write_file(path, text);
}

static void expect_new_error(const char *dir, const char *want)
{
    char err[512] = "";
    pl_codec_t *c = pl_codec_new(dir, err, sizeof(err));
    if (c) {
        pl_codec_destroy(c);
        fail_msg("pl_codec_new succeeded, expected '%s'", want);
    }
    if (!strstr(err, want))
        fail_msg("error '%s' does not contain '%s'", err, want);
}

static void test_codec_new_errors(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_codec_XXXXXX", path[4200];
    assert_non_null(mkdtemp(dir));

    pl_codec_destroy(NULL);
    expect_new_error("/nonexistent/schemas", "/nonexistent/schemas/ids.tsv");

    write_ids(dir, NULL, NULL);
    char err[512];
    pl_codec_t *c = pl_codec_new(dir, err, sizeof(err));
    if (!c)
        fail_msg("%s", err);
    pl_codec_destroy(c);

    write_ids(dir, "deal.stale", "missing.avsc");
    expect_new_error(dir, "missing.avsc");

    snprintf(path, sizeof(path), "%s/bad.avsc", dir);
    write_file(path, "{\"type\": \"record\", \"name\": \"DealStale\",");
    write_ids(dir, "deal.stale", "bad.avsc");
    expect_new_error(dir, "bad.avsc:");

    /* a field whose type disagrees with the codec */
    write_file(path,
               "{\"type\":\"record\",\"name\":\"DealActivity\","
               "\"namespace\":\"sales.pipeline\",\"fields\":["
               "{\"name\":\"event_id\",\"type\":\"string\"},"
               "{\"name\":\"occurred_at\",\"type\":\"long\"},"
               "{\"name\":\"deal_id\",\"type\":\"string\"},"
               "{\"name\":\"activity\",\"type\":\"string\"}]}");
    write_ids(dir, "deal.activity", "bad.avsc");
    expect_new_error(dir, "bad.avsc: field 'occurred_at' must have type");

    snprintf(path, sizeof(path), "%s/ids.tsv", dir);
    write_file(path, "1\tdeal.activity\t/nonexistent.avsc\tx\n");
    expect_new_error(dir, "ids.tsv:1: more than 3 columns");
    write_file(path, "x\tdeal.activity\tf.avsc\n");
    expect_new_error(dir, "ids.tsv:1: bad schema id 'x'");
    write_file(path, "# only a comment\n");
    expect_new_error(dir, "no schema for lead.created");

    /* the wrong record for the type */
    char avsc[4200];
    snprintf(avsc, sizeof(avsc), "%s/deal_stale.avsc", schema_dir);
    write_ids(dir, "deal.activity", avsc);
    expect_new_error(dir, "expected 'sales.pipeline.DealActivity'");

    snprintf(path, sizeof(path), "%s/ids.tsv", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/bad.avsc", dir);
    unlink(path);
    rmdir(dir);
}

/* ---------------------------------------------------------------------- */
/* Helpers                                                                */
/* ---------------------------------------------------------------------- */

static void expect_time(const char *s, int64_t want)
{
    int64_t ms = 12345;
    if (pl_time_parse_rfc3339(s, &ms) != 0)
        fail_msg("'%s' did not parse", s);
    if (ms != want)
        fail_msg("'%s': %lld, want %lld", s, (long long)ms, (long long)want);
}

static void expect_time_bad(const char *s)
{
    int64_t ms = 12345;
    if (pl_time_parse_rfc3339(s, &ms) == 0)
        fail_msg("'%s' parsed as %lld", s, (long long)ms);
    assert_int_equal(ms, 12345);
}

static void expect_time_fmt(int64_t ms, const char *want)
{
    char buf[PL_RFC3339_BUFSZ];
    assert_int_equal(pl_time_format_rfc3339(ms, buf, sizeof(buf)), 0);
    assert_string_equal(buf, want);
    expect_time(buf, ms);
}

static void test_time_helpers(void **state)
{
    (void)state;
    expect_time("1970-01-01T00:00:00Z", 0);
    expect_time("2026-11-27T10:00:00.000Z", INT64_C(1795773600000));
    expect_time("2026-11-27T10:00:00+00:00", INT64_C(1795773600000));
    expect_time("2026-11-27t10:00:00z", INT64_C(1795773600000));
    expect_time("2026-11-27T12:30:00+02:30", INT64_C(1795773600000));
    expect_time("2026-11-27T05:00:00-05:00", INT64_C(1795773600000));
    expect_time("2026-11-27T10:00:00.5Z", INT64_C(1795773600500));
    expect_time("2026-11-27T10:00:00.123999Z", INT64_C(1795773600123));
    expect_time("1969-12-31T23:59:59.999Z", -1);
    expect_time("2024-02-29T00:00:00Z", INT64_C(1709164800000));
    expect_time("2000-02-29T00:00:00Z", INT64_C(951782400000));
    expect_time("0000-01-01T00:00:00Z", INT64_C(-62167219200000));
    expect_time("9999-12-31T23:59:59.999Z", INT64_C(253402300799999));

    expect_time_bad("");
    expect_time_bad("2026-11-27");
    expect_time_bad("2026-11-27T10:00:00");     /* no offset */
    expect_time_bad("2026-11-27T10:00Z");       /* no seconds */
    expect_time_bad("2026-11-27T10:00:00.Z");   /* empty fraction */
    expect_time_bad("2026-11-27T24:00:00Z");
    expect_time_bad("2026-11-27T10:60:00Z");
    expect_time_bad("2026-11-27T10:00:60Z");
    expect_time_bad("2026-02-29T10:00:00Z");    /* not a leap year */
    expect_time_bad("2100-02-29T10:00:00Z");
    expect_time_bad("2026-13-01T10:00:00Z");
    expect_time_bad("2026-00-01T10:00:00Z");
    expect_time_bad("2026-11-27T10:00:00Zx");
    expect_time_bad("2026-11-27T10:00:00+0000");
    expect_time_bad("2026-11-27T10:00:00+24:00");
    expect_time_bad("26-11-27T10:00:00Z");
    expect_time_bad(" 2026-11-27T10:00:00Z");
    expect_time_bad("0000-01-01T00:00:00+00:01"); /* before year 0 */

    expect_time_fmt(0, "1970-01-01T00:00:00.000Z");
    expect_time_fmt(-1, "1969-12-31T23:59:59.999Z");
    expect_time_fmt(INT64_C(1795773600123), "2026-11-27T10:00:00.123Z");
    expect_time_fmt(INT64_C(951782400000), "2000-02-29T00:00:00.000Z");
    expect_time_fmt(INT64_C(-62167219200000), "0000-01-01T00:00:00.000Z");
    expect_time_fmt(INT64_C(253402300799999), "9999-12-31T23:59:59.999Z");
    char buf[PL_RFC3339_BUFSZ];
    assert_int_equal(pl_time_format_rfc3339(INT64_C(253402300800000), buf,
                                            sizeof(buf)),
                     -1);
    assert_int_equal(pl_time_format_rfc3339(INT64_MIN, buf, sizeof(buf)), -1);
    assert_int_equal(pl_time_format_rfc3339(0, buf, 24), -1); /* no room */
    assert_int_equal(pl_time_format_rfc3339(0, buf, 25), 0);
}

static void test_date_helpers(void **state)
{
    (void)state;
    int32_t d = 99;
    char buf[PL_DATE_BUFSZ];
    assert_int_equal(pl_date_parse("1970-01-01", &d), 0);
    assert_int_equal(d, 0);
    assert_int_equal(pl_date_parse("1969-12-31", &d), 0);
    assert_int_equal(d, -1);
    assert_int_equal(pl_date_parse("2000-03-01", &d), 0);
    assert_int_equal(d, 11017);
    assert_int_equal(pl_date_parse("2026-11-27", &d), 0);
    assert_int_equal(d, 20784);
    assert_int_equal(pl_date_parse("2024-02-29", &d), 0);
    d = 99;
    assert_int_equal(pl_date_parse("2023-02-29", &d), -1);
    assert_int_equal(pl_date_parse("2026-04-31", &d), -1);
    assert_int_equal(pl_date_parse("2026-1-01", &d), -1);
    assert_int_equal(pl_date_parse("2026-01-01T00:00:00Z", &d), -1);
    assert_int_equal(pl_date_parse("", &d), -1);
    assert_int_equal(d, 99);

    assert_int_equal(pl_date_format(0, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "1970-01-01");
    assert_int_equal(pl_date_format(-1, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "1969-12-31");
    assert_int_equal(pl_date_format(20784, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "2026-11-27");
    assert_int_equal(pl_date_format(-719528, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "0000-01-01");
    assert_int_equal(pl_date_format(2932896, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "9999-12-31");
    assert_int_equal(pl_date_format(2932897, buf, sizeof(buf)), -1);
    assert_int_equal(pl_date_format(INT32_MIN, buf, sizeof(buf)), -1);
    assert_int_equal(pl_date_format(0, buf, 10), -1);
    /* every day of a few centuries reads back */
    for (int32_t day = -200000; day < 200000; day += 7) {
        int32_t back;
        assert_int_equal(pl_date_format(day, buf, sizeof(buf)), 0);
        assert_int_equal(pl_date_parse(buf, &back), 0);
        assert_int_equal(back, day);
    }
}

static void expect_amount(const char *s, int64_t want)
{
    int64_t v = 7;
    if (pl_amount_parse(s, &v) != 0)
        fail_msg("'%s' did not parse", s);
    if (v != want)
        fail_msg("'%s': %lld, want %lld", s, (long long)v, (long long)want);
}

static void expect_amount_bad(const char *s)
{
    int64_t v = 7;
    if (pl_amount_parse(s, &v) == 0)
        fail_msg("'%s' parsed as %lld", s ? s : "(null)", (long long)v);
    assert_int_equal(v, 7);
}

static void expect_amount_fmt(int64_t v, const char *want)
{
    char buf[PL_AMOUNT_BUFSZ];
    assert_int_equal(pl_amount_format(v, buf, sizeof(buf)), 0);
    assert_string_equal(buf, want);
}

static void test_amount_helpers(void **state)
{
    (void)state;
    expect_amount("12000.5", 120005000);
    expect_amount("12000.50", 120005000);
    expect_amount("12000.5000000", 120005000);
    expect_amount("-3.25", -32500);
    expect_amount("+3.25", 32500);
    expect_amount("0", 0);
    expect_amount("-0", 0);
    expect_amount("0.0001", 1);
    expect_amount("007", 70000);
    expect_amount("99999999999999.9999", INT64_C(999999999999999999));
    expect_amount("-99999999999999.9999", INT64_C(-999999999999999999));
    expect_amount("00000000000000000001", 10000);

    expect_amount_bad("");
    expect_amount_bad("-");
    expect_amount_bad(".5");
    expect_amount_bad("5.");
    expect_amount_bad("1.23456");
    expect_amount_bad("0.00001");
    expect_amount_bad("100000000000000");
    expect_amount_bad("1e3");
    expect_amount_bad(" 1");
    expect_amount_bad("1 ");
    expect_amount_bad("1,5");
    expect_amount_bad("abc");
    expect_amount_bad("--1");
    expect_amount_bad(NULL);

    expect_amount_fmt(120005000, "12000.5");
    expect_amount_fmt(0, "0");
    expect_amount_fmt(-32500, "-3.25");
    expect_amount_fmt(1, "0.0001");
    expect_amount_fmt(-1, "-0.0001");
    expect_amount_fmt(10000, "1");
    expect_amount_fmt(12345678, "1234.5678");
    expect_amount_fmt(INT64_C(999999999999999999), "99999999999999.9999");
    expect_amount_fmt(INT64_MIN, "-922337203685477.5808");
    expect_amount_fmt(INT64_MAX, "922337203685477.5807");
    char small[4];
    assert_int_equal(pl_amount_format(12345, small, sizeof(small)), -1);
    assert_int_equal(pl_amount_format(990000, small, sizeof(small)), 0);
    assert_string_equal(small, "99");
}

/* ---------------------------------------------------------------------- */
/* The direct Avro reader against avro-c's generic values                  */
/* ---------------------------------------------------------------------- */

/* Decode the same bytes with both readers: the same result, the same
 * event or the same error. */
static void expect_readers_agree(pl_codec_t *c, const void *buf, size_t len)
{
    pl_event_t a, b;
    char ea[512] = "", eb[512] = "";
    int ra, rb;
    pl_event_init(&a);
    pl_event_init(&b);
    ra = pl_codec_decode(c, buf, len, &a, ea, sizeof(ea));
    pl_codec_use_generic(c, true);
    rb = pl_codec_decode(c, buf, len, &b, eb, sizeof(eb));
    pl_codec_use_generic(c, false);
    if (ra != rb)
        fail_msg("direct reader %d (%s), generic %d (%s)", ra, ea, rb, eb);
    if (ra == 0)
        assert_events_equal(&a, &b);
    pl_event_clear(&a);
    pl_event_clear(&b);
}

/* The direct writer's bytes are avro-c's. */
static void expect_writers_agree(pl_codec_t *c, const pl_event_t *ev,
                                 const void *buf, size_t len)
{
    void *gbuf;
    size_t glen;
    char err[512] = "";
    pl_codec_use_generic(c, true);
    if (pl_codec_encode(c, ev, &gbuf, &glen, err, sizeof(err)) != 0)
        fail_msg("the generic writer refuses %s: %s",
                 pl_event_type_name(ev->type), err);
    pl_codec_use_generic(c, false);
    if (glen != len || memcmp(gbuf, buf, len))
        fail_msg("%s: the direct writer's %zu bytes differ from avro-c's "
                 "%zu", pl_event_type_name(ev->type), len, glen);
    free(gbuf);
}

static void test_direct_reader_writer(void **state)
{
    pl_codec_t *c = *state;
    /* every type, full and minimal, and each cut short */
    for (int t = PL_EV_UNKNOWN + 1; t < PL_EV__COUNT; t++) {
        for (int full = 0; full < 2; full++) {
            pl_event_t in;
            void *buf;
            size_t len;
            char err[512] = "";
            make_full(&in, (pl_event_type_t)t);
            if (!full) { /* required fields only */
                pl_event_t req;
                pl_event_init(&req);
                req.type = in.type;
                req.occurred_at = in.occurred_at;
                req.present = PL_F_OCCURRED_AT;
                set(&req.event_id, in.event_id);
                set(&req.lead_id, in.lead_id);
                set(&req.deal_id, in.deal_id);
                pl_event_clear(&in);
                in = req;
            }
            if (pl_codec_encode(c, &in, &buf, &len, err, sizeof(err)) != 0) {
                pl_event_clear(&in);
                continue; /* (a type whose minimum needs more) */
            }
            expect_writers_agree(c, &in, buf, len);
            expect_readers_agree(c, buf, len);
            for (size_t cut = PL_WIRE_HEADER_LEN; cut < len; cut++)
                expect_readers_agree(c, buf, cut);
            free(buf);
            pl_event_clear(&in);
        }
    }
    /* an array in two blocks, the first with a negative count and its
     * size in bytes (avro-c's writer never makes one): lead.created, id 1 */
    static const unsigned char blocks[] = {
        0x00, 0x00, 0x00, 0x00, 0x01, 0x04, 'e', '1', 0x02, 0x04, 'L',
        '1',  0x00, 0x00, 0x00, 0x00, 0x00,                 /* .. ad spend */
        0x02, 0x03, 0x0a, 0x04, 'a', 'b', 0x02, 'c',        /* -2 items */
        0x02, 0x02, 'd',  0x00,                             /* 1 item, end */
        0x00, 0x00, 0x00, 0x00, 0x00};                      /* .. owner */
    pl_event_t ev;
    decode_ok(c, blocks, sizeof(blocks), &ev);
    assert_int_equal(ev.technologies.count, 3);
    assert_string_equal(ev.technologies.items[0], "ab");
    assert_string_equal(ev.technologies.items[1], "c");
    assert_string_equal(ev.technologies.items[2], "d");
    pl_event_clear(&ev);
    expect_readers_agree(c, blocks, sizeof(blocks));
    /* a NUL inside an array item */
    unsigned char nul[sizeof(blocks)];
    memcpy(nul, blocks, sizeof(blocks));
    nul[21] = '\0';
    expect_decode_error(c, nul, sizeof(nul),
                        "field 'technologies': string contains a NUL byte");
    expect_readers_agree(c, nul, sizeof(nul));
    /* and the error cases of test_avro_errors through the generic reader */
    pl_codec_use_generic(c, true);
    test_avro_errors(state);
    test_avro_decimal_edges(state);
    test_roundtrip_avro_all_types(state);
    pl_codec_use_generic(c, false);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_avro_all_types),
        cmocka_unit_test(test_roundtrip_json_all_types),
        cmocka_unit_test(test_roundtrip_minimal),
        cmocka_unit_test(test_avro_wire_bytes),
        cmocka_unit_test(test_avro_decimal_edges),
        cmocka_unit_test(test_to_json_format),
        cmocka_unit_test(test_json_input),
        cmocka_unit_test(test_json_errors),
        cmocka_unit_test(test_avro_errors),
        cmocka_unit_test(test_direct_reader_writer),
        cmocka_unit_test(test_encode_validates),
        cmocka_unit_test(test_schema_ids),
        cmocka_unit_test(test_codec_new_errors),
        cmocka_unit_test(test_time_helpers),
        cmocka_unit_test(test_date_helpers),
        cmocka_unit_test(test_amount_helpers),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
