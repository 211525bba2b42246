/*
 * report.c - the pipeline reports (report.h): forecast, stages and sources
 * computed from the figures hash <p>{stats} (field layout: analytics.h) and
 * the rules, as the contract's JSON objects, aligned tables and gauges.
 *
 * Everything here is pure, so the arithmetic the contract defines (the
 * weighted amount, conversion, the percentiles, the bottleneck rule) is
 * unit-tested on hand-written figures (tests/unit/test_report.c).  Amounts
 * stay integers (scaled by PL_AMOUNT_SCALE) until they are put in the JSON;
 * the weighted amount is summed exactly in 128 bits (amount x probability
 * in millionths) and rounded once.
 *
 * The figures hash has one field per (owner, month, currency, stage) and
 * per histogram bucket, so a report is one pass over it: rows are found
 * through a small hash map, never by scanning the rows.
 */
#include "report.h"

#include "analytics.h"
#include "codec.h"
#include "sbuf.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Probabilities are taken as exact decimals of 12 places (the rules
 * file's text: the double read from "0.1" is within 10^-17 of it): an
 * integer P, probability = P / 10^12. */
#define PROB_DIGITS 12
#define PROB_ONE INT64_C(1000000000000)
#define PROB_BEST_CASE (PROB_ONE / 10 * 6) /* 0.6 */
#define PROB_COMMIT (PROB_ONE / 10 * 8)    /* 0.8 */
/* amount x P: scaled by PL_AMOUNT_SCALE (4 places) x 10^12 */
#define WEIGHTED_DIGITS (4 + PROB_DIGITS)

/* ------------------------------------------------------------------------ */
/* A string -> int64 hash map (open addressing, linear probing)             */

typedef struct strmap_s {
    char **keys; /* owned; NULL: empty slot */
    int64_t *vals;
    size_t cap; /* a power of 2, or 0 */
    size_t count;
} strmap_t;

static uint64_t str_hash(const char *s)
{
    uint64_t h = UINT64_C(1469598103934665603); /* FNV-1a */

    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= UINT64_C(1099511628211);
    }
    return h;
}

static void strmap_clear(strmap_t *m)
{
    for (size_t i = 0; i < m->cap; i++)
        free(m->keys[i]);
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof(*m));
}

/* The slot of key: where it is, or the empty slot where it would go. */
static size_t strmap_slot(const strmap_t *m, const char *key)
{
    size_t i = (size_t)str_hash(key) & (m->cap - 1);

    while (m->keys[i] && strcmp(m->keys[i], key))
        i = (i + 1) & (m->cap - 1);
    return i;
}

static int strmap_grow(strmap_t *m)
{
    strmap_t n = {0};

    n.cap = m->cap ? m->cap * 2 : 64;
    n.keys = calloc(n.cap, sizeof(*n.keys));
    n.vals = calloc(n.cap, sizeof(*n.vals));
    if (!n.keys || !n.vals) {
        free(n.keys);
        free(n.vals);
        return -1;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (m->keys[i]) {
            size_t j = strmap_slot(&n, m->keys[i]);
            n.keys[j] = m->keys[i]; /* moved */
            n.vals[j] = m->vals[i];
            n.count++;
        }
    }
    free(m->keys);
    free(m->vals);
    *m = n;
    return 0;
}

/* The value of key, NULL when absent. */
static int64_t *strmap_find(const strmap_t *m, const char *key)
{
    size_t i;

    if (!m->cap)
        return NULL;
    i = strmap_slot(m, key);
    return m->keys[i] ? &m->vals[i] : NULL;
}

/* The value of key, added as dflt when absent; NULL on OOM.  *added (if
 * not NULL) says whether it was. */
static int64_t *strmap_get(strmap_t *m, const char *key, int64_t dflt,
                           bool *added)
{
    size_t i;

    if (added)
        *added = false;
    if ((m->count + 1) * 4 > m->cap * 3 && strmap_grow(m))
        return NULL;
    i = strmap_slot(m, key);
    if (!m->keys[i]) {
        if (!(m->keys[i] = strdup(key)))
            return NULL;
        m->vals[i] = dflt;
        m->count++;
        if (added)
            *added = true;
    }
    return &m->vals[i];
}

/* ------------------------------------------------------------------------ */
/* Fields of the figures                                                    */

#define FIELD_PARTS_MAX 8

/* A figure field split into its components (decoded) and its value. */
typedef struct figure_s {
    char *buf; /* owned: the decoded components, NUL-separated */
    const char *part[FIELD_PARTS_MAX];
    int nparts;
    int64_t value;
} figure_t;

/* Split and decode field k with value v.  1 when it parsed, 0 when it is
 * not a figure (skipped: too many parts, a value that is not an integer),
 * -1 on OOM. */
static int figure_parse(const char *k, const char *v, figure_t *f)
{
    char *end, *p;
    long long n;

    f->buf = NULL;
    f->nparts = 0;
    if (!v || !*v)
        return 0;
    n = strtoll(v, &end, 10);
    if (*end != '\0')
        return 0;
    f->value = (int64_t)n;
    if (!(f->buf = strdup(k)))
        return -1;
    for (p = f->buf;;) {
        char *bar = strchr(p, '|');

        if (f->nparts == FIELD_PARTS_MAX) {
            free(f->buf);
            f->buf = NULL;
            return 0;
        }
        if (bar)
            *bar = '\0';
        pl_field_unescape(p);
        f->part[f->nparts++] = p;
        if (!bar)
            break;
        p = bar + 1;
    }
    return 1;
}

