/*
 * analytics.c - the deltas of the pipeline analytics (see analytics.h for
 * the design, the field layout and why it is exact).
 */
#include "analytics.h"

#include "codec.h"
#include "sbuf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- histogram ---- */

int pl_hist_bucket(int64_t seconds)
{
    int k;
    if (seconds <= 0)
        return 0;
    /* the k with 1.2^(k-1) <= s < 1.2^k; log() may land a hair off at a
     * bound, so settle it with the bounds themselves */
    k = (int)floor(log((double)seconds) / log(PL_HIST_BASE)) + 1;
    if (k < 1)
        k = 1;
    while (k > 1 && pow(PL_HIST_BASE, k - 1) > (double)seconds)
        k--;
    while (pow(PL_HIST_BASE, k) <= (double)seconds)
        k++;
    return k < PL_HIST_BUCKETS ? k : PL_HIST_BUCKETS - 1;
}

double pl_hist_value(int bucket)
{
    double lo, hi, first, last;
    if (bucket <= 0)
        return 0;
    lo = pow(PL_HIST_BASE, bucket - 1);
    hi = pow(PL_HIST_BASE, bucket);
    /* a bucket holding a single integer stands for exactly it */
    first = ceil(lo);
    last = ceil(hi) - 1;
    if (first == last)
        return first;
    return sqrt(lo * hi);
}

double pl_hist_percentile(const int64_t counts[PL_HIST_BUCKETS], double p)
{
    int64_t total = 0, need, seen = 0;
    for (int k = 0; k < PL_HIST_BUCKETS; k++)
        total += counts[k];
    if (total <= 0)
        return -1;
    need = (int64_t)ceil(p * (double)total);
    if (need < 1)
        need = 1;
    for (int k = 0; k < PL_HIST_BUCKETS; k++) {
        seen += counts[k];
        if (seen >= need)
            return pl_hist_value(k);
    }
    return pl_hist_value(PL_HIST_BUCKETS - 1);
}

/* ---- fields ---- */

/* The bytes a field part escapes: '%', '|', controls and space (the NUL
 * ends the part). */
#define ESC_CTL                                                              \
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1
static const unsigned char field_esc[256] = {
    ESC_CTL, ESC_CTL, [' '] = 1, ['%'] = 1, ['|'] = 1};
#undef ESC_CTL

size_t pl_field_escape(const char *in, char *out, size_t out_size)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *p = (const unsigned char *)(in ? in : "");
    size_t o = 0;
    /* a byte is written while o + 4 <= out_size */
    while (*p && o + 4 <= out_size) {
        if (field_esc[*p]) {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        } else {
            out[o++] = (char)*p;
        }
        p++;
    }
    if (!out_size)
        return 0;
    o = o < out_size ? o : out_size - 1;
    out[o] = '\0';
    return o;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

