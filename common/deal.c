/*
 * deal.c - deal state <-> Redis hash fields, history entries and derived
 * events (see deal.h).  Field values are text a person can read with
 * redis-cli: amounts as decimals, dates as YYYY-MM-DD, times as epoch ms,
 * activities as a comma list.
 */
#include "deal.h"

#include "codec.h"
#include "sbuf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The activities seen, as a comma list ("call,demo"). */
static void activities_text(uint32_t bits, char *acts, size_t size)
{
    size_t n = 0;
    acts[0] = '\0';
    for (int a = 0; a < PL_ACT__COUNT; a++)
        if (bits & (1u << a))
            n += (size_t)snprintf(acts + n, size - n, "%s%s", n ? "," : "",
                                  pl_activity_name((pl_activity_t)a));
}

static bool str_changed(const char *was, const char *now)
{
    return now && (!was || strcmp(was, now));
}

int pl_deal_to_fields_diff(const pl_deal_state_t *prev,
                           const pl_deal_state_t *st, const char *rev,
                           pl_fields_t *out)
{
    char buf[64];

    if (!prev || !prev->exists)
        return pl_deal_to_fields(st, rev, out);
#define STR(f)                                                               \
    if (str_changed(prev->f, st->f) && pl_fields_set(out, #f, st->f))        \
        return -1
#define INT(f)                                                               \
    if (prev->f != st->f && pl_fields_set_int(out, #f, st->f))               \
        return -1
    STR(deal_id);
    STR(lead_id);
    STR(name);
    STR(owner);
    STR(currency);
    STR(stage);
    INT(created_at);
    INT(stage_entered_at);
    INT(last_event_at);
#undef STR
#undef INT
    if (pl_fields_set(out, "rev", rev))
        return -1;
    if (st->has_amount && (!prev->has_amount || prev->amount != st->amount)) {
        pl_amount_format(st->amount, buf, sizeof(buf));
        if (pl_fields_set(out, "amount", buf))
            return -1;
    }
    if (st->has_close_date &&
        (!prev->has_close_date ||
         prev->expected_close_date != st->expected_close_date)) {
        pl_date_format(st->expected_close_date, buf, sizeof(buf));
        if (pl_fields_set(out, "expected_close_date", buf))
            return -1;
    }
    if (prev->activities != st->activities) {
        char acts[256];
        activities_text(st->activities, acts, sizeof(acts));
        return pl_fields_set(out, "activities", acts);
    }
    return 0;
}

int pl_deal_to_fields(const pl_deal_state_t *st, const char *rev,
                      pl_fields_t *out)
{
    char buf[64], acts[256];

    if (pl_fields_set_opt(out, "deal_id", st->deal_id) ||
        pl_fields_set_opt(out, "lead_id", st->lead_id) ||
        pl_fields_set_opt(out, "name", st->name) || pl_fields_set_opt(out, "owner", st->owner) ||
        pl_fields_set_opt(out, "currency", st->currency) ||
        pl_fields_set_opt(out, "stage", st->stage) ||
        pl_fields_set_int(out, "created_at", st->created_at) ||
        pl_fields_set_int(out, "stage_entered_at", st->stage_entered_at) ||
        pl_fields_set_int(out, "last_event_at", st->last_event_at) ||
        pl_fields_set(out, "rev", rev))
        return -1;
    if (st->has_amount) {
        pl_amount_format(st->amount, buf, sizeof(buf));
        if (pl_fields_set(out, "amount", buf))
            return -1;
    }
    if (st->has_close_date) {
        pl_date_format(st->expected_close_date, buf, sizeof(buf));
        if (pl_fields_set(out, "expected_close_date", buf))
            return -1;
    }
    activities_text(st->activities, acts, sizeof(acts));
    return pl_fields_set(out, "activities", acts);
}

int pl_deal_from_fields(const pl_fields_t *f, pl_deal_state_t *st,
                        char *rev)
{
    const char *v;

    pl_deal_state_clear(st);
    v = pl_fields_get(f, "rev");
    snprintf(rev, PL_REV_LEN + 1, "%s", v ? v : "");
    if (!pl_fields_get(f, "stage"))
        return 0;
    st->exists = true;
    if (pl_str_set(&st->deal_id, pl_fields_get(f, "deal_id")) ||
        pl_str_set(&st->lead_id, pl_fields_get(f, "lead_id")) ||
        pl_str_set(&st->name, pl_fields_get(f, "name")) ||
        pl_str_set(&st->owner, pl_fields_get(f, "owner")) ||
        pl_str_set(&st->currency, pl_fields_get(f, "currency")) ||
        pl_str_set(&st->stage, pl_fields_get(f, "stage")))
        return -1;
    if (pl_fields_get_int(f, "created_at", &st->created_at, NULL) ||
        pl_fields_get_int(f, "stage_entered_at", &st->stage_entered_at, NULL) ||
        pl_fields_get_int(f, "last_event_at", &st->last_event_at, NULL))
        return -1;
    if ((v = pl_fields_get(f, "amount"))) {
        if (pl_amount_parse(v, &st->amount))
            return -1;
        st->has_amount = true;
    }
    if ((v = pl_fields_get(f, "expected_close_date"))) {
        if (pl_date_parse(v, &st->expected_close_date))
            return -1;
        st->has_close_date = true;
    }
    if ((v = pl_fields_get(f, "activities"))) {
        while (*v) {
            const char *c = strchr(v, ',');
            size_t n = c ? (size_t)(c - v) : strlen(v);
            char name[32];
            int a;
            snprintf(name, sizeof(name), "%.*s", (int)n, v);
            if ((a = pl_activity_from_name(name)) >= 0)
                st->activities |= 1u << a;
            v += n + (c ? 1 : 0);
        }
    }
    return 0;
}

/* ,"key":"value" (the first without the comma) */
static void json_kv(pl_sbuf_t *w, const char *k, const char *v)
{
    if (w->len > 1)
        pl_sbuf_put(w, ",", 1);
    pl_sbuf_json_string(w, k);
    pl_sbuf_put(w, ":", 1);
    pl_sbuf_json_string(w, v);
}

/* Written straight into a buffer (once per stage change: no jansson tree),
 * escaped as json_dumps did it, so the text is the same as before. */
char *pl_deal_history_entry(const pl_deal_outcome_t *out,
                            const pl_event_t *ev,
                            const pl_deal_state_t *next)
{
    char at[40], num[32];
    pl_sbuf_t w = {0};

    if (!ev->event_id)
        return NULL;
    pl_time_format_rfc3339(ev->occurred_at, at, sizeof(at));
    pl_sbuf_put(&w, "{", 1);
    json_kv(&w, "from", out->from_stage);
    json_kv(&w, "to", out->to_stage);
    json_kv(&w, "at", at);
    json_kv(&w, "event_id", ev->event_id);
    if (next) {
        if (next->owner)
            json_kv(&w, "owner", next->owner);
        snprintf(num, sizeof(num), ",\"seconds\":%lld",
                 (long long)out->seconds_in_previous_stage);
        pl_sbuf_put(&w, num, strlen(num));
        if (next->has_amount) {
            pl_amount_format(next->amount, num, sizeof(num));
            json_kv(&w, "amount", num);
        }
        if (next->currency)
            json_kv(&w, "currency", next->currency);
    }
    pl_sbuf_put(&w, "}", 1);
    if (w.oom) {
        free(w.buf);
        return NULL;
    }
    return w.buf;
}

int pl_deal_derived(const pl_rules_t *r, const pl_event_t *in,
                    const pl_deal_state_t *next,
                    const pl_deal_outcome_t *out, pl_event_t *d)
{
    char id[PL_EVENT_ID_MAX + 1];

    if (out->verdict == PL_DEAL_APPLIED && !out->stage_changed)
        return 0; /* nothing to publish */
    d->type = out->verdict == PL_DEAL_APPLIED ? PL_EV_DEAL_STAGE_CHANGED
                                              : PL_EV_DEAL_TRANSITION_REJECTED;
    pl_event_derive_id(d->type, in->event_id, id);
    d->occurred_at = in->occurred_at;
    d->present |= PL_F_OCCURRED_AT;
    if (pl_str_set(&d->event_id, id) ||
        pl_str_set(&d->deal_id, in->deal_id) ||
        pl_str_set(&d->caused_by, in->event_id) ||
        pl_str_set(&d->from_stage, out->from_stage) ||
        pl_str_set(&d->to_stage, out->to_stage))
        return -1;
    if (d->type == PL_EV_DEAL_TRANSITION_REJECTED)
        return pl_str_set(&d->reason_code, out->reason_code) ||
                       pl_str_set(&d->message, out->message)
                   ? -1
                   : 0;
    if (pl_str_set(&d->owner, next->owner) ||
        pl_str_set(&d->currency, next->currency))
        return -1;
    if (next->has_amount) {
        d->amount = next->amount;
        d->present |= PL_F_AMOUNT;
    }
    d->probability = pl_rules_stage_probability(
        r, pl_rules_stage_index(r, out->to_stage));
    d->seconds_in_previous_stage = out->seconds_in_previous_stage;
    d->present |= PL_F_PROBABILITY | PL_F_SECONDS_IN_PREVIOUS_STAGE;
    return 0;
}