/* Does the figures' owner (the decoded component, "" for none) pass the
 * filter (NULL: everyone; "none": no owner)? */
static bool owner_match(const char *owner, const char *filter)
{
    if (!filter)
        return true;
    if (!strcmp(filter, "none") && !*owner)
        return true;
    return !strcmp(owner, filter);
}

/* ------------------------------------------------------------------------ */
/* Amounts                                                                  */

/* The probability of a stage as P / 10^12 (0 for a stage the rules no
 * longer have). */
static int64_t prob_of(const pl_rules_t *r, int stage)
{
    if (stage < 0)
        return 0;
    return (int64_t)llround(pl_rules_stage_probability(r, stage) *
                            (double)PROB_ONE);
}

static void fmt_real(double d, char *buf, size_t n);

/* An exact decimal ("-12.5", "0.00005", "7") as a JSON value: a real when
 * the shortest text of the nearest double is that decimal (up to 15
 * significant digits it always is), else a string with the decimal. */
static json_t *decimal_json(const char *text)
{
    char back[64];
    double d = strtod(text, NULL);

    fmt_real(d, back, sizeof(back));
    if (!strcmp(back, text))
        return json_real(d);
    return json_string(text);
}

/* v / 10^digits as the shortest exact decimal text. */
static void fmt_fixed(__int128 v, int digits, char *buf, size_t n)
{
    unsigned __int128 mag = v < 0 ? -(unsigned __int128)v
                                  : (unsigned __int128)v;
    char rev[64];
    int len = 0, frac = digits;
    size_t o = 0;

    /* the digits, least significant first */
    do {
        rev[len++] = (char)('0' + (int)(mag % 10));
        mag /= 10;
    } while (mag || len <= digits);
    /* trailing zeros of the fraction go */
    while (frac > 0 && rev[digits - frac] == '0')
        frac--;
    if (v < 0 && o + 1 < n)
        buf[o++] = '-';
    for (int i = len - 1; i >= digits && o + 1 < n; i--)
        buf[o++] = rev[i];
    if (frac && o + 1 < n)
        buf[o++] = '.';
    for (int i = digits - 1; i >= digits - frac && o + 1 < n; i--)
        buf[o++] = rev[i];
    buf[o] = '\0';
}

/* A scaled amount as a JSON value (decimal_json). */
static json_t *amount_json(int64_t scaled)
{
    char buf[64];

    fmt_fixed(scaled, 4, buf, sizeof(buf));
    return decimal_json(buf);
}

/* The text of a report's JSON amount (its exact decimal) in buf.  0, or
 * -1 when it is not an amount. */
static int amount_text(const json_t *j, char *buf, size_t n)
{
    if (json_is_string(j))
        snprintf(buf, n, "%s", json_string_value(j));
    else if (json_is_integer(j))
        snprintf(buf, n, "%" JSON_INTEGER_FORMAT, json_integer_value(j));
    else if (json_is_real(j))
        fmt_real(json_real_value(j), buf, n);
    else
        return -1;
    return 0;
}

/* Parse a decimal ("-12.5") into *v / 10^WEIGHTED_DIGITS (more places
 * are cut off).  0 or -1. */
