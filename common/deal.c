/*
 * deal.c - deal state <-> Redis hash fields, history entries and derived
 * events (see deal.h).  Field values are text a person can read with
 * redis-cli: amounts as decimals, dates as YYYY-MM-DD, times as epoch ms,
 * activities as the bits of the kinds seen (an older layout: a comma
 * list).
 */
#include "deal.h"

#include "codec.h"
#include "sbuf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* (the same pointer: a string the next state borrows from the one before,
 * unchanged) */
static bool str_changed(const char *was, const char *now)
{
    return now && (!was || (was != now && strcmp(was, now)));
}

/* The state hash's fields: the short name this version writes, and the
 * long one of the layout before it, which is still read (a hash of the
 * older layout is rewritten in the short names by its next write, which
 * removes the long ones).  The deal_id is not stored: it is the key's.
 * rev and origin keep their names (the runtime's, for every kind). */
enum {
    F_LEAD_ID, F_NAME, F_OWNER, F_CURRENCY, F_STAGE, F_CREATED_AT,
    F_STAGE_ENTERED_AT, F_LAST_EVENT_AT, F_AMOUNT, F_CLOSE_DATE,
    F_ACTIVITIES, F__COUNT
};
static const struct {
    const char *name, *old;
} FIELDS[F__COUNT] = {
    [F_LEAD_ID] = {"l", "lead_id"},
    [F_NAME] = {"n", "name"},
    [F_OWNER] = {"o", "owner"},
    [F_CURRENCY] = {"c", "currency"},
    [F_STAGE] = {"s", "stage"},
    [F_CREATED_AT] = {"ca", "created_at"},
    [F_STAGE_ENTERED_AT] = {"se", "stage_entered_at"},
    [F_LAST_EVENT_AT] = {"le", "last_event_at"},
    [F_AMOUNT] = {"a", "amount"},
    [F_CLOSE_DATE] = {"cd", "expected_close_date"},
    [F_ACTIVITIES] = {"ac", "activities"},
};
#define NAME(f) (FIELDS[f].name)

const char *pl_deal_field_long_name(const char *field)
{
    for (int i = 0; i < F__COUNT; i++)
        if (!strcmp(field, FIELDS[i].name))
            return FIELDS[i].old;
    return NULL;
}

/* The field names of the older layout (and its deal_id), which the first
 * write over such a hash removes. */
static int old_fields(pl_strlist_t *out)
{
    for (int i = 0; i < F__COUNT; i++)
        if (pl_strlist_add(out, FIELDS[i].old))
            return -1;
    return pl_strlist_add(out, "deal_id");
}

int pl_deal_to_fields_diff(const pl_deal_state_t *prev,
                           const pl_deal_state_t *st, const char *rev,
                           pl_fields_t *out, pl_strlist_t *unset)
{
    char buf[64];

    if (prev && prev->exists && prev->old_layout) /* renamed: whole */
        return (unset && old_fields(unset)) || pl_deal_to_fields(st, rev, out)
                   ? -1
                   : 0;
    if (!prev || !prev->exists)
        return pl_deal_to_fields(st, rev, out);
#define STR(f, F)                                                            \
    if (str_changed(prev->f, st->f) && pl_fields_set(out, NAME(F), st->f))   \
        return -1
#define INT(f, F)                                                            \
    if (prev->f != st->f && pl_fields_set_int(out, NAME(F), st->f))          \
        return -1
    STR(lead_id, F_LEAD_ID);
    STR(name, F_NAME);
    STR(owner, F_OWNER);
    STR(currency, F_CURRENCY);
    STR(stage, F_STAGE);
    INT(created_at, F_CREATED_AT);
    INT(stage_entered_at, F_STAGE_ENTERED_AT);
    INT(last_event_at, F_LAST_EVENT_AT);
#undef STR
#undef INT
    if (pl_fields_set(out, "rev", rev))
        return -1;
    if (st->has_amount && (!prev->has_amount || prev->amount != st->amount)) {
        pl_amount_format(st->amount, buf, sizeof(buf));
        if (pl_fields_set(out, NAME(F_AMOUNT), buf))
            return -1;
    }
    if (st->has_close_date &&
        (!prev->has_close_date ||
         prev->expected_close_date != st->expected_close_date)) {
        pl_date_format(st->expected_close_date, buf, sizeof(buf));
        if (pl_fields_set(out, NAME(F_CLOSE_DATE), buf))
            return -1;
    }
    if (prev->activities != st->activities)
        return pl_fields_set_int(out, NAME(F_ACTIVITIES), st->activities);
    return 0;
}

