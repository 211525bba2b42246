/*
 * deal.h - the deal worker's glue between the rules engine, the store and
 * the codec: a deal's state as Redis hash fields, its history entries and
 * the derived events of an outcome.
 */
#ifndef PL_DEAL_H
#define PL_DEAL_H

#include "event.h"
#include "rules.h"
#include "store.h"

/* st as the fields of its state hash, with rev as its revision. */
int pl_deal_to_fields(const pl_deal_state_t *st, const char *rev,
                      pl_fields_t *out);
/* The fields of st that differ from prev (the state as stored, rev
 * included always): what an apply writes over the stored hash, which then
 * holds every field of st.  A field st lacks is never removed (nor does a
 * whole write remove it).  prev NULL or not existing: every field.  prev
 * of the older layout (long names): every field, and the old names to
 * remove in unset (NULL: none wanted).  0 or -1 (OOM). */
int pl_deal_to_fields_diff(const pl_deal_state_t *prev,
                           const pl_deal_state_t *st, const char *rev,
                           pl_fields_t *out, pl_strlist_t *unset);

/* Parse the state hash of deal id into st (initialised) and its revision
 * into rev (PL_REV_LEN + 1 bytes; "" when none).  A hash without a stage
 * is a deal that does not exist.  Reads the older layout's long field
 * names too, and then sets st->old_layout.  0 or -1 (OOM or a corrupt
 * field). */
int pl_deal_from_fields(const pl_fields_t *f, const char *id,
                        pl_deal_state_t *st, char *rev);

/* The state hash names its fields short ("s" for the stage, "le" for
 * last_event_at...; see the README's Redis keys): the long name of one,
 * for people (pipelinectl), or NULL when field is not one of them. */
const char *pl_deal_field_long_name(const char *field);

/* The history entry of a stage change, as a malloc'ed JSON object:
 * {"from","to","at","event_id","owner","seconds","amount","currency"}
 * (owner, amount and currency as the deal has them after the change,
 * absent when it has none; seconds: seconds_in_previous_stage), all the
 * analytics rebuild needs.  next may be NULL (only the first four).  NULL
 * on OOM. */
char *pl_deal_history_entry(const pl_deal_outcome_t *out,
                            const pl_event_t *ev,
                            const pl_deal_state_t *next);

/* The derived event of an outcome: deal.stage_changed when the stage moved,
 * deal.transition_rejected when rejected; type PL_EV_UNKNOWN when the
 * outcome publishes nothing (an update or activity that was applied).
 * derived must be initialised.  0 or -1 (OOM). */
int pl_deal_derived(const pl_rules_t *r, const pl_event_t *in,
                    const pl_deal_state_t *next,
                    const pl_deal_outcome_t *out, pl_event_t *derived);

#endif