static int decimal_parse(const char *s, __int128 *v)
{
    bool neg = *s == '-', digits = false;
    __int128 x = 0;
    int frac = -1;

    if (neg || *s == '+')
        s++;
    for (; *s; s++) {
        if (*s == '.' && frac < 0) {
            frac = 0;
            continue;
        }
        if (*s < '0' || *s > '9' || x > ((__int128)1 << 120))
            return -1;
        digits = true;
        if (frac >= WEIGHTED_DIGITS)
            continue;
        x = x * 10 + (*s - '0');
        if (frac >= 0)
            frac++;
    }
    if (!digits)
        return -1;
    for (frac = frac < 0 ? 0 : frac; frac < WEIGHTED_DIGITS; frac++)
        x *= 10;
    *v = neg ? -x : x;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* JSON helpers                                                             */

/* obj[k] = v (stolen), remembering a failure in *ok. */
static void put(json_t *obj, const char *k, json_t *v, bool *ok)
{
    if (!v || json_object_set_new(obj, k, v))
        *ok = false;
}

static json_t *int_json(int64_t v)
{
    return json_integer((json_int_t)v);
}

/* ------------------------------------------------------------------------ */
/* Forecast                                                                 */

typedef struct fc_row_s {
    const char *month, *currency; /* into the row's key (keys[]) */
    char *key;                    /* owned: month NUL currency NUL */
    int64_t open_n, open_a, best, commit, won_n, won_a;
    __int128 weighted_x; /* amount x probability, WEIGHTED_DIGITS places */
} fc_row_t;

typedef struct fc_s {
    strmap_t index; /* "month\x1f currency" -> row */
    fc_row_t *rows;
    size_t count, cap;
} fc_t;

static void fc_clear(fc_t *fc)
{
    for (size_t i = 0; i < fc->count; i++)
        free(fc->rows[i].key);
    free(fc->rows);
    strmap_clear(&fc->index);
}

static fc_row_t *fc_row(fc_t *fc, const char *month, const char *currency)
{
    size_t ml = strlen(month), cl = strlen(currency);
    char *k = malloc(ml + cl + 2);
    int64_t *idx;
    bool added;
    fc_row_t *row;

    if (!k)
        return NULL;
    memcpy(k, month, ml);
    k[ml] = '\x1f';
    memcpy(k + ml + 1, currency, cl + 1);
    idx = strmap_get(&fc->index, k, (int64_t)fc->count, &added);
    if (!idx || !added) {
        free(k);
        return idx ? &fc->rows[*idx] : NULL;
    }
    if (fc->count == fc->cap) {
        size_t cap = fc->cap ? fc->cap * 2 : 16;
        fc_row_t *n = realloc(fc->rows, cap * sizeof(*n));
        if (!n) {
            free(k);
            return NULL; /* the index names a row that is not there: the
                            caller gives up */
        }
        fc->rows = n;
        fc->cap = cap;
    }
    row = &fc->rows[fc->count++];
    memset(row, 0, sizeof(*row));
    k[ml] = '\0';
    row->key = k;
    row->month = k;
    row->currency = k + ml + 1;
    return row;
}

static int fc_cmp(const void *a, const void *b)
{
    const fc_row_t *x = a, *y = b;
    int c = strcmp(x->month, y->month);

    return c ? c : strcmp(x->currency, y->currency);
}

static bool fc_nonzero(const fc_row_t *w)
{
    return w->open_n || w->open_a || w->best || w->commit || w->won_n ||
           w->won_a || w->weighted_x;
}

/* The currency of a row: a deal without one counts in USD, the
 * contract's default currency. */
static const char *currency(const char *c)
{
    return *c ? c : "USD";
}

/* Fold the figures into fc.  0 or -1 (OOM). */
static int fc_collect(fc_t *fc, const pl_rules_t *r, const pl_fields_t *fig,
                      const char *owner)
{
    for (size_t i = 0; i < fig->count; i++) {
        figure_t f;
        fc_row_t *row;
        int p = figure_parse(fig->keys[i], fig->values[i], &f);

        if (p < 0)
            return -1;
        if (!p)
            continue;
        if (!strcmp(f.part[0], "f") && f.nparts == 6 &&
            owner_match(f.part[1], owner)) {
            const char *kind = f.part[5];
            if (!(row = fc_row(fc, f.part[2], currency(f.part[3])))) {
                free(f.buf);
                return -1;
            }
            if (!strcmp(kind, "n")) {
                row->open_n += f.value;
            } else if (!strcmp(kind, "a")) {
                int64_t p = prob_of(r, pl_rules_stage_index(r, f.part[4]));
                row->open_a += f.value;
                row->weighted_x += (__int128)f.value * p;
                if (p >= PROB_BEST_CASE)
                    row->best += f.value;
                if (p >= PROB_COMMIT)
                    row->commit += f.value;
            }
        } else if (!strcmp(f.part[0], "w") && f.nparts == 5 &&
                   owner_match(f.part[1], owner)) {
            if (!(row = fc_row(fc, f.part[2], currency(f.part[3])))) {
                free(f.buf);
                return -1;
            }
            if (!strcmp(f.part[4], "n"))
                row->won_n += f.value;
            else if (!strcmp(f.part[4], "a"))
                row->won_a += f.value;
        }
        free(f.buf);
    }
    if (fc->count) /* (rows is NULL without: qsort wants a pointer) */
        qsort(fc->rows, fc->count, sizeof(*fc->rows), fc_cmp);
    return 0; /* the index is stale after the sort; no longer used */
}

json_t *pl_report_forecast(const pl_rules_t *r, const pl_fields_t *figures,
                           const char *owner)
{
    fc_t fc = {0};
    json_t *out = json_object(), *months = json_array();
    bool ok = out && months;

    if (ok && fc_collect(&fc, r, figures, owner))
        ok = false;
    for (size_t i = 0; ok && i < fc.count; i++) {
        const fc_row_t *w = &fc.rows[i];
        char weighted[80];
        json_t *o;

        if (!fc_nonzero(w))
            continue;
        if (!(o = json_object()) || json_array_append_new(months, o)) {
            ok = false;
            break;
        }
        put(o, "month", json_string(w->month), &ok);
        put(o, "currency", json_string(w->currency), &ok);
        put(o, "open_count", int_json(w->open_n), &ok);
        put(o, "open_amount", amount_json(w->open_a), &ok);
        fmt_fixed(w->weighted_x, WEIGHTED_DIGITS, weighted, sizeof(weighted));
        put(o, "weighted_amount", decimal_json(weighted), &ok);
        put(o, "best_case_amount", amount_json(w->best), &ok);
        put(o, "commit_amount", amount_json(w->commit), &ok);
        put(o, "won_count", int_json(w->won_n), &ok);
        put(o, "won_amount", amount_json(w->won_a), &ok);
    }
    if (ok && json_object_set(out, "months", months))
        ok = false;
    json_decref(months);
    fc_clear(&fc);
    if (!ok) {
        json_decref(out);
        return NULL;
    }
    return out;
}

/* ------------------------------------------------------------------------ */
/* Stages                                                                   */

enum {
    ST_OPEN,
    ST_ENTERED,
    ST_ADVANCED,
    ST_MOVED_BACK,
    ST_LOST,
    ST_WON,
    ST__COUNT
};
static const char *const st_names[ST__COUNT] = {
    "open", "entered", "advanced", "moved_back", "lost", "won"};

typedef struct st_row_s {
    int64_t c[ST__COUNT];
    int64_t hist[PL_HIST_BUCKETS];
} st_row_t;

/* The figures of every rules stage (rows[stage index]).  0 or -1. */
static int st_collect(st_row_t *rows, const pl_rules_t *r,
                      const pl_fields_t *fig, const char *owner)
{
    for (size_t i = 0; i < fig->count; i++) {
        figure_t f;
        int p = figure_parse(fig->keys[i], fig->values[i], &f), s;

        if (p < 0)
            return -1;
        if (!p)
            continue;
        if (f.nparts == 4 && (!strcmp(f.part[0], "s") ||
                              !strcmp(f.part[0], "h")) &&
            owner_match(f.part[1], owner) &&
            (s = pl_rules_stage_index(r, f.part[2])) >= 0) {
            if (f.part[0][0] == 's') {
                for (int k = 0; k < ST__COUNT; k++)
                    if (!strcmp(f.part[3], st_names[k]))
                        rows[s].c[k] += f.value;
            } else {
                char *end;
                long b = strtol(f.part[3], &end, 10);
                if (*f.part[3] && !*end && b >= 0 && b < PL_HIST_BUCKETS)
                    rows[s].hist[b] += f.value;
            }
        }
        free(f.buf);
    }
    return 0;
}

/* A stage's computed figures. */
typedef struct st_calc_s {
    int64_t moves;           /* moves out: the histogram's count */
    int64_t conv_num, conv_den;
    bool has_pct;
    int64_t p50, p90;
    int64_t stale_s;         /* 0: never stale */
} st_calc_t;

static void st_compute(const pl_rules_t *r, int s, const st_row_t *row,
                       st_calc_t *c)
{
    memset(c, 0, sizeof(*c));
    for (int b = 0; b < PL_HIST_BUCKETS; b++)
        c->moves += row->hist[b];
    c->conv_num = row->c[ST_ADVANCED] + row->c[ST_WON];
    c->conv_den = c->conv_num + row->c[ST_MOVED_BACK] + row->c[ST_LOST];
    if (c->moves > 0) {
        double p50 = pl_hist_percentile(row->hist, 0.5);
        double p90 = pl_hist_percentile(row->hist, 0.9);
        if (p50 >= 0 && p90 >= 0) {
            c->has_pct = true;
            c->p50 = (int64_t)llround(p50);
            c->p90 = (int64_t)llround(p90);
        }
    }
    c->stale_s = pl_rules_stage_stale_ms(r, s) / 1000;
}

/* Is a a worse bottleneck than b (both candidates)? */
static bool st_worse(const st_calc_t *a, const st_calc_t *b)
{
    __int128 x = (__int128)a->p50 * b->stale_s,
             y = (__int128)b->p50 * a->stale_s;

    if (x != y)
        return x > y;
    /* ties: the lower conversion (none, when every move out skipped a
     * stage, counts as 0) */
    if (!a->conv_den || !b->conv_den)
        return !a->conv_den && b->conv_num;
    return (__int128)a->conv_num * b->conv_den <
           (__int128)b->conv_num * a->conv_den;
}

json_t *pl_report_stages(const pl_rules_t *r, const pl_fields_t *figures,
                         const char *owner)
{
    int n = pl_rules_stage_count(r), best = -1;
    st_row_t *rows = calloc((size_t)n, sizeof(*rows));
    st_calc_t *calc = calloc((size_t)n, sizeof(*calc));
    json_t *out = json_object(), *stages = json_array();
    bool ok = rows && calc && out && stages;

    if (ok && st_collect(rows, r, figures, owner))
        ok = false;
    for (int s = 0; ok && s < n; s++) {
        const st_row_t *w = &rows[s];
        st_calc_t *c = &calc[s];
        json_t *o;

        if (pl_rules_stage_is_closed(r, s))
            continue;
        st_compute(r, s, w, c);
        if (!(o = json_object()) || json_array_append_new(stages, o)) {
            ok = false;
            break;
        }
        put(o, "stage", json_string(pl_rules_stage_name(r, s)), &ok);
        put(o, "open_count", int_json(w->c[ST_OPEN]), &ok);
        for (int k = ST_ENTERED; k < ST__COUNT; k++)
            put(o, st_names[k], int_json(w->c[k]), &ok);
        put(o, "conversion",
            c->conv_den ? json_real((double)c->conv_num / (double)c->conv_den)
                        : json_null(),
            &ok);
        put(o, "p50_seconds", c->has_pct ? int_json(c->p50) : json_null(),
            &ok);
        put(o, "p90_seconds", c->has_pct ? int_json(c->p90) : json_null(),
            &ok);
        put(o, "stale_after_seconds",
            c->stale_s > 0 ? int_json(c->stale_s) : json_null(), &ok);
        if (c->moves >= PL_REPORT_BOTTLENECK_MIN_MOVES && c->has_pct &&
            c->stale_s > 0 && (best < 0 || st_worse(c, &calc[best])))
            best = s;
    }
    if (ok) {
        if (json_object_set(out, "stages", stages))
            ok = false;
        put(out, "bottleneck",
            best >= 0 ? json_string(pl_rules_stage_name(r, best))
                      : json_null(),
            &ok);
    }
    json_decref(stages);
    free(rows);
    free(calc);
    if (!ok) {
        json_decref(out);
        return NULL;
    }
    return out;
}

/* ------------------------------------------------------------------------ */
/* Sources                                                                  */

enum { SR_LEADS, SR_MQL, SR_SAL, SR_SQL, SR_DISQUALIFIED, SR_WON, SR__COUNT };
static const char *const sr_names[SR__COUNT] = {
    "leads", "mql", "sal", "sql", "disqualified", "won"};

typedef struct sr_row_s {
    char *source; /* owned */
    int64_t c[SR__COUNT];
} sr_row_t;

static int sr_cmp(const void *a, const void *b)
{
    return strcmp(((const sr_row_t *)a)->source,
                  ((const sr_row_t *)b)->source);
}

json_t *pl_report_sources(const pl_fields_t *figures)
{
    strmap_t index = {0};
    sr_row_t *rows = NULL;
    size_t count = 0, cap = 0;
    json_t *out = json_object(), *list = json_array();
    bool ok = out && list;

    for (size_t i = 0; ok && i < figures->count; i++) {
        figure_t f;
        int p = figure_parse(figures->keys[i], figures->values[i], &f), k;
        int64_t *idx;
        bool added;

        if (p < 0) {
            ok = false;
            break;
        }
        if (!p)
            continue;
        for (k = 0; k < SR__COUNT; k++)
            if (f.nparts == 3 && !strcmp(f.part[0], "l") &&
                !strcmp(f.part[2], sr_names[k]))
                break;
        if (k == SR__COUNT) {
            free(f.buf);
            continue;
        }
        idx = strmap_get(&index, f.part[1], (int64_t)count, &added);
        if (idx && added) {
            if (count == cap) {
                size_t ncap = cap ? cap * 2 : 16;
                sr_row_t *nr = realloc(rows, ncap * sizeof(*nr));
                if (!nr) {
                    ok = false;
                    free(f.buf);
                    break;
                }
                rows = nr;
                cap = ncap;
            }
            memset(&rows[count], 0, sizeof(rows[count]));
            if (!(rows[count].source = strdup(f.part[1])))
                idx = NULL;
            else
                count++;
        }
        if (!idx) {
            ok = false;
            free(f.buf);
            break;
        }
        rows[*idx].c[k] += f.value;
        free(f.buf);
    }
    if (ok && count)
        qsort(rows, count, sizeof(*rows), sr_cmp);
    for (size_t i = 0; ok && i < count; i++) {
        json_t *o;
        bool any = false;

        for (int k = 0; k < SR__COUNT; k++)
            any = any || rows[i].c[k] != 0;
        if (!any)
            continue;
        if (!(o = json_object()) || json_array_append_new(list, o)) {
            ok = false;
            break;
        }
        put(o, "source", json_string(rows[i].source), &ok);
        for (int k = 0; k < SR__COUNT; k++)
            put(o, sr_names[k], int_json(rows[i].c[k]), &ok);
    }
    if (ok && json_object_set(out, "sources", list))
        ok = false;
    json_decref(list);
    for (size_t i = 0; i < count; i++)
        free(rows[i].source);
    free(rows);
    strmap_clear(&index);
    if (!ok) {
        json_decref(out);
        return NULL;
    }
    return out;
}

/* ------------------------------------------------------------------------ */
/* Text                                                                     */

/* The shortest text of a double that reads back as it: whole numbers
 * without ".0", no exponent unless the number is tiny or huge, so an
 * amount prints as its decimal. */
static void fmt_real(double d, char *buf, size_t n)
{
    if (!isfinite(d)) {
        snprintf(buf, n, "null");
        return;
    }
    if (d == trunc(d) && fabs(d) < 1e17) {
        snprintf(buf, n, "%.0f", d);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, d);
        if (strtod(buf, NULL) == d)
            break;
    }
    if (!strchr(buf, 'e'))
        return;
    /* a small number: in fixed notation if it takes at most 40 places,
     * like an amount times a probability (0.00005) */
    for (int places = 1; places <= 40; places++) {
        char fixed[64];
        snprintf(fixed, sizeof(fixed), "%.*f", places, d);
        if (strtod(fixed, NULL) == d) {
            snprintf(buf, n, "%s", fixed);
            return;
        }
    }
}

