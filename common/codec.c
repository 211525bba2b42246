/*
 * codec.c - events on the wire: Avro (Confluent framing) and JSON.
 *
 * Everything is driven by two tables: `fields` describes each contract field
 * once (JSON/Avro name, kind, where it lives in pl_event_t, its presence bit,
 * its checks) and `types` lists, per event type, the record name and the
 * fields in schema order with whether each is required.  Generic walkers then
 * move values between pl_event_t and an Avro generic value (avro-c) or a
 * JSON object (jansson), and pl_codec_validate() applies the contract's rules.
 * Adding a field is one line in each table plus the .avsc change; the codec
 * refuses to start when the .avsc files and the tables disagree, so the two
 * cannot drift apart silently.
 *
 * Hot path: the schemas are parsed once in pl_codec_new(); each type keeps
 * its Avro generic value, reader and writer and reuses them per message.
 *
 * Schema ids come from schemas/ids.tsv, or from a schema registry
 * (pl_codec_use_lookup; common/registry.c fills it).  With a registry, an
 * id not seen before is looked up once: its writer schema must be one of
 * ours (same record name, same fields), and the id joins the table of
 * accepted ids; an id the registry does not know, or whose schema is not
 * ours, is remembered as bad, so the message costs no second request.
 */
#include "codec.h"
#include "sbuf.h"

#include <avro.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------- */
/* Field and type tables                                                  */
/* ---------------------------------------------------------------------- */

typedef enum kind_e {
    K_STRING,
    K_TIMESTAMP, /* int64 ms; Avro long timestamp-millis; JSON RFC 3339 */
    K_DATE,      /* int32 days; Avro int date; JSON "YYYY-MM-DD" */
    K_DECIMAL,   /* int64 scaled; Avro bytes decimal(18,4); JSON number */
    K_LONG,      /* int64; Avro long; JSON integer */
    K_DOUBLE,    /* double; Avro double; JSON number */
    K_STRLIST,   /* pl_strlist_t; Avro array of string; JSON array */
} kind_t;

typedef enum check_e {
    CHK_NONE,
    CHK_EVENT_ID, /* 1..PL_EVENT_ID_MAX bytes */
    CHK_ENUM,     /* one of field->enumv */
    CHK_ACTIVITY, /* pl_activity_from_name() */
    CHK_CURRENCY, /* 3 uppercase letters */
    CHK_SLUG,     /* lowercase slug */
    CHK_NONNEG,   /* >= 0 */
    CHK_UNIT,     /* 0 <= x <= 1 */
} check_t;

typedef struct field_s {
    const char *name;
    kind_t kind;
    size_t off;   /* offsetof(pl_event_t, ...) */
    uint32_t bit; /* PL_F_* for non-strings, 0 for strings */
    check_t check;
    const char *const *enumv; /* NULL-terminated, for CHK_ENUM */
} field_t;

static const char *const sources[] = {
    "social_media", "content_marketing", "email_marketing", "cold_call",
    "cold_email",   "event",             "referral",        "other",
    NULL};
static const char *const kinds[] = {"closing_soon", "overdue",
                                    "contract_not_sent", NULL};
static const char *const reason_codes[] = {
    "unknown_deal",  "unknown_lead",   "unknown_stage",
    "not_allowed",   "terminal",       "missing_field",
    "duplicate_deal", "already_in_stage", NULL};

enum {
    FLD_EVENT_ID,
    FLD_OCCURRED_AT,
    FLD_LEAD_ID,
    FLD_DEAL_ID,
    FLD_OWNER,
    FLD_NAME,
    FLD_REQUESTED_BY,
    FLD_CAUSED_BY,
    FLD_EMAIL,
    FLD_COMPANY,
    FLD_INDUSTRY,
    FLD_EMPLOYEES,
    FLD_MONTHLY_AD_SPEND,
    FLD_TECHNOLOGIES,
    FLD_HIRING_FOR,
    FLD_CONTACT_TITLE,
    FLD_MONTHS_IN_ROLE,
    FLD_SOURCE,
    FLD_AMOUNT,
    FLD_CURRENCY,
    FLD_EXPECTED_CLOSE_DATE,
    FLD_STAGE,
    FLD_TO_STAGE,
    FLD_FROM_STAGE,
    FLD_REASON,
    FLD_ACTIVITY,
    FLD_FROM_STATUS,
    FLD_TO_STATUS,
    FLD_STATUS,
    FLD_REQUESTED,
    FLD_REASON_CODE,
    FLD_MESSAGE,
    FLD_SCORE,
    FLD_REASONS,
    FLD_PROBABILITY,
    FLD_SECONDS_IN_PREVIOUS_STAGE,
    FLD_IDLE_SINCE,
    FLD_IDLE_SECONDS,
    FLD_THRESHOLD_SECONDS,
    FLD_KIND,
    FLD_DUE_AT,
    FLD__COUNT
};

