/*
 * lead.c - lead state <-> Redis hash fields and the derived events of a
 * lead outcome (see lead.h).  Fields are text a person can read with
 * redis-cli: amounts as decimals, lists as JSON arrays, times as epoch ms.
 */
#include "lead.h"

#include "analytics.h"
#include "codec.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int set_list(pl_fields_t *f, const char *k, const pl_strlist_t *l)
{
    json_t *a = json_array();
    char *s;
    int r;
    for (size_t i = 0; a && i < l->count; i++)
        json_array_append_new(a, json_string(l->items[i]));
    if (!a || !(s = json_dumps(a, JSON_COMPACT))) {
        json_decref(a);
        return -1;
    }
    json_decref(a);
    r = pl_fields_set(f, k, s);
    free(s);
    return r;
}

int pl_lead_to_fields(const pl_lead_state_t *st, pl_fields_t *out)
{
    const pl_event_t *p = &st->profile;
    char buf[64];

    if (pl_fields_set_opt(out, "lead_id", p->lead_id) ||
        pl_fields_set_opt(out, "email", p->email) ||
        pl_fields_set_opt(out, "company", p->company) ||
        pl_fields_set_opt(out, "industry", p->industry) ||
        pl_fields_set_opt(out, "contact_title", p->contact_title) ||
        pl_fields_set_opt(out, "source", p->source) ||
        pl_fields_set_opt(out, "owner", st->owner) ||
        pl_fields_set_opt(out, "status", st->status) ||
        pl_fields_set_opt(out, "deal_id", st->deal_id) ||
        pl_fields_set_int(out, "score", st->score) ||
        pl_fields_set_int(out, "created_at", st->created_at) ||
        pl_fields_set_int(out, "status_changed_at", st->status_changed_at) ||
        pl_fields_set_int(out, "last_event_at", st->last_event_at))
        return -1;
    {
        /* the statuses ever reached, for the analytics (a comma list) */
        static const char *const names[] = {"mql", "sal", "sql",
                                            "disqualified"};
        char reached[64];
        size_t n = 0;
        unsigned bits = st->reached | pl_reached_bit(st->status);
        reached[0] = '\0';
        for (size_t i = 0; i < sizeof(names) / sizeof(*names); i++)
            if (bits & pl_reached_bit(names[i]))
                n += (size_t)snprintf(reached + n, sizeof(reached) - n,
                                      "%s%s", n ? "," : "", names[i]);
        if (pl_fields_set(out, "reached", reached))
            return -1;
    }
    if ((p->present & PL_F_EMPLOYEES) &&
        pl_fields_set_int(out, "employees", p->employees))
        return -1;
    if ((p->present & PL_F_MONTHS_IN_ROLE) &&
        pl_fields_set_int(out, "months_in_role", p->months_in_role))
        return -1;
    if (p->present & PL_F_MONTHLY_AD_SPEND) {
        pl_amount_format(p->monthly_ad_spend, buf, sizeof(buf));
        if (pl_fields_set(out, "monthly_ad_spend", buf))
            return -1;
    }
    if ((p->present & PL_F_TECHNOLOGIES) &&
        set_list(out, "technologies", &p->technologies))
        return -1;
    if ((p->present & PL_F_HIRING_FOR) &&
        set_list(out, "hiring_for", &p->hiring_for))
        return -1;
    return 0;
}

static int get_list(const pl_fields_t *f, const char *k, pl_strlist_t *l,
                    bool *found)
{
    const char *s = pl_fields_get(f, k);
    json_t *a, *v;
    size_t i;
    int r = 0;

    *found = s != NULL;
    if (!s)
        return 0;
    if (!(a = json_loads(s, 0, NULL)) || !json_is_array(a)) {
        json_decref(a);
        return -1;
    }
    json_array_foreach(a, i, v) {
        if (!json_is_string(v) || pl_strlist_add(l, json_string_value(v))) {
            r = -1;
            break;
        }
    }
    json_decref(a);
    return r;
}