static void sb_json_string(pl_sbuf_t *b, const char *s)
{
    json_t *j = json_string(s);
    char *t = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;

    if (!t)
        b->oom = true;
    else
        pl_sbuf_puts(b, t);
    free(t);
    json_decref(j);
}

static void sb_json(pl_sbuf_t *b, const json_t *j)
{
    char num[64];

    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        const char *k;
        json_t *v;
        bool first = true;
        pl_sbuf_puts(b, "{");
        json_object_foreach((json_t *)j, k, v) {
            if (!first)
                pl_sbuf_puts(b, ",");
            first = false;
            sb_json_string(b, k);
            pl_sbuf_puts(b, ":");
            sb_json(b, v);
        }
        pl_sbuf_puts(b, "}");
        break;
    }
    case JSON_ARRAY:
        pl_sbuf_puts(b, "[");
        for (size_t i = 0; i < json_array_size(j); i++) {
            if (i)
                pl_sbuf_puts(b, ",");
            sb_json(b, json_array_get(j, i));
        }
        pl_sbuf_puts(b, "]");
        break;
    case JSON_STRING:
        sb_json_string(b, json_string_value(j));
        break;
    case JSON_INTEGER:
        pl_sbuf_printf(b, "%" JSON_INTEGER_FORMAT, json_integer_value(j));
        break;
    case JSON_REAL:
        fmt_real(json_real_value(j), num, sizeof(num));
        pl_sbuf_puts(b, num);
        break;
    case JSON_TRUE:
        pl_sbuf_puts(b, "true");
        break;
    case JSON_FALSE:
        pl_sbuf_puts(b, "false");
        break;
    case JSON_NULL:
        pl_sbuf_puts(b, "null");
        break;
    }
}