#define STR(n, chk, ev)                                                        \
    [FLD_##n] = {#ev, K_STRING, offsetof(pl_event_t, ev), 0, chk, NULL}
#define NUM(n, k, chk, ev)                                                     \
    [FLD_##n] = {#ev, k, offsetof(pl_event_t, ev), PL_F_##n, chk, NULL}

static const field_t fields[FLD__COUNT] = {
    STR(EVENT_ID, CHK_EVENT_ID, event_id),
    NUM(OCCURRED_AT, K_TIMESTAMP, CHK_NONE, occurred_at),
    STR(LEAD_ID, CHK_NONE, lead_id),
    STR(DEAL_ID, CHK_NONE, deal_id),
    STR(OWNER, CHK_NONE, owner),
    STR(NAME, CHK_NONE, name),
    STR(REQUESTED_BY, CHK_NONE, requested_by),
    STR(CAUSED_BY, CHK_NONE, caused_by),
    STR(EMAIL, CHK_NONE, email),
    STR(COMPANY, CHK_NONE, company),
    STR(INDUSTRY, CHK_SLUG, industry),
    NUM(EMPLOYEES, K_LONG, CHK_NONNEG, employees),
    NUM(MONTHLY_AD_SPEND, K_DECIMAL, CHK_NONNEG, monthly_ad_spend),
    NUM(TECHNOLOGIES, K_STRLIST, CHK_NONE, technologies),
    NUM(HIRING_FOR, K_STRLIST, CHK_NONE, hiring_for),
    STR(CONTACT_TITLE, CHK_NONE, contact_title),
    NUM(MONTHS_IN_ROLE, K_LONG, CHK_NONNEG, months_in_role),
    [FLD_SOURCE] = {"source", K_STRING, offsetof(pl_event_t, source), 0,
                    CHK_ENUM, sources},
    NUM(AMOUNT, K_DECIMAL, CHK_NONE, amount),
    STR(CURRENCY, CHK_CURRENCY, currency),
    NUM(EXPECTED_CLOSE_DATE, K_DATE, CHK_NONE, expected_close_date),
    STR(STAGE, CHK_NONE, stage),
    STR(TO_STAGE, CHK_NONE, to_stage),
    STR(FROM_STAGE, CHK_NONE, from_stage),
    STR(REASON, CHK_NONE, reason),
    STR(ACTIVITY, CHK_ACTIVITY, activity),
    STR(FROM_STATUS, CHK_NONE, from_status),
    STR(TO_STATUS, CHK_NONE, to_status),
    STR(STATUS, CHK_NONE, status),
    STR(REQUESTED, CHK_NONE, requested),
    [FLD_REASON_CODE] = {"reason_code", K_STRING,
                         offsetof(pl_event_t, reason_code), 0, CHK_ENUM,
                         reason_codes},
    STR(MESSAGE, CHK_NONE, message),
    NUM(SCORE, K_LONG, CHK_NONE, score),
    NUM(REASONS, K_STRLIST, CHK_NONE, reasons),
    NUM(PROBABILITY, K_DOUBLE, CHK_UNIT, probability),
    NUM(SECONDS_IN_PREVIOUS_STAGE, K_LONG, CHK_NONNEG,
        seconds_in_previous_stage),
    NUM(IDLE_SINCE, K_TIMESTAMP, CHK_NONE, idle_since),
    NUM(IDLE_SECONDS, K_LONG, CHK_NONNEG, idle_seconds),
    NUM(THRESHOLD_SECONDS, K_LONG, CHK_NONNEG, threshold_seconds),
    [FLD_KIND] = {"kind", K_STRING, offsetof(pl_event_t, kind), 0, CHK_ENUM,
                  kinds},
    NUM(DUE_AT, K_TIMESTAMP, CHK_NONE, due_at),
};

#undef STR
#undef NUM

/* Intake limits (event.h): strings in bytes; lists in items, and each item
 * in bytes.  Every string and list field has one (pl_codec_new checks). */
typedef struct limit_s {
    size_t max;
    size_t item_max;
} limit_t;

static const limit_t limits[FLD__COUNT] = {
    [FLD_EVENT_ID] = {PL_EVENT_ID_MAX, 0},
    [FLD_LEAD_ID] = {PL_ID_MAX, 0},
    [FLD_DEAL_ID] = {PL_DEAL_ID_MAX, 0},
    [FLD_OWNER] = {PL_ID_MAX, 0},
    [FLD_NAME] = {PL_NAME_MAX, 0},
    [FLD_REQUESTED_BY] = {PL_ID_MAX, 0},
    [FLD_CAUSED_BY] = {PL_EVENT_ID_MAX, 0},
    [FLD_EMAIL] = {PL_NAME_MAX, 0},
    [FLD_COMPANY] = {PL_NAME_MAX, 0},
    [FLD_INDUSTRY] = {PL_ID_MAX, 0},
    [FLD_TECHNOLOGIES] = {PL_LIST_ITEMS_MAX, PL_NAME_MAX},
    [FLD_HIRING_FOR] = {PL_LIST_ITEMS_MAX, PL_NAME_MAX},
    [FLD_CONTACT_TITLE] = {PL_NAME_MAX, 0},
    [FLD_SOURCE] = {PL_ID_MAX, 0},
    [FLD_CURRENCY] = {PL_ID_MAX, 0},
    [FLD_STAGE] = {PL_ID_MAX, 0},
    [FLD_TO_STAGE] = {PL_ID_MAX, 0},
    [FLD_FROM_STAGE] = {PL_ID_MAX, 0},
    [FLD_REASON] = {PL_TEXT_MAX, 0},
    [FLD_ACTIVITY] = {PL_ID_MAX, 0},
    [FLD_FROM_STATUS] = {PL_ID_MAX, 0},
    [FLD_TO_STATUS] = {PL_ID_MAX, 0},
    [FLD_STATUS] = {PL_ID_MAX, 0},
    [FLD_REQUESTED] = {PL_ID_MAX, 0},
    [FLD_REASON_CODE] = {PL_ID_MAX, 0},
    [FLD_MESSAGE] = {PL_TEXT_MAX, 0},
    [FLD_REASONS] = {PL_REASONS_MAX, PL_TEXT_MAX},
    [FLD_KIND] = {PL_ID_MAX, 0},
};

static const limit_t *limit_of(const field_t *f)
{
    return &limits[f - fields];
}

/* How a type uses a field. */
enum {
    OPT = 0,   /* ["null", T], may be absent */
    REQ = 1,   /* T, must be present (strings: non-empty) */
    REQ_E = 2, /* string, always written, may be empty ("" when unset) */
};

#define MAX_TYPE_FIELDS 16

typedef struct type_field_s {
    uint8_t fld; /* FLD_* */
    uint8_t use; /* OPT, REQ, REQ_E */
} type_field_t;

typedef struct type_spec_s {
    const char *record; /* Avro record name in namespace sales.pipeline */
    size_t nfields;
    type_field_t f[MAX_TYPE_FIELDS];
} type_spec_t;

#define COMMON {FLD_EVENT_ID, REQ}, {FLD_OCCURRED_AT, REQ}
#define LEAD_PROFILE                                                           \
    {FLD_LEAD_ID, REQ}, {FLD_EMAIL, OPT}, {FLD_COMPANY, OPT},                  \
        {FLD_INDUSTRY, OPT}, {FLD_EMPLOYEES, OPT},                             \
        {FLD_MONTHLY_AD_SPEND, OPT}, {FLD_TECHNOLOGIES, OPT},                  \
        {FLD_HIRING_FOR, OPT}, {FLD_CONTACT_TITLE, OPT},                       \
        {FLD_MONTHS_IN_ROLE, OPT}, {FLD_SOURCE, OPT}, {FLD_OWNER, OPT}
#define TYPE(rec, ...)                                                         \
    {                                                                          \
        rec, sizeof((type_field_t[]){__VA_ARGS__}) / sizeof(type_field_t),     \
        {                                                                      \
            __VA_ARGS__                                                        \
        }                                                                      \
    }

static const type_spec_t types[PL_EV__COUNT] = {
    [PL_EV_LEAD_CREATED] = TYPE("LeadCreated", COMMON, LEAD_PROFILE),
    [PL_EV_LEAD_UPDATED] = TYPE("LeadUpdated", COMMON, LEAD_PROFILE),
    [PL_EV_LEAD_ACCEPTED] = TYPE("LeadAccepted", COMMON, {FLD_LEAD_ID, REQ},
                                 {FLD_OWNER, REQ}),
    [PL_EV_LEAD_REJECTED] = TYPE("LeadRejected", COMMON, {FLD_LEAD_ID, REQ},
                                 {FLD_REASON, REQ}),
    [PL_EV_LEAD_CONVERTED] =
        TYPE("LeadConverted", COMMON, {FLD_LEAD_ID, REQ}, {FLD_DEAL_ID, OPT},
             {FLD_NAME, OPT}, {FLD_AMOUNT, OPT}, {FLD_CURRENCY, OPT},
             {FLD_EXPECTED_CLOSE_DATE, OPT}),
    [PL_EV_DEAL_CREATED] =
        TYPE("DealCreated", COMMON, {FLD_DEAL_ID, REQ}, {FLD_LEAD_ID, OPT},
             {FLD_NAME, OPT}, {FLD_OWNER, OPT}, {FLD_AMOUNT, OPT},
             {FLD_CURRENCY, OPT}, {FLD_EXPECTED_CLOSE_DATE, OPT},
             {FLD_STAGE, OPT}),
    [PL_EV_DEAL_UPDATED] =
        TYPE("DealUpdated", COMMON, {FLD_DEAL_ID, REQ}, {FLD_NAME, OPT},
             {FLD_OWNER, OPT}, {FLD_AMOUNT, OPT}, {FLD_CURRENCY, OPT},
             {FLD_EXPECTED_CLOSE_DATE, OPT}),
    [PL_EV_DEAL_STAGE_REQUESTED] =
        TYPE("DealStageRequested", COMMON, {FLD_DEAL_ID, REQ},
             {FLD_TO_STAGE, REQ}, {FLD_REASON, OPT}, {FLD_REQUESTED_BY, OPT}),
    [PL_EV_DEAL_ACTIVITY] = TYPE("DealActivity", COMMON, {FLD_DEAL_ID, REQ},
                                 {FLD_ACTIVITY, REQ}),
    [PL_EV_LEAD_STATUS_CHANGED] =
        TYPE("LeadStatusChanged", COMMON, {FLD_LEAD_ID, REQ},
             {FLD_FROM_STATUS, REQ}, {FLD_TO_STATUS, REQ}, {FLD_SCORE, REQ},
             {FLD_REASONS, REQ}, {FLD_CAUSED_BY, REQ}),
    [PL_EV_LEAD_TRANSITION_REJECTED] =
        TYPE("LeadTransitionRejected", COMMON, {FLD_LEAD_ID, REQ},
             {FLD_STATUS, REQ_E}, {FLD_REQUESTED, REQ_E},
             {FLD_REASON_CODE, REQ}, {FLD_MESSAGE, REQ_E},
             {FLD_CAUSED_BY, REQ}),
    [PL_EV_DEAL_STAGE_CHANGED] =
        TYPE("DealStageChanged", COMMON, {FLD_DEAL_ID, REQ},
             {FLD_FROM_STAGE, REQ_E}, {FLD_TO_STAGE, REQ}, {FLD_AMOUNT, OPT},
             {FLD_CURRENCY, OPT}, {FLD_OWNER, OPT}, {FLD_PROBABILITY, REQ},
             {FLD_SECONDS_IN_PREVIOUS_STAGE, OPT}, {FLD_CAUSED_BY, REQ}),
    [PL_EV_DEAL_TRANSITION_REJECTED] =
        TYPE("DealTransitionRejected", COMMON, {FLD_DEAL_ID, REQ},
             {FLD_FROM_STAGE, REQ_E}, {FLD_TO_STAGE, REQ_E},
             {FLD_REASON_CODE, REQ}, {FLD_MESSAGE, REQ_E},
             {FLD_CAUSED_BY, REQ}),
    [PL_EV_DEAL_STALE] =
        TYPE("DealStale", COMMON, {FLD_DEAL_ID, REQ}, {FLD_STAGE, REQ},
             {FLD_OWNER, OPT}, {FLD_AMOUNT, OPT}, {FLD_CURRENCY, OPT},
             {FLD_IDLE_SINCE, REQ}, {FLD_IDLE_SECONDS, REQ},
             {FLD_THRESHOLD_SECONDS, REQ}),
    [PL_EV_DEAL_CLOSE_REMINDER] =
        TYPE("DealCloseReminder", COMMON, {FLD_DEAL_ID, REQ},
             {FLD_STAGE, REQ}, {FLD_OWNER, OPT}, {FLD_AMOUNT, OPT},
             {FLD_CURRENCY, OPT}, {FLD_KIND, REQ},
             {FLD_EXPECTED_CLOSE_DATE, OPT}, {FLD_DUE_AT, REQ}),
};

#undef TYPE
#undef LEAD_PROFILE
#undef COMMON

#define PL_NAMESPACE "sales.pipeline"

/* Ranges the formats can carry: years 0000-9999, Avro decimal(18,4). */
#define TS_MIN       INT64_C(-62167219200000)
#define TS_MAX       INT64_C(253402300799999)
#define DATE_MIN     (-719528)
#define DATE_MAX     2932896
#define DECIMAL_MAX  INT64_C(999999999999999999)
#define DEFAULT_CURRENCY "USD"

static bool type_known(pl_event_type_t t)
{
    return (int)t > PL_EV_UNKNOWN && t < PL_EV__COUNT;
}

/* ---------------------------------------------------------------------- */
/* Small helpers                                                          */
/* ---------------------------------------------------------------------- */

static int fail(char *errstr, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Write a message to errstr and return -1. */
static int fail(char *errstr, size_t n, const char *fmt, ...)
{
    va_list ap;
    if (errstr && n) {
        va_start(ap, fmt);
        vsnprintf(errstr, n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* Out of memory while decoding: not the message's fault, so not a poison
 * message (PL_CODEC_NOMEM). */
static const char codec_oom[] = "out of memory";

static int oom(char *errstr, size_t n)
{
    fail(errstr, n, "%s", codec_oom);
    return PL_CODEC_NOMEM;
}

/* A printable, bounded copy of an untrusted value for error messages. */
static const char *shown(const char *s, char *buf, size_t n)
{
    size_t i = 0;
    for (; s[i] && i + 4 < n; i++)
        buf[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    if (s[i]) {
        memcpy(buf + (i < 3 ? 0 : i - 3), "...", 3);
        i = i < 3 ? 3 : i;
    }
    buf[i] = '\0';
    return buf;
}

static char **str_at(pl_event_t *ev, const field_t *f)
{
    return (char **)((char *)ev + f->off);
}

static const char *cstr_at(const pl_event_t *ev, const field_t *f)
{
    return *(char *const *)((const char *)ev + f->off);
}

static int64_t *i64_at(pl_event_t *ev, const field_t *f)
{
    return (int64_t *)((char *)ev + f->off);
}

static int64_t ci64_at(const pl_event_t *ev, const field_t *f)
{
    return *(const int64_t *)((const char *)ev + f->off);
}

static int32_t *i32_at(pl_event_t *ev, const field_t *f)
{
    return (int32_t *)((char *)ev + f->off);
}

static int32_t ci32_at(const pl_event_t *ev, const field_t *f)
{
    return *(const int32_t *)((const char *)ev + f->off);
}

static double *dbl_at(pl_event_t *ev, const field_t *f)
{
    return (double *)((char *)ev + f->off);
}

static double cdbl_at(const pl_event_t *ev, const field_t *f)
{
    return *(const double *)((const char *)ev + f->off);
}

static pl_strlist_t *list_at(pl_event_t *ev, const field_t *f)
{
    return (pl_strlist_t *)((char *)ev + f->off);
}

static const pl_strlist_t *clist_at(const pl_event_t *ev, const field_t *f)
{
    return (const pl_strlist_t *)((const char *)ev + f->off);
}

static bool present(const pl_event_t *ev, const field_t *f)
{
    if (f->kind == K_STRING)
        return cstr_at(ev, f) != NULL;
    return (ev->present & f->bit) != 0;
}

/* The string to write for field tf of ev, or NULL when it is absent:
 * applies the "" of REQ_E fields and the default currency. */
static const char *string_out(const pl_event_t *ev, const type_field_t *tf)
{
    const field_t *f = &fields[tf->fld];
    const char *s = cstr_at(ev, f);
    if (s)
        return s;
    if (tf->use == REQ_E)
        return "";
    if (tf->fld == FLD_CURRENCY && (ev->present & PL_F_AMOUNT))
        return DEFAULT_CURRENCY;
    return NULL;
}

/* Is it well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF)? */
static bool utf8_valid(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        size_t n;
        unsigned min, cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            n = 1, min = 0x80, cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2, min = 0x800, cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3, min = 0x10000, cp = c & 0x07;
        } else {
            return false;
        }
        if (len - i <= n)
            return false;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += n + 1;
    }
    return true;
}

/* ---------------------------------------------------------------------- */
/* Time, date and amount helpers                                          */
/* ---------------------------------------------------------------------- */

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t yy = (int64_t)yoe + era * 400;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int)(yy + (*m <= 2));
}

static unsigned days_in_month(int y, unsigned m)
{
    static const unsigned dim[12] = {31, 28, 31, 30, 31, 30,
                                     31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : dim[m - 1];
}

/* Read exactly n decimal digits. */
static bool digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return false;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *out = v;
    return true;
}

/* "YYYY-MM-DD" at *p; advances *p. */
static bool parse_ymd(const char **p, int *y, unsigned *m, unsigned *d)
{
    int yy, mm, dd;
    if (!digits(p, 4, &yy) || *(*p)++ != '-' || !digits(p, 2, &mm) ||
        *(*p)++ != '-' || !digits(p, 2, &dd))
        return false;
    if (mm < 1 || mm > 12 || dd < 1 || (unsigned)dd > days_in_month(yy, mm))
        return false;
    *y = yy, *m = (unsigned)mm, *d = (unsigned)dd;
    return true;
}

int pl_time_parse_rfc3339(const char *s, int64_t *ms)
{
    const char *p = s;
    int y, hh, mi, ss, frac = 0, oh = 0, om = 0, sign = 0;
    unsigned m, d;
    if (!s || !parse_ymd(&p, &y, &m, &d))
        return -1;
    if (*p != 'T' && *p != 't' && *p != ' ')
        return -1;
    p++;
    if (!digits(&p, 2, &hh) || *p++ != ':' || !digits(&p, 2, &mi) ||
        *p++ != ':' || !digits(&p, 2, &ss))
        return -1;
    if (hh > 23 || mi > 59 || ss > 59)
        return -1;
    if (*p == '.') {
        int n = 0;
        p++;
        for (; *p >= '0' && *p <= '9'; p++, n++)
            if (n < 3)
                frac = frac * 10 + (*p - '0');
        if (n == 0)
            return -1;
        for (; n < 3; n++)
            frac *= 10;
    }
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        sign = *p++ == '-' ? -1 : 1;
        if (!digits(&p, 2, &oh) || *p++ != ':' || !digits(&p, 2, &om) ||
            oh > 23 || om > 59)
            return -1;
    } else {
        return -1;
    }
    if (*p != '\0')
        return -1;
    int64_t secs = days_from_civil(y, m, d) * 86400 + hh * 3600 + mi * 60 +
                   ss - sign * (oh * 3600 + om * 60);
    int64_t v = secs * 1000 + frac;
    if (v < TS_MIN || v > TS_MAX)
        return -1;
    *ms = v;
    return 0;
}

/* Formatted by hand, not with snprintf (a few thousand instructions a
 * call, several calls an event): w digits of v (0 <= v < 10^w). */
static void put_digits(char *p, int64_t v, int w)
{
    while (w-- > 0) {
        p[w] = (char)('0' + v % 10);
        v /= 10;
    }
}

/* YYYY-MM-DD: the years TS_MIN..TS_MAX and DATE_MIN..DATE_MAX allow are
 * 0000-9999 (four digits, as %04d wrote them). */
static void put_ymd(char *p, int y, unsigned m, unsigned d)
{
    put_digits(p, y, 4);
    p[4] = '-';
    put_digits(p + 5, m, 2);
    p[7] = '-';
    put_digits(p + 8, d, 2);
}

int pl_time_format_rfc3339(int64_t ms, char *buf, size_t n)
{
    int y;
    unsigned m, d;
    if (ms < TS_MIN || ms > TS_MAX)
        return -1;
    int64_t days = ms >= 0 ? ms / 86400000 : -((-ms + 86399999) / 86400000);
    int64_t rem = ms - days * 86400000; /* 0 .. 86399999 */
    civil_from_days(days, &y, &m, &d);
    if (n < 25)
        return -1;
    put_ymd(buf, y, m, d);
    buf[10] = 'T';
    put_digits(buf + 11, rem / 3600000, 2);
    buf[13] = ':';
    put_digits(buf + 14, rem / 60000 % 60, 2);
    buf[16] = ':';
    put_digits(buf + 17, rem / 1000 % 60, 2);
    buf[19] = '.';
    put_digits(buf + 20, rem % 1000, 3);
    buf[23] = 'Z';
    buf[24] = '\0';
    return 0;
}

int pl_date_parse(const char *s, int32_t *days)
{
    const char *p = s;
    int y;
    unsigned m, d;
    if (!s || !parse_ymd(&p, &y, &m, &d) || *p != '\0')
        return -1;
    *days = (int32_t)days_from_civil(y, m, d);
    return 0;
}

int pl_date_format(int32_t days, char *buf, size_t n)
{
    int y;
    unsigned m, d;
    if (days < DATE_MIN || days > DATE_MAX)
        return -1;
    civil_from_days(days, &y, &m, &d);
    if (n < 11)
        return -1;
    put_ymd(buf, y, m, d);
    buf[10] = '\0';
    return 0;
}

int pl_amount_parse(const char *s, int64_t *scaled)
{
    const char *p = s;
    bool neg = false;
    int64_t ip = 0, fp = 0;
    int nint = 0, nfrac = 0;
    if (!s)
        return -1;
    if (*p == '-' || *p == '+')
        neg = *p++ == '-';
    while (*p == '0' && p[1] >= '0' && p[1] <= '9')
        p++; /* leading zeros do not count against the 14 digits */
    for (; *p >= '0' && *p <= '9'; p++) {
        if (++nint > 14)
            return -1;
        ip = ip * 10 + (*p - '0');
    }
    if (nint == 0)
        return -1;
    if (*p == '.') {
        p++;
        for (; *p >= '0' && *p <= '9'; p++, nfrac++) {
            if (nfrac < 4)
                fp = fp * 10 + (*p - '0');
            else if (*p != '0')
                return -1; /* more than 4 significant decimals */
        }
        if (nfrac == 0)
            return -1;
    }
    if (*p != '\0')
        return -1;
    for (; nfrac < 4; nfrac++)
        fp *= 10;
    int64_t v = ip * PL_AMOUNT_SCALE + fp;
    *scaled = neg ? -v : v;
    return 0;
}

int pl_amount_format(int64_t scaled, char *buf, size_t n)
{
    uint64_t mag = scaled < 0 ? (uint64_t)0 - (uint64_t)scaled
                              : (uint64_t)scaled;
    unsigned frac = (unsigned)(mag % PL_AMOUNT_SCALE);
    char tmp[32], *e = tmp + sizeof(tmp), *p = e;
    size_t len;
    /* by hand, from the end: the decimals without trailing zeros, the
     * integer part, the sign */
    if (frac) {
        int digs = 4;
        while (frac % 10 == 0)
            frac /= 10, digs--;
        while (digs-- > 0) {
            *--p = (char)('0' + frac % 10);
            frac /= 10;
        }
        *--p = '.';
    }
    p = pl_fmt_int(p, (int64_t)(mag / PL_AMOUNT_SCALE));
    if (scaled < 0)
        *--p = '-';
    len = (size_t)(e - p);
    if (len >= n)
        return -1;
    memcpy(buf, p, len);
    buf[len] = '\0';
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Validation                                                             */
/* ---------------------------------------------------------------------- */

static int check_enum(const field_t *f, const char *v, char *errstr,
                      size_t n)
{
    char list[256] = "", vb[72];
    size_t used = 0;
    if (f->check == CHK_ACTIVITY) {
        if (pl_activity_from_name(v) >= 0)
            return 0;
        for (int i = 0; i < PL_ACT__COUNT; i++) {
            int r = snprintf(list + used, sizeof(list) - used, "%s%s",
                             i ? ", " : "", pl_activity_name(i));
            if (r > 0 && (size_t)r < sizeof(list) - used)
                used += (size_t)r;
        }
    } else {
        for (size_t i = 0; f->enumv[i]; i++)
            if (!strcmp(f->enumv[i], v))
                return 0;
        for (size_t i = 0; f->enumv[i]; i++) {
            int r = snprintf(list + used, sizeof(list) - used, "%s%s",
                             i ? ", " : "", f->enumv[i]);
            if (r > 0 && (size_t)r < sizeof(list) - used)
                used += (size_t)r;
        }
    }
    return fail(errstr, n, "field '%s': unknown value '%s' (one of: %s)",
                f->name, shown(v, vb, sizeof(vb)), list);
}

/* The intake limits of one present field (event.h), beyond the formats'
 * own checks: lengths, list sizes, the 1970-9999 range of occurred_at and
 * expected_close_date, amounts not negative. */
static int check_intake(const pl_event_t *ev, const field_t *f, char *errstr,
                        size_t n)
{
    const limit_t *lim = limit_of(f);
    char b1[PL_RFC3339_BUFSZ];
    switch (f->kind) {
    case K_STRING: {
        size_t len = strlen(cstr_at(ev, f));
        if (len > lim->max)
            return fail(errstr, n, "field '%s': %zu bytes, at most %zu allowed",
                        f->name, len, lim->max);
        return 0;
    }
    case K_STRLIST: {
        const pl_strlist_t *l = clist_at(ev, f);
        if (l->count > lim->max)
            return fail(errstr, n, "field '%s': %zu items, at most %zu allowed",
                        f->name, l->count, lim->max);
        for (size_t i = 0; i < l->count; i++) {
            size_t len = l->items[i] ? strlen(l->items[i]) : 0;
            if (len > lim->item_max)
                return fail(errstr, n,
                            "field '%s[%zu]': %zu bytes, at most %zu allowed",
                            f->name, i, len, lim->item_max);
        }
        return 0;
    }
    case K_TIMESTAMP: {
        int64_t v = ci64_at(ev, f);
        if (f != &fields[FLD_OCCURRED_AT] ||
            (v >= PL_INTAKE_TS_MIN && v <= PL_INTAKE_TS_MAX))
            return 0;
        if (pl_time_format_rfc3339(v, b1, sizeof(b1)) < 0)
            snprintf(b1, sizeof(b1), "%lld ms", (long long)v);
        return fail(errstr, n,
                    "field '%s': %s is outside 1970-01-01T00:00:00.000Z to "
                    "9999-12-31T23:59:59.999Z",
                    f->name, b1);
    }
    case K_DATE: {
        int32_t v = ci32_at(ev, f);
        if (v >= PL_INTAKE_DATE_MIN && v <= PL_INTAKE_DATE_MAX)
            return 0;
        if (pl_date_format(v, b1, sizeof(b1)) < 0)
            snprintf(b1, sizeof(b1), "day %ld", (long)v);
        return fail(errstr, n,
                    "field '%s': %s is outside 1970-01-01 to 9999-12-31",
                    f->name, b1);
    }
    case K_DECIMAL:
        if (ci64_at(ev, f) < 0)
            return fail(errstr, n, "field '%s': must not be negative",
                        f->name);
        return 0;
    case K_LONG:
    case K_DOUBLE:
        return 0; /* the format checks cover them */
    }
    return 0;
}

/* Checks of one present field's value; at intake also its limits. */
static int check_field(const pl_event_t *ev, const field_t *f, bool intake,
                       char *errstr, size_t n)
{
    char vb[72];
    if (intake && check_intake(ev, f, errstr, n) < 0)
        return -1;
    switch (f->kind) {
    case K_STRING: {
        const char *s = cstr_at(ev, f);
        size_t len = strlen(s);
        if (!utf8_valid((const unsigned char *)s, len))
            return fail(errstr, n, "field '%s': not valid UTF-8", f->name);
        switch (f->check) {
        case CHK_EVENT_ID:
            if (len > PL_EVENT_ID_MAX)
                return fail(errstr, n,
                            "field '%s': %zu bytes, at most %d allowed",
                            f->name, len, PL_EVENT_ID_MAX);
            break;
        case CHK_ENUM:
        case CHK_ACTIVITY:
            return check_enum(f, s, errstr, n);
        case CHK_CURRENCY:
            if (len != 3 || s[0] < 'A' || s[0] > 'Z' || s[1] < 'A' ||
                s[1] > 'Z' || s[2] < 'A' || s[2] > 'Z')
                return fail(errstr, n,
                            "field '%s': '%s' is not an ISO 4217 code "
                            "(3 uppercase letters)",
                            f->name, shown(s, vb, sizeof(vb)));
            break;
        case CHK_SLUG:
            for (size_t i = 0; i < len; i++)
                if (!((s[i] >= 'a' && s[i] <= 'z') ||
                      (s[i] >= '0' && s[i] <= '9') || s[i] == '_' ||
                      s[i] == '-'))
                    return fail(errstr, n,
                                "field '%s': '%s' is not a lowercase slug "
                                "(a-z, 0-9, '_', '-')",
                                f->name, shown(s, vb, sizeof(vb)));
            if (len == 0)
                return fail(errstr, n, "field '%s': empty", f->name);
            break;
        default:
            break;
        }
        return 0;
    }
    case K_TIMESTAMP: {
        int64_t v = ci64_at(ev, f);
        if (v < TS_MIN || v > TS_MAX)
            return fail(errstr, n,
                        "field '%s': %lld ms is outside years 0000-9999",
                        f->name, (long long)v);
        return 0;
    }
    case K_DATE: {
        int32_t v = ci32_at(ev, f);
        if (v < DATE_MIN || v > DATE_MAX)
            return fail(errstr, n,
                        "field '%s': day %d is outside years 0000-9999",
                        f->name, (int)v);
        return 0;
    }
    case K_DECIMAL:
    case K_LONG: {
        int64_t v = ci64_at(ev, f);
        if (f->kind == K_DECIMAL && (v > DECIMAL_MAX || v < -DECIMAL_MAX))
            return fail(errstr, n,
                        "field '%s': out of range for decimal(18,4)",
                        f->name);
        if (f->check == CHK_NONNEG && v < 0)
            return fail(errstr, n, "field '%s': must not be negative",
                        f->name);
        return 0;
    }
    case K_DOUBLE: {
        double v = cdbl_at(ev, f);
        if (!isfinite(v))
            return fail(errstr, n, "field '%s': not a finite number",
                        f->name);
        if (f->check == CHK_UNIT && (v < 0.0 || v > 1.0))
            return fail(errstr, n, "field '%s': %g is outside [0, 1]",
                        f->name, v);
        return 0;
    }
    case K_STRLIST: {
        const pl_strlist_t *l = clist_at(ev, f);
        for (size_t i = 0; i < l->count; i++) {
            if (!l->items[i])
                return fail(errstr, n, "field '%s[%zu]': NULL string",
                            f->name, i);
            if (!utf8_valid((const unsigned char *)l->items[i],
                            strlen(l->items[i])))
                return fail(errstr, n, "field '%s[%zu]': not valid UTF-8",
                            f->name, i);
        }
        return 0;
    }
    }
    return 0;
}

static int validate(const pl_event_t *ev, bool intake, char *errstr,
                    size_t errstr_size)
{
    if (!ev || !type_known(ev->type))
        return fail(errstr, errstr_size, "unknown event type %d",
                    ev ? (int)ev->type : -1);
    const type_spec_t *ts = &types[ev->type];
    const char *tname = pl_event_type_name(ev->type);
    for (size_t i = 0; i < ts->nfields; i++) {
        const type_field_t *tf = &ts->f[i];
        const field_t *f = &fields[tf->fld];
        if (!present(ev, f)) {
            if (tf->use == REQ && f->kind != K_STRLIST)
                return fail(errstr, errstr_size,
                            "field '%s' is required for %s", f->name, tname);
            continue; /* REQ_E and required arrays default to empty */
        }
        if (tf->use == REQ && f->kind == K_STRING && !*cstr_at(ev, f))
            return fail(errstr, errstr_size,
                        "field '%s' is required for %s and must not be "
                        "empty",
                        f->name, tname);
        if (check_field(ev, f, intake, errstr, errstr_size) < 0)
            return -1;
    }
    return 0;
}

int pl_codec_validate(const pl_event_t *ev, char *errstr, size_t errstr_size)
{
    return validate(ev, false, errstr, errstr_size);
}

int pl_codec_check_intake(const pl_event_t *ev, char *errstr,
                          size_t errstr_size)
{
    return validate(ev, true, errstr, errstr_size);
}

/* After decoding: defaults, then the contract's checks. */
static int finish_decoded(pl_event_t *ev, char *errstr, size_t n)
{
    const type_spec_t *ts = &types[ev->type];
    for (size_t i = 0; i < ts->nfields; i++) {
        const type_field_t *tf = &ts->f[i];
        const field_t *f = &fields[tf->fld];
        if (tf->fld == FLD_CURRENCY && !ev->currency &&
            (ev->present & PL_F_AMOUNT) &&
            pl_str_set(&ev->currency, DEFAULT_CURRENCY) < 0)
            return oom(errstr, n);
        if (f->kind == K_STRLIST && tf->use == REQ)
            ev->present |= f->bit; /* a required array is always there */
    }
    return validate(ev, true, errstr, n);
}

/* ---------------------------------------------------------------------- */
/* The codec object                                                       */
/* ---------------------------------------------------------------------- */

typedef struct slot_s {
    char *text; /* .avsc as read */
    size_t text_len;
    avro_schema_t schema;
    avro_value_iface_t *iface;
    avro_value_t value; /* reused for every message of this type */
    bool has_value;
    avro_reader_t reader;
    avro_writer_t writer;
    int32_t id; /* id written on encode */
} slot_t;

typedef struct id_entry_s {
    int32_t id;
    pl_event_type_t type;
} id_entry_t;

/* An id the registry refused (unknown, or a schema that is not ours), with
 * the reason its messages are dead-lettered with. */
#define BAD_IDS_MAX 64
typedef struct bad_id_s {
    int32_t id;
    char why[200];
} bad_id_t;

struct pl_codec_s {
    slot_t slots[PL_EV__COUNT];
    id_entry_t *ids; /* every id accepted on decode */
    size_t nids;
    size_t ids_cap;
    pl_codec_lookup_fn lookup; /* NULL: ids.tsv only */
    void *lookup_opaque;
    bad_id_t bad[BAD_IDS_MAX]; /* ring of refused ids */
    size_t nbad, bad_next;
    bool generic; /* Avro through avro-c's generic values */
};

static int add_id(pl_codec_t *c, int32_t id, pl_event_type_t type)
{
    for (size_t i = 0; i < c->nids; i++)
        if (c->ids[i].id == id)
            return c->ids[i].type == type ? 0 : -1;
    if (c->nids == c->ids_cap) {
        size_t cap = c->ids_cap ? c->ids_cap * 2 : 32;
        id_entry_t *ids = realloc(c->ids, cap * sizeof(*ids));
        if (!ids)
            return -1;
        c->ids = ids;
        c->ids_cap = cap;
    }
    c->ids[c->nids].id = id;
    c->ids[c->nids].type = type;
    c->nids++;
    return 0;
}

static pl_event_type_t type_of_id(const pl_codec_t *c, int32_t id)
{
    for (size_t i = 0; i < c->nids; i++)
        if (c->ids[i].id == id)
            return c->ids[i].type;
    return PL_EV_UNKNOWN;
}

/* Read a whole (small) file into a NUL-terminated buffer. */
static char *slurp(const char *path, size_t *len, char *errstr, size_t n)
{
    FILE *fp = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0, used = 0;
    if (!fp) {
        fail(errstr, n, "%s: %s", path, strerror(errno));
        return NULL;
    }
    for (;;) {
        if (cap - used < 4096) {
            if (cap >= (1u << 20)) {
                fail(errstr, n, "%s: larger than 1 MiB", path);
                goto out_free;
            }
            char *nb = realloc(buf, cap + 8192);
            if (!nb) {
                fail(errstr, n, "%s: out of memory", path);
                goto out_free;
            }
            buf = nb;
            cap += 8192;
        }
        size_t r = fread(buf + used, 1, cap - used - 1, fp);
        used += r;
        if (r == 0)
            break;
    }
    if (ferror(fp)) {
        fail(errstr, n, "%s: read error", path);
        goto out_free;
    }
    fclose(fp);
    buf[used] = '\0';
    *len = used;
    return buf;

out_free:
    free(buf);
    fclose(fp);
    return NULL;
}

static const char *kind_desc(kind_t k)
{
    switch (k) {
    case K_STRING:
        return "\"string\"";
    case K_TIMESTAMP:
        return "{\"type\": \"long\", \"logicalType\": \"timestamp-millis\"}";
    case K_DATE:
        return "{\"type\": \"int\", \"logicalType\": \"date\"}";
    case K_DECIMAL:
        return "{\"type\": \"bytes\", \"logicalType\": \"decimal\", "
               "\"precision\": 18, \"scale\": 4}";
    case K_LONG:
        return "\"long\"";
    case K_DOUBLE:
        return "\"double\"";
    case K_STRLIST:
        return "{\"type\": \"array\", \"items\": \"string\"}";
    }
    return "?";
}

/* Does the Avro type t (JSON) match kind k? */
static bool avro_type_matches(const json_t *t, kind_t k)
{
    const char *base = NULL, *logical = NULL;
    if (json_is_string(t)) {
        base = json_string_value(t);
    } else if (json_is_object(t)) {
        base = json_string_value(json_object_get(t, "type"));
        logical = json_string_value(json_object_get(t, "logicalType"));
    }
    if (!base)
        return false;
    switch (k) {
    case K_STRING:
        return !strcmp(base, "string") && !logical;
    case K_LONG:
        return !strcmp(base, "long") && !logical;
    case K_DOUBLE:
        return !strcmp(base, "double") && !logical;
    case K_TIMESTAMP:
        return !strcmp(base, "long") && logical &&
               !strcmp(logical, "timestamp-millis");
    case K_DATE:
        return !strcmp(base, "int") && logical && !strcmp(logical, "date");
    case K_DECIMAL:
        return !strcmp(base, "bytes") && logical &&
               !strcmp(logical, "decimal") &&
               json_integer_value(json_object_get(t, "precision")) == 18 &&
               json_integer_value(json_object_get(t, "scale")) == 4;
    case K_STRLIST: {
        const json_t *items = json_object_get(t, "items");
        return !strcmp(base, "array") && json_is_string(items) &&
               !strcmp(json_string_value(items), "string");
    }
    }
    return false;
}

/* Check that the .avsc of type is the record the field table describes. */
static int check_schema_json(const char *path, const char *text, size_t len,
                             pl_event_type_t type, char *errstr, size_t n)
{
    const type_spec_t *ts = &types[type];
    json_error_t jerr;
    json_t *root = json_loadb(text, len, 0, &jerr);
    char full[128];
    int rc = -1;
    if (!root)
        return fail(errstr, n, "%s:%d:%d: invalid JSON: %s", path, jerr.line,
                    jerr.column, jerr.text);
    const char *rtype = json_string_value(json_object_get(root, "type"));
    const char *name = json_string_value(json_object_get(root, "name"));
    const char *ns = json_string_value(json_object_get(root, "namespace"));
    const json_t *flds = json_object_get(root, "fields");
    if (!rtype || strcmp(rtype, "record") || !name || !json_is_array(flds)) {
        fail(errstr, n, "%s: not an Avro record schema", path);
        goto out_decref;
    }
    if (strchr(name, '.'))
        snprintf(full, sizeof(full), "%s", name);
    else
        snprintf(full, sizeof(full), "%s.%s", ns ? ns : "", name);
    if (strncmp(full, PL_NAMESPACE ".", sizeof(PL_NAMESPACE)) ||
        strcmp(full + sizeof(PL_NAMESPACE), ts->record)) {
        fail(errstr, n, "%s: record is '%s', expected '%s.%s' for %s", path,
             full, PL_NAMESPACE, ts->record, pl_event_type_name(type));
        goto out_decref;
    }
    if (json_array_size(flds) != ts->nfields) {
        fail(errstr, n, "%s: %zu fields, the codec knows %zu for %s", path,
             json_array_size(flds), ts->nfields, pl_event_type_name(type));
        goto out_decref;
    }
    for (size_t i = 0; i < ts->nfields; i++) {
        const field_t *f = &fields[ts->f[i].fld];
        const json_t *jf = json_array_get(flds, i);
        const char *fname = json_string_value(json_object_get(jf, "name"));
        const json_t *t = json_object_get(jf, "type");
        bool ok;
        if (!fname || strcmp(fname, f->name)) {
            fail(errstr, n, "%s: field %zu is '%s', expected '%s'", path, i,
                 fname ? fname : "(no name)", f->name);
            goto out_decref;
        }
        if (ts->f[i].use == OPT) {
            const json_t *def = json_object_get(jf, "default");
            ok = json_is_array(t) && json_array_size(t) == 2 &&
                 json_is_string(json_array_get(t, 0)) &&
                 !strcmp(json_string_value(json_array_get(t, 0)), "null") &&
                 avro_type_matches(json_array_get(t, 1), f->kind) &&
                 json_is_null(def);
        } else {
            ok = avro_type_matches(t, f->kind);
        }
        if (!ok) {
            fail(errstr, n,
                 "%s: field '%s' must have type %s%s%s%s", path, f->name,
                 ts->f[i].use == OPT ? "[\"null\", " : "", kind_desc(f->kind),
                 ts->f[i].use == OPT ? "]" : "",
                 ts->f[i].use == OPT ? " and default null" : "");
            goto out_decref;
        }
    }
    rc = 0;

out_decref:
    json_decref(root);
    return rc;
}

static int load_schema(pl_codec_t *c, const char *dir, const char *file,
                       pl_event_type_t type, char *errstr, size_t n)
{
    slot_t *s = &c->slots[type];
    char path[4096];
    int r;
    if (file[0] == '/')
        r = snprintf(path, sizeof(path), "%s", file);
    else
        r = snprintf(path, sizeof(path), "%s/%s", dir, file);
    if (r < 0 || (size_t)r >= sizeof(path))
        return fail(errstr, n, "%s/%s: path too long", dir, file);
    if (!(s->text = slurp(path, &s->text_len, errstr, n)))
        return -1;
    if (check_schema_json(path, s->text, s->text_len, type, errstr, n) < 0)
        return -1;
    if (avro_schema_from_json_length(s->text, s->text_len, &s->schema))
        return fail(errstr, n, "%s: invalid Avro schema: %s", path,
                    avro_strerror());
    if (!(s->iface = avro_generic_class_from_schema(s->schema)))
        return fail(errstr, n, "%s: %s", path, avro_strerror());
    if (avro_generic_value_new(s->iface, &s->value))
        return fail(errstr, n, "%s: %s", path, avro_strerror());
    s->has_value = true;
    return 0;
}

/* Parse ids.tsv ("id<TAB>type<TAB>file") and load each schema. */
static int load_ids(pl_codec_t *c, const char *dir, char *errstr, size_t n)
{
    char path[4096];
    size_t len;
    char *text;
    int r = snprintf(path, sizeof(path), "%s/ids.tsv", dir);
    int rc = -1, lineno = 0;
    if (r < 0 || (size_t)r >= sizeof(path))
        return fail(errstr, n, "%s: path too long", dir);
    if (!(text = slurp(path, &len, errstr, n)))
        return -1;
    for (char *line = text; line < text + len;) {
        char *end = memchr(line, '\n', (size_t)(text + len - line));
        char *next = end ? end + 1 : text + len;
        char *col[3];
        int ncol = 0;
        lineno++;
        if (!end)
            end = text + len;
        *end = '\0';
        while (end > line && (end[-1] == '\r' || end[-1] == ' ' ||
                              end[-1] == '\t'))
            *--end = '\0';
        if (line[0] == '\0' || line[0] == '#') {
            line = next;
            continue;
        }
        for (char *p = line; ncol < 3;) {
            col[ncol++] = p;
            char *tab = strchr(p, '\t');
            if (!tab)
                break;
            *tab = '\0';
            p = tab + 1;
            if (ncol == 3 && *p) {
                fail(errstr, n, "%s:%d: more than 3 columns", path, lineno);
                goto out_free;
            }
        }
        if (ncol != 3) {
            fail(errstr, n, "%s:%d: expected id<TAB>type<TAB>file", path,
                 lineno);
            goto out_free;
        }
        char *ep;
        errno = 0;
        long id = strtol(col[0], &ep, 10);
        if (errno || ep == col[0] || *ep || id < 0 || id > INT32_MAX) {
            fail(errstr, n, "%s:%d: bad schema id '%s'", path, lineno,
                 col[0]);
            goto out_free;
        }
        pl_event_type_t type = pl_event_type_from_name(col[1]);
        if (type == PL_EV_UNKNOWN) {
            fail(errstr, n, "%s:%d: unknown event type '%s'", path, lineno,
                 col[1]);
            goto out_free;
        }
        if (c->slots[type].text) {
            fail(errstr, n, "%s:%d: second schema for %s", path, lineno,
                 col[1]);
            goto out_free;
        }
        if (type_of_id(c, (int32_t)id) != PL_EV_UNKNOWN) {
            fail(errstr, n, "%s:%d: schema id %ld used twice", path, lineno,
                 id);
            goto out_free;
        }
        if (add_id(c, (int32_t)id, type) < 0) {
            fail(errstr, n, "%s:%d: out of memory", path, lineno);
            goto out_free;
        }
        c->slots[type].id = (int32_t)id;
        if (load_schema(c, dir, col[2], type, errstr, n) < 0)
            goto out_free;
        line = next;
    }
    for (int t = PL_EV_UNKNOWN + 1; t < PL_EV__COUNT; t++) {
        if (!c->slots[t].text) {
            fail(errstr, n, "%s: no schema for %s", path,
                 pl_event_type_name(t));
            goto out_free;
        }
    }
    rc = 0;

out_free:
    free(text);
    return rc;
}

pl_codec_t *pl_codec_new(const char *schema_dir, char *errstr,
                         size_t errstr_size)
{
    pl_codec_t *c = calloc(1, sizeof(*c));
    if (!c) {
        fail(errstr, errstr_size, "out of memory");
        return NULL;
    }
    if (!schema_dir || !*schema_dir) {
        fail(errstr, errstr_size, "no schema directory given");
        goto out_destroy;
    }
    for (int i = 0; i < FLD__COUNT; i++) {
        if ((fields[i].kind == K_STRING && !limits[i].max) ||
            (fields[i].kind == K_STRLIST &&
             (!limits[i].max || !limits[i].item_max))) {
            fail(errstr, errstr_size, "field '%s' has no intake limit",
                 fields[i].name);
            goto out_destroy;
        }
    }
    if (load_ids(c, schema_dir, errstr, errstr_size) < 0)
        goto out_destroy;
    return c;

out_destroy:
    pl_codec_destroy(c);
    return NULL;
}

void pl_codec_destroy(pl_codec_t *c)
{
    if (!c)
        return;
    for (int t = 0; t < PL_EV__COUNT; t++) {
        slot_t *s = &c->slots[t];
        if (s->reader)
            avro_reader_free(s->reader);
        if (s->writer)
            avro_writer_free(s->writer);
        if (s->has_value)
            avro_value_decref(&s->value);
        if (s->iface)
            avro_value_iface_decref(s->iface);
        if (s->schema)
            avro_schema_decref(s->schema);
        free(s->text);
    }
    free(c->ids);
    free(c);
}

int32_t pl_codec_schema_id(const pl_codec_t *c, pl_event_type_t type)
{
    if (!c || !type_known(type))
        return -1;
    return c->slots[type].id;
}

void pl_codec_use_lookup(pl_codec_t *c, pl_codec_lookup_fn fn, void *opaque)
{
    c->nids = 0; /* forget ids.tsv: its numbers mean nothing to a registry */
    for (int t = 0; t < PL_EV__COUNT; t++)
        c->slots[t].id = -1;
    c->nbad = c->bad_next = 0;
    c->lookup = fn;
    c->lookup_opaque = opaque;
}

void pl_codec_use_generic(pl_codec_t *c, bool on)
{
    c->generic = on;
}

int pl_codec_set_schema_id(pl_codec_t *c, pl_event_type_t type, int32_t id)
{
    if (!c || !type_known(type) || id < 0)
        return -1;
    if (add_id(c, id, type) < 0)
        return -1;
    c->slots[type].id = id;
    return 0;
}

const char *pl_codec_schema_text(const pl_codec_t *c, pl_event_type_t type)
{
    if (!c || !type_known(type))
        return NULL;
    return c->slots[type].text;
}

const char *pl_codec_record_name(pl_event_type_t type)
{
    static const char *const full[PL_EV__COUNT] = {
        [PL_EV_LEAD_CREATED] = PL_NAMESPACE ".LeadCreated",
        [PL_EV_LEAD_UPDATED] = PL_NAMESPACE ".LeadUpdated",
        [PL_EV_LEAD_ACCEPTED] = PL_NAMESPACE ".LeadAccepted",
        [PL_EV_LEAD_REJECTED] = PL_NAMESPACE ".LeadRejected",
        [PL_EV_LEAD_CONVERTED] = PL_NAMESPACE ".LeadConverted",
        [PL_EV_DEAL_CREATED] = PL_NAMESPACE ".DealCreated",
        [PL_EV_DEAL_UPDATED] = PL_NAMESPACE ".DealUpdated",
        [PL_EV_DEAL_STAGE_REQUESTED] = PL_NAMESPACE ".DealStageRequested",
        [PL_EV_DEAL_ACTIVITY] = PL_NAMESPACE ".DealActivity",
        [PL_EV_LEAD_STATUS_CHANGED] = PL_NAMESPACE ".LeadStatusChanged",
        [PL_EV_LEAD_TRANSITION_REJECTED] =
            PL_NAMESPACE ".LeadTransitionRejected",
        [PL_EV_DEAL_STAGE_CHANGED] = PL_NAMESPACE ".DealStageChanged",
        [PL_EV_DEAL_TRANSITION_REJECTED] =
            PL_NAMESPACE ".DealTransitionRejected",
        [PL_EV_DEAL_STALE] = PL_NAMESPACE ".DealStale",
        [PL_EV_DEAL_CLOSE_REMINDER] = PL_NAMESPACE ".DealCloseReminder",
    };
    return type_known(type) ? full[type] : NULL;
}

/* ---------------------------------------------------------------------- */
/* Ids from a schema registry                                             */
/* ---------------------------------------------------------------------- */

static const char *bad_reason(const pl_codec_t *c, int32_t id)
{
    for (size_t i = 0; i < c->nbad; i++)
        if (c->bad[i].id == id)
            return c->bad[i].why;
    return NULL;
}

static void remember_bad(pl_codec_t *c, int32_t id, const char *why)
{
    bad_id_t *b = &c->bad[c->bad_next];
    b->id = id;
    snprintf(b->why, sizeof(b->why), "%s", why);
    c->bad_next = (c->bad_next + 1) % BAD_IDS_MAX;
    if (c->nbad < BAD_IDS_MAX)
        c->nbad++;
}

/*
 * Is text (the writer schema of id) one of ours?  It must parse with
 * libavro-c, be a record named like one of the contract's, and have exactly
 * that type's fields (so the codec's reader reads its bytes).  Returns the
 * type, or PL_EV_UNKNOWN with errstr saying why not.
 */
static pl_event_type_t type_of_writer_schema(const pl_codec_t *c, int32_t id,
                                             const char *text, char *errstr,
                                             size_t n)
{
    avro_schema_t schema = NULL;
    pl_event_type_t type = PL_EV_UNKNOWN;
    char full[256], where[64];
    size_t len = strlen(text);

    if (avro_schema_from_json_length(text, len, &schema)) {
        fail(errstr, n, "schema id %ld: invalid Avro schema: %s", (long)id,
             avro_strerror());
        return PL_EV_UNKNOWN;
    }
    if (!is_avro_record(schema)) {
        fail(errstr, n, "schema id %ld is a %s, not a record", (long)id,
             avro_schema_type_name(schema));
        goto out_decref;
    }
    const char *ns = avro_schema_namespace(schema);
    snprintf(full, sizeof(full), "%s%s%s", ns ? ns : "", ns ? "." : "",
             avro_schema_name(schema));
    for (int t = PL_EV_UNKNOWN + 1; t < PL_EV__COUNT; t++) {
        if (!strcmp(full, pl_codec_record_name(t))) {
            type = t;
            break;
        }
    }
    if (type == PL_EV_UNKNOWN) {
        fail(errstr, n, "schema id %ld is record %s, not an event of the "
                        "contract",
             (long)id, full);
        goto out_decref;
    }
    snprintf(where, sizeof(where), "schema id %ld", (long)id);
    if (check_schema_json(where, text, len, type, errstr, n) < 0) {
        type = PL_EV_UNKNOWN;
        goto out_decref;
    }
    if (!avro_schema_equal(schema, c->slots[type].schema)) {
        fail(errstr, n, "schema id %ld: %s differs from this build's "
                        "schemas/%s",
             (long)id, full, pl_event_type_name(type));
        type = PL_EV_UNKNOWN;
    }

out_decref:
    avro_schema_decref(schema);
    return type;
}

/*
 * The type of an id not in the table: ask the registry (once per id).
 * Returns the type; PL_EV_UNKNOWN with *retry false for a poison message
 * (errstr says why, and the id is remembered as bad), or with *retry true
 * when the registry could not be asked now.
 */
static pl_event_type_t look_up_id(pl_codec_t *c, int32_t id, bool *retry,
                                  char *errstr, size_t n)
{
    char why[200];
    char *text = NULL;
    const char *known_bad;
    pl_event_type_t type = PL_EV_UNKNOWN;

    *retry = false;
    if (!c->lookup) {
        fail(errstr, n, "unknown schema id %ld", (long)id);
        return PL_EV_UNKNOWN;
    }
    if ((known_bad = bad_reason(c, id))) {
        fail(errstr, n, "%s", known_bad);
        return PL_EV_UNKNOWN;
    }
    switch (c->lookup(c->lookup_opaque, id, &text, why, sizeof(why))) {
    case PL_CODEC_LOOKUP_OK:
        break;
    case PL_CODEC_LOOKUP_RETRY:
        *retry = true;
        fail(errstr, n, "schema id %ld: %s", (long)id, why);
        return PL_EV_UNKNOWN;
    case PL_CODEC_LOOKUP_UNKNOWN:
    default:
        fail(errstr, n, "unknown schema id %ld: %s", (long)id, why);
        remember_bad(c, id, errstr);
        return PL_EV_UNKNOWN;
    }
    type = type_of_writer_schema(c, id, text, errstr, n);
    free(text);
    if (type == PL_EV_UNKNOWN) {
        remember_bad(c, id, errstr);
        return PL_EV_UNKNOWN;
    }
    if (add_id(c, id, type) < 0) {
        *retry = true; /* out of memory: not the message's fault */
        fail(errstr, n, "schema id %ld: out of memory", (long)id);
        return PL_EV_UNKNOWN;
    }
    return type;
}

/* ---------------------------------------------------------------------- */
/* Avro <-> pl_event_t                                                    */
/* ---------------------------------------------------------------------- */

static int avro_fail(char *errstr, size_t n, const char *fname,
                     const char *what)
{
    return fail(errstr, n, "field '%s': %s: %s", fname, what,
                avro_strerror());
}

/* Copy an Avro string value into a new C string; rejects embedded NULs. */
static int avro_dup_string(avro_value_t *v, const char *fname, char **out,
                           char *errstr, size_t n)
{
    const char *s;
    size_t size;
    if (avro_value_get_string(v, &s, &size))
        return avro_fail(errstr, n, fname, "cannot read string");
    if (size == 0) /* avro-c counts the NUL; be safe with 0 */
        size = 1;
    if (memchr(s, '\0', size - 1))
        return fail(errstr, n, "field '%s': string contains a NUL byte",
                    fname);
    if (!(*out = strndup(s, size - 1)))
        return oom(errstr, n);
    return 0;
}

/* An Avro decimal's bytes (big-endian two's complement) as the scaled
 * integer of decimal(18,4); NULL, or why not. */
static const char *decimal_from_bytes(const unsigned char *b, size_t size,
                                      int64_t *out)
{
    if (size == 0)
        return "empty decimal";
    uint64_t u = (b[0] & 0x80) ? UINT64_MAX : 0;
    for (size_t i = 0; i < size; i++) {
        /* bytes beyond 8 may only repeat the sign */
        if (i + 8 < size && b[i] != ((b[size - 8] & 0x80) ? 0xff : 0))
            return "decimal out of range for decimal(18,4)";
        u = (u << 8) | b[i];
    }
    *out = (int64_t)u;
    return NULL;
}

static int avro_to_field(avro_value_t *v, pl_event_t *ev, const field_t *f,
                         char *errstr, size_t n)
{
    switch (f->kind) {
    case K_STRING: {
        char **dst = str_at(ev, f);
        free(*dst);
        *dst = NULL;
        return avro_dup_string(v, f->name, dst, errstr, n);
    }
    case K_TIMESTAMP:
    case K_LONG:
        if (avro_value_get_long(v, i64_at(ev, f)))
            return avro_fail(errstr, n, f->name, "cannot read long");
        break;
    case K_DATE:
        if (avro_value_get_int(v, i32_at(ev, f)))
            return avro_fail(errstr, n, f->name, "cannot read int");
        break;
    case K_DOUBLE:
        if (avro_value_get_double(v, dbl_at(ev, f)))
            return avro_fail(errstr, n, f->name, "cannot read double");
        break;
    case K_DECIMAL: {
        const void *buf;
        size_t size;
        const char *e;
        if (avro_value_get_bytes(v, &buf, &size))
            return avro_fail(errstr, n, f->name, "cannot read bytes");
        if ((e = decimal_from_bytes(buf, size, i64_at(ev, f))))
            return fail(errstr, n, "field '%s': %s", f->name, e);
        break;
    }
    case K_STRLIST: {
        pl_strlist_t *l = list_at(ev, f);
        size_t count;
        pl_strlist_clear(l);
        if (avro_value_get_size(v, &count))
            return avro_fail(errstr, n, f->name, "cannot read array");
        for (size_t i = 0; i < count; i++) {
            avro_value_t item;
            char *s = NULL;
            if (avro_value_get_by_index(v, i, &item, NULL))
                return avro_fail(errstr, n, f->name, "cannot read item");
            int r = avro_dup_string(&item, f->name, &s, errstr, n);
            if (r < 0)
                return r;
            r = pl_strlist_add(l, s);
            free(s);
            if (r < 0)
                return oom(errstr, n);
        }
        break;
    }
    }
    ev->present |= f->bit;
    return 0;
}

/*
 * Walk an Avro body of type ts without decoding it: every length within the
 * buffer, union branches 0 or 1, nothing left over.  avro-c 1.11 allocates a
 * string's claimed length before reading it and leaks what it allocated when
 * a read fails, so a 10-byte poison message could cost gigabytes; after this
 * scan avro_value_read() cannot run out of input.
 */
static int scan_long(const unsigned char **p, const unsigned char *end,
                     int64_t *out)
{
    uint64_t u = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (*p >= end)
            return -1;
        unsigned char b = *(*p)++;
        u |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = (int64_t)((u >> 1) ^ (~(u & 1) + 1));
            return 0;
        }
    }
    return -1; /* varint too long */
}

/* A length-prefixed string or bytes; max (0: none) is the intake limit,
 * checked here so that libavro-c never allocates more than it.  *at and
 * *size: where its bytes are. */
static const char *scan_bytes(const unsigned char **p,
                              const unsigned char *end, size_t max,
                              const unsigned char **at, size_t *size,
                              char *eb, size_t ebn)
{
    int64_t len;
    if (scan_long(p, end, &len) < 0)
        return "truncated or bad length";
    if (len < 0)
        return "negative length";
    if (len > end - *p)
        return "length beyond the end of the message";
    if (max && (uint64_t)len > max) {
        snprintf(eb, ebn, "%lld bytes, at most %zu allowed", (long long)len,
                 max);
        return eb;
    }
    *at = *p;
    *size = (size_t)len;
    *p += len;
    return NULL;
}

/* A string's bytes as a new C string (NULL: why not in *why). */
static char *dup_avro_string(const unsigned char *at, size_t size,
                             const char **why)
{
    char *s;
    if (memchr(at, '\0', size)) {
        *why = "string contains a NUL byte";
        return NULL;
    }
    if (!(s = malloc(size + 1))) {
        *why = codec_oom;
        return NULL;
    }
    memcpy(s, at, size);
    s[size] = '\0';
    return s;
}

/* Walk one field's value; with ev, also store it there (the direct
 * reader: the writer's schema is this build's, so the body is laid out
 * as the type's fields say).  NULL, or why not. */
static const char *scan_field(const unsigned char **p,
                              const unsigned char *end, const field_t *f,
                              pl_event_t *ev, char *eb, size_t ebn)
{
    const limit_t *lim = limit_of(f);
    const unsigned char *at;
    const char *e;
    size_t size;
    int64_t v;
    switch (f->kind) {
    case K_STRING:
        if ((e = scan_bytes(p, end, lim->max, &at, &size, eb, ebn)) || !ev)
            return e;
        if (memchr(at, '\0', size))
            return "string contains a NUL byte";
        /* each field comes once, into a cleared event: the string goes to
         * the event's block (decode_avro made it room for every string of
         * the body, each with its NUL) */
        if (*str_at(ev, f) || size + 1 > ev->block_len - ev->block_used)
            return "string field twice, or beyond the event's block";
        *str_at(ev, f) = ev->block + ev->block_used;
        memcpy(ev->block + ev->block_used, at, size);
        ev->block[ev->block_used + size] = '\0';
        ev->block_used += size + 1;
        return NULL;
    case K_DECIMAL:
        if ((e = scan_bytes(p, end, 0, &at, &size, eb, ebn)) || !ev)
            return e;
        return decimal_from_bytes(at, size, i64_at(ev, f));
    case K_TIMESTAMP:
    case K_LONG:
        if (scan_long(p, end, &v) < 0)
            return "truncated long";
        if (ev)
            *i64_at(ev, f) = v;
        return NULL;
    case K_DATE:
        if (scan_long(p, end, &v) < 0)
            return "truncated int";
        if (v < INT32_MIN || v > INT32_MAX)
            return "int out of range";
        if (ev)
            *i32_at(ev, f) = (int32_t)v;
        return NULL;
    case K_DOUBLE:
        if (end - *p < 8)
            return "truncated double";
        if (ev) { /* little-endian IEEE 754 */
            uint64_t u = 0;
            double d;
            for (int i = 7; i >= 0; i--)
                u = (u << 8) | (*p)[i];
            memcpy(&d, &u, sizeof(d));
            *dbl_at(ev, f) = d;
        }
        *p += 8;
        return NULL;
    case K_STRLIST: {
        int64_t total = 0;
        if (ev)
            pl_strlist_clear(list_at(ev, f));
        for (;;) {
            int64_t count, size;
            if (scan_long(p, end, &count) < 0)
                return "truncated array";
            if (count == 0)
                return NULL;
            if (count < 0) {
                if (count == INT64_MIN || scan_long(p, end, &size) < 0)
                    return "bad array block";
                count = -count;
            }
            if (count > end - *p)
                return "array longer than the message";
            total += count; /* both <= the message size: no overflow */
            if ((uint64_t)total > lim->max) {
                snprintf(eb, ebn, "%lld items, at most %zu allowed",
                         (long long)total, lim->max);
                return eb;
            }
            for (int64_t i = 0; i < count; i++) {
                size_t len;
                char *item;
                int r;
                if ((e = scan_bytes(p, end, lim->item_max, &at, &len, eb,
                                    ebn)))
                    return e;
                if (!ev)
                    continue;
                if (!(item = dup_avro_string(at, len, &e)))
                    return e;
                r = pl_strlist_add(list_at(ev, f), item);
                free(item);
                if (r < 0)
                    return codec_oom;
            }
        }
    }
    }
    return NULL;
}

/* The start of an Avro body's error: written only when there is one (an
 * snprintf an event was 2% of a worker's instructions). */
#define AVRO_PREFIX(type, id)                                                \
    char prefix[96];                                                         \
    snprintf(prefix, sizeof(prefix), "invalid Avro body for %s (schema id %ld)", \
             pl_event_type_name(type), (long)(id))

/* Walk an Avro body of type ts (see scan_long); with ev, read it into ev
 * as well. */
static int scan_avro(const type_spec_t *ts, const unsigned char *p,
                     const unsigned char *end, pl_event_type_t type,
                     int32_t id, pl_event_t *ev, char *errstr, size_t n)
{
    for (size_t i = 0; i < ts->nfields; i++) {
        const field_t *f = &fields[ts->f[i].fld];
        const char *e = NULL;
        char eb[96];
        int64_t branch;
        if (ts->f[i].use == OPT) {
            if (scan_long(&p, end, &branch) < 0)
                e = "truncated union";
            else if (branch != 0 && branch != 1)
                e = "union branch out of range";
            else if (branch == 0)
                continue;
        }
        if (!e && !(e = scan_field(&p, end, f, ev, eb, sizeof(eb))) && ev)
            ev->present |= f->bit;
        if (e == codec_oom)
            return oom(errstr, n);
        if (e) {
            AVRO_PREFIX(type, id);
            return fail(errstr, n, "%s: field '%s': %s", prefix, f->name, e);
        }
    }
    if (p != end) {
        AVRO_PREFIX(type, id);
        return fail(errstr, n, "%s: %zu trailing bytes after the record",
                    prefix, (size_t)(end - p));
    }
    return 0;
}

static int decode_avro(pl_codec_t *c, const unsigned char *buf, size_t len,
                       pl_event_t *ev, char *errstr, size_t n)
{
    if (len < PL_WIRE_HEADER_LEN)
        return fail(errstr, n,
                    "truncated message: %zu bytes, the Confluent header "
                    "alone is %d",
                    len, PL_WIRE_HEADER_LEN);
    int32_t id = (int32_t)(((uint32_t)buf[1] << 24) |
                           ((uint32_t)buf[2] << 16) |
                           ((uint32_t)buf[3] << 8) | (uint32_t)buf[4]);
    pl_event_type_t type = type_of_id(c, id);
    if (type == PL_EV_UNKNOWN) {
        bool retry;
        type = look_up_id(c, id, &retry, errstr, n);
        if (type == PL_EV_UNKNOWN)
            return retry ? PL_CODEC_RETRY : -1;
    }
    slot_t *s = &c->slots[type];
    const type_spec_t *ts = &types[type];
    const char *body = (const char *)buf + PL_WIRE_HEADER_LEN;
    int64_t blen = (int64_t)(len - PL_WIRE_HEADER_LEN);

    if (!c->generic) { /* the direct reader */
        /* room for every string of the body: their bytes are in it, and
         * each has a NUL (one a field at most) */
        size_t room = (size_t)blen + ts->nfields;
        if (!(ev->block = malloc(room)))
            return oom(errstr, n);
        ev->block_len = room;
        ev->block_used = 0;
        ev->type = type;
        return scan_avro(ts, buf + PL_WIRE_HEADER_LEN, buf + len, type, id,
                         ev, errstr, n);
    }
    if (scan_avro(ts, buf + PL_WIRE_HEADER_LEN, buf + len, type, id, NULL,
                  errstr, n) < 0)
        return -1;

    if (!s->reader) {
        if (!(s->reader = avro_reader_memory(body, blen)))
            return fail(errstr, n, "avro reader: %s", avro_strerror());
    } else {
        avro_reader_memory_set_source(s->reader, body, blen);
    }
    avro_value_reset(&s->value);
    if (avro_value_read(s->reader, &s->value)) {
        AVRO_PREFIX(type, id);
        return fail(errstr, n, "%s: %s", prefix, avro_strerror());
    }

    ev->type = type;
    for (size_t i = 0; i < ts->nfields; i++) {
        const field_t *f = &fields[ts->f[i].fld];
        avro_value_t fv, bv, *v = &fv;
        if (avro_value_get_by_index(&s->value, i, &fv, NULL))
            return avro_fail(errstr, n, f->name, "cannot read field");
        if (ts->f[i].use == OPT) {
            int disc;
            if (avro_value_get_discriminant(&fv, &disc))
                return avro_fail(errstr, n, f->name, "cannot read union");
            if (disc == 0)
                continue; /* null */
            if (avro_value_get_current_branch(&fv, &bv))
                return avro_fail(errstr, n, f->name, "cannot read union");
            v = &bv;
        }
        int r = avro_to_field(v, ev, f, errstr, n);
        if (r < 0)
            return r;
    }
    return 0;
}

/* The shortest big-endian two's complement of a decimal's unscaled
 * value: b[start..8). */
static size_t decimal_to_bytes(int64_t v, unsigned char b[8])
{
    uint64_t u = (uint64_t)v;
    size_t start = 0;
    for (int i = 7; i >= 0; i--, u >>= 8)
        b[i] = (unsigned char)(u & 0xff);
    while (start < 7 && ((b[start] == 0x00 && !(b[start + 1] & 0x80)) ||
                         (b[start] == 0xff && (b[start + 1] & 0x80))))
        start++;
    return start;
}

static int field_to_avro(avro_value_t *v, const pl_event_t *ev,
                         const type_field_t *tf, char *errstr, size_t n)
{
    const field_t *f = &fields[tf->fld];
    switch (f->kind) {
    case K_STRING: {
        const char *s = string_out(ev, tf);
        if (avro_value_set_string_len(v, s, strlen(s) + 1))
            return avro_fail(errstr, n, f->name, "cannot set string");
        return 0;
    }
    case K_TIMESTAMP:
    case K_LONG:
        if (avro_value_set_long(v, ci64_at(ev, f)))
            return avro_fail(errstr, n, f->name, "cannot set long");
        return 0;
    case K_DATE:
        if (avro_value_set_int(v, ci32_at(ev, f)))
            return avro_fail(errstr, n, f->name, "cannot set int");
        return 0;
    case K_DOUBLE:
        if (avro_value_set_double(v, cdbl_at(ev, f)))
            return avro_fail(errstr, n, f->name, "cannot set double");
        return 0;
    case K_DECIMAL: {
        unsigned char b[8];
        size_t start = decimal_to_bytes(ci64_at(ev, f), b);
        if (avro_value_set_bytes(v, b + start, 8 - start))
            return avro_fail(errstr, n, f->name, "cannot set bytes");
        return 0;
    }
    case K_STRLIST: {
        const pl_strlist_t *l = clist_at(ev, f);
        bool has = (ev->present & f->bit) != 0;
        for (size_t i = 0; has && i < l->count; i++) {
            avro_value_t item;
            if (avro_value_append(v, &item, NULL) ||
                avro_value_set_string(&item, l->items[i]))
                return avro_fail(errstr, n, f->name, "cannot append");
        }
        return 0;
    }
    }
    return 0;
}

/* The Confluent wire header: magic byte, schema id (big-endian). */
static void put_header(unsigned char *buf, int32_t id)
{
    buf[0] = PL_WIRE_MAGIC;
    buf[1] = (unsigned char)((uint32_t)id >> 24);
    buf[2] = (unsigned char)((uint32_t)id >> 16);
    buf[3] = (unsigned char)((uint32_t)id >> 8);
    buf[4] = (unsigned char)((uint32_t)id);
}

/* The direct writer: an Avro body written as this build's schema lays it
 * out, byte for byte what avro-c writes from its generic values (the
 * shortest zigzag varints, a non-empty array in one block).  Each put_
 * writes at p (NULL: only counts) and returns the bytes it takes. */
static size_t put_long(unsigned char *p, int64_t v)
{
    uint64_t u = ((uint64_t)v << 1) ^ (v < 0 ? UINT64_MAX : 0);
    size_t n = 0;
    for (; u >= 0x80; u >>= 7, n++)
        if (p)
            p[n] = (unsigned char)(u | 0x80);
    if (p)
        p[n] = (unsigned char)u;
    return n + 1;
}

static size_t put_bytes(unsigned char *p, const void *b, size_t len)
{
    size_t n = put_long(p, (int64_t)len);
    if (p)
        memcpy(p + n, b, len);
    return n + len;
}

static size_t put_field(unsigned char *p, const pl_event_t *ev,
                        const type_field_t *tf)
{
    const field_t *f = &fields[tf->fld];
    switch (f->kind) {
    case K_STRING: {
        const char *s = string_out(ev, tf);
        return put_bytes(p, s, strlen(s));
    }
    case K_TIMESTAMP:
    case K_LONG:
        return put_long(p, ci64_at(ev, f));
    case K_DATE:
        return put_long(p, ci32_at(ev, f));
    case K_DOUBLE: {
        double d = cdbl_at(ev, f);
        uint64_t u;
        memcpy(&u, &d, sizeof(u));
        for (int i = 0; p && i < 8; i++, u >>= 8)
            p[i] = (unsigned char)(u & 0xff); /* little-endian */
        return 8;
    }
    case K_DECIMAL: {
        unsigned char b[8];
        size_t start = decimal_to_bytes(ci64_at(ev, f), b);
        return put_bytes(p, b + start, 8 - start);
    }
    case K_STRLIST: {
        const pl_strlist_t *l = clist_at(ev, f);
        size_t n = 0, count = (ev->present & f->bit) ? l->count : 0;
        if (count) {
            n += put_long(p, (int64_t)count);
            for (size_t i = 0; i < count; i++)
                n += put_bytes(p ? p + n : NULL, l->items[i],
                               strlen(l->items[i]));
        }
        return n + put_long(p ? p + n : NULL, 0);
    }
    }
    return 0;
}

static size_t put_avro(unsigned char *p, const pl_event_t *ev,
                       const type_spec_t *ts)
{
    size_t n = 0;
    for (size_t i = 0; i < ts->nfields; i++) {
        const type_field_t *tf = &ts->f[i];
        const field_t *f = &fields[tf->fld];
        if (tf->use == OPT) {
            bool has = f->kind == K_STRING ? string_out(ev, tf) != NULL
                                           : present(ev, f);
            n += put_long(p ? p + n : NULL, has ? 1 : 0);
            if (!has)
                continue;
        }
        n += put_field(p ? p + n : NULL, ev, tf);
    }
    return n;
}

int pl_codec_encode(pl_codec_t *c, const pl_event_t *ev, void **out,
                    size_t *out_len, char *errstr, size_t errstr_size)
{
    unsigned char *buf = NULL;
    size_t size;
    *out = NULL;
    *out_len = 0;
    if (pl_codec_validate(ev, errstr, errstr_size) < 0)
        return -1;
    slot_t *s = &c->slots[ev->type];
    const type_spec_t *ts = &types[ev->type];
    if (s->id < 0)
        return fail(errstr, errstr_size,
                    "%s: no schema id (its schema was not registered)",
                    pl_event_type_name(ev->type));

    if (!c->generic) { /* the direct writer */
        size = put_avro(NULL, ev, ts);
        if (!(buf = malloc(PL_WIRE_HEADER_LEN + size)))
            return fail(errstr, errstr_size, "out of memory");
        put_header(buf, s->id);
        put_avro(buf + PL_WIRE_HEADER_LEN, ev, ts);
        *out = buf;
        *out_len = PL_WIRE_HEADER_LEN + size;
        return 0;
    }
    avro_value_reset(&s->value);
    for (size_t i = 0; i < ts->nfields; i++) {
        const type_field_t *tf = &ts->f[i];
        const field_t *f = &fields[tf->fld];
        avro_value_t fv, bv, *v = &fv;
        if (avro_value_get_by_index(&s->value, i, &fv, NULL))
            return avro_fail(errstr, errstr_size, f->name,
                             "cannot get field");
        if (tf->use == OPT) {
            bool has = f->kind == K_STRING ? string_out(ev, tf) != NULL
                                           : present(ev, f);
            if (avro_value_set_branch(&fv, has ? 1 : 0, &bv))
                return avro_fail(errstr, errstr_size, f->name,
                                 "cannot set union");
            if (!has) {
                if (avro_value_set_null(&bv))
                    return avro_fail(errstr, errstr_size, f->name,
                                     "cannot set null");
                continue;
            }
            v = &bv;
        }
        if (field_to_avro(v, ev, tf, errstr, errstr_size) < 0)
            return -1;
    }

    if (avro_value_sizeof(&s->value, &size))
        return fail(errstr, errstr_size, "sizing %s: %s",
                    pl_event_type_name(ev->type), avro_strerror());
    if (!(buf = malloc(PL_WIRE_HEADER_LEN + size)))
        return fail(errstr, errstr_size, "out of memory");
    put_header(buf, s->id);
    char *body = (char *)buf + PL_WIRE_HEADER_LEN;
    if (!s->writer) {
        if (!(s->writer = avro_writer_memory(body, (int64_t)size))) {
            fail(errstr, errstr_size, "avro writer: %s", avro_strerror());
            goto out_free;
        }
    } else {
        avro_writer_memory_set_dest(s->writer, body, (int64_t)size);
    }
    if (avro_value_write(s->writer, &s->value)) {
        fail(errstr, errstr_size, "encoding %s: %s",
             pl_event_type_name(ev->type), avro_strerror());
        goto out_free;
    }
    *out = buf;
    *out_len = PL_WIRE_HEADER_LEN + size;
    return 0;

out_free:
    free(buf);
    return -1;
}

/* ---------------------------------------------------------------------- */
/* JSON -> pl_event_t                                                     */
/* ---------------------------------------------------------------------- */

static int json_to_decimal(const json_t *v, const field_t *f, int64_t *out,
                           char *errstr, size_t n)
{
    char vb[72];
    if (json_is_string(v)) {
        if (pl_amount_parse(json_string_value(v), out) < 0)
            return fail(errstr, n,
                        "field '%s': '%s' is not a decimal number with at "
                        "most 14 integer digits and 4 decimal places",
                        f->name, shown(json_string_value(v), vb, sizeof(vb)));
        return 0;
    }
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i > DECIMAL_MAX / PL_AMOUNT_SCALE ||
            i < -(DECIMAL_MAX / PL_AMOUNT_SCALE))
            return fail(errstr, n,
                        "field '%s': out of range for decimal(18,4)",
                        f->name);
        *out = (int64_t)i * PL_AMOUNT_SCALE;
        return 0;
    }
    if (json_is_real(v)) {
        /* Round to 4 places through the exact decimal expansion of the
         * double; below 2^53/10^4 we can tell whether the number had more
         * than 4 places and refuse it rather than round silently. */
        double d = json_real_value(v);
        char buf[64];
        if (!isfinite(d) || fabs(d) >= 1e14)
            return fail(errstr, n,
                        "field '%s': out of range for decimal(18,4)",
                        f->name);
        snprintf(buf, sizeof(buf), "%.4f", d);
        if (pl_amount_parse(buf, out) < 0)
            return fail(errstr, n,
                        "field '%s': out of range for decimal(18,4)",
                        f->name);
        if (fabs(d) < 9e11 && (double)*out / PL_AMOUNT_SCALE != d)
            return fail(errstr, n,
                        "field '%s': more than 4 decimal places", f->name);
        return 0;
    }
    return fail(errstr, n, "field '%s': expected a decimal number", f->name);
}