void pl_field_unescape(char *s)
{
    char *w = s;
    for (char *r = s; *r; r++) {
        int h, l;
        if (*r == '%' && (h = hexval(r[1])) >= 0 && (l = hexval(r[2])) >= 0) {
            *w++ = (char)(h * 16 + l);
            r += 2;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
}

void pl_delta_free(pl_delta_t *d)
{
    free(d->buf);
    memset(d, 0, sizeof(*d));
}

static int reserve(pl_delta_t *d, size_t more)
{
    if (d->len + more + 1 <= d->cap)
        return 0;
    size_t cap = d->cap ? d->cap : 256;
    while (cap < d->len + more + 1)
        cap *= 2;
    char *b = realloc(d->buf, cap);
    if (!b)
        return -1;
    d->buf = b;
    d->cap = cap;
    return 0;
}

int pl_delta_add(pl_delta_t *d, int64_t inc, const char *const *parts)
{
    if (inc == 0)
        return 0;
    for (size_t i = 0; parts[i]; i++) {
        size_t n = strlen(parts[i]);
        if (reserve(d, 3 * n + 2))
            return -1;
        if (i)
            d->buf[d->len++] = '|';
        d->len += pl_field_escape(parts[i], d->buf + d->len,
                                  d->cap - d->len);
    }
    if (reserve(d, 24))
        return -1;
    {
        char num[24], *e = num + sizeof(num), *p = pl_fmt_int(e, inc);
        d->buf[d->len++] = '\t';
        memcpy(d->buf + d->len, p, (size_t)(e - p));
        d->len += (size_t)(e - p);
        d->buf[d->len++] = '\n';
        d->buf[d->len] = '\0';
    }
    return 0;
}

/* ---- months ---- */

void pl_month_of_ms(int64_t ms, char out[8])
{
    /* the date's first 7 characters (formatted by hand: a gmtime_r and an
     * snprintf were a few thousand instructions, several times an event);
     * gmtime_r for the years a date cannot have */
    int64_t day = ms >= 0 ? ms / 86400000 : -((-ms + 86399999) / 86400000);
    char date[16];
    if (day >= INT32_MIN && day <= INT32_MAX &&
        !pl_date_format((int32_t)day, date, sizeof(date))) {
        memcpy(out, date, 7);
        out[7] = '\0';
        return;
    }
    time_t t = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
    struct tm tm;
    unsigned y, m;
    gmtime_r(&t, &tm);
    y = (unsigned)(tm.tm_year + 1900) % 10000u;
    m = (unsigned)(tm.tm_mon + 1) % 100u;
    snprintf(out, 8, "%04u-%02u", y, m);
}

void pl_month_of_day(int32_t day, char out[8])
{
    pl_month_of_ms((int64_t)day * 86400000LL, out);
}

/* ---- deals ---- */

static const char *nz(const char *s)
{
    return s ? s : "";
}

/* A deal counts as open while its stage exists and is not closed (won,
 * lost). */
static bool deal_open(const pl_rules_t *r, const pl_deal_state_t *st,
                      int *stage)
{
    if (!st || !st->exists || !st->stage)
        return false;
    *stage = pl_rules_stage_index(r, st->stage);
    return *stage >= 0 && !pl_rules_stage_is_closed(r, *stage);
}

/* The month of a deal's expected close date, the forecast's column. */
static void close_month(const pl_deal_state_t *st, char month[8])
{
    if (st->has_close_date)
        pl_month_of_day(st->expected_close_date, month);
    else
        memcpy(month, "none", 5);
}

static int64_t amount_of(const pl_deal_state_t *st)
{
    return st->has_amount ? st->amount : 0;
}

/* The forecast lines of an open deal: its count (with_count) and its
 * amount times sign, in its owner/month/currency/stage cell. */
static int forecast_lines(const pl_deal_state_t *st, const char *month,
                          int sign, bool with_count, int64_t amount,
                          pl_delta_t *d)
{
    const char *fn[] = {"f", nz(st->owner), month, nz(st->currency),
                        st->stage, "n", NULL};
    const char *fa[] = {"f", nz(st->owner), month, nz(st->currency),
                        st->stage, "a", NULL};
    return (with_count && pl_delta_add(d, sign, fn)) ||
                   pl_delta_add(d, sign * amount, fa)
               ? -1
               : 0;
}

static int open_line(const pl_deal_state_t *st, int sign, pl_delta_t *d)
{
    const char *so[] = {"s", nz(st->owner), st->stage, "open", NULL};
    return pl_delta_add(d, sign, so);
}

int pl_analytics_deal_contrib(const pl_rules_t *r, const pl_deal_state_t *st,
                              int sign, pl_delta_t *d)
{
    char month[8];
    int stage;

    if (!deal_open(r, st, &stage))
        return 0;
    close_month(st, month);
    return forecast_lines(st, month, sign, true, amount_of(st), d) ||
                   open_line(st, sign, d)
               ? -1
               : 0;
}

int pl_analytics_stage_move(const pl_rules_t *r, const char *owner,
                            const char *from, const char *to, int64_t seconds,
                            int64_t at_ms, int64_t amount,
                            const char *currency, const char *lead_id,
                            pl_delta_t *d)
{
    int fi = from && *from ? pl_rules_stage_index(r, from) : -1;
    int ti = pl_rules_stage_index(r, to);
    bool to_won = ti >= 0 && pl_rules_stage_is_terminal(r, ti);
    bool to_lost = ti >= 0 && !to_won && pl_rules_stage_is_closed(r, ti);
    const char *entered[] = {"s", nz(owner), to, "entered", NULL};

    owner = nz(owner);
    if (ti >= 0 && !pl_rules_stage_is_closed(r, ti) &&
        pl_delta_add(d, 1, entered))
        return -1;
    if (fi >= 0 && !pl_rules_stage_is_closed(r, fi)) {
        const char *how = to_won    ? "won"
                          : to_lost ? "lost"
                          : ti == fi + 1 ? "advanced"
                          : ti == fi - 1 ? "moved_back"
                                         : NULL;
        char num[24], *e = num + sizeof(num) - 1;
        *e = '\0';
        const char *bucket = pl_fmt_int(e, pl_hist_bucket(seconds > 0 ? seconds
                                                                     : 0));
        const char *out[] = {"s", owner, from, how, NULL};
        const char *h[] = {"h", owner, from, bucket, NULL};
        if ((how && pl_delta_add(d, 1, out)) || pl_delta_add(d, 1, h))
            return -1;
    }
    if (to_won) {
        char month[8];
        pl_month_of_ms(at_ms, month);
        const char *wn[] = {"w", owner, month, nz(currency), "n", NULL};
        const char *wa[] = {"w", owner, month, nz(currency), "a", NULL};
        const char *lw[] = {"L", nz(lead_id), NULL};
        if (pl_delta_add(d, 1, wn) || pl_delta_add(d, amount, wa) ||
            (lead_id && *lead_id && pl_delta_add(d, 1, lw)))
            return -1;
    }
    return 0;
}

static bool same_str(const char *a, const char *b)
{
    return a == b || (a && b && !strcmp(a, b));
}

/* True when cur and next contribute the same to the figures (an activity,
 * a rename...): their contributions would cancel out, line by line. */
static bool same_contrib(const pl_rules_t *r, const pl_deal_state_t *cur,
                         const pl_deal_state_t *next)
{
    int sc = -1, sn = -1;
    bool oc = deal_open(r, cur, &sc), on = deal_open(r, next, &sn);
    if (!oc && !on)
        return true;
    return oc == on && sc == sn && same_str(cur->owner, next->owner) &&
           same_str(cur->currency, next->currency) &&
           cur->has_close_date == next->has_close_date &&
           (!cur->has_close_date ||
            cur->expected_close_date == next->expected_close_date) &&
           cur->has_amount == next->has_amount &&
           (!cur->has_amount || cur->amount == next->amount);
}

/* next's contribution minus cur's, without the lines that would cancel
 * out: a deal open before and after in the same forecast cell (an update
 * of its amount) writes one line, its amount's change, not six; in the
 * same owner and stage, its open count does not move.  The figures are
 * those of pl_analytics_deal_contrib(cur, -1) and (next, +1), summed. */
static int contrib_change(const pl_rules_t *r, const pl_deal_state_t *cur,
                          const pl_deal_state_t *next, pl_delta_t *d)
{
    char mc[8], mn[8];
    int sc, sn;

    if (!deal_open(r, cur, &sc) || !deal_open(r, next, &sn))
        return pl_analytics_deal_contrib(r, cur, -1, d) ||
                       pl_analytics_deal_contrib(r, next, +1, d)
                   ? -1
                   : 0;
    close_month(cur, mc);
    close_month(next, mn);
    bool same_owner = !strcmp(nz(cur->owner), nz(next->owner));
    if (sc == sn && same_owner && !strcmp(mc, mn) &&
        !strcmp(nz(cur->currency), nz(next->currency))) {
        if (forecast_lines(next, mn, 1, false,
                           amount_of(next) - amount_of(cur), d))
            return -1;
    } else if (forecast_lines(cur, mc, -1, true, amount_of(cur), d) ||
               forecast_lines(next, mn, 1, true, amount_of(next), d)) {
        return -1;
    }
    if (sc == sn && same_owner)
        return 0;
    return open_line(cur, -1, d) || open_line(next, 1, d) ? -1 : 0;
}

int pl_analytics_deal_delta(const pl_rules_t *r, const pl_deal_state_t *cur,
                            const pl_deal_state_t *next,
                            const pl_deal_outcome_t *oc, const pl_event_t *ev,
                            pl_delta_t *d)
{
    if (oc->verdict != PL_DEAL_APPLIED)
        return 0;
    if (!same_contrib(r, cur, next) && contrib_change(r, cur, next, d))
        return -1;
    if (!oc->stage_changed)
        return 0;
    /* a win counts in the month of the occurred_at of the event that made
     * it (CONTRACT), which is also the history entry's "at" */
    return pl_analytics_stage_move(
        r, next->owner, cur && cur->exists ? oc->from_stage : "",
        oc->to_stage, oc->seconds_in_previous_stage, ev->occurred_at,
        next->has_amount ? next->amount : 0, next->currency, next->lead_id,
        d);
}

/* ---- leads ---- */

unsigned pl_reached_bit(const char *status)
{
    if (!status)
        return 0;
    if (!strcmp(status, "mql"))
        return PL_REACHED_MQL;
    if (!strcmp(status, "sal"))
        return PL_REACHED_SAL;
    if (!strcmp(status, "sql"))
        return PL_REACHED_SQL;
    if (!strcmp(status, "disqualified"))
        return PL_REACHED_DISQUALIFIED;
    return 0;
}

int pl_analytics_lead_contrib(const pl_lead_state_t *st, int sign,
                              pl_delta_t *d)
{
    static const struct {
        unsigned bit;
        const char *name;
    } cols[] = {{PL_REACHED_MQL, "mql"},
                {PL_REACHED_SAL, "sal"},
                {PL_REACHED_SQL, "sql"},
                {PL_REACHED_DISQUALIFIED, "disqualified"}};
    const char *source;
    unsigned reached;

    if (!st || !st->exists)
        return 0;
    source = st->profile.source && *st->profile.source ? st->profile.source
                                                       : "none";
    reached = st->reached | pl_reached_bit(st->status);
    const char *leads[] = {"l", source, "leads", NULL};
    if (pl_delta_add(d, sign, leads))
        return -1;
    for (size_t i = 0; i < sizeof(cols) / sizeof(*cols); i++) {
        const char *f[] = {"l", source, cols[i].name, NULL};
        if ((reached & cols[i].bit) && pl_delta_add(d, sign, f))
            return -1;
    }
    return 0;
}

int pl_analytics_lead_delta(const pl_lead_state_t *cur,
                            const pl_lead_state_t *next, pl_delta_t *d)
{
    return pl_analytics_lead_contrib(cur, -1, d) ||
                   pl_analytics_lead_contrib(next, +1, d)
               ? -1
               : 0;
}