char *pl_report_dumps(const json_t *report)
{
    pl_sbuf_t b = {0};

    if (!report)
        return NULL;
    sb_json(&b, report);
    if (b.oom) {
        free(b.buf);
        return NULL;
    }
    return b.buf;
}

/* ---- tables ---- */

#define TABLE_COLS_MAX 12
#define CELL_MAX 48

/* An amount with 2 decimals, rounded half away from zero. */
static void cell_amount(const json_t *j, char *cell)
{
    char text[80];
    __int128 v, cents;

    if (amount_text(j, text, sizeof(text)) || decimal_parse(text, &v)) {
        snprintf(cell, CELL_MAX, "-");
        return;
    }
    /* v has WEIGHTED_DIGITS places: to cents */
    cents = v / ((__int128)PROB_ONE * 100);
    if ((v < 0 ? -v : v) % ((__int128)PROB_ONE * 100) * 2 >=
        (__int128)PROB_ONE * 100)
        cents += v < 0 ? -1 : 1;
    fmt_fixed(cents, 2, text, sizeof(text));
    /* always 2 places: "12" -> "12.00", "12.5" -> "12.50" */
    {
        const char *dot = strchr(text, '.');
        size_t places = dot ? strlen(dot + 1) : 0, len = strlen(text);
        if (len + 3 >= CELL_MAX) {
            snprintf(cell, CELL_MAX, "-");
            return;
        }
        memcpy(cell, text, len);
        if (!dot)
            cell[len++] = '.';
        while (places++ < 2)
            cell[len++] = '0';
        cell[len] = '\0';
    }
}

