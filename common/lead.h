/*
 * lead.h - the lead worker's glue between the rules engine, the store and
 * the codec: a lead's state as Redis hash fields, and the events an outcome
 * publishes (lead.status_changed or lead.transition_rejected, and
 * deal.created for a converted lead).
 */
#ifndef PL_LEAD_H
#define PL_LEAD_H

#include "event.h"
#include "rules.h"
#include "store.h"

/* st as the fields of its state hash (without rev).  0 or -1 (OOM). */
int pl_lead_to_fields(const pl_lead_state_t *st, pl_fields_t *out);

/* Parse a state hash into st (initialised).  A hash without a status is a
 * lead that does not exist.  0 or -1 (OOM or a corrupt field). */
int pl_lead_from_fields(const pl_fields_t *f, pl_lead_state_t *st);

/* The derived events of an outcome, in the order they are published:
 * lead.status_changed (status moved) or lead.transition_rejected
 * (rejected), then deal.created when the lead was converted.  out[] must
 * hold 2 initialised events; *n gets how many were filled.  0 or -1. */
int pl_lead_derived(const pl_event_t *in, const pl_lead_state_t *next,
                    const pl_lead_outcome_t *oc, pl_event_t out[2], int *n);

/* The history entry of a status change (malloc'ed JSON), NULL on OOM. */
char *pl_lead_history_entry(const pl_lead_outcome_t *oc,
                            const pl_event_t *ev);

#endif