static int json_to_field(const json_t *v, pl_event_t *ev, const field_t *f,
                         char *errstr, size_t n)
{
    char vb[72];
    switch (f->kind) {
    case K_STRING:
        if (!json_is_string(v))
            return fail(errstr, n, "field '%s': expected a string", f->name);
        if (!(*str_at(ev, f) =
                  strndup(json_string_value(v), json_string_length(v))))
            return oom(errstr, n);
        break;
    case K_TIMESTAMP:
        if (!json_is_string(v) ||
            pl_time_parse_rfc3339(json_string_value(v), i64_at(ev, f)) < 0)
            return fail(errstr, n,
                        "field '%s': expected an RFC 3339 timestamp "
                        "(e.g. \"2026-11-27T10:00:00Z\")%s%s%s",
                        f->name, json_is_string(v) ? ", got '" : "",
                        json_is_string(v)
                            ? shown(json_string_value(v), vb, sizeof(vb))
                            : "",
                        json_is_string(v) ? "'" : "");
        break;
    case K_DATE:
        if (!json_is_string(v) ||
            pl_date_parse(json_string_value(v), i32_at(ev, f)) < 0)
            return fail(errstr, n,
                        "field '%s': expected a date \"YYYY-MM-DD\"%s%s%s",
                        f->name, json_is_string(v) ? ", got '" : "",
                        json_is_string(v)
                            ? shown(json_string_value(v), vb, sizeof(vb))
                            : "",
                        json_is_string(v) ? "'" : "");
        break;
    case K_DECIMAL:
        if (json_to_decimal(v, f, i64_at(ev, f), errstr, n) < 0)
            return -1;
        break;
    case K_LONG:
        if (!json_is_integer(v))
            return fail(errstr, n, "field '%s': expected an integer",
                        f->name);
        *i64_at(ev, f) = (int64_t)json_integer_value(v);
        break;
    case K_DOUBLE:
        if (!json_is_number(v))
            return fail(errstr, n, "field '%s': expected a number", f->name);
        *dbl_at(ev, f) = json_number_value(v);
        break;
    case K_STRLIST: {
        pl_strlist_t *l = list_at(ev, f);
        size_t i;
        const json_t *item;
        if (!json_is_array(v))
            return fail(errstr, n, "field '%s': expected an array of strings",
                        f->name);
        if (json_array_size(v) > limit_of(f)->max)
            return fail(errstr, n, "field '%s': %zu items, at most %zu allowed",
                        f->name, json_array_size(v), limit_of(f)->max);
        json_array_foreach(v, i, item)
        {
            if (!json_is_string(item))
                return fail(errstr, n, "field '%s[%zu]': expected a string",
                            f->name, i);
            if (pl_strlist_add(l, json_string_value(item)) < 0)
                return oom(errstr, n);
        }
        break;
    }
    }
    ev->present |= f->bit;
    return 0;
}