static void cell_int(const json_t *j, char *cell)
{
    if (json_is_integer(j))
        snprintf(cell, CELL_MAX, "%" JSON_INTEGER_FORMAT,
                 json_integer_value(j));
    else
        snprintf(cell, CELL_MAX, "-");
}

/* Seconds as the two largest units: "3d4h", "5h12m", "45s". */
static void cell_duration(const json_t *j, char *cell)
{
    static const struct {
        char unit;
        int64_t s;
    } units[] = {{'d', 86400}, {'h', 3600}, {'m', 60}, {'s', 1}};
    int64_t v;
    size_t len = 0;
    int shown = 0;

    if (!json_is_integer(j)) {
        snprintf(cell, CELL_MAX, "-");
        return;
    }
    v = (int64_t)json_integer_value(j);
    if (v <= 0) {
        snprintf(cell, CELL_MAX, "0s");
        return;
    }
    cell[0] = '\0';
    for (size_t u = 0; u < sizeof(units) / sizeof(units[0]) && shown < 2;
         u++) {
        int64_t q = v / units[u].s;
        if (!q) {
            if (shown)
                shown++; /* "1d" + "0h": stop at the next unit */
            continue;
        }
        len += (size_t)snprintf(cell + len, CELL_MAX - len, "%" PRId64 "%c",
                                q, units[u].unit);
        v -= q * units[u].s;
        shown++;
    }
}

static void cell_percent(const json_t *j, char *cell)
{
    if (json_is_number(j))
        snprintf(cell, CELL_MAX, "%.1f%%", json_number_value(j) * 100.0);
    else
        snprintf(cell, CELL_MAX, "-");
}

static void cell_text(const json_t *j, char *cell)
{
    snprintf(cell, CELL_MAX, "%s",
             json_is_string(j) ? json_string_value(j) : "-");
}

typedef enum cell_kind_e {
    C_TEXT,
    C_INT,
    C_AMOUNT,
    C_PERCENT,
    C_DURATION
} cell_kind_t;

typedef struct col_s {
    const char *head;
    const char *member;
    cell_kind_t kind;
} col_t;

static const col_t forecast_cols[] = {
    {"MONTH", "month", C_TEXT},
    {"CURRENCY", "currency", C_TEXT},
    {"OPEN", "open_count", C_INT},
    {"OPEN_AMOUNT", "open_amount", C_AMOUNT},
    {"WEIGHTED", "weighted_amount", C_AMOUNT},
    {"BEST_CASE", "best_case_amount", C_AMOUNT},
    {"COMMIT", "commit_amount", C_AMOUNT},
    {"WON", "won_count", C_INT},
    {"WON_AMOUNT", "won_amount", C_AMOUNT},
    {NULL, NULL, C_TEXT},
};

static const col_t stages_cols[] = {
    {"STAGE", "stage", C_TEXT},
    {"OPEN", "open_count", C_INT},
    {"ENTERED", "entered", C_INT},
    {"ADVANCED", "advanced", C_INT},
    {"BACK", "moved_back", C_INT},
    {"LOST", "lost", C_INT},
    {"WON", "won", C_INT},
    {"CONVERSION", "conversion", C_PERCENT},
    {"P50", "p50_seconds", C_DURATION},
    {"P90", "p90_seconds", C_DURATION},
    {"STALE_AFTER", "stale_after_seconds", C_DURATION},
    {NULL, NULL, C_TEXT},
};

static const col_t sources_cols[] = {
    {"SOURCE", "source", C_TEXT},
    {"LEADS", "leads", C_INT},
    {"MQL", "mql", C_INT},
    {"SAL", "sal", C_INT},
    {"SQL", "sql", C_INT},
    {"DISQUALIFIED", "disqualified", C_INT},
    {"WON", "won", C_INT},
    {NULL, NULL, C_TEXT},
};