int pl_lead_from_fields(const pl_fields_t *f, pl_lead_state_t *st)
{
    pl_event_t *p = &st->profile;
    const char *v;
    bool found;

    pl_lead_state_clear(st);
    if (!pl_fields_get(f, "status"))
        return 0;
    st->exists = true;
    if (pl_str_set(&p->lead_id, pl_fields_get(f, "lead_id")) ||
        pl_str_set(&p->email, pl_fields_get(f, "email")) ||
        pl_str_set(&p->company, pl_fields_get(f, "company")) ||
        pl_str_set(&p->industry, pl_fields_get(f, "industry")) ||
        pl_str_set(&p->contact_title, pl_fields_get(f, "contact_title")) ||
        pl_str_set(&p->source, pl_fields_get(f, "source")) ||
        pl_str_set(&p->owner, pl_fields_get(f, "owner")) ||
        pl_str_set(&st->owner, pl_fields_get(f, "owner")) ||
        pl_str_set(&st->status, pl_fields_get(f, "status")) ||
        pl_str_set(&st->deal_id, pl_fields_get(f, "deal_id")))
        return -1;
    if (pl_fields_get_int(f, "score", &st->score, NULL) ||
        pl_fields_get_int(f, "created_at", &st->created_at, NULL) ||
        pl_fields_get_int(f, "status_changed_at", &st->status_changed_at, NULL) ||
        pl_fields_get_int(f, "last_event_at", &st->last_event_at, NULL))
        return -1;
    if ((v = pl_fields_get(f, "reached"))) {
        while (*v) {
            const char *c = strchr(v, ',');
            size_t n = c ? (size_t)(c - v) : strlen(v);
            char name[32];
            snprintf(name, sizeof(name), "%.*s", (int)n, v);
            st->reached |= pl_reached_bit(name);
            v += n + (c ? 1 : 0);
        }
    }
    /* a lead stored before the analytics: at least its status */
    st->reached |= pl_reached_bit(st->status);
    if (pl_fields_get_int(f, "employees", &p->employees, &found))
        return -1;
    if (found)
        p->present |= PL_F_EMPLOYEES;
    if (pl_fields_get_int(f, "months_in_role", &p->months_in_role, &found))
        return -1;
    if (found)
        p->present |= PL_F_MONTHS_IN_ROLE;
    if ((v = pl_fields_get(f, "monthly_ad_spend"))) {
        if (pl_amount_parse(v, &p->monthly_ad_spend))
            return -1;
        p->present |= PL_F_MONTHLY_AD_SPEND;
    }
    if (get_list(f, "technologies", &p->technologies, &found))
        return -1;
    if (found)
        p->present |= PL_F_TECHNOLOGIES;
    if (get_list(f, "hiring_for", &p->hiring_for, &found))
        return -1;
    if (found)
        p->present |= PL_F_HIRING_FOR;
    return 0;
}

static int copy_reasons(pl_event_t *d, const pl_strlist_t *reasons)
{
    for (size_t i = 0; i < reasons->count; i++)
        if (pl_strlist_add(&d->reasons, reasons->items[i]))
            return -1;
    d->present |= PL_F_REASONS;
    return 0;
}

/* deal.created for a converted lead: the deal's fields come from the
 * lead.converted event, then from the lead. */
static int deal_created(const pl_event_t *in, const pl_lead_state_t *next,
                        pl_event_t *d)
{
    char id[PL_EVENT_ID_MAX + 1];

    d->type = PL_EV_DEAL_CREATED;
    pl_event_derive_id(d->type, in->event_id, id);
    d->occurred_at = in->occurred_at;
    d->present |= PL_F_OCCURRED_AT;
    if (pl_str_set(&d->event_id, id) ||
        pl_str_set(&d->deal_id, next->deal_id) ||
        pl_str_set(&d->lead_id, in->lead_id) ||
        pl_str_set(&d->name, in->name ? in->name : next->profile.company) ||
        pl_str_set(&d->owner, in->owner ? in->owner : next->owner))
        return -1;
    if (in->present & PL_F_AMOUNT) {
        d->amount = in->amount;
        d->present |= PL_F_AMOUNT;
        if (pl_str_set(&d->currency, in->currency ? in->currency : "USD"))
            return -1;
    }
    if (in->present & PL_F_EXPECTED_CLOSE_DATE) {
        d->expected_close_date = in->expected_close_date;
        d->present |= PL_F_EXPECTED_CLOSE_DATE;
    }
    return 0;
}

int pl_lead_derived(const pl_event_t *in, const pl_lead_state_t *next,
                    const pl_lead_outcome_t *oc, pl_event_t out[2], int *n)
{
    char id[PL_EVENT_ID_MAX + 1];
    pl_event_t *d = &out[0];

    *n = 0;
    if (oc->verdict == PL_LEAD_APPLIED && !oc->status_changed)
        return 0;
    d->type = oc->verdict == PL_LEAD_APPLIED ? PL_EV_LEAD_STATUS_CHANGED
                                             : PL_EV_LEAD_TRANSITION_REJECTED;
    pl_event_derive_id(d->type, in->event_id, id);
    d->occurred_at = in->occurred_at;
    d->present |= PL_F_OCCURRED_AT;
    if (pl_str_set(&d->event_id, id) ||
        pl_str_set(&d->lead_id, in->lead_id) ||
        pl_str_set(&d->caused_by, in->event_id))
        return -1;
    if (d->type == PL_EV_LEAD_TRANSITION_REJECTED) {
        if (pl_str_set(&d->status, oc->from_status) ||
            pl_str_set(&d->requested, oc->to_status) ||
            pl_str_set(&d->reason_code, oc->reason_code) ||
            pl_str_set(&d->message, oc->message))
            return -1;
        *n = 1;
        return 0;
    }
    if (pl_str_set(&d->from_status, oc->from_status) ||
        pl_str_set(&d->to_status, oc->to_status) ||
        copy_reasons(d, &oc->reasons))
        return -1;
    d->score = oc->score;
    d->present |= PL_F_SCORE;
    *n = 1;
    if (oc->convert) {
        if (deal_created(in, next, &out[1]))
            return -1;
        *n = 2;
    }
    return 0;
}

char *pl_lead_history_entry(const pl_lead_outcome_t *oc,
                            const pl_event_t *ev)
{
    char at[40];
    char *s;
    json_t *o;

    pl_time_format_rfc3339(ev->occurred_at, at, sizeof(at));
    o = json_pack("{s:s, s:s, s:I, s:s, s:s}", "from", oc->from_status, "to",
                  oc->to_status, "score", (json_int_t)oc->score, "at", at,
                  "event_id", ev->event_id);
    if (!o)
        return NULL;
    s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    return s;
}