static int decode_json(const char *buf, size_t len, pl_event_t *ev,
                       char *errstr, size_t n)
{
    json_error_t jerr;
    json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    const char *key;
    json_t *val;
    char kb[72];
    int rc = -1;
    if (!root)
        return fail(errstr, n, "invalid JSON at line %d column %d: %s",
                    jerr.line, jerr.column, jerr.text);
    if (!json_is_object(root)) {
        fail(errstr, n, "expected a JSON object");
        goto out_decref;
    }
    json_t *jt = json_object_get(root, "type");
    if (!jt || json_is_null(jt)) {
        fail(errstr, n, "field 'type' is required");
        goto out_decref;
    }
    if (!json_is_string(jt)) {
        fail(errstr, n, "field 'type': expected a string");
        goto out_decref;
    }
    ev->type = pl_event_type_from_name(json_string_value(jt));
    if (ev->type == PL_EV_UNKNOWN) {
        fail(errstr, n, "field 'type': unknown event type '%s'",
             shown(json_string_value(jt), kb, sizeof(kb)));
        goto out_decref;
    }
    const type_spec_t *ts = &types[ev->type];
    json_object_foreach(root, key, val)
    {
        const field_t *f = NULL;
        if (!strcmp(key, "type"))
            continue;
        for (size_t i = 0; i < ts->nfields && !f; i++)
            if (!strcmp(fields[ts->f[i].fld].name, key))
                f = &fields[ts->f[i].fld];
        if (!f) {
            fail(errstr, n, "unknown field '%s' for %s",
                 shown(key, kb, sizeof(kb)), pl_event_type_name(ev->type));
            goto out_decref;
        }
        if (json_is_null(val))
            continue; /* null is absent */
        int fr = json_to_field(val, ev, f, errstr, n);
        if (fr < 0) {
            rc = fr == PL_CODEC_NOMEM ? fr : -1;
            goto out_decref;
        }
    }
    rc = 0;

out_decref:
    json_decref(root);
    return rc;
}