static void table_print(pl_sbuf_t *b, const col_t *cols, const json_t *rows)
{
    size_t nrows = json_array_size(rows);
    int ncols = 0, w[TABLE_COLS_MAX];
    char(*cells)[TABLE_COLS_MAX][CELL_MAX];

    while (cols[ncols].head)
        ncols++;
    if (!(cells = calloc(nrows ? nrows : 1, sizeof(*cells)))) {
        b->oom = true;
        return;
    }
    for (int c = 0; c < ncols; c++)
        w[c] = (int)strlen(cols[c].head);
    for (size_t i = 0; i < nrows; i++) {
        const json_t *row = json_array_get(rows, i);
        for (int c = 0; c < ncols; c++) {
            const json_t *v = json_object_get(row, cols[c].member);
            char *cell = cells[i][c];
            switch (cols[c].kind) {
            case C_TEXT:
                cell_text(v, cell);
                break;
            case C_INT:
                cell_int(v, cell);
                break;
            case C_AMOUNT:
                cell_amount(v, cell);
                break;
            case C_PERCENT:
                cell_percent(v, cell);
                break;
            case C_DURATION:
                cell_duration(v, cell);
                break;
            }
            if ((int)strlen(cell) > w[c])
                w[c] = (int)strlen(cell);
        }
    }
    for (size_t i = 0; i <= nrows; i++) {
        for (int c = 0; c < ncols; c++) {
            const char *s = i ? cells[i - 1][c] : cols[c].head;
            bool left = cols[c].kind == C_TEXT;
            bool last = c == ncols - 1;
            if (c)
                pl_sbuf_puts(b, "  ");
            if (left && last)
                pl_sbuf_puts(b, s); /* no trailing blanks */
            else
                pl_sbuf_printf(b, left ? "%-*s" : "%*s", w[c], s);
        }
        pl_sbuf_puts(b, "\n");
    }
    free(cells);
}

char *pl_report_table(const json_t *report)
{
    pl_sbuf_t b = {0};
    const json_t *rows;

    if ((rows = json_object_get(report, "months")) && json_is_array(rows)) {
        table_print(&b, forecast_cols, rows);
    } else if ((rows = json_object_get(report, "stages")) &&
               json_is_array(rows)) {
        const json_t *bn = json_object_get(report, "bottleneck");
        table_print(&b, stages_cols, rows);
        pl_sbuf_puts(&b, "bottleneck: ");
        pl_sbuf_puts(&b, json_is_string(bn) ? json_string_value(bn) : "none");
        pl_sbuf_puts(&b, "\n");
    } else if ((rows = json_object_get(report, "sources")) &&
               json_is_array(rows)) {
        table_print(&b, sources_cols, rows);
    } else {
        return NULL;
    }
    if (b.oom) {
        free(b.buf);
        return NULL;
    }
    return b.buf;
}

/* ------------------------------------------------------------------------ */
/* Gauges                                                                   */

typedef struct gauges_s {
    pl_report_gauge_t *g;
    size_t n, cap;
    bool oom;
} gauges_t;

/* One label value, escaped for the Prometheus text format. */
static void sb_label(pl_sbuf_t *b, const char *name, const char *value)
{
    if (b->len)
        pl_sbuf_puts(b, ",");
    pl_sbuf_puts(b, name);
    pl_sbuf_puts(b, "=\"");
    for (const char *p = value; *p; p++) {
        if (*p == '\\' || *p == '"')
            pl_sbuf_put(b, "\\", 1), pl_sbuf_put(b, p, 1);
        else if (*p == '\n')
            pl_sbuf_puts(b, "\\n");
        else
            pl_sbuf_put(b, p, 1);
    }
    pl_sbuf_puts(b, "\"");
}

/* Add name{labels} = value; labels: NULL-terminated name, value pairs. */
static void gauge_add(gauges_t *gs, const char *name,
                      const char *const *labels, double value)
{
    pl_sbuf_t b = {0};

    if (gs->oom)
        return;
    for (size_t i = 0; labels[i]; i += 2)
        sb_label(&b, labels[i], labels[i + 1]);
    if (!b.buf && !b.oom)
        b.buf = strdup("");
    if (b.oom || !b.buf)
        goto oom;
    if (gs->n == gs->cap) {
        size_t cap = gs->cap ? gs->cap * 2 : 32;
        pl_report_gauge_t *ng = realloc(gs->g, cap * sizeof(*ng));
        if (!ng)
            goto oom;
        gs->g = ng;
        gs->cap = cap;
    }
    gs->g[gs->n++] = (pl_report_gauge_t){name, b.buf, value};
    return;
oom:
    free(b.buf);
    gs->oom = true;
}

static double amount_units(const json_t *j)
{
    char text[80];

    if (amount_text(j, text, sizeof(text)))
        return 0;
    return strtod(text, NULL);
}

