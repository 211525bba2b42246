/*
 * deal_worker - applies the sales stage rules to deal events.
 *
 * Consumes topic.deals (deal.created, deal.updated, deal.stage_requested,
 * deal.activity) and publishes deal.stage_changed and
 * deal.transition_rejected to topic.pipeline.  The consume / apply / publish
 * / commit loop is the shared runtime in common/worker.c; this file is what
 * is particular to deals: how an event is decided.
 */
#include "deal.h"
#include "worker.h"

#include <stdlib.h>

static const char *deal_id(const pl_event_t *ev)
{
    return ev->deal_id;
}

static void state_init(void *st)
{
    pl_deal_state_init(st);
}

static void state_clear(void *st)
{
    pl_deal_state_clear(st);
}

static int state_load(void *st, const pl_fields_t *f)
{
    char rev[PL_REV_LEN + 1];
    return pl_deal_from_fields(f, st, rev);
}

/* The rules engine decides; the deal's new state, its history entry and the
 * derived event go into d, and st becomes the new state when applied. */
static int decide(pl_worker_t *w, void *st, const pl_event_t *ev,
                  pl_decision_t *d)
{
    pl_deal_state_t *cur = st, next;
    pl_deal_outcome_t oc;
    pl_event_t derived;
    int r = -1;

    pl_deal_state_init(&next);
    pl_event_init(&derived);
    if (pl_rules_apply_deal(pl_worker_rules(w), cur->exists ? cur : NULL, ev,
                            &next, &oc)) {
        /* an event the codec let through but the engine cannot take */
        snprintf(d->poison, sizeof(d->poison), "%s", oc.message);
        r = 0;
        goto out;
    }
    if (pl_deal_derived(pl_worker_rules(w), ev, &next, &oc, &derived) ||
        (derived.type != PL_EV_UNKNOWN &&
         pl_decision_publish(w, d, PL_TOPIC_PIPELINE, ev->deal_id, &derived)))
        goto out;
    d->applied = oc.verdict == PL_DEAL_APPLIED;
    if (d->applied) {
        if (pl_deal_to_fields(&next, "", &d->set) ||
            (oc.stage_changed &&
             !(d->history = pl_deal_history_entry(&oc, ev))))
            goto out;
        pl_deal_state_clear(cur);
        *cur = next; /* moved */
        pl_deal_state_init(&next);
    }
    r = 0;
out:
    pl_event_clear(&derived);
    pl_deal_state_clear(&next);
    return r;
}

static const pl_worker_kind_t deal_kind = {
    .program = "deal_worker",
    .summary = "Applies the sales stage rules to deal events (topic.deals) "
               "and publishes derived events (topic.pipeline).",
    .entity = "deal",
    .input_topic = "topic.deals",
    .first_type = PL_EV_DEAL_CREATED,
    .last_type = PL_EV_DEAL_ACTIVITY,
    .entity_id = deal_id,
    .state_size = sizeof(pl_deal_state_t),
    .state_init = state_init,
    .state_clear = state_clear,
    .state_load = state_load,
    .decide = decide,
};

int main(int argc, char **argv)
{
    return pl_worker_main(&deal_kind, argc, argv);
}
