/*
 * lead_worker - qualifies leads from the ideal customer profile.
 *
 * Consumes topic.leads (lead.created, lead.updated, lead.accepted,
 * lead.rejected, lead.converted), scores and moves each lead through new,
 * nurture, mql, sal, sql and disqualified, and publishes
 * lead.status_changed and lead.transition_rejected to topic.pipeline.  A
 * converted lead also publishes deal.created to topic.deals (keyed by the
 * new deal_id), which the deal worker takes up; its event_id is derived from
 * the conversion's, so one conversion makes exactly one deal however often
 * it is delivered.  The consume / apply / publish / commit loop is the
 * shared runtime in common/worker.c.
 */
#include "lead.h"
#include "log.h"
#include "worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *lead_id(const pl_event_t *ev)
{
    return ev->lead_id;
}

static void state_init(void *st)
{
    pl_lead_state_init(st);
}

static void state_clear(void *st)
{
    pl_lead_state_clear(st);
}

static int state_load(void *st, const char *id, const pl_fields_t *f)
{
    (void)id; /* the lead hash keeps its lead_id */
    return pl_lead_from_fields(f, st);
}

static int decide(pl_worker_t *w, void *st, const pl_event_t *ev,
                  pl_decision_t *d)
{
    pl_lead_state_t *cur = st, next;
    pl_lead_outcome_t oc;
    pl_event_t derived[2];
    int n = 0, r = -1;

    memset(&oc, 0, sizeof(oc));
    pl_lead_state_init(&next);
    pl_event_init(&derived[0]);
    pl_event_init(&derived[1]);
    if (pl_rules_apply_lead(pl_worker_rules(w), cur->exists ? cur : NULL, ev,
                            &next, &oc)) {
        snprintf(d->poison, sizeof(d->poison), "%s", oc.message);
        r = 0;
        goto out;
    }
    if (pl_lead_derived(ev, &next, &oc, derived, &n))
        goto out;
    for (int i = 0; i < n; i++) {
        pl_topic_role_t role = derived[i].type == PL_EV_DEAL_CREATED
                                   ? PL_TOPIC_DEALS
                                   : PL_TOPIC_PIPELINE;
        const char *key = role == PL_TOPIC_DEALS ? derived[i].deal_id
                                                 : ev->lead_id;
        if (pl_decision_publish(w, d, role, key, &derived[i]))
            goto out;
    }
    d->applied = oc.verdict == PL_LEAD_APPLIED;
    d->rejected = oc.verdict == PL_LEAD_REJECTED;
    if (d->applied) {
        /* the statuses it has ever had, for the sources report */
        next.reached = (cur->exists ? cur->reached : 0) |
                       pl_reached_bit(cur->exists ? cur->status : NULL) |
                       pl_reached_bit(next.status);
        if (pl_analytics_lead_delta(cur->exists ? cur : NULL, &next,
                                    &d->stats) ||
            pl_lead_to_fields(&next, &d->set) ||
            (oc.status_changed &&
             !(d->history = pl_lead_history_entry(&oc, ev))))
            goto out;
        pl_lead_state_clear(cur);
        *cur = next; /* moved */
        pl_lead_state_init(&next);
    }
    r = 0;
out:
    pl_event_clear(&derived[0]);
    pl_event_clear(&derived[1]);
    pl_lead_outcome_clear(&oc);
    pl_lead_state_clear(&next);
    return r;
}

static int check_rules(const pl_rules_t *r, char *errstr, size_t errstr_size)
{
    if (pl_rules_has_lead(r))
        return 0;
    snprintf(errstr, errstr_size,
             "no 'lead' section: the lead worker needs scoring rules");
    return -1;
}

static const pl_worker_kind_t lead_kind = {
    .program = "lead_worker",
    .summary = "Scores and qualifies leads (topic.leads), publishes status "
               "changes (topic.pipeline) and deal.created for converted "
               "leads (topic.deals).",
    .entity = "lead",
    .input_topic = "topic.leads",
    .first_type = PL_EV_LEAD_CREATED,
    .last_type = PL_EV_LEAD_CONVERTED,
    .entity_id = lead_id,
    .state_size = sizeof(pl_lead_state_t),
    .state_init = state_init,
    .state_clear = state_clear,
    .state_load = state_load,
    .check_rules = check_rules,
    .decide = decide,
};

int main(int argc, char **argv)
{
    return pl_worker_main(&lead_kind, argc, argv);
}