int pl_codec_decode(pl_codec_t *c, const void *buf, size_t len,
                    pl_event_t *ev, char *errstr, size_t errstr_size)
{
    const unsigned char *p = buf;
    size_t i = 0;
    int rc;
    pl_event_clear(ev);
    if (!buf || len == 0)
        return fail(errstr, errstr_size, "empty message");
    while (i < len &&
           (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' || p[i] == '\n'))
        i++;
    if (i < len && p[i] == '{')
        rc = decode_json((const char *)buf, len, ev, errstr, errstr_size);
    else if (p[0] == PL_WIRE_MAGIC)
        rc = decode_avro(c, p, len, ev, errstr, errstr_size);
    else
        rc = fail(errstr, errstr_size,
                  "bad magic byte 0x%02x: expected 0x00 (Confluent Avro) or "
                  "a JSON object",
                  p[0]);
    if (rc == 0)
        rc = finish_decoded(ev, errstr, errstr_size);
    if (rc < 0)
        pl_event_clear(ev);
    return rc;
}

bool pl_codec_line_skip(const char *line, size_t *len)
{
    size_t n = *len;
    if (n > 0 && line[n - 1] == '\n')
        n--;
    if (n > 0 && line[n - 1] == '\r')
        n--;
    *len = n;
    for (size_t i = 0; i < n; i++) {
        if (line[i] == ' ' || line[i] == '\t' || line[i] == '\r')
            continue;
        return line[i] == '#';
    }
    return true; /* blank */
}

int pl_codec_encode_line(pl_codec_t *c, const char *line, size_t len,
                         pl_event_t *ev, void **out, size_t *out_len,
                         char *errstr, size_t errstr_size)
{
    *out = NULL;
    *out_len = 0;
    if (pl_codec_line_skip(line, &len)) {
        pl_event_clear(ev);
        return 1;
    }
    if (pl_codec_decode(c, line, len, ev, errstr, errstr_size) < 0)
        return -1;
    if (pl_codec_encode(c, ev, out, out_len, errstr, errstr_size) < 0) {
        pl_event_clear(ev);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/* pl_event_t -> JSON text                                                */
/* ---------------------------------------------------------------------- */

/* Shortest "%.Ng" that reads back as the same double. */
static void sb_double(pl_sbuf_t *sb, double d)
{
    char buf[40];
    if (!isfinite(d)) {
        pl_sbuf_puts(sb, "null");
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, sizeof(buf), "%.*g", prec, d);
        if (strtod(buf, NULL) == d)
            break;
    }
    pl_sbuf_puts(sb, buf);
}

static void sb_field(pl_sbuf_t *sb, const pl_event_t *ev, const type_field_t *tf)
{
    const field_t *f = &fields[tf->fld];
    char buf[64];
    if (f->kind == K_STRING) {
        const char *s = string_out(ev, tf);
        if (!s)
            return;
        pl_sbuf_puts(sb, ",\"");
        pl_sbuf_puts(sb, f->name);
        pl_sbuf_puts(sb, "\":");
        pl_sbuf_json_string(sb, s);
        return;
    }
    if (!present(ev, f) && !(f->kind == K_STRLIST && tf->use == REQ))
        return;
    pl_sbuf_puts(sb, ",\"");
    pl_sbuf_puts(sb, f->name);
    pl_sbuf_puts(sb, "\":");
    switch (f->kind) {
    case K_TIMESTAMP:
        if (pl_time_format_rfc3339(ci64_at(ev, f), buf, sizeof(buf)) < 0)
            snprintf(buf, sizeof(buf), "out of range");
        pl_sbuf_json_string(sb, buf);
        break;
    case K_DATE:
        if (pl_date_format(ci32_at(ev, f), buf, sizeof(buf)) < 0)
            snprintf(buf, sizeof(buf), "out of range");
        pl_sbuf_json_string(sb, buf);
        break;
    case K_DECIMAL: {
        /* A JSON number is read as a double, which carries 4 decimals
         * exactly only below 2^39 (there half its spacing, 2^-15, is under
         * half of 0.0001; at 2^39 it is 2^-14): from there a fractional
         * amount goes out as a string, which the decoder reads exactly
         * (found by fuzzing: 21673793541904.7936, then 686975491469.81,
         * did not come back; the bound was 2^53 / 10^4 before).  The
         * reports' convention (report.h). */
        int64_t v = ci64_at(ev, f);
        uint64_t mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
        pl_amount_format(v, buf, sizeof(buf));
        if (mag % PL_AMOUNT_SCALE &&
            mag / PL_AMOUNT_SCALE >= (UINT64_C(1) << 39))
            pl_sbuf_json_string(sb, buf);
        else
            pl_sbuf_puts(sb, buf);
        break;
    }
    case K_LONG:
        snprintf(buf, sizeof(buf), "%lld", (long long)ci64_at(ev, f));
        pl_sbuf_puts(sb, buf);
        break;
    case K_DOUBLE:
        sb_double(sb, cdbl_at(ev, f));
        break;
    case K_STRLIST: {
        const pl_strlist_t *l = clist_at(ev, f);
        bool has = (ev->present & f->bit) != 0;
        pl_sbuf_puts(sb, "[");
        for (size_t i = 0; has && i < l->count; i++) {
            if (i)
                pl_sbuf_puts(sb, ",");
            pl_sbuf_json_string(sb, l->items[i] ? l->items[i] : "");
        }
        pl_sbuf_puts(sb, "]");
        break;
    }
    case K_STRING:
        break;
    }
}

char *pl_codec_to_json(pl_codec_t *c, const pl_event_t *ev)
{
    pl_sbuf_t sb = {0};
    (void)c;
    if (!ev || !type_known(ev->type))
        return NULL;
    const type_spec_t *ts = &types[ev->type];
    pl_sbuf_puts(&sb, "{\"type\":");
    pl_sbuf_json_string(&sb, pl_event_type_name(ev->type));
    for (size_t i = 0; i < ts->nfields; i++)
        sb_field(&sb, ev, &ts->f[i]);
    pl_sbuf_puts(&sb, "}");
    if (sb.oom) {
        free(sb.buf);
        return NULL;
    }
    return sb.buf;
}