int pl_deal_to_fields(const pl_deal_state_t *st, const char *rev,
                      pl_fields_t *out)
{
    char buf[64];

    if (pl_fields_set_opt(out, NAME(F_LEAD_ID), st->lead_id) ||
        pl_fields_set_opt(out, NAME(F_NAME), st->name) ||
        pl_fields_set_opt(out, NAME(F_OWNER), st->owner) ||
        pl_fields_set_opt(out, NAME(F_CURRENCY), st->currency) ||
        pl_fields_set_opt(out, NAME(F_STAGE), st->stage) ||
        pl_fields_set_int(out, NAME(F_CREATED_AT), st->created_at) ||
        pl_fields_set_int(out, NAME(F_STAGE_ENTERED_AT),
                          st->stage_entered_at) ||
        pl_fields_set_int(out, NAME(F_LAST_EVENT_AT), st->last_event_at) ||
        pl_fields_set(out, "rev", rev))
        return -1;
    if (st->has_amount) {
        pl_amount_format(st->amount, buf, sizeof(buf));
        if (pl_fields_set(out, NAME(F_AMOUNT), buf))
            return -1;
    }
    if (st->has_close_date) {
        pl_date_format(st->expected_close_date, buf, sizeof(buf));
        if (pl_fields_set(out, NAME(F_CLOSE_DATE), buf))
            return -1;
    }
    return pl_fields_set_int(out, NAME(F_ACTIVITIES), st->activities);
}

/* The name field F has in f: its own, else (a hash of the older layout,
 * or one half rewritten) its old one, which sets *old. */
static const char *key_of(const pl_fields_t *f, int F, bool *old)
{
    if (pl_fields_get(f, FIELDS[F].name) ||
        !pl_fields_get(f, FIELDS[F].old))
        return FIELDS[F].name;
    *old = true;
    return FIELDS[F].old;
}

static const char *get(const pl_fields_t *f, int F, bool *old)
{
    return pl_fields_get(f, key_of(f, F, old));
}

static int get_int(const pl_fields_t *f, int F, int64_t *out, bool *old)
{
    return pl_fields_get_int(f, key_of(f, F, old), out, NULL);
}

int pl_deal_from_fields(const pl_fields_t *f, const char *id,
                        pl_deal_state_t *st, char *rev)
{
    const char *v;
    bool old = false;

    pl_deal_state_clear(st);
    v = pl_fields_get(f, "rev");
    snprintf(rev, PL_REV_LEN + 1, "%s", v ? v : "");
    if (!get(f, F_STAGE, &old))
        return 0;
    st->exists = true;
    if (!(v = pl_fields_get(f, "deal_id"))) /* an older layout kept it */
        v = id;
    else
        old = true;
    if (pl_str_set(&st->deal_id, v) ||
        pl_str_set(&st->lead_id, get(f, F_LEAD_ID, &old)) ||
        pl_str_set(&st->name, get(f, F_NAME, &old)) ||
        pl_str_set(&st->owner, get(f, F_OWNER, &old)) ||
        pl_str_set(&st->currency, get(f, F_CURRENCY, &old)) ||
        pl_str_set(&st->stage, get(f, F_STAGE, &old)))
        return -1;
    if (get_int(f, F_CREATED_AT, &st->created_at, &old) ||
        get_int(f, F_STAGE_ENTERED_AT, &st->stage_entered_at, &old) ||
        get_int(f, F_LAST_EVENT_AT, &st->last_event_at, &old))
        return -1;
    if ((v = get(f, F_AMOUNT, &old))) {
        if (pl_amount_parse(v, &st->amount))
            return -1;
        st->has_amount = true;
    }
    if ((v = get(f, F_CLOSE_DATE, &old))) {
        if (pl_date_parse(v, &st->expected_close_date))
            return -1;
        st->has_close_date = true;
    }
    if (!strcmp(key_of(f, F_ACTIVITIES, &old), NAME(F_ACTIVITIES))) {
        int64_t bits = 0; /* bit 1 << pl_activity_t per kind seen */
        if (get_int(f, F_ACTIVITIES, &bits, &old) || bits < 0 ||
            bits > UINT32_MAX)
            return -1;
        st->activities = (uint32_t)bits;
    } else if ((v = get(f, F_ACTIVITIES, &old))) { /* "call,demo" */
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
    st->old_layout = old;
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
        char *e = num + sizeof(num),
             *p = pl_fmt_int(e, out->seconds_in_previous_stage);
        pl_sbuf_put(&w, ",\"seconds\":", 11);
        pl_sbuf_put(&w, p, (size_t)(e - p));
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
