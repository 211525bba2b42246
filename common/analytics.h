/*
 * analytics.h - the pipeline analytics (CONTRACT "Pipeline analytics"):
 * the figures behind `pipelinectl report forecast|stages|sources`, kept live
 * and exact.
 *
 * Design (why it is exact, and why it works on Redis Cluster):
 *
 *  1. Deltas in the same atomic step.  When the worker decides an event it
 *     also computes the event's effect on the figures: a list of counter
 *     increments ("field\tincrement\n" lines, a "delta").  The apply script
 *     that writes the entity's new state appends the delta, with a sequence
 *     number, to a delta list (<p>stats:{<tag>}, its counter
 *     <p>statseq:{<tag>}), in the same script call.  So a delta exists
 *     exactly when the state change does: a duplicate, a conflict or a
 *     failed apply writes none.  One script call pushes one entry, the
 *     deltas of all its applied events under one number.  On a Redis
 *     Cluster a call holds one slot's events and uses that slot's list (one
 *     script touches one slot); on a single Redis every call uses the list
 *     of slot PL_DELTA_SLOT (store.h), so a batch of 500 events makes four
 *     pushes, not 500.  Earlier versions pushed to the entity's own slot,
 *     one entry an event: a duplicate folds both lists, so deltas such a
 *     version left behind still count.
 *
 *  2. Folding, deduplicated by sequence number.  The figures live in one
 *     hash, <p>{stats}, and <p>{stats}:folded remembers per slot the highest
 *     sequence number folded in.  Every few applied batches (the settings
 *     fold.batches and fold.delay) the worker folds
 *     the slots it wrote to: it reads their pending deltas, and one script
 *     on the {stats} slot adds every delta whose sequence number is above
 *     the slot's folded mark and raises the mark; then, per slot, a script
 *     pops the folded deltas from the head of the list (by sequence number,
 *     so a concurrent fold of the same slot by another worker pops only
 *     what it folded).  A crash anywhere between leaves deltas to fold
 *     again, and the mark makes a second fold add nothing.  A batch's
 *     offsets are stored only after its fold, so a delta left behind by a
 *     killed worker is folded by whoever gets the redelivered events.
 *
 *  3. Everything per event is O(1): a handful of fields per delta, one
 *     list push; a report is one HGETALL of <p>{stats}, whose size depends
 *     on owners x months x currencies x stages, not on the number of deals.
 *
 * Fields of <p>{stats} (each component percent-encoded: '%', '|' and bytes
 * below 0x21 as %XX), all integers (amounts scaled by PL_AMOUNT_SCALE):
 *   f|<owner>|<month>|<currency>|<stage>|n   open deals (stage open)
 *   f|<owner>|<month>|<currency>|<stage>|a   their amount
 *   w|<owner>|<month>|<currency>|n           deals won in that month
 *   w|<owner>|<month>|<currency>|a           their amount at the win
 *   s|<owner>|<stage>|open                   open deals in the stage
 *   s|<owner>|<stage>|entered|advanced|moved_back|lost|won
 *   h|<owner>|<stage>|<bucket>               moves out of the stage by
 *                                            seconds_in_previous_stage
 *   l|<source>|leads|mql|sal|sql|disqualified|won
 * <month> is YYYY-MM (the deal's expected_close_date; for won, the UTC month
 * of the winning event's occurred_at) or "none"; <owner> "" for none (the
 * reports show it as "none"); <source> "none" when the lead has none.
 * A delta may also hold "L|<lead_id>\t1": a win of a deal converted from
 * that lead; the fold turns it into l|<the lead's source>|won.
 */
#ifndef PL_ANALYTICS_H
#define PL_ANALYTICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "event.h"
#include "rules.h"

/* ---- histogram of seconds (time in stage) ----
 * Bucket 0 holds 0 s; bucket k >= 1 holds [1.2^(k-1), 1.2^k) seconds.  A
 * bucket's value is the geometric middle of its bounds (exact for the
 * buckets that hold one integer), so an estimate is within sqrt(1.2) - 1 =
 * 9.5% of any value in its bucket (documented bound: 10%). */