int pl_report_gauges(const pl_rules_t *r, const pl_fields_t *figures,
                     pl_report_gauge_t **out, size_t *n)
{
    static const struct {
        const char *name, *member;
        bool amount;
    } fc[] = {
        {"pipeline_forecast_open_deals", "open_count", false},
        {"pipeline_forecast_open_amount", "open_amount", true},
        {"pipeline_forecast_weighted_amount", "weighted_amount", true},
        {"pipeline_forecast_best_case_amount", "best_case_amount", true},
        {"pipeline_forecast_commit_amount", "commit_amount", true},
        {"pipeline_forecast_won_deals", "won_count", false},
        {"pipeline_forecast_won_amount", "won_amount", true},
    };
    gauges_t gs = {0};
    json_t *f = pl_report_forecast(r, figures, NULL);
    json_t *s = pl_report_stages(r, figures, NULL);
    json_t *l = pl_report_sources(figures);
    const json_t *rows, *row;
    size_t i;

    *out = NULL;
    *n = 0;
    if (!f || !s || !l) {
        gs.oom = true;
        goto out;
    }
    rows = json_object_get(s, "stages");
    json_array_foreach(rows, i, row) {
        const char *lab[] = {
            "stage", json_string_value(json_object_get(row, "stage")), NULL};
        const json_t *p50 = json_object_get(row, "p50_seconds");
        const json_t *p90 = json_object_get(row, "p90_seconds");
        gauge_add(&gs, "pipeline_stage_open_deals", lab,
                  (double)json_integer_value(json_object_get(row,
                                                             "open_count")));
        if (json_is_integer(p50))
            gauge_add(&gs, "pipeline_stage_p50_seconds", lab,
                      (double)json_integer_value(p50));
        if (json_is_integer(p90))
            gauge_add(&gs, "pipeline_stage_p90_seconds", lab,
                      (double)json_integer_value(p90));
    }
    rows = json_object_get(f, "months");
    json_array_foreach(rows, i, row) {
        const char *lab[] = {
            "month", json_string_value(json_object_get(row, "month")),
            "currency", json_string_value(json_object_get(row, "currency")),
            NULL};
        for (size_t k = 0; k < sizeof(fc) / sizeof(fc[0]); k++) {
            const json_t *v = json_object_get(row, fc[k].member);
            gauge_add(&gs, fc[k].name, lab,
                      fc[k].amount ? amount_units(v)
                                   : (double)json_integer_value(v));
        }
    }
    rows = json_object_get(l, "sources");
    json_array_foreach(rows, i, row) {
        const char *lab[] = {
            "source", json_string_value(json_object_get(row, "source")),
            NULL};
        gauge_add(&gs, "pipeline_source_leads", lab,
                  (double)json_integer_value(json_object_get(row, "leads")));
        gauge_add(&gs, "pipeline_source_won", lab,
                  (double)json_integer_value(json_object_get(row, "won")));
    }
out:
    json_decref(f);
    json_decref(s);
    json_decref(l);
    if (gs.oom) {
        pl_report_gauges_free(gs.g, gs.n);
        return -1;
    }
    *out = gs.g;
    *n = gs.n;
    return 0;
}

void pl_report_gauges_free(pl_report_gauge_t *g, size_t n)
{
    for (size_t i = 0; g && i < n; i++)
        free(g[i].labels);
    free(g);
}

/* ------------------------------------------------------------------------ */
/* Summing deltas                                                           */

struct pl_report_sum_s {
    strmap_t m;
};

pl_report_sum_t *pl_report_sum_new(void)
{
    return calloc(1, sizeof(pl_report_sum_t));
}

void pl_report_sum_destroy(pl_report_sum_t *s)
{
    if (!s)
        return;
    strmap_clear(&s->m);
    free(s);
}

int pl_report_sum_add(pl_report_sum_t *s, const char *field, int64_t inc)
{
    int64_t *v = strmap_get(&s->m, field, 0, NULL);

    if (!v)
        return -1;
    *v += inc;
    return 0;
}

int pl_report_sum_add_delta(pl_report_sum_t *s, const char *text, size_t len)
{
    const char *p = text, *end = text + len;
    char small[512];

    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end, *tab;
        size_t flen;
        char *field, *num_end, num[24];
        long long inc;
        int r;

        if (le == p) { /* a blank line */
            p = le + 1;
            continue;
        }
        tab = memchr(p, '\t', (size_t)(le - p));
        if (!tab || tab == p || (size_t)(le - tab - 1) >= sizeof(num) ||
            le == tab + 1)
            return -1;
        memcpy(num, tab + 1, (size_t)(le - tab - 1));
        num[le - tab - 1] = '\0';
        inc = strtoll(num, &num_end, 10);
        if (*num_end)
            return -1;
        flen = (size_t)(tab - p);
        field = flen < sizeof(small) ? small : malloc(flen + 1);
        if (!field)
            return -1;
        memcpy(field, p, flen);
        field[flen] = '\0';
        r = pl_report_sum_add(s, field, (int64_t)inc);
        if (field != small)
            free(field);
        if (r)
            return -1;
        p = le + 1;
    }
    return 0;
}

int64_t pl_report_sum_take(pl_report_sum_t *s, const char *field)
{
    int64_t *v = strmap_find(&s->m, field), r;

    if (!v)
        return 0;
    r = *v;
    *v = 0;
    return r;
}

int pl_report_sum_foreach(const pl_report_sum_t *s,
                          int (*fn)(void *opaque, const char *field,
                                    int64_t value),
                          void *opaque)
{
    for (size_t i = 0; i < s->m.cap; i++) {
        int r;
        if (!s->m.keys[i] || !s->m.vals[i])
            continue;
        if ((r = fn(opaque, s->m.keys[i], s->m.vals[i])))
            return r;
    }
    return 0;
}

size_t pl_report_sum_count(const pl_report_sum_t *s)
{
    size_t n = 0;

    for (size_t i = 0; i < s->m.cap; i++)
        n += s->m.keys[i] && s->m.vals[i];
    return n;
}

int pl_report_sum_fields(const pl_report_sum_t *s, pl_fields_t *out)
{
    size_t need = out->count + pl_report_sum_count(s);

    if (pl_fields_reserve(out, need))
        return -1;
    for (size_t i = 0; i < s->m.cap; i++) {
        char num[24];
        if (!s->m.keys[i] || !s->m.vals[i])
            continue;
        snprintf(num, sizeof(num), "%" PRId64, s->m.vals[i]);
        if (pl_fields_append(out, s->m.keys[i], num))
            return -1;
    }
    return 0;
}