#define PL_HIST_BASE 1.2
#define PL_HIST_BUCKETS 160 /* up to 1.2^159 s: more than any int64 */
int pl_hist_bucket(int64_t seconds);
/* The estimate a bucket stands for, in seconds. */
double pl_hist_value(int bucket);
/* The nearest-rank percentile (0 < p <= 1: the smallest value with at
 * least p of the counts at or below it) of a histogram, estimated; -1 when
 * the histogram is empty. */
double pl_hist_percentile(const int64_t counts[PL_HIST_BUCKETS], double p);

/* ---- deltas ---- */

/* A growing "field\tinc\n..." text; reset with len = 0. */
typedef struct pl_delta_s {
    char *buf;
    size_t len, cap;
} pl_delta_t;

void pl_delta_free(pl_delta_t *d);
/* Append field (its parts joined by '|', each percent-encoded) += inc.
 * parts: NULL-terminated.  0 or -1 (OOM). */
int pl_delta_add(pl_delta_t *d, int64_t inc, const char *const *parts);

/* The delta of one applied deal event: cur (the state it was decided on,
 * exists false for none), next (the state written), oc (the outcome) and
 * ev (for occurred_at: the month of a win).  Appends to d.  0 or -1. */
int pl_analytics_deal_delta(const pl_rules_t *r, const pl_deal_state_t *cur,
                            const pl_deal_state_t *next,
                            const pl_deal_outcome_t *oc, const pl_event_t *ev,
                            pl_delta_t *d);

/* The building blocks, shared with `pipelinectl report rebuild`, which
 * recomputes every figure from the stored states and histories:
 *
 * sign (+1 / -1) times a deal's standing contribution: for an open deal,
 * f|owner|month|currency|stage|n and |a, and s|owner|stage|open. */
int pl_analytics_deal_contrib(const pl_rules_t *r, const pl_deal_state_t *st,
                              int sign, pl_delta_t *d);

/* One stage change of a deal, as the live path counts it: entered (to),
 * advanced / moved_back / lost / won (out of from, when from is an open
 * stage), the seconds into from's histogram, and for a move to the won
 * stage the win (w|owner|month of at_ms|currency|n and |a, amount as it
 * is at the move; and L|lead_id when lead_id is set).  owner may be NULL
 * (""), from "" for a new deal.  0 or -1. */
int pl_analytics_stage_move(const pl_rules_t *r, const char *owner,
                            const char *from, const char *to, int64_t seconds,
                            int64_t at_ms, int64_t amount,
                            const char *currency, const char *lead_id,
                            pl_delta_t *d);

/* Statuses a lead has ever reached (pl_lead_state_t.reached bits). */
#define PL_REACHED_MQL (1u << 0)
#define PL_REACHED_SAL (1u << 1)
#define PL_REACHED_SQL (1u << 2)
#define PL_REACHED_DISQUALIFIED (1u << 3)
/* The bit of a status name, 0 for the others. */
unsigned pl_reached_bit(const char *status);

/* sign times a lead's standing contribution: l|source|leads and
 * l|source|<status> per status in st->reached. */
int pl_analytics_lead_contrib(const pl_lead_state_t *st, int sign,
                              pl_delta_t *d);

/* The delta of one applied lead event: the lead's contribution after,
 * minus before.  0 or -1. */
int pl_analytics_lead_delta(const pl_lead_state_t *cur,
                            const pl_lead_state_t *next, pl_delta_t *d);

/* The YYYY-MM of a day number (days since 1970-01-01), or of epoch ms. */
void pl_month_of_day(int32_t day, char out[8]);
void pl_month_of_ms(int64_t ms, char out[8]);

/* Percent-encode one field component into out (size >= 3 * strlen + 1);
 * returns its length. */
size_t pl_field_escape(const char *in, char *out, size_t out_size);
/* Decode in place. */
void pl_field_unescape(char *s);

#endif
